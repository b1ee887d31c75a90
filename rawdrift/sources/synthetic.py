"""The embedded, physically based raw source (``data.source: synthetic``).

Every tile is generated from its own seeded random stream (seed, dataset, tile index), so
results do not depend on the number of worker processes. Each tile's mean photo-electron
image is exposed at every ratio of ``intensities`` independently (separate exposures of
the same scene), as the published sets hold every tile at 7 raw intensities.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rawdrift import checks
from rawdrift.camera import CAMERAS
from rawdrift.errors import ParamError, RawdriftError
from rawdrift.io import atomic_dir
from rawdrift.processes import process_count
from rawdrift.sensor import SENSORS, expose
from rawdrift.sources import drone, microscopy
from rawdrift.sources.store import write_raw_dataset
from rawdrift.splits import stratified_folds

_DATASET_SALT = {"microscopy": 1, "drone": 2}


def class_counts(count: int, shares: dict[str, float]) -> dict[str, int]:
    """Split ``count`` into per-class counts by largest remainder; every class gets >= 1 when count allows."""
    total = sum(shares.values())
    exact = {c: count * s / total for c, s in shares.items()}
    counts = {c: int(np.floor(v)) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: exact[c] - counts[c], reverse=True)[: count - sum(counts.values())]:
        counts[c] += 1
    if count >= len(shares):
        for c in shares:
            if counts[c] == 0:   # take one from the largest class
                donor = max(counts, key=counts.get)
                counts[donor] -= 1
                counts[c] = 1
    return counts


def _tile_rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _DATASET_SALT[dataset], index])


def _make_tile(job):
    dataset, seed, index, tile, label, ratios, optics = job
    rng = _tile_rng(seed, dataset, index)
    if dataset == "microscopy":
        electrons, mask = microscopy.render_tile(rng, label, tile, optics), None
    else:
        electrons, mask = drone.render_tile(rng, tile)
    sensor = SENSORS[dataset]
    raws = [expose(electrons, sensor, r, rng) for r in ratios]
    return index, np.stack(raws), mask


def generate(dataset: str, out: str | Path, *, count: int, tile: int, folds: int, seed: int,
             intensities: list[float], workers: int = 0, progress: bool = True, optics: str = "matched") -> dict:
    """Generate a synthetic dataset and write it atomically to ``out`` (``data/raw/<dataset>``).

    Args:
        dataset: ``microscopy`` or ``drone``.
        count: number of tiles (paper: 940 / 548).
        tile: tile side in pixels, even (paper: 256); the field of view is fixed.
        folds: number of test folds for the fixed split assignment.
        seed: master seed.
        intensities: exposure ratios in (0, 1], 1.0 included.
        workers: processes (0: one per available core, :mod:`rawdrift.processes`).
        optics: microscopy only, how the objective follows a pixel larger than the study's:
            ``matched`` or ``objective`` (:mod:`rawdrift.sources.microscopy`, "Tile geometry").

    Returns:
        the meta dict written to meta.json.
    """
    if dataset not in CAMERAS:
        raise RawdriftError(f"unknown dataset {dataset!r}; expected one of {', '.join(CAMERAS)}")
    if count < folds:
        raise ParamError("count", f"must be >= folds ({folds}), got {count}")
    if tile < 16 or tile % 2:
        raise ParamError("tile", f"must be even and >= 16, got {tile}")
    rng = np.random.default_rng([seed, _DATASET_SALT[dataset]])
    if dataset == "microscopy":
        counts = class_counts(count, microscopy.CLASS_SHARES)
        labels = np.array([c for c, k in counts.items() for _ in range(k)])
        rng.shuffle(labels)
        classes = list(microscopy.CLASSES)
    else:
        labels = np.array([None] * count)
        classes = ["background", "car"]
    if dataset == "microscopy":
        checks.choice("optics", optics, microscopy.OPTICS)
    jobs = [(dataset, seed, i, tile, labels[i], intensities, optics) for i in range(count)]
    stacks = {r: np.empty((count, tile, tile), np.uint16) for r in intensities}
    masks = np.empty((count, tile, tile), np.uint8) if dataset == "drone" else None
    n_workers = process_count(count, workers)
    ctx = mp.get_context("spawn" if os.name == "nt" else "fork")
    bar = tqdm(total=count, desc=f"fetch {dataset}", unit="tile", disable=None if progress else True, leave=False)
    with ctx.Pool(n_workers) if n_workers > 1 else _Serial() as pool:
        for index, raws, mask in pool.imap_unordered(_make_tile, jobs, chunksize=4):
            for r, raw in zip(intensities, raws):
                stacks[r][index] = raw
            if masks is not None:
                masks[index] = mask
            bar.update()
    bar.close()
    if dataset == "microscopy":
        strata = labels
    else:   # stratify by number of car pixels (quartiles) so folds share small and large cars
        strata = np.digitize(masks.reshape(count, -1).mean(1), np.quantile(masks.reshape(count, -1).mean(1), [0.25, 0.5, 0.75]))
    fold = stratified_folds(strata, folds, seed)
    meta = {
        "dataset": dataset, "source": "synthetic",
        "task": "classification" if dataset == "microscopy" else "segmentation",
        "classes": classes, "tile": tile, "seed": seed,
        "class_counts": ({c: int((labels == c).sum()) for c in classes} if dataset == "microscopy"
                         else {"car_pixel_fraction": float(masks.mean())}),
        "provenance": {
            "generator": f"rawdrift.sources.{dataset}",
            "field_of_view": (f"{microscopy.FIELD_UM:.1f} um" if dataset == "microscopy" else f"{drone.FIELD_M:.2f} m"),
            "pixel_pitch": (f"{microscopy.FIELD_UM / tile:.4f} um (sample plane)" if dataset == "microscopy"
                            else f"{drone.FIELD_M / tile:.4f} m (ground sampling distance)"),
            "sensor": SENSORS[dataset].to_dict(),
            **({"optics": optics, "psf_fwhm_525nm_um": round(microscopy.PSF_FWHM_UM_AT_525
                                                             * microscopy.optical_scale(tile, optics), 4)}
               if dataset == "microscopy" else {}),
            "licence": "generated data, CC0",
        },
    }
    with atomic_dir(out) as tmp:
        meta = write_raw_dataset(tmp, camera=CAMERAS[dataset], stacks=stacks, folds=fold, meta=meta,
                          labels=list(labels) if dataset == "microscopy" else None, masks=masks,
                          sensor=SENSORS[dataset].to_dict())
    return meta


class _Serial:
    """A stand-in for a one-process pool (no fork for a single worker)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(fn, jobs, chunksize=1):
        return map(fn, jobs)
