"""Raw data from a folder (``data.source: folder``): the published record or a user's own raw files.

The folder is ``data.<dataset>.path``. Two layouts are recognised, from folder and file names:

**record** (Zenodo 5235536 as the original loader read it, ``facts.md``)::

    microscopy/images/raw_scaleXXX/<name>.tiff      16-bit RGGB raw per exposure ratio
    microscopy/labels/<anything>.dat                "<file stem> <CLASS>" per line
    drone/images_full/raw_scaleXXX/<name>.tif[f]    full drone images, cut into tiles
    drone/masks_full/<name>.png                     car masks (non-zero = car)

  Microscopy classes with 4 or fewer images are dropped and the known bad file is skipped,
  as in the original; the camera is the published one (:data:`rawdrift.camera.CAMERAS`).

**own**::

    raw_scaleXXX/<name>.(tif|tiff|dng)   one folder per exposure ratio (XXX = percent), or
    <name>.(tif|tiff|dng)                the files directly (one exposure, ratio 1.0)
    labels.csv                           columns file,class (classification), or
    masks/<name>.png                     masks, non-zero = foreground (segmentation)
    camera.json                          black level, white balance, colour matrix (TIFF);
                                         DNG files carry their own (read with rawpy)

Images larger than ``tile`` are cut into ``tile`` x ``tile`` tiles with step ``tile`` (even
offsets, so the Bayer phase stays RGGB); for segmentation only tiles containing foreground
are kept. When the layout does not match, the error lists what was found.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rawdrift.camera import CAMERAS, RAW_SCALE, Camera, check_mosaic_shape
from rawdrift.errors import ParamError, RawdriftError
from rawdrift.io import atomic_dir
from rawdrift.sources.store import write_raw_dataset
from rawdrift.splits import stratified_folds

RAW_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".dng")
INTENSITY_DIR = re.compile(r"^raw_scale(\d{3})$")
#: The original loader's known bad file and minimum class size (facts.md).
KNOWN_BAD = {"Ma190c_lame3_zone13_composite_Mcropped_2"}
MIN_CLASS_IMAGES = 5


@dataclass
class Layout:
    """What was found under the folder: raw files per exposure ratio and the annotations."""

    kind: str                              # "record" or "own"
    raws: dict[float, dict[str, Path]]     # ratio -> {stem: file}
    labels: Path | None
    masks: Path | None
    camera: Path | None


def listing(root: Path, limit: int = 25) -> str:
    """A short listing of the first folders and files under ``root`` (for error messages)."""
    entries = []
    for p in sorted(root.rglob("*")):
        if len(entries) >= limit:
            entries.append("...")
            break
        rel = p.relative_to(root)
        if p.is_dir():
            n = sum(1 for _ in p.iterdir())
            entries.append(f"{rel}/ ({n} entries)")
        elif len(rel.parts) <= 2:
            entries.append(str(rel))
    return "; ".join(entries) if entries else "(empty)"


def _intensity_dirs(root: Path, dataset: str) -> dict[float, Path]:
    dirs = [p for p in root.rglob("raw_scale*") if p.is_dir() and INTENSITY_DIR.match(p.name)]
    parents = sorted({p.parent for p in dirs})
    if len(parents) > 1:      # the record holds both datasets: take the one named after ours
        mine = [q for q in parents if dataset in q.relative_to(root).parts]
        if len(mine) != 1:
            raise RawdriftError(f"{root}: raw_scaleXXX folders in several places ({[str(q) for q in parents]}); "
                                f"point data.{dataset}.path at one of them")
        parents = mine
    return {int(INTENSITY_DIR.match(p.name).group(1)) / 100: p for p in dirs if p.parent in parents}


def _raw_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in RAW_SUFFIXES}


def discover(root: str | Path, dataset: str) -> Layout:
    """Find the raw files and annotations of ``dataset`` under ``root``; a clear error otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise ParamError("path", f"{root} is not a folder")
    dirs = _intensity_dirs(root, dataset)
    raws = {r: _raw_files(d) for r, d in dirs.items()} if dirs else {1.0: _raw_files(root)}
    if not any(raws.values()):
        raise RawdriftError(f"{root}: no raw files (raw_scaleXXX/<name>.tiff|dng or <name>.tiff|dng); "
                            f"found: {listing(root)}")
    record = bool(dirs) and next(iter(dirs.values())).parent.name in ("images", "images_full")
    labels = masks = None
    if dataset == "microscopy":
        csvs = sorted(root.rglob("labels.csv"))
        dats = sorted(p for p in root.rglob("*.dat") if p.parent.name == "labels")
        labels = (csvs or dats or [None])[0]
        if labels is None:
            raise RawdriftError(f"{root}: no labels (labels.csv with columns file,class, or labels/*.dat); "
                                f"found: {listing(root)}")
    else:
        cands = sorted(p for p in root.rglob("masks*") if p.is_dir() and any(p.glob("*.png")))
        if not cands:
            raise RawdriftError(f"{root}: no masks folder (masks/<name>.png or masks_full/<name>.png); "
                                f"found: {listing(root)}")
        masks = cands[0]
    camera = next(iter(sorted(root.rglob("camera.json"))), None)
    return Layout("record" if record else "own", raws, labels, masks, camera)


