"""The on-disk raw dataset format shared by every source (DESIGN.md, "Files").

``data/raw/<dataset>/``::

    camera.json           Camera (black level, white balance, colour matrix, ...)
    sensor.json           Sensor electronics (gain, read noise, ADC), when known
    raw_scaleXXX.npy      uint16 (N, H, W) RGGB raw on the 16-bit scale, one per exposure ratio
    labels.csv            id,class        (classification)
    masks.npy             uint8 (N, H, W) (segmentation)
    splits.csv            id,fold         fixed test-fold assignment
    meta.json             source, counts, classes, intensities, provenance, sha256 checksums

``data/views/<dataset>/<view>.npy``: uint16 (N, 3, H, W), the view scaled by 65535, same
order as the raw stack; :func:`load_view` returns float32 in [0, 1].
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rawdrift.camera import Camera, RAW_SCALE
from rawdrift.errors import RawdriftError
from rawdrift.io import read_json, sha256, write_json
from rawdrift.sensor import intensity_name


@dataclass
class RawDataset:
    """A loaded raw dataset (arrays are memory-mapped)."""

    root: Path
    meta: dict
    camera: Camera
    ids: list[str]
    folds: np.ndarray

    @property
    def intensities(self) -> list[float]:
        return [float(r) for r in self.meta["intensities"]]

    @property
    def task(self) -> str:
        return self.meta["task"]

    def raw(self, ratio: float = 1.0) -> np.ndarray:
        """uint16 (N, H, W) raw stack at an exposure ratio."""
        name = intensity_name(ratio)
        return _load_npy(self.root / f"{name}.npy", np.uint16, 3)

    def labels(self) -> np.ndarray:
        """(N,) int class indices (classification)."""
        path = self.root / "labels.csv"
        rows = _read_csv(path, ("id", "class"))
        classes = self.meta["classes"]
        out = []
        for i, row in enumerate(rows):
            if row["class"] not in classes:
                raise RawdriftError(f"{path}: line {i + 2}: unknown class {row['class']!r}")
            out.append(classes.index(row["class"]))
        if [r["id"] for r in rows] != self.ids:
            raise RawdriftError(f"{path}: ids differ from splits.csv")
        return np.asarray(out, dtype=np.int64)

    def masks(self) -> np.ndarray:
        """uint8 (N, H, W) binary masks (segmentation)."""
        return _load_npy(self.root / "masks.npy", np.uint8, 3)


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or list(reader.fieldnames)[: len(columns)] != list(columns):
                raise RawdriftError(f"{path}: expected columns {','.join(columns)}, got {reader.fieldnames}")
            return list(reader)
    except FileNotFoundError:
        raise RawdriftError(f"{path}: file not found") from None


def _load_npy(path: Path, dtype, ndim: int) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise RawdriftError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise RawdriftError(f"{path}: truncated or corrupt .npy ({e})") from None
    if arr.dtype != dtype or arr.ndim != ndim:
        raise RawdriftError(f"{path}: expected {np.dtype(dtype).name} with {ndim} dims, got {arr.dtype} {arr.shape}")
    return arr


def write_raw_dataset(out: Path, *, camera: Camera, stacks: dict[float, np.ndarray], folds: np.ndarray,
                      meta: dict, labels: list[str] | None = None, masks: np.ndarray | None = None,
                      sensor: dict | None = None) -> dict:
    """Write the files of one dataset into an (empty, temporary) folder ``out``; meta.json last.

    ``meta`` must hold at least ``source``, ``task`` and ``classes``; counts, intensities,
    shapes and checksums are added here; the complete meta is returned.
    """
    ids = [f"{i:05d}" for i in range(len(folds))]
    write_json(out / "camera.json", camera.to_dict())
    if sensor is not None:
        write_json(out / "sensor.json", sensor)
    shape = None
    for ratio, stack in sorted(stacks.items()):
        if stack.dtype != np.uint16 or stack.ndim != 3 or stack.shape[0] != len(ids):
            raise RawdriftError(f"raw stack {ratio}: expected uint16 (N, H, W) with N={len(ids)}")
        shape = stack.shape
        np.save(out / f"{intensity_name(ratio)}.npy", stack)
    if labels is not None:
        with open(out / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "class"])
            w.writerows(zip(ids, labels))
    if masks is not None:
        np.save(out / "masks.npy", masks.astype(np.uint8))
    with open(out / "splits.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "fold"])
        w.writerows(zip(ids, (int(k) for k in folds)))
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    meta = dict(meta, count=len(ids), height=shape[1], width=shape[2],
                intensities=sorted(float(r) for r in stacks), folds=int(np.max(folds)) + 1,
                checksums={name: sha256(out / name) for name in files})
    write_json(out / "meta.json", meta)
    return meta


def load_raw_dataset(root: str | Path, verify: bool = False) -> RawDataset:
    """Open ``data/raw/<dataset>/``; with ``verify`` every file's sha256 is checked."""
    root = Path(root)
    meta = read_json(root / "meta.json", " (run the fetch stage first)")
    if verify:
        for name, digest in meta.get("checksums", {}).items():
            path = root / name
            if not path.exists():
                raise RawdriftError(f"{path}: file not found")
            if sha256(path) != digest:
                raise RawdriftError(f"{path}: checksum mismatch (file changed or corrupt)")
    camera = Camera.load(root / "camera.json")
    rows = _read_csv(root / "splits.csv", ("id", "fold"))
    try:
        folds = np.asarray([int(r["fold"]) for r in rows], dtype=np.int64)
    except ValueError:
        raise RawdriftError(f"{root / 'splits.csv'}: fold must be an integer") from None
    return RawDataset(root=root, meta=meta, camera=camera, ids=[r["id"] for r in rows], folds=folds)


def load_targets(ds: RawDataset):
    """Task targets as a torch tensor: (N,) int64 class indices or (N, H, W) uint8 masks."""
    import torch
    if ds.task == "classification":
        return torch.from_numpy(ds.labels())
    return torch.from_numpy(np.array(ds.masks()))


def view_to_uint16(view: np.ndarray) -> np.ndarray:
    """float view(s) in [0, 1] -> uint16 scaled by 65535 (error <= 7.7e-6)."""
    return np.round(np.clip(view, 0, 1) * RAW_SCALE).astype(np.uint16)


def load_view(views_dir: str | Path, view: str, index: np.ndarray | None = None) -> np.ndarray:
    """float32 (N, 3, H, W) in [0, 1] of one rendered view; with ``index`` only those tiles
    are read and converted (the file stays memory-mapped)."""
    arr = _load_npy(Path(views_dir) / f"{view}.npy", np.uint16, 4)
    if index is not None:
        arr = arr[index]
    return np.asarray(arr, dtype=np.float32) / np.float32(RAW_SCALE)
