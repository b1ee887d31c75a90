"""Real-data sources, a folder of raw files (rawdrift.sources.folder): the Zenodo record's layout,
an own layout (labels.csv + camera.json), what bad files get, and DNG files through rawpy."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from helpers import RATIOS, raw_tile, record_tree
from rawdrift.camera import CAMERAS
from rawdrift.errors import RawdriftError
from rawdrift.sources import folder
from rawdrift.sources.store import load_raw_dataset, load_targets


def test_record_layout_microscopy(tmp_path):
    truth = record_tree(tmp_path / "rec")
    meta = folder.build("microscopy", tmp_path / "rec", tmp_path / "out", tile=32, count=0, folds=3, seed=0,
                        intensities=RATIOS)
    assert meta["source"] == "folder" and meta["provenance"]["layout"] == "record"
    assert meta["class_counts"] == {"LYT": 5, "MON": 6}        # BAS (2 images) dropped as in the original
    ds = load_raw_dataset(tmp_path / "out", verify=True)
    assert ds.camera.to_dict() == CAMERAS["microscopy"].to_dict()
    ids = meta["provenance"]["tiles"]
    first = ids[0].split("@")[0]
    np.testing.assert_array_equal(ds.raw(1.0)[0], truth["micro"][first])
    assert ds.meta["classes"][int(load_targets(ds)[0])] == first.split("_")[1]
    assert sorted(np.bincount(ds.folds).tolist()) == [3, 4, 4]


def test_record_layout_drone_keeps_tiles_with_cars(tmp_path):
    truth = record_tree(tmp_path / "rec")
    with pytest.raises(RawdriftError, match="fewer than data.folds"):
        folder.build("drone", tmp_path / "rec", tmp_path / "out", tile=32, count=0, folds=2, seed=0,
                     intensities=RATIOS)
    assert not (tmp_path / "out").exists()
    meta = folder.build("drone", tmp_path / "rec", tmp_path / "out", tile=16, count=0, folds=2, seed=0,
                        intensities=RATIOS)
    ds = load_raw_dataset(tmp_path / "out")
    masks = ds.masks()
    assert meta["count"] == masks.shape[0] == 2 and masks.any(axis=(1, 2)).all()   # the car spans 2 tiles of 16
    for k, tid in enumerate(meta["provenance"]["tiles"]):
        r0, c0 = map(int, tid.split("@")[1].split(","))
        np.testing.assert_array_equal(ds.raw(1.0)[k], truth["drone"][r0:r0 + 16, c0:c0 + 16])
        np.testing.assert_array_equal(masks[k], truth["mask"][r0:r0 + 16, c0:c0 + 16] > 0)


def own_tree(root: Path, n=6, labels=True):
    rng = np.random.default_rng(1)
    (root / "raw_scale100").mkdir(parents=True)
    rows = ["file,class"]
    for i in range(n):
        tifffile.imwrite(root / f"raw_scale100/cell{i}.tif", raw_tile(rng, 20, 20))
        rows.append(f"cell{i}.tif,{'A' if i % 2 else 'B'}")
    if labels:
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "camera.json").write_text(json.dumps(CAMERAS["drone"].to_dict()))


def test_own_layout_with_labels_csv_and_camera_json(tmp_path):
    own_tree(tmp_path / "own")
    meta = folder.build("microscopy", tmp_path / "own", tmp_path / "out", tile=16, count=4, folds=2, seed=0,
                        intensities=[1.0], classes=["A", "B"])
    assert meta["count"] == 4 and meta["provenance"]["layout"] == "own" and meta["classes"] == ["A", "B"]
    assert load_raw_dataset(tmp_path / "out").camera.to_dict() == CAMERAS["drone"].to_dict()


@pytest.mark.parametrize("break_it, msg", [
    (lambda p: tifffile.imwrite(p / "raw_scale100/cell0.tif", np.zeros((20, 19), np.uint16)),
     "cell0.tif: raw sides must be even"),
    (lambda p: tifffile.imwrite(p / "raw_scale100/cell1.tif", np.full((20, 20), np.nan, np.float32)),
     "cell1.tif: contains NaN or inf"),
    (lambda p: tifffile.imwrite(p / "raw_scale100/cell2.tif", np.zeros((20, 20), np.uint8)),
     "cell2.tif: wrong bit depth: expected 16-bit unsigned integers, got uint8"),
    (lambda p: (p / "raw_scale100/cell3.tif").write_bytes(b"II*\x00garbage"), "cell3.tif: cannot read TIFF"),
    (lambda p: (p / "labels.csv").write_text("file,class\ncell0.tif,A\ncell1.tif,XYZ\n"),
     "labels.csv: line 3: unknown class 'XYZ'"),
    (lambda p: (p / "camera.json").unlink(), "needs a camera.json"),
])
def test_bad_raw_files_are_named_and_nothing_is_written(tmp_path, break_it, msg):
    own_tree(tmp_path / "own")
    break_it(tmp_path / "own")
    with pytest.raises(RawdriftError) as e:
        folder.build("microscopy", tmp_path / "own", tmp_path / "out", tile=16, count=0, folds=2, seed=0,
                     intensities=[1.0], classes=["A", "B"])
    assert msg in str(e.value)
    assert not (tmp_path / "out").exists()


def test_unmatched_layout_lists_what_was_found(tmp_path):
    (tmp_path / "x/photos").mkdir(parents=True)
    (tmp_path / "x/photos/a.jpg").write_bytes(b"")
    with pytest.raises(RawdriftError, match=r"no raw files .*found: photos/ \(1 entries\); photos/a.jpg"):
        folder.discover(tmp_path / "x", "microscopy")
    own_tree(tmp_path / "y", labels=False)
    with pytest.raises(RawdriftError, match="no labels .*found: .*raw_scale100/"):
        folder.discover(tmp_path / "y", "microscopy")


# --- DNG through rawpy ---------------------------------------------------------------------

def write_dng(path: Path, raw: np.ndarray, cfa=(0, 1, 1, 2), black=512, white=4095, neutral=(0.5, 1.0, 0.6)):
    """A minimal DNG (tifffile + the DNG tags LibRaw needs): CFA pattern, black and white
    level, XYZ -> camera matrix, as-shot neutral."""
    def srational(values):
        out = []
        for v in values:
            out += [int(round(v * 10000)), 10000]
        return out
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50707, "B", 4, (1, 1, 0, 0), True),
            (33421, "H", 2, (2, 2), True), (33422, "B", 4, cfa, True), (50710, "B", 3, (0, 1, 2), True),
            (50711, "H", 1, 1, True), (50714, "H", 1, black, True), (50717, "H", 1, white, True),
            (50721, "2i", 9, srational([1.2, -0.3, -0.1, -0.2, 1.1, 0.1, 0.0, -0.1, 0.9]), True),
            (50778, "H", 1, 21, True), (50728, "2I", 3, srational(neutral), True)]
    tifffile.imwrite(path, raw, photometric=32803, extratags=tags, metadata=None)


def test_dng_raw_and_camera_come_from_the_file(tmp_path):
    rawpy = pytest.importorskip("rawpy", reason="pip install -r requirements-test.txt")
    raw = np.random.default_rng(2).integers(600, 4000, size=(32, 48)).astype(np.uint16)
    write_dng(tmp_path / "a.dng", raw)
    arr, cam = folder.read_raw_file(tmp_path / "a.dng")
    np.testing.assert_array_equal(arr, np.round(raw / 4095 * 65535).astype(np.uint16))   # 12 -> 16 bit
    np.testing.assert_allclose(cam.black_level, [512 / 4095] * 4)
    np.testing.assert_allclose(cam.white_balance, [2.0, 1.0, 1 / 0.6], rtol=1e-6)         # 1 / as-shot neutral
    with rawpy.imread(str(tmp_path / "a.dng")) as r:
        np.testing.assert_allclose(cam.colour_matrix, np.asarray(r.color_matrix)[:, :3], rtol=1e-6)
    np.testing.assert_allclose(np.sum(cam.colour_matrix, axis=1), 1.0, atol=2e-3)         # white stays white
    write_dng(tmp_path / "g.dng", raw, cfa=(1, 0, 2, 1))
    with pytest.raises(RawdriftError, match="g.dng: Bayer pattern GRBG is not RGGB"):
        folder.read_raw_file(tmp_path / "g.dng")


def test_own_dng_folder_takes_its_camera_from_the_files(tmp_path):
    pytest.importorskip("rawpy", reason="pip install -r requirements-test.txt")
    rng = np.random.default_rng(3)
    rows = ["file,class"]
    (tmp_path / "own").mkdir()
    for i in range(4):
        write_dng(tmp_path / f"own/img{i}.dng", rng.integers(600, 4000, size=(32, 32)).astype(np.uint16))
        rows.append(f"img{i}.dng,{'x' if i % 2 else 'y'}")
    (tmp_path / "own/labels.csv").write_text("\n".join(rows) + "\n")
    meta = folder.build("microscopy", tmp_path / "own", tmp_path / "out", tile=16, count=0, folds=2, seed=0,
                        intensities=[1.0])
    assert meta["count"] == 16 and meta["classes"] == ["x", "y"]
    cam = load_raw_dataset(tmp_path / "out").camera
    np.testing.assert_allclose(cam.white_balance, [2.0, 1.0, 1 / 0.6], rtol=1e-6)
