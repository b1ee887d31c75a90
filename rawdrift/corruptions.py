"""Common corruptions (Hendrycks & Dietterich, ImageNet-C): the post-hoc, physically unfaithful baseline.

The ten corruptions the paper relates to ISP steps (section 5.1.1, figure 13), batched in
torch so they run wherever the task models run (CPU or CUDA) and take a ``torch.Generator``
for reproducible noise. The formulas and constants are ImageNet-C's as the maintained
``corrupt-tta`` package (0.1.7) writes them; ``tests/test_corruptions.py`` checks every one
against it: deterministic corruptions to float32 precision, stochastic ones in distribution.

Every function takes views ``x`` of shape (B, 3, H, W), float in [0, 1], and returns the same
shape in [0, 1]. ``severity`` is an integer 1..5.

Pixel-unit constants (the gaussian-blur sigma, the elastic displacement, smoothness and affine
jitter) are ImageNet-C's for its image size. ``scale`` multiplies them: our tiles keep the
field of view fixed and change the pixel size, so a corruption defined for the paper's 256 px
tiles is ``scale = tile / 256`` at a smaller tile (params ``corruptions.reference_tile``).
Zoom blur, contrast, brightness, saturation and the noises are scale-free and ignore ``scale``.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rawdrift import checks
from rawdrift.errors import RawdriftError
from rawdrift.kernels import gaussian_1d, scipy_radius

#: The corruptions of the paper's comparison, in its order (facts.md).
CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
                                "zoom_blur", "contrast", "brightness", "saturate", "elastic_transform")

#: Whether a corruption draws random numbers (compared with the reference in distribution only).
STOCHASTIC: frozenset[str] = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                                        "elastic_transform"})

#: ImageNet-C constants per severity 1..5 (corrupt-tta 0.1.7, corruptions.py).
CONSTANTS: dict[str, list] = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],                    # noise std
    "shot_noise": [60, 25, 12, 5, 3],                                    # photons at full scale
    "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],                     # fraction of values hit
    "speckle_noise": [0.15, 0.2, 0.35, 0.45, 0.6],                       # multiplicative std
    "gaussian_blur": [1, 2, 3, 4, 6],                                    # sigma, pixels
    "zoom_blur": [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                  np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],   # zoom factors averaged
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],                              # contrast factor
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],                             # added to HSV value
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],       # HSV saturation * a + b
    "elastic_transform": [(224 * 2, 224 * 0.7, 224 * 0.1), (224 * 2, 224 * 0.08, 224 * 0.2),
                          (224 * 0.05, 224 * 0.01, 224 * 0.02), (224 * 0.07, 224 * 0.01, 224 * 0.02),
                          (224 * 0.12, 224 * 0.01, 224 * 0.02)],         # (alpha, sigma, affine), pixels
}


def check_corruption(name: str, severity: int) -> None:
    """Raise a one-line :class:`~rawdrift.errors.ParamError` naming ``corruption`` for an unknown
    name, ``severity`` for one outside 1..5."""
    checks.choice("corruption", name, CORRUPTIONS)
    checks.integer("severity", int(severity) if isinstance(severity, np.integer) else severity, 1, 5)


def _check_views(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise RawdriftError(f"corruptions take views of shape (B, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise RawdriftError(f"corruptions take float views in [0, 1], got {x.dtype}")


def _pad_axis(x: torch.Tensor, pad: int, mode: str, dim: int) -> torch.Tensor:
    """Pad one dim by ``pad`` with numpy's ``mode`` ('edge' = scipy nearest, 'symmetric' = scipy
    reflect) as an index gather: any ``pad`` (repeated reflection past the size), any device."""
    idx = torch.as_tensor(np.pad(np.arange(x.shape[dim]), pad, mode=mode), device=x.device)
    return x.index_select(dim, idx)


def gaussian_filter(x: torch.Tensor, sigma: float, mode: str = "edge", truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian filter over the last two dims of (B, C, H, W), as scipy.ndimage.gaussian_filter
    (radius ``int(truncate * sigma + 0.5)``; ``mode`` 'edge' = scipy 'nearest', 'symmetric' = 'reflect')."""
    radius = scipy_radius(sigma, truncate)
    if radius == 0:
        return x
    k = gaussian_1d(sigma, radius, torch).to(x.dtype).to(x.device)
    h, w = x.shape[-2:]
    y = _valid_conv(_pad_axis(x.contiguous(), radius, mode, -2), k, -2, h)     # one axis at a time: the
    return _valid_conv(_pad_axis(y, radius, mode, -1), k, -1, w)             # padding stays 1-D


