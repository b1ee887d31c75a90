"""Real-data sources: a folder of raw files (record layout or own) and the Zenodo record through
a local HTTP server that speaks the REST API's shape (no network)."""

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from helpers import stage
from rawdrift.camera import CAMERAS
from rawdrift.errors import RawdriftError
from rawdrift.sources import folder, zenodo
from rawdrift.sources.store import load_raw_dataset, load_targets

RATIOS = [0.01, 1.0]


def _raw(rng, h=32, w=32, level=4000):
    return rng.integers(level, level + 3000, size=(h, w)).astype(np.uint16)


def record_tree(root: Path, bad_class_images: int = 2) -> dict:
    """A miniature record: microscopy (3 classes, one too small) and one drone image with a car."""
    rng = np.random.default_rng(0)
    files = {}
    lines = []
    classes = {"LYT": 5, "MON": 6, "BAS": bad_class_images}
    for cls, n in classes.items():
        for i in range(n):
            stem = f"Ma190c_{cls}_{i}"
            base = _raw(rng)
            for r in RATIOS:
                p = root / f"microscopy/images/raw_scale{round(r * 100):03d}/{stem}.tiff"
                p.parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(p, (base * r).astype(np.uint16))
            files[stem] = base
            lines.append(f"{stem}.tiff {cls}")
    lab = root / "microscopy/labels/Ma190c_annotations.dat"
    lab.parent.mkdir(parents=True)
    lab.write_text("\n".join(lines) + "\n")
    img = _raw(rng, 64, 96)
    for r in RATIOS:
        p = root / f"drone/images_full/raw_scale{round(r * 100):03d}/DJI_0001.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(p, (img * r).astype(np.uint16))
    mask = np.zeros((64, 96), np.uint8)
    mask[5:15, 40:50] = 255           # one car in tile (0, 32); the other 5 tiles are empty
    (root / "drone/masks_full").mkdir(parents=True)
    Image.fromarray(mask).save(root / "drone/masks_full/DJI_0001.png")
    return {"micro": files, "drone": img, "mask": mask}


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
        tifffile.imwrite(root / f"raw_scale100/cell{i}.tif", _raw(rng, 20, 20))
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


# --- Zenodo through a local server ---------------------------------------------------------