def read_raw_file(path: Path) -> tuple[np.ndarray, Camera | None]:
    """One raw image as uint16 (H, W) RGGB on the 16-bit scale, and the camera a DNG describes.

    TIFF: 2-D, 16-bit unsigned, even sides. DNG (rawpy): the visible Bayer area scaled from
    the file's white level to 65535, with its black level, as-shot white balance and colour
    matrix; only RGGB sensors are accepted.
    """
    if path.suffix.lower() == ".dng":
        return _read_dng(path)
    import tifffile
    try:
        arr = tifffile.imread(path)
    except Exception as e:     # tifffile raises several types for truncated or foreign files
        raise RawdriftError(f"{path}: cannot read TIFF ({e})") from None
    return _check_raw(arr, path), None


def _check_raw(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.size == 0:          # tifffile returns an empty array for a truncated or foreign file
        raise RawdriftError(f"{path}: cannot read TIFF (no image data: truncated or not a TIFF)")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise RawdriftError(f"{path}: contains NaN or inf; expected a 16-bit unsigned raw")
        raise RawdriftError(f"{path}: wrong bit depth: expected 16-bit unsigned integers, got {arr.dtype}")
    if arr.dtype != np.uint16:
        raise RawdriftError(f"{path}: wrong bit depth: expected 16-bit unsigned integers, got {arr.dtype}")
    if arr.ndim != 2:
        raise RawdriftError(f"{path}: expected one 2-D Bayer mosaic, got shape {arr.shape}")
    check_mosaic_shape(arr.shape, str(path))
    return arr


def _read_dng(path: Path) -> tuple[np.ndarray, Camera]:
    try:
        import rawpy
    except ImportError:
        raise RawdriftError(f"{path}: reading DNG needs rawpy (pip install rawpy)") from None
    try:
        with rawpy.imread(str(path)) as r:
            pattern = "".join(r.color_desc.decode()[i] for i in r.raw_pattern.flatten())
            raw = np.asarray(r.raw_image_visible, dtype=np.float64)
            white = float(r.white_level)
            black = np.asarray(r.black_level_per_channel, dtype=np.float64)
            wb = np.asarray(r.camera_whitebalance, dtype=np.float64)
            matrix = np.asarray(r.color_matrix, dtype=np.float64)[:, :3]
    except rawpy.LibRawError as e:
        raise RawdriftError(f"{path}: cannot read DNG ({e})") from None
    if pattern != "RGGB":        # LibRaw: color_desc "RGBG", raw_pattern [[0, 1], [3, 2]] for RGGB
        raise RawdriftError(f"{path}: Bayer pattern {pattern} is not RGGB")
    if wb[1] <= 0 or not np.abs(matrix).sum() > 0:
        raise RawdriftError(f"{path}: DNG has no usable white balance or colour matrix")
    scaled = np.clip(np.round(raw / white * RAW_SCALE), 0, RAW_SCALE).astype(np.uint16)
    camera = Camera(black_level=(black / white).tolist(), white_balance=[wb[0] / wb[1], 1.0, wb[2] / wb[1]],
                    colour_matrix=matrix.tolist())
    return _check_raw(scaled, path), camera


def _read_labels(path: Path, stems: list[str], classes: list[str] | None) -> dict[str, str]:
    """stem -> class from labels.csv (file,class) or a record .dat file ("<stem> <CLASS>")."""
    out = {}
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or list(reader.fieldnames)[:2] != ["file", "class"]:
                raise RawdriftError(f"{path}: expected columns file,class, got {reader.fieldnames}")
            rows = [(i + 2, Path(r["file"]).stem, r["class"]) for i, r in enumerate(reader)]
    else:
        rows = []
        for i, line in enumerate(path.read_text().splitlines()):
            parts = line.split()
            if len(parts) == 2:
                rows.append((i + 1, Path(parts[0]).stem, parts[1]))
            elif parts:
                raise RawdriftError(f"{path}: line {i + 1}: expected '<file> <CLASS>', got {line!r}")
    for line, stem, cls in rows:
        if classes is not None and cls not in classes:
            raise RawdriftError(f"{path}: line {line}: unknown class {cls!r}; expected one of {', '.join(classes)}")
        out[stem] = cls
    missing = [s for s in stems if s not in out]
    if missing:
        raise RawdriftError(f"{path}: no label for {len(missing)} raw file(s), e.g. {missing[:3]}")
    return out


def _read_mask(folder: Path, stem: str, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image
    path = folder / f"{stem}.png"
    if not path.exists():
        raise RawdriftError(f"{path}: file not found (every raw image needs a mask)")
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L"))
    except OSError as e:
        raise RawdriftError(f"{path}: cannot read PNG ({e})") from None
    if mask.shape != shape:
        raise RawdriftError(f"{path}: mask is {mask.shape[0]}x{mask.shape[1]}, raw is {shape[0]}x{shape[1]}")
    return (mask > 0).astype(np.uint8)


def _tiles(h: int, w: int, tile: int) -> list[tuple[int, int]]:
    return [(r, c) for r in range(0, h - tile + 1, tile) for c in range(0, w - tile + 1, tile)]


def build(dataset: str, root: str | Path, out: str | Path, *, tile: int, count: int, folds: int, seed: int,
          intensities: list[float], classes: list[str] | None = None, source: str = "folder",
          provenance: dict | None = None) -> dict:
    """Read a folder (:func:`discover`) into ``data/raw/<dataset>/`` (written atomically).

    Args:
        tile: tile side in pixels (even); images are cut with step ``tile``.
        count: keep at most this many tiles (a seeded subset; 0 = all).
        folds: fixed test folds (stratified by class, or by foreground share for masks).
        intensities: exposure ratios wanted; each must exist as a raw_scaleXXX folder.
        classes: allowed classes (own layout); the record uses the published nine.

    Returns:
        the meta dict written to meta.json.
    """
    if tile < 16 or tile % 2:
        raise ParamError("tile", f"must be even and >= 16, got {tile}")
    layout = discover(root, dataset)
    found = sorted(layout.raws)
    missing = [r for r in intensities if not any(abs(r - f) < 1e-9 for f in found)]
    if missing:
        raise RawdriftError(f"{root}: no raw_scaleXXX folder for data.intensities {missing}; found {found}")
    ref = layout.raws[max(found, key=lambda f: -abs(f - 1.0))]
    stems = sorted(s for s in ref if s not in KNOWN_BAD)
    for r in intensities:
        gone = [s for s in stems if s not in layout.raws[_match(found, r)]]
        if gone:
            raise RawdriftError(f"{ref[stems[0]].parent.parent}: raw_scale{round(r * 100):03d} lacks "
                                f"{len(gone)} file(s) of the reference exposure, e.g. {gone[:3]}")
    camera, cameras = None, set()
    labels = None
    task = "classification" if dataset == "microscopy" else "segmentation"
    if task == "classification":
        allowed = _record_classes() if layout.kind == "record" else classes
        labels = _read_labels(layout.labels, stems, allowed)
        if layout.kind == "record":
            counts = {c: sum(1 for s in stems if labels[s] == c) for c in set(labels[s] for s in stems)}
            stems = [s for s in stems if counts[labels[s]] >= MIN_CLASS_IMAGES]
    stacks: dict[float, list[np.ndarray]] = {r: [] for r in intensities}
    tile_labels, tile_masks, tile_ids = [], [], []
    for stem in stems:
        images = {}
        for r in intensities:
            arr, cam = read_raw_file(layout.raws[_match(found, r)][stem])
            images[r] = arr
            if cam is not None:
                cameras.add(json.dumps(cam.to_dict(), sort_keys=True))
                camera = camera or cam
        shape = images[intensities[0]].shape
        for r, arr in images.items():
            if arr.shape != shape:
                raise RawdriftError(f"{layout.raws[_match(found, r)][stem]}: {arr.shape[0]}x{arr.shape[1]}, "
                                    f"other exposures of {stem} are {shape[0]}x{shape[1]}")
        if shape[0] < tile or shape[1] < tile:
            raise RawdriftError(f"{layout.raws[_match(found, intensities[0])][stem]}: {shape[0]}x{shape[1]} is smaller "
                                f"than data.{dataset}.tile {tile}")
        mask = _read_mask(layout.masks, stem, shape) if task == "segmentation" else None
        for r0, c0 in _tiles(shape[0], shape[1], tile):
            if mask is not None:
                m = mask[r0:r0 + tile, c0:c0 + tile]
                if not m.any():
                    continue
                tile_masks.append(m)
            else:
                tile_labels.append(labels[stem])
            for r in intensities:
                stacks[r].append(images[r][r0:r0 + tile, c0:c0 + tile])
            tile_ids.append(f"{stem}@{r0},{c0}")
    if len(cameras) > 1:
        raise RawdriftError(f"{root}: DNG files describe different cameras; keep one camera per dataset")
    n = len(tile_ids)
    if n < folds:
        raise RawdriftError(f"{root}: {n} usable tile(s) of {tile} px, fewer than data.folds ({folds})")
    keep = np.arange(n)
    if count and count < n:
        keep = np.sort(np.random.default_rng([seed, 7]).choice(n, size=count, replace=False))
    if camera is None:
        camera = CAMERAS[dataset] if layout.kind == "record" else _camera_json(layout, root, dataset)
    arrays = {r: np.stack(stacks[r])[keep] for r in intensities}
    if task == "classification":
        lab = np.asarray(tile_labels)[keep]
        class_list = (_record_classes() if layout.kind == "record" else classes) or sorted(set(lab.tolist()))
        class_list = [c for c in class_list if c in set(lab.tolist())]
        strata, masks = lab, None
        counts = {c: int((lab == c).sum()) for c in class_list}
    else:
        masks = np.stack(tile_masks)[keep]
        share = masks.reshape(len(keep), -1).mean(1)
        strata = np.digitize(share, np.quantile(share, [0.25, 0.5, 0.75]))
        class_list, counts = ["background", "car"], {"car_pixel_fraction": float(masks.mean())}
    fold = stratified_folds(strata, folds, seed)
    meta = {"dataset": dataset, "source": source, "task": task, "classes": class_list, "tile": tile, "seed": seed,
            "class_counts": counts,
            "provenance": {"path": str(Path(root).resolve()), "layout": layout.kind,
                           "tiles": [tile_ids[i] for i in keep], **(provenance or {})}}
    with atomic_dir(out) as tmp:
        return write_raw_dataset(tmp, camera=camera, stacks=arrays, folds=fold, meta=meta,
                                 labels=list(lab) if task == "classification" else None, masks=masks)


def _match(found: list[float], r: float) -> float:
    return next(f for f in found if abs(f - r) < 1e-9)


def _record_classes() -> list[str]:
    from rawdrift.sources.microscopy import CLASSES
    return list(CLASSES)


def _camera_json(layout: Layout, root, dataset: str) -> Camera:
    if layout.camera is None:
        raise RawdriftError(f"{root}: TIFF raw needs a camera.json (black_level, white_balance, colour_matrix) "
                            f"beside it; DNG files carry their own")
    return Camera.load(layout.camera)
