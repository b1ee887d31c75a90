"""How processing drift depends on pixel scale: view drop and corruption drop per tile size.

One study point = one dataset generated at one tile size (the field of view is fixed, so the
tile size sets the pixel at the sample / on the ground), a few views rendered from the same
raw, one k-fold model per view, then

- the view matrix: every view's fold models on their held-out tiles in every studied view
  (the cross-evaluation of :mod:`rawdrift.crosseval`, restricted to the studied views);
- the corruption baseline: each view's fold models on their own held-out tiles under each
  common corruption at one severity (:mod:`rawdrift.corruptions`, same seeds per fold).

Everything is computed in memory from the same generator, renderer and training loop as the
pipeline, so a point at the default profile's tile and views reproduces the pipeline's
numbers for those views.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rawdrift import checks
from rawdrift.camera import RAW_SCALE
from rawdrift.corruptions import corrupt, corruption_seed
from rawdrift.errors import ParamError, RawdriftError
from rawdrift.isp.batched import render_batch
from rawdrift.processes import process_count
from rawdrift.sources import synthetic
from rawdrift.sources.store import load_raw_dataset, load_targets, view_to_uint16
from rawdrift.tasks import TaskConfig, predict, score
from rawdrift.training import train_folds

#: Views that span the extremes of the default 12 x 12 matrix (smooth vs sharpened, three demosaics;
#: ``ma_s_ga`` is its outlier row and column).
STUDY_VIEWS: tuple[str, ...] = ("bi_s_ga", "ma_s_ga", "ma_u_me", "me_s_me", "bi_u_ga")

#: The study's own figures (facts.md, section 5.1): diagonal, off-diagonal, corruption drop at severity 3.
PAPER = {
    "microscopy": {"pixel": 0.1625, "unit": "um", "diagonal": 0.82, "off_diagonal": 0.80, "drop": 0.02,
                   "corruption_drop": 0.27, "ratio": 13.5},
    "drone": {"pixel": 0.06, "unit": "m", "diagonal": 0.71, "off_diagonal": 0.65, "drop": 0.06,
              "corruption_drop": 0.22, "ratio": 3.7},
}


@dataclass(frozen=True)
class StudyPoint:
    """One point of the study: a dataset at a tile size, generator options and training recipe."""

    dataset: str
    tile: int
    label: str = "default"
    optics: str = "matched"
    count: int = 240
    folds: int = 3
    seed: int = 0
    views: tuple[str, ...] = STUDY_VIEWS
    task: dict = field(default_factory=dict)
    #: Another optics, recipe or tile count than the study's series (a labelled dot in the figure).
    ablation: bool = False

    def name(self) -> str:
        return f"{self.dataset}-{self.tile}px-{self.label}"


#: Keys of a point that override the dataset's training recipe (``train.<dataset>``).
TASK_KEYS: tuple[str, ...] = ("epochs", "arch", "pretrained", "lr")
POINT_KEYS = {"dataset", "tile", "label", "optics", "count", *TASK_KEYS}


def check_point(spec: dict) -> dict:
    """Validate one point's own settings: known keys, dataset, even tile >= 16, optional optics
    (microscopy), count (tiles, >= 12). The recipe overrides (:data:`TASK_KEYS`) are checked
    where they are applied, by :func:`rawdrift.tasks.task_config`. Errors name the key
    (``tile: ...``); the stage adds the point and file."""
    from rawdrift.sources.microscopy import OPTICS
    checks.mapping("", spec, sorted(POINT_KEYS))
    dataset = checks.choice("dataset", spec.get("dataset"), tuple(PAPER))
    tile = checks.integer("tile", spec.get("tile"), 16)
    if tile % 2:
        raise ParamError("tile", f"must be even, got {tile}")
    if "optics" in spec:
        if dataset != "microscopy":
            raise ParamError("optics", f"applies to microscopy only, got {spec['optics']!r} for {dataset}")
        checks.choice("optics", spec["optics"], OPTICS)
    checks.integer("count", spec.get("count", 12), 12)
    return spec


def render_views(raw: np.ndarray, camera, views) -> dict[str, torch.Tensor]:
    """uint16 (N, H, W) raw -> {view: float32 (N, 3, H, W)} through the uint16 store format."""
    x = torch.from_numpy(raw.astype(np.float64)) / RAW_SCALE
    out = {}
    for v in views:
        img = torch.cat([render_batch(x[i:i + 64], camera, v) for i in range(0, x.shape[0], 64)])
        out[v] = torch.from_numpy(view_to_uint16(img.numpy()).astype(np.float32) / np.float32(RAW_SCALE))
    return out


#: Pixels cut from each side before :func:`nyquist_amplitude` (demosaic and filter borders).
NYQUIST_BORDER: int = 4


def _second_difference(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x[i] / 2 - (x[i-1] + x[i+1]) / 4`` along ``dim`` (one sample shorter at each end): keeps a
    2-pixel alternation at its amplitude and removes constants and ramps."""
    n = x.shape[dim]
    return 0.5 * x.narrow(dim, 1, n - 2) - 0.25 * (x.narrow(dim, 0, n - 2) + x.narrow(dim, 2, n - 2))