#: Kernels up to this many taps run as shifted sums; longer ones through the FFT.
SHIFTED_SUM_TAPS: int = 64


def _valid_conv(y: torch.Tensor, k: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """'valid' correlation of ``y`` with a symmetric 1-D kernel along ``dim``, keeping ``n`` samples.

    Short kernels: a sum of shifted slices (no im2col; ~10x faster than a one-channel conv on CPU).
    Long kernels (the elastic transform's displacement field, sigma up to ~160 px at 256 px):
    FFT convolution, O(n log n) instead of O(n * taps).
    """
    taps = k.numel()
    if taps <= SHIFTED_SUM_TAPS:
        return sum(k[i] * y.narrow(dim, i, n) for i in range(taps))
    length = y.shape[dim] + taps - 1
    spec = torch.fft.rfft(y, length, dim=dim)
    shape = [1] * y.ndim
    shape[dim] = -1
    kf = torch.fft.rfft(k.to(y.dtype), length).reshape(shape)
    return torch.fft.irfft(spec * kf, length, dim=dim).narrow(dim, taps - 1, n)


def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, c^2), clipped."""
    c = CONSTANTS["gaussian_noise"][severity - 1]
    return (x + c * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson(x * c) / c, clipped: c photons at full scale."""
    c = CONSTANTS["shot_noise"][severity - 1]
    return (torch.poisson(x * c, generator=generator) / c).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Salt and pepper (scikit-image 's&p', salt_vs_pepper 0.5): a fraction c of all values set to 0 or 1."""
    c = CONSTANTS["impulse_noise"][severity - 1]
    flipped = torch.rand(x.shape, generator=generator, device=x.device) <= c
    salted = torch.rand(x.shape, generator=generator, device=x.device) <= 0.5
    out = torch.where(flipped & salted, torch.ones_like(x), x)
    return torch.where(flipped & ~salted, torch.zeros_like(x), out)


def speckle_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + x * N(0, c^2), clipped."""
    c = CONSTANTS["speckle_noise"][severity - 1]
    return (x + x * c * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, severity: int, scale: float = 1.0) -> torch.Tensor:
    """scikit-image ``gaussian(x, sigma=c * scale)`` per channel (scipy 'nearest' border), clipped."""
    c = CONSTANTS["gaussian_blur"][severity - 1]
    return gaussian_filter(x, c * scale, mode="edge").clamp(0, 1)


