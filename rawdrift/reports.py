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


def crosseval_heatmap(result: dict, out: str | Path, title: str) -> None:
    """Heatmap of the 12x12 matrix (figures 4, 5): mean and std in each cell, row rank by
    average over test views, a star on the best train view of each column."""
    mean, std = np.asarray(result["mean"]), np.asarray(result["std"])
    views = result["views"]
    n = len(views)
    row_avg = mean.mean(1)
    rank = (-row_avg).argsort(kind="stable").argsort(kind="stable") + 1
    fig, ax = plt.subplots(figsize=(11, 9))
    im = ax.imshow(mean, cmap="viridis", vmin=max(0.0, mean.min() - 0.05), vmax=min(1.0, mean.max() + 0.02))
    best = mean.argmax(0)
    for i in range(n):
        for j in range(n):
            star = "*" if best[j] == i else ""
            ax.text(j, i, f"{mean[i, j]:.2f}{star}\n±{std[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if mean[i, j] < (mean.min() + mean.max()) / 2 else "black")
    ax.set_xticks(range(n), [v.replace("_", ",") for v in views], rotation=60, fontsize=8)
    ax.set_yticks(range(n), [f"({rank[i]}) {v.replace('_', ',')}" for i, v in enumerate(views)], fontsize=8)
    ax.set_xlabel("test view")
    ax.set_ylabel("train view (rank by average over test views)")
    fig.colorbar(im, ax=ax, label=f"{result['metric']} (mean over {result['folds']} folds)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=90)
    plt.close(fig)


def pair_figure(a: np.ndarray, b: np.ndarray, labels: tuple[str, str], out: str | Path, title: str) -> None:
    """One tile as view A, as view B, and |A - B| per channel (views (3, H, W) in [0, 1])."""
    diff = np.abs(a - b)
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
    axes[0].imshow(a.transpose(1, 2, 0), interpolation="nearest")
    axes[0].set_title(labels[0])
    axes[1].imshow(b.transpose(1, 2, 0), interpolation="nearest")
    axes[1].set_title(labels[1])
    vmax = max(float(diff.max()), 1e-6)
    for c, name in enumerate("RGB"):
        im = axes[2 + c].imshow(diff[c], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        axes[2 + c].set_title(f"|A - B| {name} (mean {diff[c].mean():.3f})")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes[2:].tolist(), shrink=0.8)
    fig.suptitle(title)
    save_figure(fig, out, dpi=80)
    plt.close(fig)
