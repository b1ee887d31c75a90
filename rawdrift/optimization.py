"""Drift optimization (paper section 5.3, figure 7, table 2): the data model trained with the task model.

Three ways to feed raw tiles to the same task model, each trained per fold with the seeds,
batches and dihedral augmentation of :func:`rawdrift.training.train_folds`:

- ``learned``: raw -> constrained :class:`~rawdrift.isp.ParametrizedISP` -> task model; the
  task gradient flows into the ISP, whose parameters step with their own Adam learning rate
  (``optimize.isp_lr``, black level x 0.1 as in forensics) and stay physically meaningful
  through :mod:`rawdrift.isp.constraints` (the same constraints as the forensic search).
- ``frozen``: the ISP held at its initial parameters (view ``bi_s_ga``, equation 6).
- ``raw``: no ISP at all; the RGGB mosaic packed into four half-resolution planes
  (:func:`pack_raw`) and a task model whose first convolution takes four channels; the
  segmentation logits are upsampled x2 (bilinear) to the mask's resolution.

The views are augmented after the ISP (a flip of the mosaic would change its Bayer phase).
For ``raw`` the planes themselves are flipped and transposed: every plane keeps its colour,
and the planes shift against each other by one raw pixel, which the augmentation tolerates.
Each fold's held-out tiles are evaluated every ``eval_every`` optimisation steps through the
current ISP (BatchNorm statistics recalibrated first, as in training), giving figure 7's curves;
table 2 is the mean and standard deviation of those values over folds and steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rawdrift.camera import BAYER_SITES, Camera
from rawdrift.errors import RawdriftError
from rawdrift.isp.constraints import constrain, optimiser_groups
from rawdrift.isp.differentiable import ParametrizedISP, check_raw_batch
from rawdrift.sensor import intensity_name
from rawdrift.tasks import TaskConfig, TaskModel, in_batches, loss_fn, predict, score
from rawdrift.training import BN_TILES, channel_stats, dihedral_augment, recalibrate_batchnorm

MODES: tuple[str, ...] = ("learned", "frozen", "raw")


def pack_raw(raw: torch.Tensor) -> torch.Tensor:
    """RGGB mosaic (B, H, W) -> planes (B, 4, H/2, W/2) in the order R, G (red row), G (blue row), B.

    Values are unchanged (no black level subtraction, no scaling): the task model sees the
    sensor's numbers.
    """
    check_raw_batch(raw)
    return torch.stack([raw[:, r::2, c::2] for r, c in BAYER_SITES], dim=1)


class PackRaw(nn.Module):
    """:func:`pack_raw` as a module (no parameters): the ``raw`` mode's stand-in for an ISP."""

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return pack_raw(raw)


def make_front(mode: str, camera: Camera) -> nn.Module:
    """What turns raw (B, H, W) into the task model's input in ``mode``.

    learned: a constrained ParametrizedISP with every group trainable; frozen: a
    ParametrizedISP without gradients; raw: :class:`PackRaw`.
    """
    if mode == "learned":
        return constrain(ParametrizedISP(camera))
    if mode == "frozen":
        return ParametrizedISP(camera).requires_grad_(False)
    if mode == "raw":
        return PackRaw()
    raise RawdriftError(f"unknown mode {mode!r}; expected one of {list(MODES)}")


class Head(nn.Module):
    """The task model, with segmentation logits upsampled ``scale`` x to the mask resolution."""

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
class JointFold:
    """One fold of one mode x intensity: its validation curve and final data model.

    ``steps[j]`` optimisation steps had been taken when ``val_metric[j]`` was measured on the
    fold's held-out tiles; ``train_loss[j]`` is the mean training loss since the previous value.
    ``isp`` holds the ISP parameters at the end (``ParametrizedISP.to_dict``; for ``frozen``
    the initial ones, for the record); None for ``raw``, which has no ISP.
    """

    mode: str
    intensity: float
    fold: int
    steps: list[int] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    isp: dict | None = None


def _check_setting(mode: str, raw: torch.Tensor, eval_every: int) -> None:
    if mode not in MODES:
        raise RawdriftError(f"unknown mode {mode!r}; expected one of {list(MODES)}")
    if eval_every < 1:
        raise RawdriftError(f"eval_every must be >= 1, got {eval_every}")
    if raw.shape[-1] != raw.shape[-2]:
        raise RawdriftError(f"raw tiles must be square for rotation augmentation, got {tuple(raw.shape[-2:])}")


