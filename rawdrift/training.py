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


@dataclass
class _Fold:
    """What one fold carries through training: model, optimiser, schedule, random stream, tiles."""

    k: int
    model: TaskModel
    opt: torch.optim.Optimizer
    sched: object
    gen: torch.Generator
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    result: FoldResult


def _new_fold(cfg: TaskConfig, views: torch.Tensor, folds: np.ndarray, k: int, seed: int,
              device: torch.device) -> _Fold:
    """Fold ``k``'s model (initialised from ``seed * 1000 + k``), optimiser and tile indices."""
    train_idx = torch.as_tensor(np.flatnonzero(folds != k), device=device)
    test_idx = torch.as_tensor(np.flatnonzero(folds == k), device=device)
    torch.manual_seed(seed * 1000 + k)
    model = TaskModel(cfg)
    mean, std = channel_stats(views[train_idx.cpu()])
    model.normalize.set_stats(mean, std)
    model = model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.schedule == "cosine"
             else None)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1000 + k)
    return _Fold(k, model, opt, sched, gen, train_idx, test_idx, FoldResult(model, [], []))


def _train_epoch(f: _Fold, cfg: TaskConfig, x_all: torch.Tensor, y_all: torch.Tensor, amp: bool) -> None:
    """One epoch of fold ``f`` (shuffled batches, dihedral augmentation), then its held-out metric."""
    f.model.train()
    perm = f.train_idx[torch.randperm(f.train_idx.numel(), generator=f.gen, device=x_all.device)]
    total, count = 0.0, 0
    for i in range(0, perm.numel(), cfg.batch_size):
        idx = perm[i:i + cfg.batch_size]
        if idx.numel() < 2:      # BatchNorm needs two samples
            continue
        xb, yb = dihedral_augment(x_all[idx], y_all[idx], f.gen)
        loss = optimisation_step(f.model, f.opt, cfg, xb, yb, amp=amp)
        total += float(loss.detach()) * idx.numel()
        count += idx.numel()
    if f.sched is not None:
        f.sched.step()
    f.result.train_loss.append(total / max(count, 1))
    recalibrate_batchnorm(f.model, x_all[f.train_idx[:BN_TILES]], max(cfg.batch_size, 32), amp=amp)
    pred = predict(f.model, x_all[f.test_idx], max(cfg.batch_size, 64), amp=amp)
    f.result.val_metric.append(score(cfg.task, pred, y_all[f.test_idx]))


def _log_epoch(live, results: list[FoldResult], epoch: int, metric: str) -> None:
    for k, r in enumerate(results):
        live.log_metric(f"fold{k}/train_loss", r.train_loss[epoch])
        live.log_metric(f"fold{k}/val_{metric}", r.val_metric[epoch])
    live.log_metric("train_loss", float(np.mean([r.train_loss[epoch] for r in results])))
    live.log_metric(f"val_{metric}", float(np.mean([r.val_metric[epoch] for r in results])))
    live.next_step()


def _check_inputs(views: torch.Tensor) -> None:
    if views.shape[-1] != views.shape[-2]:
        raise RawdriftError(f"views must be square for rotation augmentation, got {tuple(views.shape[-2:])}")


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
    _check_inputs(views)
    amp = device.type == "cuda" if amp is None else amp
    x_all = views.to(device).contiguous(memory_format=torch.channels_last)
    y_all = targets.to(device)
    k_folds = int(folds.max()) + 1
    states = [_new_fold(cfg, views, folds, k, seed, device) for k in range(k_folds)]
    bar = tqdm(total=cfg.epochs * k_folds, desc=desc, unit="fold-epoch", disable=None if progress else True, leave=False)
    for epoch in range(cfg.epochs):
        for f in states:
            _train_epoch(f, cfg, x_all, y_all, amp)
            bar.update()
        if live is not None:
            _log_epoch(live, [f.result for f in states], epoch, METRIC[cfg.task])
    bar.close()
    return [f.result for f in states]


def _fold_worker(cfg: TaskConfig, views: torch.Tensor, targets: torch.Tensor, folds: np.ndarray, k: int, seed: int,
                 device: str, amp: bool, threads: int) -> tuple[dict, list[float], list[float]]:
    """Train fold ``k`` alone (a worker process): its weights on the CPU and its curves."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    dev = torch.device(device)
    x_all = views.to(dev).contiguous(memory_format=torch.channels_last)
    y_all = targets.to(dev)
    f = _new_fold(cfg, views, folds, k, seed, dev)
    for _ in range(cfg.epochs):
        _train_epoch(f, cfg, x_all, y_all, amp)
    state = {n: t.detach().cpu() for n, t in f.model.state_dict().items()}
    return state, f.result.train_loss, f.result.val_metric


def train_folds_concurrently(cfg: TaskConfig, views: torch.Tensor, targets: torch.Tensor, folds: np.ndarray,
                             seed: int, device: torch.device, live=None, amp: bool | None = None,
                             threads: int = 0) -> list[FoldResult]:
    """:func:`train_folds` with every fold in its own process on the same device.

    Each fold sees exactly what it sees in :func:`train_folds` (its own initialisation, tile
    order and augmentation stream, ``seed * 1000 + k``), so the models and curves are the same;
    what changes is that the k small-batch trainings keep one GPU busy together. ``threads``:
    intra-op threads per process (0 = torch's default). The curves are logged to ``live``
    after all folds are done, epoch by epoch as :func:`train_folds` logs them.
    """
    import torch.multiprocessing as tmp
    _check_inputs(views)
    amp = device.type == "cuda" if amp is None else amp
    k_folds = int(folds.max()) + 1
    ctx = tmp.get_context("spawn")
    views, targets = views.share_memory_(), targets.share_memory_()
    with ctx.Pool(k_folds) as pool:
        outs = pool.starmap(_fold_worker, [(cfg, views, targets, folds, k, seed, str(device), amp, threads)
                                            for k in range(k_folds)])
    results = []
    for state, losses, metrics in outs:
        with torch.device("meta"):
            model = TaskModel(cfg)
        model.load_state_dict(state, assign=True)
        results.append(FoldResult(model.to(device, memory_format=torch.channels_last), losses, metrics))
    if live is not None:
        for epoch in range(cfg.epochs):
            _log_epoch(live, results, epoch, METRIC[cfg.task])
    return results
