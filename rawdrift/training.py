"""k-fold training of task models on one view, with the data resident on the device.

The k fold models train in lockstep (one epoch of each fold in turn), so the per-epoch
curves of all folds are logged at the same step. The hot loop gathers batches by index
from the device-resident view tensor and augments them on the device with the dihedral
group (flips and 90-degree rotations, the same transform on the mask): no per-sample Python.
Tensors are channels_last; bf16 autocast when ``amp`` (see :mod:`rawdrift.runtime`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from rawdrift.errors import RawdriftError
from rawdrift.tasks import METRIC, TaskConfig, TaskModel, loss_fn, predict, score


def dihedral_augment(x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator):
    """Random element of the dihedral group D4 per sample: optional transpose, h-flip, v-flip.

    x: (B, C, H, H); y: None, (B,) labels (unchanged) or (B, H, H) masks (same transform).
    """
    b = x.shape[0]
    flags = torch.rand(b, 3, generator=generator, device=x.device) < 0.5
    ops = (lambda t: t.transpose(-1, -2), lambda t: t.flip(-1), lambda t: t.flip(-2))
    for j, op in enumerate(ops):
        fx = flags[:, j].reshape(b, 1, 1, 1)
        x = torch.where(fx, op(x), x)
        if y is not None and y.ndim == 3:
            y = torch.where(fx[:, 0], op(y), y)
    return x, y


def channel_stats(views: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, C, H, W) inputs in [0, 1] (the model's input normalisation)."""
    v = views.double()
    return v.mean(dim=(0, 2, 3)).tolist(), v.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


#: Training tiles whose statistics replace the BatchNorm running averages before each evaluation.
BN_TILES: int = 64


def recalibrate_batchnorm(model: torch.nn.Module, views: torch.Tensor, batch_size: int, amp: bool = False) -> None:
    """Replace BatchNorm running statistics by their average over ``views`` (precise BN).

    With few optimisation steps per epoch, the exponential running averages (momentum 0.1)
    lag far behind the weights and eval-mode predictions collapse (e.g. an all-background
    mask); a forward pass over the training tiles in train mode, with a cumulative average,
    gives the statistics of the current weights. Only the BN buffers change.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad(), torch.autocast(views.device.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(0, views.shape[0], batch_size):
            if views[i:i + batch_size].shape[0] > 1:
                model(views[i:i + batch_size])
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum


def optimisation_step(model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TaskConfig, xb: torch.Tensor,
                      yb: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """One Adam step on a batch (bf16 autocast when ``amp``); returns the detached loss."""
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = loss_fn(cfg, model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


@dataclass
class FoldResult:
    """One fold's trained model and its curves (per epoch)."""

    model: TaskModel
    train_loss: list[float]
    val_metric: list[float]


def train_folds(cfg: TaskConfig, views: torch.Tensor, targets: torch.Tensor, folds: np.ndarray, seed: int,
                device: torch.device, live=None, progress: bool = True, desc: str = "train",
                amp: bool | None = None) -> list[FoldResult]:
    """Train one model per test fold on the other folds' tiles of one view.

    Args:
        cfg: task configuration.
        views: (N, 3, H, W) float in [0, 1] (moved to ``device`` here).
        targets: (N,) class indices or (N, H, W) uint8 masks.
        folds: (N,) test-fold index per tile (the fixed split assignment).
        seed: base seed; fold k uses ``seed * 1000 + k``.
        device: where to train.
        amp: bf16 autocast; None -> on CUDA only (the ``precision`` param resolves it in stages).
        live: optional dvclive ``Live``: logs ``fold<k>/train_loss``, ``fold<k>/val_<metric>``
            and their means over folds, one step per epoch.

    Returns:
        one :class:`FoldResult` per fold, in fold order.
    """
    if views.shape[-1] != views.shape[-2]:
        raise RawdriftError(f"views must be square for rotation augmentation, got {tuple(views.shape[-2:])}")
    amp = device.type == "cuda" if amp is None else amp
    fmt = torch.channels_last
    x_all = views.to(device).contiguous(memory_format=fmt)
    y_all = targets.to(device)
    k_folds = int(folds.max()) + 1
    metric = METRIC[cfg.task]
    states = []
    for k in range(k_folds):
        train_idx = torch.as_tensor(np.flatnonzero(folds != k), device=device)
        test_idx = torch.as_tensor(np.flatnonzero(folds == k), device=device)
        torch.manual_seed(seed * 1000 + k)
        model = TaskModel(cfg)
        mean, std = channel_stats(views[train_idx.cpu()])
        model.normalize.set_stats(mean, std)
        model = model.to(device, memory_format=fmt)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.schedule == "cosine"
                 else None)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed * 1000 + k)
        states.append((model, opt, sched, gen, train_idx, test_idx, FoldResult(model, [], [])))
    bar = tqdm(total=cfg.epochs * k_folds, desc=desc, unit="fold-epoch", disable=None if progress else True, leave=False)
    for epoch in range(cfg.epochs):
        for k, (model, opt, sched, gen, train_idx, test_idx, res) in enumerate(states):
            model.train()
            perm = train_idx[torch.randperm(train_idx.numel(), generator=gen, device=device)]
            total, count = 0.0, 0
            for i in range(0, perm.numel(), cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                if idx.numel() < 2:      # BatchNorm needs two samples
                    continue
                xb, yb = dihedral_augment(x_all[idx], y_all[idx], gen)
                loss = optimisation_step(model, opt, cfg, xb, yb, amp=amp)
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            if sched is not None:
                sched.step()
            res.train_loss.append(total / max(count, 1))
            recalibrate_batchnorm(model, x_all[train_idx[:BN_TILES]], max(cfg.batch_size, 32), amp=amp)
            pred = predict(model, x_all[test_idx], max(cfg.batch_size, 64), amp=amp)
            res.val_metric.append(score(cfg.task, pred, y_all[test_idx]))
            if live is not None:
                live.log_metric(f"fold{k}/train_loss", res.train_loss[-1])
                live.log_metric(f"fold{k}/val_{metric}", res.val_metric[-1])
            bar.update()
        if live is not None:
            live.log_metric("train_loss", float(np.mean([s[-1].train_loss[-1] for s in states])))
            live.log_metric(f"val_{metric}", float(np.mean([s[-1].val_metric[-1] for s in states])))
            live.next_step()
    bar.close()
    return [s[-1] for s in states]