def train_jointly(cfg: TaskConfig, mode: str, raw: torch.Tensor, targets: torch.Tensor, folds: np.ndarray,
                  camera: Camera, seed: int, device: torch.device, *, intensity: float = 1.0,
                  isp_lr: float = 0.01, eval_every: int = 1, amp: bool = False, progress: bool = True,
                  desc: str = "optimize") -> list[JointFold]:
    """Train the task model of every test fold together with the data model of ``mode``.

    Args:
        cfg: task configuration (epochs, batch size, lr, schedule, loss of the task model).
        mode: ``learned``, ``frozen`` or ``raw`` (see the module docstring).
        raw: (N, H, W) float raw tiles in [0, 1] (RGGB) at one exposure ratio.
        targets: (N,) class indices or (N, H, W) uint8 masks.
        folds: (N,) test-fold index per tile (the fixed split assignment).
        camera: initial black level, white balance and colour matrix of the ISP.
        seed: fold k uses ``seed * 1000 + k`` (initial weights, tile order, augmentation), as in training.
        intensity: the exposure ratio of ``raw`` (recorded only).
        isp_lr: Adam learning rate of the ISP's unconstrained parameters (``learned``).
        eval_every: optimisation steps between two validations (the last step is always validated).
        amp: bf16 autocast for the task model; the ISP always runs in float32.

    Returns:
        one :class:`JointFold` per fold, in fold order.
    """
    _check_setting(mode, raw, eval_every)
    raw_all = raw.to(device, torch.float32)
    y_all = targets.to(device)
    k_folds = int(folds.max()) + 1
    bar = tqdm(total=cfg.epochs * k_folds, desc=desc, unit="fold-epoch", disable=None if progress else True,
               leave=False)
    out = [_train_joint_fold(cfg, mode, raw_all, y_all, folds, k, camera, seed, intensity, isp_lr, eval_every, amp,
                             on_epoch=bar.update) for k in range(k_folds)]
    bar.close()
    return out


