"""The static data model (paper appendix A.1.1) in numpy, and the 12 views.

Order: black level -> demosaic -> white balance -> colour matrix -> sharpen (on luma) ->
denoise (on luma) -> clip to [0, 1] -> gamma ``v ** (1 / 2.2)``.

Each step is one function so it can be reused and tested alone; ``render_static`` composes
them. Reference implementations come from colour-demosaicing, scipy and scikit-image, with
the border handling those libraries define (which the differentiable model reproduces).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from rawdrift.camera import BAYER_SITES, Camera, check_raw
from rawdrift.errors import RawdriftError

#: The 12 views in the paper's order: demosaic _ sharpen _ denoise.
VIEWS: tuple[str, ...] = (
    "bi_s_me", "bi_s_ga", "bi_u_me", "bi_u_ga",
    "ma_s_me", "ma_s_ga", "ma_u_me", "ma_u_ga",
    "me_s_me", "me_s_ga", "me_u_me", "me_u_ga",
)

#: The view of the differentiable ISP's initial parameters (paper eq. 6): forensics starts here.
REFERENCE_VIEW: str = "bi_s_ga"

#: Sharpening filter (paper eq. 17).
K_SHARP = np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])
GAMMA: float = 2.2
GAUSSIAN_SIGMA: float = 0.5
MEDIAN_SIZE: int = 3
UNSHARP_RADIUS: float = 1.0
UNSHARP_AMOUNT: float = 1.0


def subtract_black_level(raw: np.ndarray, black_level) -> np.ndarray:
    """Phi_BL (eq. 10): subtract the per-site black level from an RGGB mosaic (H, W)."""
    out = np.array(raw, dtype=np.float64, copy=True)
    bl = np.asarray(black_level, dtype=np.float64).reshape(4)
    for (r, c), value in zip(BAYER_SITES, bl):
        out[r::2, c::2] -= value
    return out


def demosaic_bilinear(mosaic: np.ndarray) -> np.ndarray:
    """Bilinear demosaicing (colour-demosaicing, RGGB): (H, W) -> (H, W, 3)."""
    # colour-demosaicing, scipy.signal and scikit-image are imported where they are used:
    # together they take ~1.5 s to import, which every stage that only needs VIEWS would pay.
    from colour_demosaicing import demosaicing_CFA_Bayer_bilinear
    return demosaicing_CFA_Bayer_bilinear(mosaic, "RGGB")


def demosaic_malvar2004(mosaic: np.ndarray) -> np.ndarray:
    """Malvar, He and Cutler (2004), gradient-corrected bilinear: (H, W) -> (H, W, 3)."""
    from colour_demosaicing import demosaicing_CFA_Bayer_Malvar2004
    return demosaicing_CFA_Bayer_Malvar2004(mosaic, "RGGB")


def demosaic_menon2007(mosaic: np.ndarray) -> np.ndarray:
    """Menon, Andriani and Calvagno (2007), directional filtering: (H, W) -> (H, W, 3)."""
    from colour_demosaicing import demosaicing_CFA_Bayer_Menon2007
    return demosaicing_CFA_Bayer_Menon2007(mosaic, "RGGB")


def white_balance(rgb: np.ndarray, gains) -> np.ndarray:
    """Phi_WB (eq. 13): per-channel gains on (H, W, 3)."""
    return rgb * np.asarray(gains, dtype=np.float64).reshape(1, 1, 3)


def colour_correct(rgb: np.ndarray, matrix) -> np.ndarray:
    """Phi_CC (eq. 15): ``v[c] = sum_k M[c, k] v[k]`` on (H, W, 3)."""
    return rgb @ np.asarray(matrix, dtype=np.float64).T


def sharpen_filter(luma: np.ndarray) -> np.ndarray:
    """Sharpening filter (eq. 17): 3x3 convolution, 'same' size, zero fill at the border."""
    from scipy import signal
    return signal.convolve2d(luma, K_SHARP, mode="same", boundary="fill", fillvalue=0.0)


def sharpen_unsharp(luma: np.ndarray) -> np.ndarray:
    """Unsharp masking: ``skimage.filters.unsharp_mask(radius=1, amount=1, preserve_range=True)``."""
    from skimage.filters import unsharp_mask
    return unsharp_mask(luma, radius=UNSHARP_RADIUS, amount=UNSHARP_AMOUNT, preserve_range=True)


def denoise_median(luma: np.ndarray) -> np.ndarray:
    """Median denoising: ``scipy.ndimage.median_filter(size=3)`` (reflect border)."""
    return ndimage.median_filter(luma, size=MEDIAN_SIZE)


def denoise_gaussian(luma: np.ndarray) -> np.ndarray:
    """Gaussian denoising: ``scipy.ndimage.gaussian_filter(sigma=0.5)`` (reflect border, radius 2)."""
    return ndimage.gaussian_filter(luma, sigma=GAUSSIAN_SIGMA)


def gamma_correct(rgb: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    """Phi_GC (eqs. 23-24): clip to [0, 1], then ``v ** (1 / gamma)``."""
    return np.clip(rgb, 0.0, 1.0) ** (1.0 / gamma)


DEMOSAIC: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "bi": demosaic_bilinear, "ma": demosaic_malvar2004, "me": demosaic_menon2007}
SHARPEN: dict[str, Callable[[np.ndarray], np.ndarray]] = {"s": sharpen_filter, "u": sharpen_unsharp}
DENOISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {"me": denoise_median, "ga": denoise_gaussian}


def parse_view(view: str) -> tuple[str, str, str]:
    """Split a view name like ``"bi_s_ga"`` into (demosaic, sharpen, denoise) keys."""
    if view not in VIEWS:
        raise RawdriftError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    dm, sh, dn = view.split("_")
    return dm, sh, dn


def render_static(raw: np.ndarray, camera: Camera, view: str) -> np.ndarray:
    """Process one raw mosaic with the static data model.

    Args:
        raw: float array (H, W) in [0, 1], RGGB, even sides (normalised by 2**16 - 1).
        camera: black level, white balance and colour matrix.
        view: one of :data:`VIEWS`.

    Returns:
        float64 array (3, H, W) in [0, 1].
    """
    from skimage.color import rgb2yuv, yuv2rgb
    dm, sh, dn = parse_view(view)
    raw = check_raw(raw)
    v = subtract_black_level(raw, camera.black_level)
    v = DEMOSAIC[dm](v)
    v = white_balance(v, camera.white_balance)
    v = colour_correct(v, camera.colour_matrix)
    yuv = rgb2yuv(v)
    y = SHARPEN[sh](yuv[..., 0])
    yuv[..., 0] = DENOISE[dn](y)
    v = gamma_correct(yuv2rgb(yuv))
    return np.ascontiguousarray(v.transpose(2, 0, 1))
