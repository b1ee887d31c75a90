"""Rendering whole raw stacks into the 12 views, in parallel over CPU cores."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rawdrift.camera import Camera, RAW_SCALE, check_raw
from rawdrift.errors import RawdriftError
from rawdrift.io import atomic_dir
from rawdrift.isp.static import VIEWS, parse_view, render_static
from rawdrift.sources.store import view_to_uint16

_STATE: dict = {}


def _init(raw_path: str, camera: Camera, views: tuple[str, ...]) -> None:
    _STATE["raw"] = np.load(raw_path, mmap_mode="r")
    _STATE["camera"] = camera
    _STATE["views"] = views


def _render_one(index: int):
    raw = np.asarray(_STATE["raw"][index], dtype=np.float64) / RAW_SCALE
    check_raw(raw, where=f"raw tile {index}")
    return index, np.stack([view_to_uint16(render_static(raw, _STATE["camera"], v)) for v in _STATE["views"]])


def render_stack(raw_path: str | Path, camera: Camera, out_dir: str | Path, views=VIEWS,
                 workers: int = 0, progress: bool = True) -> dict:
    """Render every tile of a uint16 raw stack (N, H, W) in each view; write ``<view>.npy`` atomically.

    Args:
        raw_path: ``raw_scale100.npy`` (or another intensity).
        camera: colour parameters of the dataset.
        out_dir: ``data/views/<dataset>``; replaced as a whole when every view is done.
        views: view names (default all 12).
        workers: processes (0 = all cores).

    Returns:
        {"images": N, "views": len(views), "workers": w}
    """
    views = tuple(views)
    for v in views:
        parse_view(v)
    raw = np.load(raw_path, mmap_mode="r")
    if raw.dtype != np.uint16 or raw.ndim != 3:
        raise RawdriftError(f"{raw_path}: expected uint16 (N, H, W), got {raw.dtype} {raw.shape}")
    n, h, w = raw.shape
    n_workers = max(1, min(os.cpu_count() or 1 if workers <= 0 else workers, n))
    with atomic_dir(out_dir) as tmp:
        outs = {v: np.lib.format.open_memmap(tmp / f"{v}.npy", mode="w+", dtype=np.uint16, shape=(n, 3, h, w))
                for v in views}
        bar = tqdm(total=n, desc=f"render {Path(out_dir).name}", unit="tile", disable=None if progress else True,
                   leave=False)
        if n_workers > 1:
            ctx = mp.get_context("fork")
            with ctx.Pool(n_workers, initializer=_init, initargs=(str(raw_path), camera, views)) as pool:
                results = pool.imap_unordered(_render_one, range(n), chunksize=max(1, min(16, n // (4 * n_workers))))
                for index, stack in results:
                    for v, img in zip(views, stack):
                        outs[v][index] = img
                    bar.update()
        else:
            _init(str(raw_path), camera, views)
            for index in range(n):
                _, stack = _render_one(index)
                for v, img in zip(views, stack):
                    outs[v][index] = img
                bar.update()
        bar.close()
        for arr in outs.values():
            arr.flush()
        del outs
    return {"images": n, "views": len(views), "workers": n_workers}
