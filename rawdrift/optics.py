"""Optical blur and pixel sampling used by the synthetic raw sources.

Distances are in the units of the grid the kernel is made for (pixels of a supersampled
scene). The Airy pattern is the diffraction image of a point through a circular aperture:
``I(r) = (2 J1(v) / v)**2`` with ``v = 3.8317 r / r0``, ``r0`` the radius of the first dark
ring (``0.61 lambda / NA``); its full width at half maximum is ``0.8436 r0``.
"""

from __future__ import annotations

import numpy as np
from scipy import signal, special

from rawdrift.camera import BAYER_CHANNELS, BAYER_SITES
from rawdrift.kernels import gaussian_2d, three_sigma_radius

#: First zero of J1 (the Airy pattern's first dark ring at v = 3.8317).
AIRY_V0: float = 3.831705970207512
#: FWHM of the Airy pattern divided by its first-zero radius.
AIRY_FWHM_PER_R0: float = 0.8436


def airy_kernel(r0: float, rings: float = 2.5, oversample: int = 5) -> np.ndarray:
    """Airy point-spread function on a pixel grid, normalised to sum 1.

    Args:
        r0: radius of the first dark ring, in pixels (> 0).
        rings: kernel half-width in units of r0 (2.5 keeps the first two bright rings).
        oversample: sub-pixel samples per axis, so each pixel integrates the PSF over its area.

    Returns:
        (2k+1, 2k+1) float64 kernel.
    """
    half = max(1, int(np.ceil(rings * r0)))
    n = (2 * half + 1) * oversample
    c = (np.arange(n) + 0.5) / oversample - (half + 0.5)
    rr = np.hypot(*np.meshgrid(c, c, indexing="ij"))
    v = AIRY_V0 * rr / r0
    with np.errstate(invalid="ignore", divide="ignore"):
        psf = np.where(v > 1e-9, (2.0 * special.j1(v) / np.where(v > 1e-9, v, 1.0)) ** 2, 1.0)
    k = psf.reshape(2 * half + 1, oversample, 2 * half + 1, oversample).mean(axis=(1, 3))
    return k / k.sum()


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 2-D Gaussian kernel, radius ceil(3 sigma) >= 1 (sigma in pixels; a sigma of 0
    gives a near-delta)."""
    return gaussian_2d(max(sigma, 1e-6), three_sigma_radius(sigma))


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve a (H, W) image with a non-negative kernel, 'same' size, mirrored border.

    FFT round-off (~1e-16 relative) can dip below zero; a non-negative image stays non-negative.
    """
    p = kernel.shape[0] // 2
    padded = np.pad(image, p, mode="symmetric")
    out = signal.fftconvolve(padded, kernel, mode="valid")
    return np.maximum(out, 0.0) if image.min() >= 0 else out


def bin_pixels(image: np.ndarray, factor: int) -> np.ndarray:
    """Integrate (..., H*f, W*f) over f x f blocks -> (..., H, W) (mean: pixel area integration)."""
    if factor == 1:
        return image
    *lead, h, w = image.shape
    return image.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def mosaic_rggb(rgb: np.ndarray) -> np.ndarray:
    """Sample a (3, H, W) camera-RGB image through an RGGB colour filter array -> (H, W)."""
    out = np.empty(rgb.shape[1:], dtype=rgb.dtype)
    for (r, c), ch in zip(BAYER_SITES, BAYER_CHANNELS):
        out[r::2, c::2] = rgb[ch, r::2, c::2]
    return out
