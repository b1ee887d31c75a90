"""Physically meaningful parameters of the differentiable data model, by construction.

Searching (drift forensics) or learning (drift optimization) the parameters of
:class:`~rawdrift.isp.differentiable.ParametrizedISP` must not leave the set of cameras that
could exist. Rather than clipping parameters after each optimiser step, every group is
re-parametrized (``torch.nn.utils.parametrize``): the optimiser moves an unconstrained tensor
``u`` and the ISP sees ``f(u)``, which satisfies the constraint for every ``u``:

=============  ==========================================  ====================================
group          constraint                                  map ``u -> value``
=============  ==========================================  ====================================
black_level    each site in [0, 1] (raw scale)             soft clamp to [0, 1], width 1e-3
demosaic       each kernel keeps its sum (4, 2, 4)         ``u + (s - sum(u)) / n``
white_balance  each gain keeps its sign, never crosses 0   ``sign * softplus``, width 1e-2
colour_matrix  each row keeps its sum (neutral axis)       ``u + (s - sum(u)) / n`` per row
sharpening     kernel keeps its sum (1: flat stays flat)   ``u + (s - sum(u)) / n``
denoising      kernel keeps its sum (1: brightness kept)   ``u + (s - sum(u)) / n``
gamma          > 0                                         ``exp(u)``
=============  ==========================================  ====================================

The maps are the identity (to float rounding) in the interior: a black level of 0.06 or a
gain of 2 are moved in their own units, so Adam's step size means the same thing in every
group member; only within about the softness width of a bound does the map bend. At the
initial parameters the constrained ISP reproduces view ``bi_s_ga`` like the plain one; the
exception is a black level or gain of exactly 0, stored as 1e-9 of the softness width.
White balance "non-negative" is read as "keeps its sign": Raw-Microscopy's published
white balance has a negative red gain folded into its colour matrix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from rawdrift.errors import RawdriftError
from rawdrift.isp.differentiable import PARAMETER_GROUPS, ParametrizedISP

#: Width (raw scale) over which the black level's [0, 1] bounds are softened.
BLACK_LEVEL_SOFTNESS: float = 1e-3
#: Width (gain units) over which a white-balance gain's zero bound is softened.
GAIN_SOFTNESS: float = 1e-2

#: Adam step of a group relative to the optimiser's learning rate. Adam moves every parameter
#: by about lr per step whatever its gradient, so the step must suit the parameter's scale:
#: black levels are a few percent of full scale (Raw-Drone 0.0625), gains, kernel taps and
#: matrix entries are of order 1, log gamma is relative already.
STEP_SCALE: dict[str, float] = {"black_level": 0.1}


def _softplus_inverse(v: torch.Tensor, width: float) -> torch.Tensor:
    """``u`` with ``width * softplus(u / width) = v`` for v > 0, computed stably in float64."""
    x = (v.double() / width).clamp(min=1e-9)
    return (width * (x + torch.log(-torch.expm1(-x)))).to(v.dtype)


class SoftClamp(nn.Module):
    """``u -> w softplus(u / w) - w softplus((u - 1) / w)``: values in (0, 1), ~identity inside."""

    def __init__(self, width: float = BLACK_LEVEL_SOFTNESS) -> None:
        super().__init__()
        self.width = float(width)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        w = self.width
        return w * F.softplus(u / w) - w * F.softplus((u - 1.0) / w)

    def right_inverse(self, v: torch.Tensor) -> torch.Tensor:
        if ((v < 0) | (v > 1)).any():
            raise RawdriftError(f"black level must lie in [0, 1], got {v.tolist()}")
        # The far bound's term is below w * exp(-0.5 / w) (0 in float64) on either half.
        low = _softplus_inverse(v, self.width)
        high = 1.0 - _softplus_inverse(1.0 - v, self.width)
        return torch.where(v <= 0.5, low, high)


class SignedPositive(nn.Module):
    """``u -> sign * w softplus(u / w)``: each entry keeps the sign it started with."""

    def __init__(self, sign: torch.Tensor, width: float = GAIN_SOFTNESS) -> None:
        super().__init__()
        self.register_buffer("sign", torch.where(sign < 0, -1.0, 1.0).to(sign.dtype))
        self.width = float(width)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.sign * (self.width * F.softplus(u / self.width))

    def right_inverse(self, v: torch.Tensor) -> torch.Tensor:
        if (v * self.sign < 0).any():
            raise RawdriftError(f"white balance {v.tolist()} changes the sign of a gain")
        return _softplus_inverse((v * self.sign).abs(), self.width)


class Positive(nn.Module):
    """``u -> exp(u)``."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.exp(u)

    def right_inverse(self, v: torch.Tensor) -> torch.Tensor:
        if (v <= 0).any():
            raise RawdriftError(f"gamma must be > 0, got {v.tolist()}")
        return torch.log(v)


