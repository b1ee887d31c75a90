"""Soft 2-D shapes on coordinate grids, for the synthetic scene generators.

Shapes are signed distance fields (negative inside, in the grid's physical units) turned
into coverage in [0, 1] by :func:`coverage`; rotating and translating means transforming
the coordinates.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def grid(n: int, extent: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (n, n), spanning [-extent/2, extent/2]."""
    c = (np.arange(n) + 0.5) * (extent / n) - extent / 2
    return np.meshgrid(c, c, indexing="ij")


def rotate(y: np.ndarray, x: np.ndarray, cy: float, cx: float, angle: float):
    """Coordinates relative to (cy, cx) in a frame rotated by ``angle`` (radians): (u along, v across)."""
    dy, dx = y - cy, x - cx
    ca, sa = np.cos(angle), np.sin(angle)
    return dx * ca + dy * sa, -dx * sa + dy * ca


def coverage(sdf: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside-ness of a signed distance field; ``edge`` is the 10-90 % width / 4.4."""
    return 1.0 / (1.0 + np.exp(np.clip(sdf / max(edge, 1e-9), -60, 60)))


def sdf_disc(y, x, cy, cx, r):
    return np.hypot(y - cy, x - cx) - r


def sdf_ellipse(y, x, cy, cx, a, b, angle=0.0):
    """Approximate SDF of an ellipse with semi-axes a (along angle) and b."""
    u, v = rotate(y, x, cy, cx, angle)
    return (np.hypot(u / a, v / b) - 1.0) * min(a, b)


def sdf_box(y, x, cy, cx, length, width, angle=0.0, radius=0.0):
    """SDF of a rectangle (length along ``angle``) with rounded corners of ``radius``."""
    u, v = rotate(y, x, cy, cx, angle)
    qu = np.abs(u) - (length / 2 - radius)
    qv = np.abs(v) - (width / 2 - radius)
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    inside = np.minimum(np.maximum(qu, qv), 0)
    return outside + inside - radius


def sdf_blob(y, x, cy, cx, r, harmonics, angle=0.0):
    """Star-shaped blob: radius ``r * (1 + sum a_k cos(k theta + phi_k))``; harmonics = [(k, a_k, phi_k)]."""
    u, v = rotate(y, x, cy, cx, angle)
    theta = np.arctan2(v, u)
    rad = np.ones_like(theta)
    for k, a, phi in harmonics:
        rad = rad + a * np.cos(k * theta + phi)
    return np.hypot(u, v) - r * rad


def sdf_polyline(y, x, points, radius):
    """SDF of a thick polyline (capsules between consecutive points), constant radius."""
    d = np.full(y.shape, np.inf)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        py, px = y - y0, x - x0
        dy, dx = y1 - y0, x1 - x0
        t = np.clip((py * dy + px * dx) / max(dy * dy + dx * dx, 1e-12), 0, 1)
        d = np.minimum(d, np.hypot(py - t * dy, px - t * dx))
    return d - radius


def smooth_noise(rng: np.random.Generator, shape, sigma_px: float) -> np.ndarray:
    """Gaussian random field, zero mean, unit std, correlation length ``sigma_px`` pixels."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    f -= f.mean()
    return f / (f.std() + 1e-12)


def splat(shape, ys, xs, sigma_px: float, amplitude) -> np.ndarray:
    """Sum of Gaussian spots at pixel positions (ys, xs); each spot peaks near ``amplitude``."""
    img = np.zeros(shape)
    iy = np.clip(np.round(ys).astype(int), 0, shape[0] - 1)
    ix = np.clip(np.round(xs).astype(int), 0, shape[1] - 1)
    np.add.at(img, (iy, ix), np.broadcast_to(amplitude, iy.shape))
    s = max(sigma_px, 0.3)
    return ndimage.gaussian_filter(img, s, mode="constant") * (2 * np.pi * s * s)


def sample_inside(rng: np.random.Generator, weight: np.ndarray, count: int):
    """Draw ``count`` pixel positions (float ys, xs) with probability proportional to ``weight``."""
    w = np.clip(weight, 0, None).ravel()
    total = w.sum()
    if count <= 0 or total <= 0:
        return np.empty(0), np.empty(0)
    idx = rng.choice(w.size, size=count, p=w / total)
    ys, xs = np.unravel_index(idx, weight.shape)
    return ys + rng.uniform(-0.5, 0.5, count), xs + rng.uniform(-0.5, 0.5, count)