def zoom_taps(n: int, zoom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImageNet-C's ``clipped_zoom`` along one axis as two-tap linear interpolation: crop the centre
    ``ceil(n / zoom)`` samples, interpolate up to ``round(ceil(n / zoom) * zoom)`` samples (scipy
    ``zoom`` order 1, corner-aligned), keep the centre ``n``. Returns (lo, hi, frac): output sample
    i is ``(1 - frac[i]) * x[lo[i]] + frac[i] * x[hi[i]]``."""
    ch = int(np.ceil(n / zoom))
    top = (n - ch) // 2
    out = int(round(ch * zoom))
    trim = (out - n) // 2
    pos = np.arange(trim, trim + n) * ((ch - 1) / (out - 1) if out > 1 else 0.0)
    lo = np.clip(np.floor(pos).astype(int), 0, ch - 1)
    hi = np.minimum(lo + 1, ch - 1)
    return top + lo, top + hi, pos - lo


def zoom_blur(x: torch.Tensor, severity: int) -> torch.Tensor:
    """Mean of x and its centre zooms by each factor of the severity (ImageNet-C ``zoom_blur``), clipped."""
    zooms = CONSTANTS["zoom_blur"][severity - 1]
    h, w = x.shape[-2:]
    acc = x.clone()
    for z in zooms:
        rows, cols = zoom_taps(h, z), zoom_taps(w, z)
        ry0, ry1 = (torch.as_tensor(i, device=x.device) for i in rows[:2])
        rx0, rx1 = (torch.as_tensor(i, device=x.device) for i in cols[:2])
        fy = torch.as_tensor(rows[2], dtype=x.dtype, device=x.device).reshape(-1, 1)
        fx = torch.as_tensor(cols[2], dtype=x.dtype, device=x.device)
        y = x.index_select(-2, ry0) * (1 - fy) + x.index_select(-2, ry1) * fy
        acc += y.index_select(-1, rx0) * (1 - fx) + y.index_select(-1, rx1) * fx
    return (acc / (len(zooms) + 1)).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int) -> torch.Tensor:
    """(x - m) * c + m with m the per-image, per-channel mean, clipped."""
    c = CONSTANTS["contrast"][severity - 1]
    m = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - m) * c + m).clamp(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1) (turns), saturation and value in [0, 1].

    OpenCV's float formula, epsilons included (saturation ``d / (v + eps)``, hue ``60 / (d + eps)``
    per unit difference, eps = float32 machine epsilon), so near-black pixels stay grey.
    """
    eps = float(np.finfo(np.float32).eps)
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    mn, _ = x.min(1)
    d = v - mn
    s = d / (v.abs() + eps)
    k = 1.0 / (d + eps)
    h = torch.where(v == r, (g - b) * k, torch.where(v == g, 2 + (b - r) * k, 4 + (r - g) * k))
    return torch.stack([(h / 6) % 1.0, s, v], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: the six-sector formula."""
    h, s, v = hsv.unbind(1)
    h6 = (h % 1.0) * 6
    i = torch.floor(h6)
    f = h6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    table = torch.stack([torch.stack(c, 0) for c in
                         ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 0)  # (6, 3, B, H, W)
    idx = i.unsqueeze(0).unsqueeze(0).expand(1, 3, *i.shape)
    return table.gather(0, idx)[0].permute(1, 0, 2, 3)


def brightness(x: torch.Tensor, severity: int) -> torch.Tensor:
    """HSV value + c (clipped), back to RGB."""
    c = CONSTANTS["brightness"][severity - 1]
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([hsv[:, 0], hsv[:, 1], (hsv[:, 2] + c).clamp(0, 1)], 1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def saturate(x: torch.Tensor, severity: int) -> torch.Tensor:
    """HSV saturation * a + b (clipped), back to RGB."""
    a, b = CONSTANTS["saturate"][severity - 1]
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([hsv[:, 0], (hsv[:, 1] * a + b).clamp(0, 1), hsv[:, 2]], 1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def _pixel_grid(b: int, h: int, w: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype),
                            indexing="ij")
    return yy.expand(b, h, w), xx.expand(b, h, w)


def _sample(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Bilinear sample of (B, C, H, W) at pixel coordinates (B, H, W) with reflection at the border:
    about the edge pixel centres (OpenCV REFLECT_101) when ``align_corners``, about the image
    edge (scipy 'reflect') otherwise."""
    h, w = x.shape[-2:]
    if align_corners:
        gx, gy = 2 * xs / max(w - 1, 1) - 1, 2 * ys / max(h - 1, 1) - 1
    else:
        gx, gy = (2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=align_corners)


def elastic_transform(x: torch.Tensor, severity: int, generator: torch.Generator | None = None,
                      scale: float = 1.0) -> torch.Tensor:
    """ImageNet-C elastic transform: a random affine jitter of three control points (OpenCV
    ``warpAffine``, REFLECT_101 border), then a smooth random displacement field (uniform noise
    filtered by a Gaussian of sigma ``c1``, times ``c0``; scipy ``map_coordinates`` order 1, reflect)."""
    jitter = CONSTANTS["elastic_transform"][severity - 1][2] * scale
    b, _, h, w = x.shape
    shift = (torch.rand(b, 3, 2, generator=generator, device=x.device, dtype=torch.float64) * 2 - 1) * jitter
    field = torch.rand(b, 2, h, w, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
    return elastic_warp(x, severity, shift, field, scale)


def elastic_warp(x: torch.Tensor, severity: int, shift: torch.Tensor, field: torch.Tensor,
                 scale: float = 1.0) -> torch.Tensor:
    """The deterministic part of :func:`elastic_transform` given its random draws.

    Args:
        shift: (B, 3, 2) displacement of the three affine control points, (x, y) pixels.
        field: (B, 2, H, W) uniform noise in [-1, 1] (x then y) before smoothing.
    """
    alpha, sigma, _ = (v * scale for v in CONSTANTS["elastic_transform"][severity - 1])
    b, _, h, w = x.shape
    dev, dt = x.device, torch.float64
    centre = torch.tensor([h // 2, w // 2], dtype=dt, device=dev)
    sq = min(h, w) // 3
    pts1 = torch.stack([centre + sq, torch.stack([centre[0] + sq, centre[1] - sq]), centre - sq])   # (3, 2) as (x, y)
    pts2 = pts1 + shift.to(dt)
    # The affine map pts1 -> pts2 (source -> destination); warpAffine samples the source at M^-1(dst).
    src = torch.cat([pts1, torch.ones(3, 1, dtype=dt, device=dev)], 1)                               # (3, 3)
    m = torch.linalg.solve(src, pts2).transpose(1, 2)                                                  # (B, 2, 3)
    full = torch.cat([m, torch.tensor([0, 0, 1], dtype=dt, device=dev).expand(b, 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2].to(x.dtype)                # the 3x3 algebra in float64, the grid in x's
    yy, xx = _pixel_grid(b, h, w, dev, x.dtype)
    sx = inv[:, 0, 0, None, None] * xx + inv[:, 0, 1, None, None] * yy + inv[:, 0, 2, None, None]
    sy = inv[:, 1, 0, None, None] * xx + inv[:, 1, 1, None, None] * yy + inv[:, 1, 2, None, None]
    warped = _sample(x, sy, sx, align_corners=True)
    d = gaussian_filter(field.to(x.dtype), sigma, mode="symmetric", truncate=3.0) * alpha
    out = _sample(warped, yy + d[:, 1], xx + d[:, 0], align_corners=False)
    return out.clamp(0, 1)


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None,
            scale: float = 1.0) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to views (B, 3, H, W) in [0, 1].

    ``generator`` seeds the stochastic corruptions; ``scale`` multiplies pixel-unit constants.
    """
    check_corruption(name, severity)
    _check_views(x)
    if name in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"):
        return globals()[name](x, severity, generator)
    if name == "gaussian_blur":
        return gaussian_blur(x, severity, scale)
    if name == "elastic_transform":
        return elastic_transform(x, severity, generator, scale)
    return globals()[name](x, severity)


class Corruption(nn.Module):
    """One corruption at one severity as a module: ``forward(x)`` as :func:`corrupt`."""

    def __init__(self, name: str, severity: int, scale: float = 1.0, seed: int | None = None) -> None:
        super().__init__()
        check_corruption(name, severity)
        self.name, self.severity, self.scale, self.seed = name, severity, scale, seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = None
        if self.seed is not None and self.name in STOCHASTIC:
            gen = torch.Generator(device=x.device).manual_seed(self.seed)
        return corrupt(x, self.name, self.severity, gen, self.scale)


def corruption_seed(seed: int, fold: int, name: str, severity: int) -> int:
    """A seed per (seed, fold, corruption, severity): every train view's models see the same noise draws."""
    return (seed * 1_000_003 + fold * 10_007 + CORRUPTIONS.index(name) * 101 + severity) % (2 ** 63 - 1)


__all__ = ["CORRUPTIONS", "STOCHASTIC", "CONSTANTS", "Corruption", "corrupt", "check_corruption", "corruption_seed",
           "corruption_eval", "corruption_headline", "elastic_warp", "gaussian_filter", "zoom_taps",
           "rgb_to_hsv", "hsv_to_rgb"] + list(CORRUPTIONS)



# --- The baseline: every train view's fold models on their own held-out tiles, corrupted -----------------------

def corruption_eval(models_dir, views_dir, targets: torch.Tensor, folds: np.ndarray, task: str, device: torch.device,
                    corruptions=CORRUPTIONS, severities=(1, 3, 5), seed: int = 0, scale: float = 1.0,
                    batch_size: int = 64, views=None, amp: bool | None = None, progress: bool = True) -> dict:
    """Scores of each train view's fold models on their held-out tiles in that view, corrupted.

    Args:
        models_dir: ``models/<dataset>`` with one folder per train view.
        views_dir: ``data/views/<dataset>``.
        targets: (N,) labels or (N, H, W) masks; folds: (N,) test fold per tile.
        seed: noise seed; fold k, corruption c and severity s draw the same noise for every
            train view (:func:`corruption_seed`), so rows differ by the model and view only.
        scale: multiplies pixel-unit constants (tile / reference tile).
        batch_size: inference batch (the same as crosseval's, so the identity column equals
            the crosseval diagonal exactly).

    Returns:
        the ``metrics/corruptions/<dataset>.json`` dict: ``columns`` = identity then the
        corruptions; per severity a 12 x (1 + C) ``mean`` and ``std`` over folds (ddof 1) and
        the k x 12 x (1 + C) ``per_fold``; rows = train view.
    """
    from pathlib import Path

    from tqdm import tqdm

    from rawdrift.isp.static import VIEWS
    from rawdrift.crosseval import load_held_out
    from rawdrift.models import check_fold_counts, load_fold_model
    from rawdrift.tasks import METRIC, predict, score

    views = tuple(VIEWS if views is None else views)
    corruptions, severities = tuple(corruptions), tuple(int(s) for s in severities)
    for name in corruptions:
        for s in severities:
            check_corruption(name, s)
    k_folds = int(folds.max()) + 1
    check_fold_counts(models_dir, views, k_folds)
    amp = device.type == "cuda" if amp is None else amp
    per_fold = np.zeros((len(severities), k_folds, len(views), 1 + len(corruptions)))
    bar = tqdm(total=k_folds * len(views), desc=f"corruptions {Path(views_dir).name}", unit="model",
               disable=None if progress else True, leave=False)
    for k in range(k_folds):
        idx = np.flatnonzero(folds == k)
        y = targets[torch.from_numpy(idx)].to(device)
        for i, view in enumerate(views):
            held = load_held_out(views_dir, view, idx, device)
            model = load_fold_model(Path(models_dir) / view, k, device)
            per_fold[:, k, i, 0] = score(task, predict(model, held, batch_size, amp), y)
            for j, name in enumerate(corruptions):
                for si, s in enumerate(severities):
                    gen = torch.Generator(device=device).manual_seed(corruption_seed(seed, k, name, s))
                    bad = corrupt(held, name, s, gen, scale).contiguous(memory_format=torch.channels_last)
                    per_fold[si, k, i, 1 + j] = score(task, predict(model, bad, batch_size, amp), y)
            bar.update()
    bar.close()
    std = per_fold.std(1, ddof=1) if k_folds > 1 else np.zeros_like(per_fold[:, 0])
    return {"metric": METRIC[task], "views": list(views), "columns": ["identity", *corruptions],
            "corruptions": list(corruptions), "severities": list(severities), "folds": k_folds, "scale": scale,
            "seed": seed,
            "severity": {str(s): {"mean": per_fold[si].mean(0).tolist(), "std": std[si].tolist(),
                                  "per_fold": per_fold[si].tolist()} for si, s in enumerate(severities)}}


def corruption_headline(corr: dict, cross: dict, severity: int = 3, top: int = 3) -> dict:
    """The paper's comparison (section 5.1.2, tables 5, 7, 9) at one severity.

    ``corruption_drop`` = mean of the identity column - mean over the corruption columns
    (as ``drop`` = diagonal mean - off-diagonal mean for view changes); ``ratio`` = corruption
    drop / view drop (None when the view drop is not positive). Train views are ranked by their
    average over all columns of their row (identity included, as the view ranking includes the
    diagonal); ``top_overlap`` lists the train views in both top-``top`` lists. The best train
    views of a column are a list: several when they tie, none when the whole column ties (e.g.
    a corruption that every model fails completely).
    """
    from rawdrift.reports import best_rows_per_column, matrix_frame, rank_per_column, ranking
    key = str(severity)
    if key not in corr["severity"]:
        raise RawdriftError(f"severity {severity} not evaluated (have {', '.join(corr['severity'])})")
    if corr["views"] != cross["views"]:
        raise RawdriftError("corruption and crosseval results list different views")
    m = np.asarray(corr["severity"][key]["mean"])
    views, cols = corr["views"], corr["columns"]
    cm = np.asarray(cross["mean"])
    off = ~np.eye(len(views), dtype=bool)
    view_drop = float(np.diag(cm).mean() - cm[off].mean())
    corruption_drop = float(m[:, 0].mean() - m[:, 1:].mean())
    table = matrix_frame(m, views, cols)            # rows = train view, columns = identity, corruptions
    cc_ranking = ranking(table)
    top_isp = [r["view"] for r in ranking(matrix_frame(cm, views, views))[:top]]
    top_cc = [r["view"] for r in cc_ranking[:top]]
    return {
        "severity": severity,
        "identity_mean": float(m[:, 0].mean()),
        "corrupted_mean": float(m[:, 1:].mean()),
        "corruption_drop": corruption_drop,
        "view_drop": view_drop,
        "ratio": corruption_drop / view_drop if view_drop > 0 else None,
        "drop_per_corruption": {c: float(m[:, 0].mean() - m[:, j].mean()) for j, c in enumerate(cols) if j > 0},
        f"top{top}_isp": top_isp,
        f"top{top}_corruptions": top_cc,
        "top_overlap": [v for v in top_isp if v in top_cc],
        "train_view_ranking": cc_ranking,
        "best_train_view_per_column": best_rows_per_column(table),
        "rank_per_column": rank_per_column(table),
    }
