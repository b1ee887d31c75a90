"""Figures and tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rawdrift.camera import RAW_SCALE  # noqa: E402
from rawdrift.io import save_figure  # noqa: E402
from rawdrift.isp.static import VIEWS, render_static  # noqa: E402
from rawdrift.sources.store import RawDataset, load_view  # noqa: E402


def views_figure(ds: RawDataset, views_dir: str | Path, out: str | Path, index: int = 0) -> None:
    """One tile in all 12 views (rows 1-2) and at every raw intensity through ``bi_s_ga`` (row 3),
    in the manner of paper figures 3 and 8."""
    intensities = ds.intensities
    cols = max(6, len(intensities))
    fig, axes = plt.subplots(3, cols, figsize=(2.0 * cols, 6.6))
    for ax in axes.ravel():
        ax.axis("off")
    mask = ds.masks()[index] if ds.task == "segmentation" else None
    for k, view in enumerate(VIEWS):
        ax = axes[k // 6, k % 6]
        img = load_view(views_dir, view)[index].transpose(1, 2, 0)
        ax.imshow(img, interpolation="nearest")
        if mask is not None and k == 0:
            ax.contour(mask, levels=[0.5], colors="yellow", linewidths=0.6)
        ax.set_title(view.replace("_", ","), fontsize=9)
    for k, ratio in enumerate(intensities):
        raw = np.asarray(ds.raw(ratio)[index], dtype=np.float64) / RAW_SCALE
        axes[2, k].imshow(render_static(raw, ds.camera, "bi_s_ga").transpose(1, 2, 0), interpolation="nearest")
        axes[2, k].set_title(f"raw x{ratio:g} (bi,s,ga)", fontsize=9)
    label = ""
    if ds.task == "classification":
        label = f" - class {ds.meta['classes'][int(ds.labels()[index])]}"
    fig.suptitle(f"{ds.meta['dataset']} tile {ds.ids[index]}{label}: 12 static views (top), 7 raw intensities (bottom)")
    fig.tight_layout()
    save_figure(fig, out, dpi=80)
    plt.close(fig)