class FixedSum(nn.Module):
    """``u -> u + (s - sum(u)) / n`` over the trailing ``ndim`` dims: the sums stay ``s``.

    ``s`` is taken from the value the parametrization is registered with.
    """

    def __init__(self, target: torch.Tensor, ndim: int) -> None:
        super().__init__()
        self.dims = tuple(range(-ndim, 0))
        self.register_buffer("target", target.sum(self.dims, keepdim=True).detach().clone())

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        n = math.prod(u.shape[d] for d in self.dims)
        return u + (self.target - u.sum(self.dims, keepdim=True)) / n

    def right_inverse(self, v: torch.Tensor) -> torch.Tensor:
        sums = v.sum(self.dims, keepdim=True)
        if not torch.allclose(sums, self.target, rtol=1e-5, atol=1e-6):
            raise RawdriftError(f"kernel sums {sums.flatten().tolist()} differ from the fixed "
                                f"{self.target.flatten().tolist()}")
        return v


def _parametrization(group: str, value: torch.Tensor) -> nn.Module:
    if group == "black_level":
        return SoftClamp()
    if group == "white_balance":
        return SignedPositive(torch.sign(value.detach()))
    if group == "gamma":
        return Positive()
    if group == "colour_matrix":
        return FixedSum(value, ndim=1)
    return FixedSum(value, ndim=2)          # demosaic (per kernel), sharpening, denoising


def constrain(isp: ParametrizedISP) -> ParametrizedISP:
    """Re-parametrize every group of ``isp`` in place (see the module table) and return it.

    The module keeps its interface (``isp.gamma`` etc. are the constrained values,
    ``to_dict`` / ``load_dict`` work); the tensors an optimiser moves are given by
    :func:`free_parameters`. Calling it twice is an error.
    """
    if parametrize.is_parametrized(isp):
        raise RawdriftError("ParametrizedISP is already constrained")
    for group in PARAMETER_GROUPS:
        value = getattr(isp, group)
        parametrize.register_parametrization(isp, group, _parametrization(group, value))
    return isp


def free_parameters(isp: ParametrizedISP, groups) -> list[nn.Parameter]:
    """The unconstrained tensors behind the named groups (``"all"`` for every group).

    Every other group of ``isp`` gets ``requires_grad = False``, so a search over one group
    leaves the others exactly at their values.
    """
    if not parametrize.is_parametrized(isp):
        raise RawdriftError("free_parameters needs an ISP passed through constrain() first")
    if isinstance(groups, str):
        groups = PARAMETER_GROUPS if groups == "all" else (groups,)
    unknown = [g for g in groups if g not in PARAMETER_GROUPS]
    if unknown:
        raise RawdriftError(f"unknown parameter group(s) {unknown}; expected all or some of {list(PARAMETER_GROUPS)}")
    out = []
    for g in PARAMETER_GROUPS:
        original = isp.parametrizations[g].original
        original.requires_grad_(g in groups)
        if g in groups:
            out.append(original)
    return out


def optimiser_groups(isp: ParametrizedISP, groups, lr: float) -> list[dict]:
    """Adam parameter groups for the named ISP groups (``"all"`` for every group), each with
    ``lr`` times its :data:`STEP_SCALE` and no weight decay; the other groups are frozen
    (:func:`free_parameters`)."""
    params = free_parameters(isp, groups)
    names = [g for g in PARAMETER_GROUPS if isp.parametrizations[g].original.requires_grad]
    return [{"params": [p], "lr": lr * STEP_SCALE.get(g, 1.0), "weight_decay": 0.0}
            for g, p in zip(names, params)]
