"""Drift optimization (paper section 5.3, figure 7, table 2): the data model trained with the task model.

Three ways to feed raw tiles to the same task model, three *fronts* of the fold-training engine
(:func:`rawdrift.training.train_setting`, the train stage's loop: same seeds, batches,
dihedral augmentation, schedule and evaluation; :func:`joint_front`):

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
Each fold's held-out tiles are evaluated every ``eval_every`` optimisation steps (and after the
last) through the current ISP (BatchNorm statistics recalibrated first, as in training), giving
figure 7's curves; table 2 is the mean and standard deviation of those values over folds and steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn

from rawdrift.camera import BAYER_SITES, Camera
from rawdrift.errors import RawdriftError
from rawdrift.isp.constraints import constrain, optimiser_groups
from rawdrift.isp.differentiable import ParametrizedISP, check_raw_batch
from rawdrift.sensor import intensity_name
from rawdrift.tasks import TaskConfig
from rawdrift.training import FoldResult, Front, train_setting, train_settings_in_processes

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

    learned: a constrained ParametrizedISP with every group trainable, run on tiles checked once
    (by :func:`train_jointly`; no check, no host sync, per step); frozen: a ParametrizedISP without
    gradients; raw: :class:`PackRaw`.
    """
    if mode == "learned":
        return constrain(ParametrizedISP(camera, check_inputs=False))
    if mode == "frozen":
        return ParametrizedISP(camera).requires_grad_(False)
    if mode == "raw":
        return PackRaw()
    raise RawdriftError(f"unknown mode {mode!r}; expected one of {list(MODES)}")


def _isp_parameters(isp: ParametrizedISP) -> dict[str, list]:
    """What a fold keeps of its ISP: the parameters (:meth:`ParametrizedISP.to_dict`)."""
    return isp.to_dict()


def joint_front(mode: str, camera: Camera, isp_lr: float = 0.01) -> Front:
    """``mode``'s :class:`~rawdrift.training.Front` for the fold-training engine.

    learned: the constrained ISP of :func:`make_front`, its unconstrained parameters stepping
    with Adam at ``isp_lr`` (black level x 0.1, :func:`~rawdrift.isp.constraints.optimiser_groups`);
    frozen: the ISP at its initial parameters, applied once; both record their parameters.
    raw: :class:`PackRaw`, four planes at half resolution, segmentation logits upsampled x 2.
    """
    build = partial(make_front, mode, camera)
    if mode == "raw":
        return Front(build=build, in_channels=4, upsample=2)
    groups = partial(optimiser_groups, groups="all", lr=isp_lr) if mode == "learned" else None
    return Front(build=build, optimiser_groups=groups, record=_isp_parameters)


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


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise RawdriftError(f"unknown mode {mode!r}; expected one of {list(MODES)}")


def _joint_fold(mode: str, intensity: float, r: FoldResult) -> JointFold:
    return JointFold(mode=mode, intensity=float(intensity), fold=r.fold, steps=r.steps, val_metric=r.val_metric,
                     train_loss=r.train_loss, isp=r.front)


def train_jointly(cfg: TaskConfig, mode: str, raw: torch.Tensor, targets: torch.Tensor, folds: np.ndarray,
                  camera: Camera, seed: int, device: torch.device, *, intensity: float = 1.0,
                  isp_lr: float = 0.01, eval_every: int = 1, amp: bool = False, progress: bool = True,
                  desc: str = "optimize", compile_mode: str = "none") -> list[JointFold]:
    """Train the task model of every test fold together with the data model of ``mode``.

    :func:`rawdrift.training.train_setting` with :func:`joint_front`, evaluated every
    ``eval_every`` steps.

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
        compile_mode: how the task model's training step runs (the ``compile`` param; the ISP
            stays eager), :func:`rawdrift.training.compiled`.

    Returns:
        one :class:`JointFold` per fold, in fold order.
    """
    _check_mode(mode)
    check_raw_batch(raw, "raw tiles")      # once: the learned ISP runs unchecked per step
    results = train_setting(cfg, raw, targets, folds, seed, device, front=joint_front(mode, camera, isp_lr),
                            eval_every=eval_every, amp=amp, progress=progress, desc=desc, compile_mode=compile_mode)
    return [_joint_fold(mode, intensity, r) for r in results]


def train_settings_concurrently(cfg: TaskConfig, settings: list[tuple[str, float, torch.Tensor]],
                                targets: torch.Tensor, folds: np.ndarray, camera: Camera, seed: int,
                                device: torch.device, *, isp_lr: float = 0.01, eval_every: int = 1,
                                amp: bool = False, processes: int = 0, threads: int = 0,
                                compile_mode: str = "none") -> list[list[JointFold]]:
    """:func:`train_jointly` for several (mode, intensity, raw) settings, every fold of every
    setting a task for a pool of worker processes on the same device
    (:func:`rawdrift.training.train_settings_in_processes`).

    Each fold sees exactly what it sees in :func:`train_jointly` (seeds ``seed * 1000 + k``), so
    the curves and the learned ISPs are the same; ``processes`` workers (0 = the number of
    folds) keep one GPU busy with small-batch trainings. ``threads``: intra-op threads per
    worker (0 = torch's default, the lockstep loop's: identical sums on a CPU). ``compile_mode``:
    as in :func:`train_jointly`.

    Returns:
        per setting, in ``settings`` order, one :class:`JointFold` per fold in fold order.
    """
    for mode, _, raw in settings:
        _check_mode(mode)
        check_raw_batch(raw, "raw tiles")
    done = train_settings_in_processes(cfg, [(raw, joint_front(mode, camera, isp_lr)) for mode, _, raw in settings],
                                       targets, folds, seed, device, eval_every=eval_every, amp=amp,
                                       processes=processes, threads=threads, keep_models=False,
                                       compile_mode=compile_mode)
    return [[_joint_fold(mode, intensity, r) for r in results] for (mode, intensity, _), results in zip(settings, done)]


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
