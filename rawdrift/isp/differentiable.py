"""The parametrized, differentiable data model (paper appendix A.1.2) in torch.

Every step of the static view ``bi_s_ga`` becomes a function of its parameters:

=================  ===========  ==============================================
group              shape        initial value
=================  ===========  ==============================================
black_level        (4,)         camera black level (R, G, G, B sites)
demosaic           (3, 3, 3)    bilinear kernels for R, G, B (facts.md)
white_balance      (3,)         camera white balance
colour_matrix      (3, 3)       camera colour matrix
sharpening         (3, 3)       K_SHARP (eq. 17), applied to luma
denoising          (5, 5)       Gaussian sigma 0.5, scipy truncate 4 (radius 2)
gamma              (1,)         2.2
=================  ===========  ==============================================

All kernels act as true convolutions (kernel flipped), like ``scipy.ndimage.convolve`` and
``scipy.signal.convolve2d``, and with the border handling of the static reference
functions: demosaicing and Gaussian denoising extend the image symmetrically (scipy's
``reflect``), the sharpening filter pads with zeros. With these conventions and the initial
parameters the module equals ``render_static(raw, camera, "bi_s_ga")`` (paper eq. 6).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color.colorconv import rgb_from_yuv, yuv_from_rgb
from torch import nn
from torch.nn.utils import parametrize

from rawdrift.camera import BAYER_CHANNELS, BAYER_SITES, Camera, check_raw
from rawdrift.errors import RawdriftError
from rawdrift.kernels import gaussian_2d, scipy_radius
from rawdrift.isp.static import GAMMA, GAUSSIAN_SIGMA, K_SHARP

#: Bilinear demosaicing kernels (R, G, B) for the zero-filled per-channel mosaic.
K_BILINEAR_RB = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 4.0
K_BILINEAR_G = np.array([[0.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 0.0]]) / 4.0

#: scikit-image's RGB <-> YUV matrices as nested lists (the values of ``yuv_from_rgb`` and
#: ``rgb_from_yuv``): a list is a constant of a ``torch.compile`` graph, an array an input.
YUV_FROM_RGB: list[list[float]] = yuv_from_rgb.tolist()
RGB_FROM_YUV: list[list[float]] = rgb_from_yuv.tolist()

#: Below this value the gamma gradient is taken at GAMMA_GRAD_FLOOR (see ClippedGamma).
GAMMA_GRAD_FLOOR: float = 1e-5

#: Parameter groups of :class:`ParametrizedISP` in pipeline order (names of its nn.Parameters).
PARAMETER_GROUPS: tuple[str, ...] = (
    "black_level", "demosaic", "white_balance", "colour_matrix", "sharpening", "denoising", "gamma")


#: Constant tensors made once per (values, dtype, device) by :func:`device_constant`.
_CONSTANTS: dict = {}
_MAX_CONSTANTS = 512


def device_constant(values, dtype: torch.dtype, device, key=None) -> torch.Tensor:
    """``values`` (a numpy array or nested lists) as a tensor of ``dtype`` on ``device``, made
    once and then served from a cache: the colour matrices, border index vectors, Bayer masks
    and kernels of the ISPs would otherwise be copied from host memory on every forward pass
    (a blocking transfer each on a GPU). ``values`` may also be a function making the array
    (or a tensor), with ``key`` (hashable) naming it: then it is made only when the cache
    misses.

    The tensor equals ``torch.as_tensor(values, dtype=dtype, device=device)`` bit for bit. It
    is made outside inference mode, so a constant first needed under ``torch.inference_mode()``
    can later be saved for a backward pass. Read-only by contract: never modified in place.
    Under ``torch.compile`` the constant is made in the traced graph instead (no cache, no
    graph break): a function must then build it with torch operations (as
    :func:`symmetric_index` and :func:`bayer_masks` do) and an array be given as nested lists,
    which inductor stores once with the compiled code (a numpy array would become an input of
    the graph, copied to the device on every call).
    """
    if torch.compiler.is_compiling():
        return _as_tensor(values() if callable(values) else values, dtype, device)
    if key is None:
        a = np.ascontiguousarray(values)
        key = (a.dtype.str, a.shape, a.tobytes())
    full = (key, dtype, torch.device(device))
    t = _CONSTANTS.get(full)
    if t is None:
        with torch.inference_mode(False):
            t = _as_tensor(values() if callable(values) else values, dtype, full[2]).clone()
        if len(_CONSTANTS) >= _MAX_CONSTANTS:      # unusual shapes by the hundred: start over
            _CONSTANTS.clear()
        _CONSTANTS[full] = t
    return t


def _as_tensor(values, dtype: torch.dtype, device) -> torch.Tensor:
    """``values`` as a tensor of ``dtype`` on ``device``: a tensor moved, nested lists through
    ``torch.tensor`` (a constant of a compiled graph), an array of any strides copied."""
    if isinstance(values, torch.Tensor):
        return values.to(dtype=dtype, device=device)
    if isinstance(values, list):
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.as_tensor(np.ascontiguousarray(values), dtype=dtype, device=device)


def symmetric_index(n: int, pad: int, device) -> torch.Tensor:
    """Indices (n + 2 pad,) int64 of a length-``n`` axis padded by ``pad <= n`` mirroring the
    edge sample (numpy ``symmetric``: -1 -> 0, n -> n - 1), cached on ``device``."""
    def build() -> torch.Tensor:
        i = torch.arange(-pad, n + pad, device=device)
        i = torch.where(i < 0, -1 - i, i)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    return device_constant(build, torch.int64, device, key=("symmetric", n, pad))


def gaussian_kernel_2d(sigma: float = GAUSSIAN_SIGMA, truncate: float = 4.0) -> np.ndarray:
    """The 2-D kernel that ``scipy.ndimage.gaussian_filter(sigma, truncate)`` applies.

    Returns an odd square array with radius ``int(truncate * sigma + 0.5)`` summing to 1.
    """
    return gaussian_2d(sigma, scipy_radius(sigma, truncate))


class SymmetricPad(torch.autograd.Function):
    """The symmetric pad of the last two dims: an index gather forward, and a backward that
    folds the padded borders back onto the edges with slice additions.

    The gather's own backward is a scatter-add (``index_add``); torch 2.11's inductor compiles
    it inside :func:`process` into CPU code that returns wrong black-level gradients (off by up
    to 97 %) and corrupts memory. Written as slices it compiles right on torch 2.11 and 2.14,
    and where ``2 pad <= H, W`` each sample sums at most two gradients per axis, exact in any
    order: bit for bit the gather's backward. (Concatenated flipped slices would avoid the
    scatter too, but inductor's CPU code for them runs the compiled step about twice as slow.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, pad: int) -> torch.Tensor:
        ctx.pad = pad
        h, w = x.shape[-2:]
        return x.index_select(-2, symmetric_index(h, pad, x.device)).index_select(-1, symmetric_index(w, pad, x.device))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p = ctx.pad
        cols = grad[..., p:-p].clone()
        cols[..., :p] += grad[..., :p].flip(-1)
        cols[..., -p:] += grad[..., -p:].flip(-1)
        rows = cols[..., p:-p, :].clone()
        rows[..., :p, :] += cols[..., :p, :].flip(-2)
        rows[..., -p:, :] += cols[..., -p:, :].flip(-2)
        return rows, None


