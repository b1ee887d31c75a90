"""Cross-evaluation: every fold model of every train view on its held-out tiles in every view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rawdrift.isp.static import VIEWS
from rawdrift.models import check_fold_counts, load_fold_model
from rawdrift.tasks import METRIC, predict, score


def load_held_out(views_dir: str | Path, view: str, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    """Tiles ``idx`` of one view as a channels_last (n, 3, H, W) float32 tensor on ``device``."""
    from rawdrift.sources.store import load_view
    return torch.from_numpy(load_view(views_dir, view, idx)).to(device).contiguous(memory_format=torch.channels_last)


def crosseval(models_dir: str | Path, views_dir: str | Path, targets: torch.Tensor, folds: np.ndarray, task: str,
              device: torch.device, batch_size: int = 64, views=VIEWS, progress: bool = True,
              amp: bool | None = None) -> dict:
    """Compute the (train view x test view) matrix per fold.

    Args:
        models_dir: ``models/<dataset>`` holding one folder per train view.
        views_dir: ``data/views/<dataset>``.
        targets: (N,) labels or (N, H, W) masks.
        folds: (N,) test-fold index per tile.
        amp: bf16 autocast for inference; None -> on CUDA only.

    Returns:
        the ``metrics/crosseval/<dataset>.json`` dict: metric, views, folds, mean, std (over
        folds, ddof=1), per_fold (k x 12 x 12); rows = train view, columns = test view.
    """
    views = tuple(views)
    k_folds = int(folds.max()) + 1
    check_fold_counts(models_dir, views, k_folds)
    per_fold = np.zeros((k_folds, len(views), len(views)))
    amp = device.type == "cuda" if amp is None else amp
    bar = tqdm(total=k_folds * len(views), desc=f"crosseval {Path(views_dir).name}", unit="model",
               disable=None if progress else True, leave=False)
    for k in range(k_folds):
        idx = np.flatnonzero(folds == k)
        held = {v: load_held_out(views_dir, v, idx, device) for v in views}
        y = targets[torch.from_numpy(idx)].to(device)
        for i, train_view in enumerate(views):
            model = load_fold_model(Path(models_dir) / train_view, k, device)
            for j, test_view in enumerate(views):
                per_fold[k, i, j] = score(task, predict(model, held[test_view], batch_size, amp), y)
            bar.update()
    bar.close()
    return {"metric": METRIC[task], "views": list(views), "folds": k_folds,
            "mean": per_fold.mean(0).tolist(),
            "std": (per_fold.std(0, ddof=1) if k_folds > 1 else np.zeros_like(per_fold[0])).tolist(),
            "per_fold": per_fold.tolist()}


def headline(result: dict) -> dict:
    """Diagonal mean, off-diagonal mean, their drop, and rankings (paper tables 5, 6, 8; figures 4, 5)."""
    from rawdrift.reports import best_row_per_column, matrix_frame, rank_per_column, ranking
    mean = np.asarray(result["mean"])
    views = result["views"]
    off = ~np.eye(len(views), dtype=bool)
    table = matrix_frame(mean, views, views)       # rows = train view, columns = test view
    return {
        "metric": result["metric"], "folds": result["folds"],
        "diagonal_mean": float(np.diag(mean).mean()),
        "diagonal_std_mean": float(np.diag(np.asarray(result["std"])).mean()),
        "off_diagonal_mean": float(mean[off].mean()),
        "drop": float(np.diag(mean).mean() - mean[off].mean()),
        "train_view_ranking": ranking(table),
        "best_train_view_per_test_view": best_row_per_column(table),
        "rank_per_test_view": rank_per_column(table),
        "worst_pair": _worst_pair(mean, views),
    }


def _worst_pair(mean: np.ndarray, views) -> dict:
    drop = np.diag(mean)[:, None] - mean
    i, j = np.unravel_index(np.argmax(drop), drop.shape)
    return {"train_view": views[i], "test_view": views[j], "drop": float(drop[i, j])}