def _train_joint_fold(cfg: TaskConfig, mode: str, raw_all: torch.Tensor, y_all: torch.Tensor, folds: np.ndarray,
                      k: int, camera: Camera, seed: int, intensity: float, isp_lr: float, eval_every: int, amp: bool,
                      on_epoch=None) -> JointFold:
    """Fold ``k`` of :func:`train_jointly` (``raw_all`` float32 and ``y_all`` on the device)."""
    device = raw_all.device
    fmt = torch.channels_last
    train_idx = torch.as_tensor(np.flatnonzero(folds != k), device=device)
    test_idx = torch.as_tensor(np.flatnonzero(folds == k), device=device)
    torch.manual_seed(seed * 1000 + k)
    task = TaskModel(cfg, in_channels=4 if mode == "raw" else 3)
    head = Head(task, scale=2 if mode == "raw" else 1)
    front = make_front(mode, camera).to(device)
    # Inputs that do not change during training are computed once (frozen ISP, packing).
    fixed = None
    if mode != "learned":
        with torch.no_grad():
            fixed = in_batches(front, raw_all).contiguous(memory_format=fmt)

    def inputs(idx: torch.Tensor) -> torch.Tensor:
        if fixed is not None:
            return fixed[idx]
        return front(raw_all[idx]).contiguous(memory_format=fmt)

    with torch.no_grad():
        mean, std = channel_stats(in_batches(inputs, train_idx).cpu())
    task.normalize.set_stats(mean, std)
    head = head.to(device, memory_format=fmt)
    groups = [{"params": list(task.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if mode == "learned":
        groups += optimiser_groups(front, "all", isp_lr)
    opt = torch.optim.Adam(groups, lr=cfg.lr)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.schedule == "cosine"
             else None)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1000 + k)
    res = JointFold(mode=mode, intensity=float(intensity), fold=k)
    step, loss_sum, loss_count = 0, 0.0, 0
    batches = [i for i in range(0, train_idx.numel(), cfg.batch_size)
               if min(cfg.batch_size, train_idx.numel() - i) >= 2]   # BatchNorm needs two samples
    total_steps = cfg.epochs * len(batches)
    for _epoch in range(cfg.epochs):
        perm = train_idx[torch.randperm(train_idx.numel(), generator=gen, device=device)]
        for i in batches:
            head.train()
            idx = perm[i:i + cfg.batch_size]
            xb, yb = dihedral_augment(inputs(idx), y_all[idx], gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(cfg, head(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach()) * idx.numel()
            loss_count += idx.numel()
            if step % eval_every == 0 or step == total_steps:
                res.steps.append(step)
                res.train_loss.append(loss_sum / max(loss_count, 1))
                res.val_metric.append(_validate(head, inputs, train_idx, test_idx, y_all, cfg, amp))
                loss_sum, loss_count = 0.0, 0
        if sched is not None:
            sched.step()
        if on_epoch is not None:
            on_epoch()
    if mode != "raw":
        res.isp = front.to_dict()
    return res


def _joint_fold_worker(cfg: TaskConfig, mode: str, raw: torch.Tensor, targets: torch.Tensor, folds: np.ndarray,
                       k: int, camera: Camera, seed: int, device: str, intensity: float, isp_lr: float,
                       eval_every: int, amp: bool, threads: int) -> JointFold:
    """One fold of one setting in a worker process (:func:`train_settings_concurrently`)."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    dev = torch.device(device)
    return _train_joint_fold(cfg, mode, raw.to(dev, torch.float32), targets.to(dev), folds, k, camera, seed,
                             intensity, isp_lr, eval_every, amp)


def train_settings_concurrently(cfg: TaskConfig, settings: list[tuple[str, float, torch.Tensor]],
                                targets: torch.Tensor, folds: np.ndarray, camera: Camera, seed: int,
                                device: torch.device, *, isp_lr: float = 0.01, eval_every: int = 1,
                                amp: bool = False, processes: int = 0, threads: int = 0) -> list[list[JointFold]]:
    """:func:`train_jointly` for several (mode, intensity, raw) settings, every fold of every
    setting a task for a pool of worker processes on the same device.

    Each fold sees exactly what it sees in :func:`train_jointly` (seeds ``seed * 1000 + k``), so
    the curves and the learned ISPs are the same; ``processes`` workers (0 = the number of
    folds) keep one GPU busy with small-batch trainings. ``threads``: intra-op threads per
    worker (0 = torch's default, the lockstep loop's: identical sums on a CPU).

    Returns:
        per setting, in ``settings`` order, one :class:`JointFold` per fold in fold order.
    """
    import torch.multiprocessing as tmp
    for mode, _, raw in settings:
        _check_setting(mode, raw, eval_every)
    k_folds = int(folds.max()) + 1
    targets = targets.share_memory_()
    shared = {id(raw): raw.to(torch.float32).share_memory_() for _, _, raw in settings}
    jobs = [(cfg, mode, shared[id(raw)], targets, folds, k, camera, seed, str(device), float(intensity), isp_lr,
             eval_every, amp, threads) for mode, intensity, raw in settings for k in range(k_folds)]
    with tmp.get_context("spawn").Pool(processes or k_folds) as pool:
        done = pool.starmap(_joint_fold_worker, jobs, chunksize=1)
    return [done[i * k_folds:(i + 1) * k_folds] for i in range(len(settings))]


def _validate(head: nn.Module, inputs, train_idx: torch.Tensor, test_idx: torch.Tensor, y_all: torch.Tensor,
              cfg: TaskConfig, amp: bool) -> float:
    """Held-out metric through the current data model (BatchNorm statistics recalibrated first)."""
    with torch.no_grad():
        recalibrate_batchnorm(head, inputs(train_idx[:BN_TILES]), max(cfg.batch_size, 32), amp=amp)
        x_test = in_batches(inputs, test_idx)
    pred = predict(head, x_test, max(cfg.batch_size, 64), amp=amp)
    return score(cfg.task, pred, y_all[test_idx])


def setting_name(mode: str, intensity: float) -> str:
    """Key of one mode x intensity in the outputs, e.g. ``learned_scale001``."""
    return f"{mode}_{intensity_name(intensity).removeprefix('raw_')}"


def isp_export(fold: JointFold, camera: Camera, dataset: str) -> dict:
    """A learned fold's data model as JSON: the parameters and where they come from.

    :func:`load_isp` turns it back into a :class:`ParametrizedISP`.
    """
    if fold.mode != "learned" or fold.isp is None:
        raise RawdriftError(f"fold {fold.fold} of mode {fold.mode!r} has no learned ISP")
    return {"dataset": dataset, "mode": fold.mode, "intensity": fold.intensity, "fold": fold.fold,
            "camera": camera.to_dict(), "parameters": fold.isp, "final_metric": fold.val_metric[-1]}


def load_isp(values: dict, where: str = "ISP parameters") -> ParametrizedISP:
    """A :class:`ParametrizedISP` with the parameters of an :func:`isp_export` dictionary."""
    try:
        camera = Camera.from_dict(values["camera"])
        return ParametrizedISP(camera).load_dict(values["parameters"])
    except KeyError as e:
        raise RawdriftError(f"{where}: missing key {e}") from None


def with_epochs(cfg: TaskConfig, epochs: int) -> TaskConfig:
    """``cfg`` with another number of epochs (``optimize.<dataset>.epochs``)."""
    return dataclasses.replace(cfg, epochs=epochs)
