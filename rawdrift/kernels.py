"""The one Gaussian-kernel builder (ISP denoising, optics defocus, corruptions, SSIM window).

numpy and torch compute ``exp`` and sums with different rounding (1 ulp apart for about half of
all sigmas), so the builder takes the array library as an argument instead of converting: the
numpy callers (static / differentiable ISP, optics) and the torch callers (corruptions, SSIM)
keep the exact numbers they had.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np


def scipy_radius(sigma: float, truncate: float = 4.0) -> int:
    """The radius in pixels ``scipy.ndimage.gaussian_filter(sigma, truncate=truncate)`` uses."""
    return int(truncate * float(sigma) + 0.5)


def three_sigma_radius(sigma: float) -> int:
    """ceil(3 sigma) pixels, at least 1 (optics: a defocus blur of any width has a centre and a rim)."""
    return max(1, int(math.ceil(3 * sigma)))


def gaussian_1d(sigma: float, radius: int, xp: ModuleType = np):
    """Normalised 1-D Gaussian taps ``exp(-x^2 / (2 sigma^2))`` for x = -radius..radius (pixels),
    float64, summing to 1; shape (2 radius + 1,). ``xp``: ``numpy`` (default) or ``torch``."""
    x = xp.arange(-radius, radius + 1, dtype=xp.float64)
    g = xp.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def gaussian_2d(sigma: float, radius: int) -> np.ndarray:
    """Separable 2-D kernel (2 radius + 1, 2 radius + 1), float64 numpy, summing to 1."""
    g = gaussian_1d(sigma, radius)
    return np.outer(g, g)
