"""The fold-training engine: the k fold models of one setting, with the data resident on the device.

A *setting* is the stored tiles and a :class:`Front`, what turns them into the task model's
input: the identity for the train stage (the tiles are rendered views), a differentiable ISP
(learned with the task model, or frozen) or the packed raw mosaic for drift optimization
(:mod:`rawdrift.optimization`). Everything else is the same for every setting: fold ``k``'s
task model is initialised under ``torch.manual_seed(seed * 1000 + k)``, its tile order and
augmentation come from a ``torch.Generator`` with the same seed, Adam with a constant or
cosine schedule, batches of one sample skipped (BatchNorm needs two), held-out tiles
evaluated with the BatchNorm statistics recalibrated first.

The k folds train in lockstep (one epoch of each fold in turn), so the curves of all folds
are logged at the same step; :func:`train_settings_in_processes` runs the same per-fold loop
with every fold in its own process (one worker entry point, :func:`_fold_worker`), and each
fold sees exactly what it sees in the lockstep loop. The hot loop gathers batches by index
from the device-resident tensor and augments them on the device with the dihedral group
(flips and 90-degree rotations, the same transform on the mask; after the front, so a flip
never changes a Bayer phase): no per-sample Python. Tensors are channels_last; bf16 autocast
for the task model when ``amp`` (see :mod:`rawdrift.runtime`); a front always runs in float32.
The training step's forward and backward can run through ``torch.compile`` (``compile_mode``,
:data:`COMPILE_MODES`; ``reduce-overhead`` captures CUDA graphs on a GPU); the evaluation and the
front stay eager. Adam is fused on CUDA.

Evaluation schedule: at the end of every ``eval_epochs``-th epoch and of the last one
(``eval_every=None``, the train stage; the paper evaluates every epoch), or every
``eval_every`` optimisation steps and after the last one (optimize). Evaluating never
changes the training itself: it only reads the weights and replaces the BatchNorm buffers,
which training mode does not use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rawdrift import checks
from rawdrift.errors import RawdriftError
from rawdrift.runtime import COMPILE_MODES
from rawdrift.tasks import METRIC, TaskConfig, TaskModel, in_batches, loss_fn, predict, score


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
    """Per-channel mean and std of (N, C, H, W) inputs in [0, 1] (the model's input normalisation),
    in float64 on the inputs' device (contiguous first, so the sums run in the same order
    whatever the inputs' memory format)."""
    v = views.contiguous().double()
    return v.mean(dim=(0, 2, 3)).tolist(), v.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


def compiled(net: nn.Module, mode: str) -> nn.Module:
    """``net`` for the training step: itself for ``none``, else ``torch.compile(net, mode=mode)``
    with static shapes (a fold's last, smaller batch compiles once more). The compiled module
    shares ``net``'s parameters and buffers; ``reduce-overhead`` replays CUDA graphs on a GPU
    (on a CPU it is ``default``). Compiled kernels fuse operations and round differently from
    eager ones: results agree within float tolerance, not bit for bit."""
    return net if checks.choice("compile_mode", mode, COMPILE_MODES) == "none" else torch.compile(
        net, mode=mode, dynamic=False)


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


def adam(groups, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam as the engine steps it: ``groups`` (parameters or parameter groups) with the fused
    kernel on CUDA (one launch for every parameter), the default (foreach) kernel elsewhere."""
    return torch.optim.Adam(groups, lr=lr, fused=device.type == "cuda")


def optimisation_step(model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TaskConfig, xb: torch.Tensor,
                      yb: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """One Adam step on a batch (bf16 autocast when ``amp``); returns the detached loss."""
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = loss_fn(cfg, model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


@dataclass(frozen=True)
class Front:
    """What turns a setting's stored tiles into the task model's input (B, C, H', W').

    Attributes:
        build: makes the front module, raw tiles (B, H, W) float32 in [0, 1] -> (B, C, H', W');
            called once per fold when the front learns, once per setting when it is fixed.
            None is the identity: the stored tiles (N, C, H, W) in [0, 1] are the input, in
            their own dtype, and the input statistics are taken from them directly.
        optimiser_groups: the Adam parameter groups of a front that learns with the task model
            (front module -> groups with their own ``lr``); None: a fixed front, whose outputs
            are computed once per setting.
        record: what a fold's result keeps of its front at the end (module -> a picklable value,
            e.g. the ISP parameters); None keeps nothing.
        in_channels: C, the channels of the front's output (the task model's first convolution).
        upsample: mask side / H' for segmentation: the task model's logits are upsampled
            bilinearly by this factor (2 for the packed raw mosaic's half-resolution planes).
    Every callable must be picklable (a module-level function or class, or a
    ``functools.partial`` of one) for :func:`train_settings_in_processes`.
    """

    build: Callable[[], nn.Module] | None = None
    optimiser_groups: Callable[[nn.Module], list[dict]] | None = None
    record: Callable[[nn.Module], object] | None = None
    in_channels: int = 3
    upsample: int = 1

    @property
    def learns(self) -> bool:
        """Whether the front's parameters step with the task model's."""
        return self.optimiser_groups is not None


#: The train stage's front: the rendered views are the task model's input.
IDENTITY = Front()


class Head(nn.Module):
    """The task model, with segmentation logits (B, 1, h, w) upsampled ``scale`` x (bilinear)
    to the mask resolution; classification logits (B, classes) pass unchanged."""

    def __init__(self, task: TaskModel, scale: int = 1) -> None:
        super().__init__()
        self.task = task
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.task(x)
        if self.scale != 1 and out.ndim == 4:
            out = F.interpolate(out, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out


@dataclass
class FoldResult:
    """One fold's trained task model and its curves.

    ``steps[j]`` optimisation steps had been taken when ``val_metric[j]`` (accuracy or IoU in
    [0, 1]) was measured on the fold's held-out tiles; ``train_loss[j]`` is the mean training
    loss per tile since the previous measurement (the epoch's mean when measured every epoch).
    ``front``: the front's :attr:`Front.record` at the end, None without one. ``model`` is None
    where it was not kept (:func:`train_settings_in_processes` with ``keep_models=False``).
    """

    model: TaskModel | None
    train_loss: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    fold: int = 0
    front: object = None


@dataclass
class _Setting:
    """A setting on the device: the caller's tiles, their device copy, the targets and, for a
    fixed front, its module and outputs (the identity's outputs are the device tiles)."""

    tiles: torch.Tensor
    x_all: torch.Tensor
    y_all: torch.Tensor
    front: nn.Module | None
    fixed: torch.Tensor | None


@dataclass
class _Fold:
    """What one fold carries through training: model, front, optimiser, schedule, random stream,
    tiles, batch starts and the running loss since the last evaluation."""

    k: int
    net: nn.Module
    step_net: nn.Module
    front: nn.Module | None
    inputs: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    sched: object
    gen: torch.Generator
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    batches: list[int]
    total_steps: int
    result: FoldResult
    step: int = 0
    epoch: int = 0
    loss_sum: float | torch.Tensor = 0.0     # float64 on the device between evaluations: no per-step sync
    loss_count: int = 0


def _check_setting(tiles: torch.Tensor, eval_every: int | None, compile_mode: str = "none",
                   eval_epochs: int = 1) -> None:
    checks.choice("compile_mode", compile_mode, COMPILE_MODES)
    if tiles.shape[-1] != tiles.shape[-2]:
        raise RawdriftError(f"tiles must be square for rotation augmentation, got {tuple(tiles.shape[-2:])}")
    if eval_every is not None and eval_every < 1:
        raise RawdriftError(f"eval_every must be >= 1, got {eval_every}")
    if eval_epochs < 1:
        raise RawdriftError(f"eval_epochs must be >= 1, got {eval_epochs}")


def evaluated_epochs(epochs: int, eval_epochs: int = 1) -> list[int]:
    """The epochs (from 0) after which an epoch-scheduled run evaluates: every ``eval_epochs``-th
    and the last, e.g. ``evaluated_epochs(5, 2) == [1, 3, 4]``."""
    return [e for e in range(epochs) if (e + 1) % eval_epochs == 0 or e == epochs - 1]


def _front_tiles(tiles: torch.Tensor, front: Front) -> torch.Tensor:
    """The tiles in the dtype the front takes: their own for the identity, float32 otherwise."""
    return tiles if front.build is None else tiles.to(torch.float32)


def _on_device(tiles: torch.Tensor, targets: torch.Tensor, front: Front, device: torch.device) -> _Setting:
    """Tiles and targets moved to ``device``; a fixed front built and applied once (64 tiles at a time)."""
    y_all = targets.to(device)
    if front.build is None:
        x_all = tiles.to(device).contiguous(memory_format=torch.channels_last)
        return _Setting(tiles, x_all, y_all, None, x_all)
    x_all = tiles.to(device, torch.float32)
    if front.learns:
        return _Setting(tiles, x_all, y_all, None, None)
    module = front.build().to(device)
    with torch.no_grad():
        fixed = in_batches(module, x_all).contiguous(memory_format=torch.channels_last)
    return _Setting(tiles, x_all, y_all, module, fixed)


def _new_fold(cfg: TaskConfig, s: _Setting, front: Front, folds: np.ndarray, k: int, seed: int,
              device: torch.device, compile_mode: str = "none") -> _Fold:
    """Fold ``k``'s task model (initialised under ``torch.manual_seed(seed * 1000 + k)``), front,
    input statistics (on the device), optimiser (fused Adam on CUDA), schedule, random stream,
    tile indices and the module its training steps run (:func:`compiled`)."""
    train_idx = torch.as_tensor(np.flatnonzero(folds != k), device=device)
    test_idx = torch.as_tensor(np.flatnonzero(folds == k), device=device)
    torch.manual_seed(seed * 1000 + k)
    task = TaskModel(cfg, in_channels=front.in_channels)
    net = task if front.upsample == 1 else Head(task, scale=front.upsample)
    if s.fixed is not None:
        module, fixed = s.front, s.fixed

        def inputs(idx: torch.Tensor) -> torch.Tensor:
            return fixed[idx]
    else:
        module = front.build().to(device)

        def inputs(idx: torch.Tensor) -> torch.Tensor:
            return module(s.x_all[idx]).contiguous(memory_format=torch.channels_last)
    if front.build is None:
        mean, std = channel_stats(s.x_all[train_idx])
    else:
        with torch.no_grad():
            mean, std = channel_stats(in_batches(inputs, train_idx))
    task.normalize.set_stats(mean, std)
    net = net.to(device, memory_format=torch.channels_last)
    groups = [{"params": list(task.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if front.learns:
        groups += front.optimiser_groups(module)
    opt = adam(groups, cfg.lr, device)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.schedule == "cosine"
             else None)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1000 + k)
    n = train_idx.numel()
    batches = [i for i in range(0, n, cfg.batch_size) if min(cfg.batch_size, n - i) >= 2]   # BatchNorm needs two
    return _Fold(k, net, compiled(net, compile_mode), module, inputs, opt, sched, gen, train_idx, test_idx, batches,
                 cfg.epochs * len(batches), FoldResult(task, fold=k))


def _validate(f: _Fold, cfg: TaskConfig, y_all: torch.Tensor, amp: bool) -> float:
    """Held-out metric of fold ``f`` through its current front (BatchNorm statistics of its
    first :data:`BN_TILES` training tiles first)."""
    with torch.no_grad():
        recalibrate_batchnorm(f.net, f.inputs(f.train_idx[:BN_TILES]), max(cfg.batch_size, 32), amp=amp)
        x_test = in_batches(f.inputs, f.test_idx)
    pred = predict(f.net, x_test, max(cfg.batch_size, 64), amp=amp)
    return score(cfg.task, pred, y_all[f.test_idx])


def _evaluate(f: _Fold, cfg: TaskConfig, y_all: torch.Tensor, amp: bool) -> None:
    """Append the step count, the mean training loss since the last evaluation and the held-out metric."""
    f.result.steps.append(f.step)
    f.result.train_loss.append(float(f.loss_sum) / max(f.loss_count, 1))
    f.result.val_metric.append(_validate(f, cfg, y_all, amp))
    f.loss_sum, f.loss_count = 0.0, 0


def _train_epoch(f: _Fold, cfg: TaskConfig, y_all: torch.Tensor, eval_every: int | None, amp: bool,
                 eval_epochs: int = 1) -> None:
    """One epoch of fold ``f``: shuffled batches through the front, dihedral augmentation, Adam
    steps; evaluations as ``eval_every`` says (None: after the epoch, if it is one of
    :func:`evaluated_epochs`)."""
    perm = f.train_idx[torch.randperm(f.train_idx.numel(), generator=f.gen, device=f.train_idx.device)]
    for i in f.batches:
        f.net.train()
        idx = perm[i:i + cfg.batch_size]
        xb, yb = dihedral_augment(f.inputs(idx), y_all[idx], f.gen)
        loss = optimisation_step(f.step_net, f.opt, cfg, xb, yb, amp=amp)
        f.step += 1
        # float64 on the device: the same IEEE sums as Python floats of the losses, without a
        # host sync per step
        f.loss_sum = f.loss_sum + loss.double() * idx.numel()
        f.loss_count += idx.numel()
        if eval_every is not None and (f.step % eval_every == 0 or f.step == f.total_steps):
            _evaluate(f, cfg, y_all, amp)
    if f.sched is not None:
        f.sched.step()
    f.epoch += 1
    if eval_every is None and (f.epoch % eval_epochs == 0 or f.epoch == cfg.epochs):
        _evaluate(f, cfg, y_all, amp)


def _finish(f: _Fold, front: Front) -> FoldResult:
    """Fold ``f``'s result with its front's record."""
    if front.record is not None and f.front is not None:
        f.result.front = front.record(f.front)
    return f.result


def train_setting(cfg: TaskConfig, tiles: torch.Tensor, targets: torch.Tensor, folds: np.ndarray, seed: int,
                  device: torch.device, *, front: Front = IDENTITY, eval_every: int | None = None,
                  amp: bool = False, on_epoch: Callable[[int, list[FoldResult]], None] | None = None,
                  progress: bool = True, desc: str = "train", compile_mode: str = "none",
                  eval_epochs: int = 1) -> list[FoldResult]:
    """Train one task model per test fold on the other folds' tiles of one setting, in lockstep.

    Args:
        cfg: task configuration (epochs, batch size, lr, schedule, weight decay, loss).
        tiles: what the front takes: (N, C, H, W) views in [0, 1] for :data:`IDENTITY`, (N, H, W)
            raw tiles in [0, 1] (RGGB) for a raw front; square. Moved to ``device`` here.
        targets: (N,) class indices or (N, H', H') uint8 masks at the front's output side x ``upsample``.
        folds: (N,) test-fold index per tile (the fixed split assignment); k = max + 1 folds.
        seed: fold k uses ``seed * 1000 + k`` (initial weights, tile order, augmentation).
        device: where to train.
        front: what turns the tiles into the task model's input (:class:`Front`).
        eval_every: optimisation steps between two evaluations (the last step is always
            evaluated); None: at the end of the epochs :func:`evaluated_epochs` names.
        eval_epochs: with ``eval_every=None``, epochs between two evaluations (the last epoch
            is always evaluated).
        amp: bf16 autocast for the task model.
        on_epoch: called after every epoch of all folds with the epoch index (from 0) and the
            results so far (e.g. to log the curves).
        compile_mode: how the training step runs (:data:`COMPILE_MODES`, :func:`compiled`).

    Returns:
        one :class:`FoldResult` per fold, in fold order.
    """
    _check_setting(tiles, eval_every, compile_mode, eval_epochs)
    s = _on_device(tiles, targets, front, device)
    k_folds = int(folds.max()) + 1
    states = [_new_fold(cfg, s, front, folds, k, seed, device, compile_mode) for k in range(k_folds)]
    bar = tqdm(total=cfg.epochs * k_folds, desc=desc, unit="fold-epoch", disable=None if progress else True,
               leave=False)
    for epoch in range(cfg.epochs):
        for f in states:
            _train_epoch(f, cfg, s.y_all, eval_every, amp, eval_epochs)
            bar.update()
        if on_epoch is not None:
            on_epoch(epoch, [f.result for f in states])
    bar.close()
    return [_finish(f, front) for f in states]


def _fold_worker(cfg: TaskConfig, tiles: torch.Tensor, targets: torch.Tensor, folds: np.ndarray, k: int, seed: int,
                 device: str, front: Front, eval_every: int | None, amp: bool, threads: int,
                 keep_model: bool, deterministic: bool, compile_mode: str,
                 eval_epochs: int) -> tuple[dict | None, FoldResult]:
    """Fold ``k`` of one setting alone, in a worker process: the task model's weights on the
    CPU (None unless ``keep_model``) and its result without the model. The worker takes the
    parent's backend policy (``deterministic``, :func:`rawdrift.runtime.configure_backends`)."""
    from rawdrift.runtime import configure_backends
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    dev = torch.device(device)
    configure_backends(dev, deterministic)
    s = _on_device(tiles, targets, front, dev)
    f = _new_fold(cfg, s, front, folds, k, seed, dev, compile_mode)
    for _ in range(cfg.epochs):
        _train_epoch(f, cfg, s.y_all, eval_every, amp, eval_epochs)
    result = _finish(f, front)
    state = {n: t.detach().cpu() for n, t in result.model.state_dict().items()} if keep_model else None
    result.model = None
    return state, result


def _with_model(cfg: TaskConfig, front: Front, state: dict | None, result: FoldResult,
                device: torch.device) -> FoldResult:
    """A worker's result with its task model rebuilt from ``state`` on ``device`` (when kept)."""
    if state is not None:
        with torch.device("meta"):
            model = TaskModel(cfg, in_channels=front.in_channels)
        model.load_state_dict(state, assign=True)
        result.model = model.to(device, memory_format=torch.channels_last)
    return result


def train_settings_in_processes(cfg: TaskConfig, settings: Sequence[tuple[torch.Tensor, Front]],
                                targets: torch.Tensor, folds: np.ndarray, seed: int, device: torch.device, *,
                                eval_every: int | None = None, amp: bool = False, processes: int = 0,
                                threads: int = 0, keep_models: bool = True,
                                compile_mode: str = "none", eval_epochs: int = 1) -> list[list[FoldResult]]:
    """:func:`train_setting` for several (tiles, front) settings, every fold of every setting a
    task for a pool of ``processes`` worker processes on the same device (0 = the number of folds).

    Each fold sees exactly what it sees in :func:`train_setting` (its own initialisation, tile
    order and augmentation stream, ``seed * 1000 + k``), so the models, curves and front records
    are the same; what changes is that small-batch trainings keep one GPU busy together.
    ``threads``: intra-op threads per worker (0 = torch's default: identical sums on a CPU
    only where the lockstep loop has as many). The tiles and targets are moved to shared memory
    (tiles that a front converts to float32 are copied first). ``keep_models=False`` leaves
    every result's ``model`` None and sends no weights back. ``compile_mode`` and
    ``eval_epochs``: as in :func:`train_setting` (compiled in every worker).

    Returns:
        per setting, in ``settings`` order, one :class:`FoldResult` per fold in fold order.
    """
    import torch.multiprocessing as tmp
    for tiles, _ in settings:
        _check_setting(tiles, eval_every, compile_mode, eval_epochs)
    k_folds = int(folds.max()) + 1
    targets = targets.share_memory_()
    shared: dict[tuple[int, bool], torch.Tensor] = {}
    for tiles, front in settings:
        key = (id(tiles), front.build is None)
        if key not in shared:
            shared[key] = _front_tiles(tiles, front).share_memory_()
    jobs = [(cfg, shared[(id(tiles), front.build is None)], targets, folds, k, seed, str(device), front, eval_every,
             amp, threads, keep_models, torch.are_deterministic_algorithms_enabled(), compile_mode, eval_epochs)
            for tiles, front in settings for k in range(k_folds)]
    with tmp.get_context("spawn").Pool(processes or k_folds) as pool:
        done = pool.starmap(_fold_worker, jobs, chunksize=1)
    return [[_with_model(cfg, front, *done[i * k_folds + k], device) for k in range(k_folds)]
            for i, (_, front) in enumerate(settings)]


def _log_epoch(live, results: list[FoldResult], epoch: int, j: int, metric: str) -> None:
    """Evaluation ``j`` of every fold, made after epoch ``epoch`` (from 0), as dvclive step ``epoch``."""
    live.step = epoch
    for k, r in enumerate(results):
        live.log_metric(f"fold{k}/train_loss", r.train_loss[j])
        live.log_metric(f"fold{k}/val_{metric}", r.val_metric[j])
    live.log_metric("train_loss", float(np.mean([r.train_loss[j] for r in results])))
    live.log_metric(f"val_{metric}", float(np.mean([r.val_metric[j] for r in results])))
    live.next_step()


def train_folds(cfg: TaskConfig, views: torch.Tensor, targets: torch.Tensor, folds: np.ndarray, seed: int,
                device: torch.device, live=None, progress: bool = True, desc: str = "train",
                amp: bool | None = None, compile_mode: str = "none", eval_epochs: int = 1) -> list[FoldResult]:
    """Train one model per test fold on the other folds' tiles of one view (the train stage).

    :func:`train_setting` with the identity front, evaluated at the end of every
    ``eval_epochs``-th epoch and of the last (the ``train.eval_every_epochs`` param).

    Args:
        cfg: task configuration.
        views: (N, 3, H, W) float in [0, 1] (moved to ``device`` here).
        targets: (N,) class indices or (N, H, W) uint8 masks.
        folds: (N,) test-fold index per tile (the fixed split assignment).
        seed: base seed; fold k uses ``seed * 1000 + k``.
        device: where to train.
        amp: bf16 autocast; None -> on CUDA only (the ``precision`` param resolves it in stages).
        compile_mode: how the training step runs (:data:`COMPILE_MODES`; the ``compile`` param).
        live: optional dvclive ``Live``: logs ``fold<k>/train_loss``, ``fold<k>/val_<metric>``
            and their means over folds at each evaluation, the epoch (from 0) as the step.

    Returns:
        one :class:`FoldResult` per fold, in fold order (one curve value per evaluated epoch).
    """
    amp = device.type == "cuda" if amp is None else amp
    evaluated = evaluated_epochs(cfg.epochs, eval_epochs)

    def log(epoch: int, results: list[FoldResult]) -> None:
        if epoch in evaluated:
            _log_epoch(live, results, epoch, evaluated.index(epoch), METRIC[cfg.task])
    return train_setting(cfg, views, targets, folds, seed, device, amp=amp, on_epoch=log if live is not None else None,
                         progress=progress, desc=desc, compile_mode=compile_mode, eval_epochs=eval_epochs)


def train_folds_concurrently(cfg: TaskConfig, views: torch.Tensor, targets: torch.Tensor, folds: np.ndarray,
                             seed: int, device: torch.device, live=None, amp: bool | None = None,
                             threads: int = 0, compile_mode: str = "none", eval_epochs: int = 1) -> list[FoldResult]:
    """:func:`train_folds` with every fold in its own process on the same device
    (:func:`train_settings_in_processes`): the same models and curves. ``threads``: intra-op
    threads per process (0 = torch's default). The curves are logged to ``live`` after all
    folds are done, epoch by epoch as :func:`train_folds` logs them.
    """
    amp = device.type == "cuda" if amp is None else amp
    results = train_settings_in_processes(cfg, [(views, IDENTITY)], targets, folds, seed, device, amp=amp,
                                          threads=threads, compile_mode=compile_mode, eval_epochs=eval_epochs)[0]
    if live is not None:
        for j, epoch in enumerate(evaluated_epochs(cfg.epochs, eval_epochs)):
            _log_epoch(live, results, epoch, j, METRIC[cfg.task])
    return results