def _alternation(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Projection of (..., H, W) on the pattern that alternates along ``dims``: (...,)."""
    sign = torch.ones(x.shape[-2:], dtype=x.dtype)
    for d in dims:
        n = x.shape[d]
        s = 1.0 - 2.0 * (torch.arange(n, dtype=x.dtype) % 2)
        sign = sign * (s[:, None] if d == -2 else s[None, :])
    return (x * sign).mean(dim=(-2, -1))


def nyquist_amplitude(images: torch.Tensor, border: int = NYQUIST_BORDER) -> float:
    """Amplitude of the 2-pixel periodic pattern of rendered views (a demosaicing fingerprint).

    For each tile and channel (border cut) the image is high-passed by the second difference
    along the axes a pattern alternates on, then projected on the three patterns of the Nyquist
    frequency, ``(-1)**(y+x)``, ``(-1)**x`` and ``(-1)**y``; the amplitude is the root sum of
    squares of the three projections, averaged over tiles and channels. A pattern
    ``a * (-1)**(y+x)`` added to a smooth image gives ``a``; smooth content gives about 0.

    images: (N, C, H, W) in [0, 1]; returns a float in the images' units (0..1).
    """
    if images.ndim != 4 or min(images.shape[-2:]) <= 2 * border + 2:
        raise RawdriftError(f"nyquist_amplitude: expected (N, C, H, W) larger than the {border}-px border, "
                            f"got {tuple(images.shape)}")
    x = images[..., border:images.shape[-2] - border, border:images.shape[-1] - border].double()
    proj = [_alternation(_second_difference(_second_difference(x, -1), -2), (-2, -1)),
            _alternation(_second_difference(x, -1), (-1,)),
            _alternation(_second_difference(x, -2), (-2,))]
    return float(torch.stack(proj).pow(2).sum(0).sqrt().mean())


def held_out_folds(folds: np.ndarray, targets: torch.Tensor, device: torch.device):
    """Per test fold k: (k, tile indices (n,), their targets on ``device``)."""
    for k in range(int(folds.max()) + 1):
        idx = torch.from_numpy(np.flatnonzero(folds == k))
        yield k, idx, targets[idx].to(device)


def view_row(models: list, views: dict[str, torch.Tensor], targets: torch.Tensor, folds: np.ndarray,
             task: str, device: torch.device) -> np.ndarray:
    """(k, V) scores of one train view's fold models: fold k's model on fold k's held-out tiles in
    each view (one row of the cross-evaluation of :mod:`rawdrift.crosseval`)."""
    out = np.zeros((len(models), len(views)))
    for k, idx, y in held_out_folds(folds, targets, device):
        for j, x in enumerate(views.values()):
            out[k, j] = score(task, predict(models[k], x[idx].to(device), 64), y)
    return out


def corruption_row(models: list, view: torch.Tensor, targets: torch.Tensor, folds: np.ndarray, task: str,
                   device: torch.device, corruptions, severity: int, seed: int, scale: float) -> np.ndarray:
    """(k, C) scores of one view's fold models on their own held-out tiles ``view`` (N, 3, H, W)
    under each corruption, with the pipeline's noise seeds per (fold, corruption, severity)."""
    out = np.zeros((len(models), len(corruptions)))
    for k, idx, y in held_out_folds(folds, targets, device):
        held = view[idx].to(device)
        for c, name in enumerate(corruptions):
            gen = torch.Generator(device=device).manual_seed(corruption_seed(seed, k, name, severity))
            out[k, c] = score(task, predict(models[k], corrupt(held, name, severity, gen, scale), 64), y)
    return out


@dataclass(frozen=True)
class ViewJob:
    """One train view of a point: its fold models, trained and evaluated in one process."""

    point: StudyPoint
    cfg: TaskConfig
    view: str
    raw: np.ndarray          # uint16 (N, H, W) mosaics at exposure 1
    camera: object
    folds: np.ndarray        # (N,) test fold per tile
    targets: torch.Tensor
    corruptions: tuple[str, ...]
    severity: int
    scale: float             # tile / reference tile, for the corruptions' pixel constants
    device: torch.device
    threads: int = 0         # intra-op threads (0: leave torch's)


def train_view(job: ViewJob) -> dict:
    """Render the point's views, train ``job.view``'s fold models and evaluate them.

    Returns ``row`` (k, V) view scores, ``corrupted`` (k, C) corruption scores and ``nyquist``,
    the view's :func:`nyquist_amplitude`. Runs in a worker process of :func:`run_point`.
    """
    if job.threads:
        torch.set_num_threads(job.threads)
    views = render_views(job.raw, job.camera, job.point.views)
    results = train_folds(job.cfg, views[job.view], job.targets, job.folds, job.point.seed, job.device,
                          progress=False, desc=f"{job.point.name()} {job.view}")
    models = [r.model for r in results]
    return {"row": view_row(models, views, job.targets, job.folds, job.cfg.task, job.device),
            "corrupted": corruption_row(models, views[job.view], job.targets, job.folds, job.cfg.task, job.device,
                                        job.corruptions, job.severity, job.point.seed, job.scale),
            "nyquist": nyquist_amplitude(views[job.view])}


def summarise(matrix: np.ndarray, corrupted: np.ndarray) -> dict:
    """Headline figures of one point from its (k, V, V) view matrix and (k, V, C) corruption scores."""
    mean = matrix.mean(0)
    n = mean.shape[0]
    off = ~np.eye(n, dtype=bool)
    diag = float(np.diag(mean).mean())
    off_mean = float(mean[off].mean())
    corr_mean = float(corrupted.mean())
    drop = diag - off_mean
    corruption_drop = diag - corr_mean
    return {"diagonal": diag, "off_diagonal": off_mean, "drop": drop, "worst_cell": float(mean[off].min()),
            "corrupted": corr_mean, "corruption_drop": corruption_drop,
            "ratio": corruption_drop / drop if drop > 0 else None,
            "diagonal_std": float(np.diag(matrix.std(0, ddof=1)).mean()) if matrix.shape[0] > 1 else 0.0}


def run_point(point: StudyPoint, cfg: TaskConfig, corruptions, severity: int = 3, reference_tile: int = 256,
              device: torch.device | None = None, workers: int = 0, progress: bool = False) -> dict:
    """Generate, render, train and evaluate one study point; returns its figures and matrices.

    ``cfg`` is the point's training recipe: ``train.<dataset>`` with ``point.task`` applied
    (the stage builds it with :func:`rawdrift.tasks.task_config`, which checks the overrides).

    On the CPU every train view runs in its own single-threaded process (:func:`train_view`), at
    most ``workers`` at a time (0: one per available core, :mod:`rawdrift.processes`), so the
    numbers do not depend on ``workers`` or on the machine's core count; on CUDA the views run
    one after the other in this process.
    """
    device = device or torch.device("cpu")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rawdrift-scale-") as tmp:
        raw_dir = Path(tmp) / point.dataset
        synthetic.generate(point.dataset, raw_dir, count=point.count, tile=point.tile, folds=point.folds,
                           seed=point.seed, intensities=[1.0], workers=workers, progress=progress,
                           optics=point.optics)
        ds = load_raw_dataset(raw_dir)
        raw = np.array(ds.raw(1.0))
        targets = load_targets(ds)
        camera, folds = ds.camera, np.array(ds.folds)
    jobs = [ViewJob(point, cfg, v, raw, camera, folds, targets, tuple(corruptions), severity,
                    point.tile / reference_tile, device, threads=1 if device.type == "cpu" else 0)
            for v in point.views]
    if device.type == "cpu":
        with mp.get_context("spawn").Pool(process_count(len(jobs), workers)) as pool:
            out = pool.map(train_view, jobs, chunksize=1)
    else:
        out = [train_view(j) for j in jobs]
    matrix = np.stack([o["row"] for o in out], axis=1)              # (k, V train, V test)
    corrupted = np.stack([o["corrupted"] for o in out], axis=1)     # (k, V, C)
    from rawdrift.sources import drone, microscopy
    pitch = (microscopy.FIELD_UM if point.dataset == "microscopy" else drone.FIELD_M) / point.tile
    return {"name": point.name(), "dataset": point.dataset, "tile": point.tile, "label": point.label,
            "ablation": point.ablation or bool(point.task) or point.optics != "matched", "pixel": pitch,
            "optics": point.optics, "count": point.count, "folds": point.folds,
            "epochs": cfg.epochs, "views": list(point.views), "task": point.task,
            **summarise(matrix, corrupted),
            "matrix": matrix.mean(0).tolist(), "corruption_scores": corrupted.mean((0, 1)).tolist(),
            "corruptions": list(corruptions), "severity": severity,
            "nyquist": {v: o["nyquist"] for v, o in zip(point.views, out)},
            "seconds": round(time.perf_counter() - started, 1)}


def scale_figure(results: list[dict], out) -> None:
    """View drop and corruption drop against the pixel (in units of the study's pixel), one panel per
    dataset; the study's own figures marked at 1; ablations (another optics or recipe) as labelled dots."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rawdrift.io import save_figure
    datasets = [d for d in PAPER if any(r["dataset"] == d for r in results)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.0), squeeze=False)
    axes_labels = []
    for ax, d in zip(axes[0], datasets):
        paper = PAPER[d]
        rows = sorted((r for r in results if r["dataset"] == d), key=lambda r: r["pixel"])
        series = [r for r in rows if not r.get("ablation")]
        x = [r["pixel"] / paper["pixel"] for r in series]
        ax.plot(x, [r["drop"] for r in series], "o-", color="C0", label="view drop (diagonal - off-diagonal)")
        ax.plot(x, [r["corruption_drop"] for r in series], "s-", color="C3", label="corruption drop (severity 3)")
        ax.plot([1], [paper["drop"]], "*", ms=14, color="C0", mec="k", label="study: view drop")
        ax.plot([1], [paper["corruption_drop"]], "*", ms=14, color="C3", mec="k", label="study: corruption drop")
        labels = []
        for r in rows:
            if r.get("ablation"):
                xr = r["pixel"] / paper["pixel"]
                ax.plot([xr], [r["drop"]], "o", color="C1", mfc="none")
                labels.append(ax.annotate(r["label"], (xr, r["drop"]), fontsize=7, xytext=(4, 2),
                                          textcoords="offset points"))
        for r in series:
            labels.append(ax.annotate(f"{r['tile']} px", (r["pixel"] / paper["pixel"], r["drop"]), fontsize=7,
                                      xytext=(-8, -12), textcoords="offset points"))
        axes_labels.append(labels)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"pixel / study's pixel ({paper['pixel']} {paper['unit']})")
        ax.set_ylabel("drop in " + ("accuracy" if d == "microscopy" else "IoU"))
        ax.set_ylim(bottom=0)
        ax.set_title(f"{d}: drift vs pixel scale")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    for labels in axes_labels:
        separate_labels(labels)
    save_figure(fig, out, dpi=90)
    plt.close(fig)


def separate_labels(labels: list, pad_px: float = 1.0) -> None:
    """Move annotations (text placed in ``offset points``) up until none overlaps another.

    From the lowest up, each label clears, by ``pad_px`` display pixels, every label placed
    before it; the lowest keeps its place. Labels only move up, so the loop ends.
    """
    if not labels:
        return
    fig = labels[0].figure
    renderer = fig.canvas.get_renderer()
    points_per_px = 72.0 / fig.dpi
    placed = []
    for text in sorted(labels, key=lambda t: t.get_window_extent(renderer).y0):
        box = text.get_window_extent(renderer)
        while (clash := next((b for b in placed if box.overlaps(b)), None)) is not None:
            dx, dy = text.xyann
            text.xyann = (dx, dy + (clash.y1 - box.y0 + pad_px) * points_per_px)
            box = text.get_window_extent(renderer)
        placed.append(box)
