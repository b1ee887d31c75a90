"""Stage render@<dataset>: the static views of the reference-exposure raw (the ``views`` param: all 12 by
default), and the views figure.

Usage: python stages/render.py <dataset>
"""

from __future__ import annotations

import time
from pathlib import Path

from rawdrift import params as P
from rawdrift.isp.static import REFERENCE_VIEW, VIEWS
from rawdrift.reports import views_figure
from rawdrift.rendering import render_stack, render_stack_torch
from rawdrift.runtime import resolve_device
from rawdrift.sensor import intensity_name
from rawdrift.sources.store import load_raw_dataset
from rawdrift.cli import dataset_arg, run


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "render.py")
    params = P.load_params()
    workers = P.workers()
    views = P.views(params, VIEWS, (REFERENCE_VIEW,))
    with P.sourced():
        device = resolve_device(P.get(params, "device"), allow_auto=False)
    ds = load_raw_dataset(Path("data/raw") / dataset, verify=True)
    views_dir = Path("data/views") / dataset
    raw_path = ds.root / f"{intensity_name(1.0)}.npy"
    start = time.perf_counter()
    if device.type == "cuda":     # batched torch views, bit-identical to the CPU reference (float64)
        info = render_stack_torch(raw_path, ds.camera, views_dir, device, views=views)
        where = f"batched on {info['device']}"
    else:
        info = render_stack(raw_path, ds.camera, views_dir, views=views, workers=workers)
        where = f"with {info['workers']} worker(s)"
    seconds = time.perf_counter() - start
    views_figure(ds, views_dir, Path("plots/views") / f"{dataset}.png", views)
    rate = info["images"] * info["views"] / seconds
    return (f"render@{dataset}: {info['views']} views x {info['images']} tiles, "
            f"{rate:.1f} view-images/s {where}")


if __name__ == "__main__":
    run(main)
