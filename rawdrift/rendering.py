"""Rendering whole raw stacks into the 12 views: in parallel over CPU cores with the reference
functions (:func:`render_stack`), or batched on a GPU (:func:`render_stack_torch`)."""

from __future__ import annotations

import multiprocessing as mp
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rawdrift.camera import Camera, RAW_SCALE, check_raw
from rawdrift.errors import RawdriftError
from rawdrift.io import atomic_dir
from rawdrift.isp.static import VIEWS, parse_view, render_static
from rawdrift.processes import process_count
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


def _open_raw_stack(raw_path: str | Path, views: tuple[str, ...]) -> np.ndarray:
    """The memory-mapped uint16 (N, H, W) raw stack, checked (and the view names) before anything is written."""
    for v in views:
        parse_view(v)
    raw = np.load(raw_path, mmap_mode="r")
    if raw.dtype != np.uint16 or raw.ndim != 3:
        raise RawdriftError(f"{raw_path}: expected uint16 (N, H, W), got {raw.dtype} {raw.shape}")
    h, w = raw.shape[1:]
    if h < 4 or w < 4 or h % 2 or w % 2:
        raise RawdriftError(f"{raw_path}: raw sides must be even and >= 4 for an RGGB mosaic, got {h}x{w}")
    return raw


@contextmanager
def _view_writer(out_dir: str | Path, views: tuple[str, ...], shape: tuple[int, ...], progress: bool):
    """Yield ({view: uint16 (N, 3, H, W) memmap}, progress bar) in a temporary directory that
    replaces ``out_dir`` only once the block has filled every view."""
    n, h, w = shape
    with atomic_dir(out_dir) as tmp:
        outs = {v: np.lib.format.open_memmap(tmp / f"{v}.npy", mode="w+", dtype=np.uint16, shape=(n, 3, h, w))
                for v in views}
        bar = tqdm(total=n, desc=f"render {Path(out_dir).name}", unit="tile", disable=None if progress else True,
                   leave=False)
        yield outs, bar
        bar.close()
        for arr in outs.values():
            arr.flush()
        del outs


def render_stack(raw_path: str | Path, camera: Camera, out_dir: str | Path, views=VIEWS,
                 workers: int = 0, progress: bool = True) -> dict:
    """Render every tile of a uint16 raw stack (N, H, W) in each view; write ``<view>.npy`` atomically.

    Args:
        raw_path: ``raw_scale100.npy`` (or another intensity).
        camera: colour parameters of the dataset.
        out_dir: ``data/views/<dataset>``; replaced as a whole when every view is done.
        views: view names (default all 12).
        workers: processes (0: one per available core, :mod:`rawdrift.processes`).

    Returns:
        {"images": N, "views": len(views), "workers": w}
    """
    views = tuple(views)
    raw = _open_raw_stack(raw_path, views)
    n = raw.shape[0]
    n_workers = process_count(n, workers)
    with _view_writer(out_dir, views, raw.shape, progress) as (outs, bar):
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
    return {"images": n, "views": len(views), "workers": n_workers}


def render_stack_torch(raw_path: str | Path, camera: Camera, out_dir: str | Path, device, views=VIEWS,
                       batch_size: int = 64, progress: bool = True) -> dict:
    """:func:`render_stack` with the batched torch views (:mod:`rawdrift.isp.batched`) on ``device``.

    float64 on the device from the uint16 raw, as the reference: the stored uint16 views equal
    :func:`render_stack`'s (float32 would break Menon's exact direction ties differently at
    isolated pixels). Returns {"images", "views", "device"}.
    """
    import torch
    from rawdrift.isp.batched import render_batch
    views = tuple(views)
    raw = _open_raw_stack(raw_path, views)
    n = raw.shape[0]
    with _view_writer(out_dir, views, raw.shape, progress) as (outs, bar):
        for i in range(0, n, batch_size):
            x = torch.from_numpy(np.array(raw[i:i + batch_size])).to(device).double() / RAW_SCALE
            for v in views:
                outs[v][i:i + x.shape[0]] = view_to_uint16(render_batch(x, camera, v).cpu().numpy())
            bar.update(x.shape[0])
    return {"images": n, "views": len(views), "device": str(device)}