def _zip(tree: Path | None = None, extra: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if tree is not None:
            for p in sorted(tree.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(tree).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


class Record:
    """Serves GET /api/records/<id> and /files/<key> (Range supported); ``truncate`` cuts the
    first ``n`` responses of a file short, ``corrupt`` serves other bytes than listed."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.listed = {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
        self.truncate: dict[str, int] = {}
        self.ranges: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/api/records/"):
                    port = self.server.server_address[1]
                    body = json.dumps({"id": 1, "files": [
                        {"key": k, "size": len(v), "checksum": f"md5:{rec.listed[k]}",
                         "links": {"self": f"http://127.0.0.1:{port}/files/{k}"}} for k, v in rec.files.items()]})
                    self._send(200, body.encode(), "application/json")
                    return
                key = self.path.rsplit("/", 1)[-1]
                data = rec.files[key]
                start = 0
                if "Range" in self.headers:
                    rec.ranges.append(self.headers["Range"])
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                chunk = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if rec.truncate.get(key, 0) > 0:
                    rec.truncate[key] -= 1
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api = f"http://127.0.0.1:{self.server.server_address[1]}/api/records"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def record(tmp_path):
    record_tree(tmp_path / "tree")
    rec = Record({"Raw-Microscopy.zip": _zip(tmp_path / "tree/microscopy"),
                  "Raw-Drone.zip": _zip(tmp_path / "tree/drone")})
    yield rec
    rec.close()


def test_zenodo_record_downloads_verifies_extracts_and_resumes(tmp_path, record):
    record.truncate["Raw-Microscopy.zip"] = 1          # the first response breaks off half-way
    root = zenodo.fetch_record("microscopy", tmp_path / "dl", record.api, 1, backoff=0.01)
    assert record.ranges and record.ranges[0].startswith("bytes=") and record.ranges[0] != "bytes=0-"
    assert (tmp_path / "dl/1/Raw-Microscopy.zip").exists() and not (tmp_path / "dl/1/Raw-Drone.zip").exists()
    meta = folder.build("microscopy", root, tmp_path / "out", tile=32, count=0, folds=3, seed=0, intensities=RATIOS)
    assert meta["count"] == 11
    # a second fetch finds the verified file and downloads nothing (any download would now break off)
    record.truncate["Raw-Microscopy.zip"] = 99
    assert zenodo.fetch_record("microscopy", tmp_path / "dl", record.api, 1, retries=0) == root


def test_zenodo_checksum_mismatch_fails_and_keeps_nothing(tmp_path, record):
    record.listed["Raw-Drone.zip"] = "0" * 32
    with pytest.raises(RawdriftError, match=r"Raw-Drone.zip failed after 2 attempt\(s\) \(checksum mismatch: md5 "):
        zenodo.fetch_record("drone", tmp_path / "dl", record.api, 1, retries=1, backoff=0.01)
    assert not list((tmp_path / "dl/1").glob("Raw-Drone.zip*"))


def test_zenodo_truncated_every_time_fails_with_the_byte_count(tmp_path, record):
    record.truncate["Raw-Drone.zip"] = 99
    with pytest.raises(RawdriftError, match=r"Raw-Drone.zip failed after 3 attempt\(s\) \(truncated: \d+ of \d+ bytes\)"):
        zenodo.fetch_record("drone", tmp_path / "dl", record.api, 1, retries=2, backoff=0.01)


@pytest.mark.parametrize("member, msg", [
    ("../evil.txt", "'..' in the path refused"),
    ("/etc/evil.txt", "absolute path refused"),
])
def test_zip_slip_archives_are_refused(tmp_path, member, msg):
    rec = Record({"Raw-Drone.zip": _zip(extra={"drone/ok.txt": "x", member: "pwned"})})
    try:
        with pytest.raises(RawdriftError, match=msg):
            zenodo.fetch_record("drone", tmp_path / "dl", rec.api, 1, backoff=0.01)
    finally:
        rec.close()
    assert not (tmp_path / "dl/evil.txt").exists() and not (tmp_path / "dl/1/extracted/Raw-Drone").exists()


def test_links_and_zip_bombs_are_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("drone/link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    (tmp_path / "a.zip").write_bytes(buf.getvalue())
    with pytest.raises(RawdriftError, match="is a link; refused"):
        zenodo.extract_zip(tmp_path / "a.zip", tmp_path / "x", 1 << 20)
    (tmp_path / "b.zip").write_bytes(_zip(extra={"big.bin": b"\0" * 200_000}))
    with pytest.raises(RawdriftError, match="would expand to 200000 bytes, more than the limit 100000"):
        zenodo.extract_zip(tmp_path / "b.zip", tmp_path / "y", 100_000)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_fetch_stage_with_the_zenodo_source(tmp_path, record):
    params = {"seed": 0, "data": {"source": "zenodo", "folds": 2, "intensities": RATIOS,
                                  "drone": {"count": 0, "tile": 16},
                                  "zenodo": {"record": 1, "api": record.api, "downloads": "downloads",
                                             "max_extract_gb": 1, "retries": 0}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = stage(tmp_path, "fetch.py", "drone")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("fetch@drone: 2 tiles 16x16 at 2 intensities, 2 folds")
    meta = json.loads((tmp_path / "data/raw/drone/meta.json").read_text())
    assert meta["source"] == "zenodo" and meta["provenance"]["doi"] == "10.5281/zenodo.1"
    record.listed["Raw-Drone.zip"] = "f" * 32                   # now the record disagrees with the bytes
    (tmp_path / "downloads/1/Raw-Drone.zip").unlink()
    r = stage(tmp_path, "fetch.py", "drone")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "Raw-Drone.zip failed after 1 attempt(s) (checksum mismatch" in r.stderr
    assert not (tmp_path / "data/raw/drone.tmp").exists() and meta == json.loads(
        (tmp_path / "data/raw/drone/meta.json").read_text())          # the earlier output is untouched


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