def pad_symmetric(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last two dims by ``pad`` mirroring the edge sample (scipy ``reflect``: d c b a | a b c d).

    Differentiable (:class:`SymmetricPad`); needs ``pad <= H, W``.
    """
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    if pad > h or pad > w:
        raise RawdriftError(f"image {h}x{w} too small for a symmetric pad of {pad}")
    return SymmetricPad.apply(x, pad)


def _conv_same(x: torch.Tensor, kernel: torch.Tensor, padding: str) -> torch.Tensor:
    """True 2-D convolution of (B, C, H, W) with per-channel kernels (C, k, k), 'same' size.

    ``padding`` is ``"symmetric"`` or ``"zeros"``.
    """
    c, k = kernel.shape[0], kernel.shape[-1]
    weight = torch.flip(kernel, dims=(-2, -1)).reshape(c, 1, k, k)
    p = k // 2
    if padding == "symmetric":
        return F.conv2d(pad_symmetric(x, p), weight, groups=c)
    return F.conv2d(x, weight, padding=p, groups=c)


class ClippedGamma(torch.autograd.Function):
    """``clip(x, 0, 1) ** (1 / gamma)`` with an exact forward pass and a bounded gradient.

    The forward pass clips at 0 and 1 exactly (no epsilon), so the static model is
    reproduced. The derivative ``d/dx = x**(1/gamma - 1) / gamma`` diverges at 0; for
    ``0 < x < GAMMA_GRAD_FLOOR`` it is evaluated at ``GAMMA_GRAD_FLOOR`` instead (the
    original implementation moved the forward value there; here only the gradient is
    approximated, for 0.001 % of the range). Outside (0, 1) the input gradient is 0, as the
    clip is flat there; the gamma gradient ``-y ln(x) / gamma**2`` is 0 at x <= 0 and x >= 1.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        xc = x.clamp(0.0, 1.0)
        y = xc ** (1.0 / gamma)
        ctx.save_for_backward(x, gamma, y)
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, gamma, y = ctx.saved_tensors
        inside = (x > 0) & (x < 1)
        xf = x.clamp(min=GAMMA_GRAD_FLOOR, max=1.0)
        grad_x = grad_x_all = None
        if ctx.needs_input_grad[0]:
            grad_x_all = xf ** (1.0 / gamma - 1.0) / gamma
            grad_x = torch.where(inside, grad_out * grad_x_all, torch.zeros_like(grad_out))
        grad_g = None
        if ctx.needs_input_grad[1]:
            dg = torch.where(inside, -y * torch.log(xf) / gamma**2, torch.zeros_like(y))
            grad_g = (grad_out * dg).sum().reshape(gamma.shape)
        return grad_x, grad_g


def clipped_gamma(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Phi_GC: ``clip(x, 0, 1) ** (1 / gamma)`` with a finite gradient; see :class:`ClippedGamma`."""
    return ClippedGamma.apply(x, gamma)


def black_level_correct(raw: torch.Tensor, black_level: torch.Tensor) -> torch.Tensor:
    """Phi_BL: (B, H, W) RGGB mosaic minus per-site black level (4,) -> (B, H, W)."""
    b, h, w = raw.shape
    tile = black_level.reshape(2, 2).repeat(h // 2, w // 2)
    return raw - tile


def bayer_masks(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """RGGB masks (3, H, W): 1 where the mosaic samples R, G, B respectively (a new tensor, made
    with torch operations, so that it can be traced by ``torch.compile``)."""
    m = torch.zeros(3, h, w, dtype=dtype or torch.get_default_dtype(), device=device)
    for (r, c), ch in zip(BAYER_SITES, BAYER_CHANNELS):
        m[ch, r::2, c::2] = 1
    return m


def demosaic_conv(mosaic: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Phi_DM^para: (B, H, W) mosaic, kernels (3, k, k) -> (B, 3, H, W).

    The mosaic is split into zero-filled R, G, B planes and each is convolved with its
    kernel (symmetric border); the bilinear kernels give colour-demosaicing's bilinear result.
    """
    h, w = mosaic.shape[-2:]
    masks = device_constant(lambda: bayer_masks(h, w, mosaic.device, mosaic.dtype), mosaic.dtype, mosaic.device,
                            key=("bayer", h, w))
    planes = mosaic.unsqueeze(1) * masks
    return _conv_same(planes, kernels, "symmetric")


def colour_transform(rgb: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix to the channel axis of (B, 3, H, W): ``v[c] = sum_k M[c, k] v[k]``."""
    return torch.einsum("ck,bkhw->bchw", matrix, rgb)


def process(raw: torch.Tensor, black_level: torch.Tensor, demosaic: torch.Tensor,
            white_balance: torch.Tensor, colour_matrix: torch.Tensor, sharpening: torch.Tensor,
            denoising: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Functional parametrized data model (eq. 8).

    Args:
        raw: (B, H, W) float in [0, 1], RGGB, even H and W >= 4.
        black_level: (4,); demosaic: (3, 3, 3); white_balance: (3,); colour_matrix: (3, 3);
        sharpening: (3, 3); denoising: (5, 5); gamma: (1,), > 0.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    v = demosaic_conv(black_level_correct(raw, black_level), demosaic)
    yuv_m = device_constant(YUV_FROM_RGB, v.dtype, v.device)
    rgb_m = device_constant(RGB_FROM_YUV, v.dtype, v.device)
    # white balance, colour matrix and RGB -> YUV are per-pixel linear maps: applied as their
    # 3x3 product in one pass over the image (equal to applying them in turn, to rounding)
    yuv = colour_transform(v, yuv_m @ colour_matrix @ torch.diag(white_balance))
    y = _conv_same(yuv[:, :1], sharpening.unsqueeze(0), "zeros")
    y = _conv_same(y, denoising.unsqueeze(0), "symmetric")
    v = colour_transform(torch.cat([y, yuv[:, 1:]], dim=1), rgb_m)
    return clipped_gamma(v, gamma)


@functools.cache
def compiled_process() -> Callable[..., torch.Tensor]:
    """:func:`process` through ``torch.compile`` (inductor's default mode, static shapes): the
    ISP's elementwise steps fused around its convolutions, forward and backward, for loops that
    run it over and over at one shape (forensics' searches). One graph, no graph break, its
    constants stored with the compiled code; made once per process. Under autograd every group
    value enters requiring a gradient, so that searches of different groups (the others frozen)
    share one graph rather than compiling one each; the gradients of frozen groups are computed
    and dropped. On the CPU it agrees with :func:`process` to 1e-5 (forward) and about 1e-4
    relative (gradients): fused kernels round differently. Takes checked inputs:
    :func:`check_raw_batch` is the caller's."""
    fn = torch.compile(process, dynamic=False)

    def run(raw: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            values = tuple(v if v.requires_grad else v.detach().requires_grad_() for v in values)
        return fn(raw, *values)
    return run


def check_raw_batch(raw: torch.Tensor, where: str = "raw") -> None:
    """Boundary checks for :func:`process`: a torch (B, H, W) batch under the rules of
    :func:`rawdrift.camera.check_raw` (floating, even sides, finite, inside [0, 1]); ``where``
    names it in errors. One host sync on a GPU."""
    if not isinstance(raw, torch.Tensor):
        raise RawdriftError(f"{where}: expected a torch.Tensor, got {type(raw).__name__}")
    check_raw(raw, where, batched=True)


class ParametrizedISP(nn.Module):
    """Differentiable data model; at its initial parameters it reproduces view ``bi_s_ga``.

    Args:
        camera: initial black level, white balance and colour matrix.
        dtype: parameter dtype (float32 default; ``.double()`` for float64).
        check_inputs: whether ``forward`` checks its raw input (:func:`check_raw_batch`, one host
            sync on a GPU); False for a training loop whose tiles were checked once.

    ``forward(raw)``: (B, H, W) float in [0, 1] -> (B, 3, H, W) in [0, 1].
    Parameters are named after :data:`PARAMETER_GROUPS`.
    """

    def __init__(self, camera: Camera, dtype: torch.dtype = torch.float32, check_inputs: bool = True) -> None:
        super().__init__()
        self.camera = camera
        self.check_inputs = check_inputs

        def p(values) -> nn.Parameter:
            return nn.Parameter(torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype))

        self.black_level = p(camera.black_level)
        self.demosaic = p(np.stack([K_BILINEAR_RB, K_BILINEAR_G, K_BILINEAR_RB]))
        self.white_balance = p(camera.white_balance)
        self.colour_matrix = p(camera.colour_matrix)
        self.sharpening = p(K_SHARP)
        self.denoising = p(gaussian_kernel_2d())
        self.gamma = p([GAMMA])

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if self.check_inputs:
            check_raw_batch(raw)
        return process(raw.to(self.gamma.dtype), *self.group_values())

    def group_values(self) -> tuple[torch.Tensor, ...]:
        """The value of every group in :data:`PARAMETER_GROUPS` order (through its constraint
        where :mod:`rawdrift.isp.constraints` parametrized it): :func:`process`'s arguments
        after ``raw``."""
        return tuple(getattr(self, g) for g in PARAMETER_GROUPS)

    def to_dict(self) -> dict[str, list]:
        """Current parameters as nested lists (JSON-ready), keyed by group."""
        return {g: getattr(self, g).detach().cpu().double().tolist() for g in PARAMETER_GROUPS}

    def load_dict(self, values: dict) -> "ParametrizedISP":
        """Set parameters from :meth:`to_dict` output; shapes are checked."""
        with torch.no_grad():
            for g in PARAMETER_GROUPS:
                if g not in values:
                    raise RawdriftError(f"ISP parameters: missing group {g!r}")
                current = getattr(self, g)
                t = torch.as_tensor(values[g], dtype=current.dtype, device=current.device)
                if t.shape != current.shape:
                    raise RawdriftError(
                        f"ISP parameters: group {g!r} has shape {tuple(t.shape)}, expected {tuple(current.shape)}")
                if parametrize.is_parametrized(self, g):
                    setattr(self, g, t)     # through the constraint's right_inverse (rawdrift.isp.constraints)
                else:
                    current.copy_(t)
        return self
