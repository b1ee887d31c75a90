"""Figures and tables.

Tables are pandas frames: a matrix (train view x test view or corruption) is a DataFrame
labelled by its rows and columns, rankings are its sorts and ranks, the training curves a
long-format frame, and CSV files are written from frames. Averages over a matrix row, over
folds or over steps are numpy's reductions of the frame's values in row-major order
(:func:`values`): pandas sums an axis of a frame in another order, and so does numpy over a
frame's column-major ``to_numpy()``, which would move the last bit of the published numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rawdrift.camera import RAW_SCALE
from rawdrift.errors import RawdriftError
from rawdrift.io import atomic_file, save_figure
from rawdrift.isp.static import REFERENCE_VIEW, VIEWS, render_static
from rawdrift.sources.store import RawDataset, load_view

plt.switch_backend("Agg")     # files only, whatever MPLBACKEND or the platform default says


def views_figure(ds: RawDataset, views_dir: str | Path, out: str | Path, views: Sequence[str] = VIEWS,
                 index: int = 0) -> None:
    """One tile in each of ``views`` (rows 1-2, as rendered in ``views_dir``) and at every raw
    intensity through the reference view ``bi_s_ga`` (row 3), in the manner of paper figures 3 and 8."""
    intensities = ds.intensities
    per_row = (len(views) + 1) // 2
    cols = max(per_row, len(intensities))
    fig, axes = plt.subplots(3, cols, figsize=(2.0 * cols, 6.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    mask = ds.masks()[index] if ds.task == "segmentation" else None
    for k, view in enumerate(views):
        ax = axes[k // per_row, k % per_row]
        img = load_view(views_dir, view)[index].transpose(1, 2, 0)
        ax.imshow(img, interpolation="nearest")
        if mask is not None and k == 0:
            ax.contour(mask, levels=[0.5], colors="yellow", linewidths=0.6)
        ax.set_title(view.replace("_", ","), fontsize=9)
    for k, ratio in enumerate(intensities):
        raw = np.asarray(ds.raw(ratio)[index], dtype=np.float64) / RAW_SCALE
        axes[2, k].imshow(render_static(raw, ds.camera, REFERENCE_VIEW).transpose(1, 2, 0), interpolation="nearest")
        axes[2, k].set_title(f"raw x{ratio:g} ({REFERENCE_VIEW.replace('_', ',')})", fontsize=9)
    label = ""
    if ds.task == "classification":
        label = f" - class {ds.meta['classes'][int(ds.labels()[index])]}"
    fig.suptitle(f"{ds.meta['dataset']} tile {ds.ids[index]}{label}: {len(views)} static views (top), "
                 f"{len(intensities)} raw intensities (bottom)")
    fig.tight_layout()
    save_figure(fig, out, dpi=80)
    plt.close(fig)


def matrix_heatmap(ax, mean: np.ndarray, std: np.ndarray, rows, cols, fontsize: float = 7.5,
                   vrange: tuple[float, float] | None = None):
    """Draw a (train x test) matrix on ``ax`` in the manner of figures 4 and 5: mean and std in each
    cell, rows ranked by their average (rank in brackets), a star on the best rows of each column
    (all of them when tied, none when the whole column ties). Returns the image for a colour bar."""
    n_rows, n_cols = mean.shape
    rank = (-mean.mean(1)).argsort(kind="stable").argsort(kind="stable") + 1
    vmin, vmax = vrange or (max(0.0, mean.min() - 0.05), min(1.0, mean.max() + 0.02))
    im = ax.imshow(mean, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    best = np.isclose(mean, mean.max(0, keepdims=True), rtol=0, atol=1e-12) & (np.ptp(mean, 0) > 0)[None]
    mid = (vmin + vmax) / 2
    for i in range(n_rows):
        for j in range(n_cols):
            star = "*" if best[i, j] else ""
            ax.text(j, i, f"{mean[i, j]:.2f}{star}\n±{std[i, j]:.2f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if mean[i, j] < mid else "black")
    ax.set_xticks(range(n_cols), [c.replace("_", ",") if c in VIEWS else c.replace("_", " ") for c in cols],
                  rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), [f"({rank[i]}) {v.replace('_', ',')}" for i, v in enumerate(rows)], fontsize=8)
    return im


def crosseval_heatmap(result: dict, out: str | Path, title: str) -> None:
    """Heatmap of the 12x12 matrix (figures 4, 5): mean and std in each cell, row rank by
    average over test views, a star on the best train view of each column."""
    fig, ax = plt.subplots(figsize=(12, 9.5))
    im = matrix_heatmap(ax, np.asarray(result["mean"]), np.asarray(result["std"]), result["views"], result["views"])
    ax.set_xlabel("test view")
    ax.set_ylabel("train view (rank by average over test views)")
    fig.colorbar(im, ax=ax, label=f"{result['metric']} (mean over {result['folds']} folds)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=90)
    plt.close(fig)


def corruption_heatmaps(result: dict, out: str | Path, title: str) -> None:
    """One 12 x (1 + C) heatmap per severity (figures 4, 5 right; 9-12): identity first."""
    sev = result["severities"]
    fig, axes = plt.subplots(1, len(sev), figsize=(9.5 * len(sev), 8.5), squeeze=False)
    for ax, s in zip(axes[0], sev):
        r = result["severity"][str(s)]
        im = matrix_heatmap(ax, np.asarray(r["mean"]), np.asarray(r["std"]), result["views"], result["columns"])
        ax.set_title(f"severity {s}")
        ax.set_xlabel("test: identity, then corruption of the train view's held-out tiles")
        fig.colorbar(im, ax=ax, shrink=0.8)
    axes[0, 0].set_ylabel("train view (rank by average over the row)")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=60)
    plt.close(fig)


def comparison_figure(cross: dict, corr: dict, severity: int, out: str | Path, title: str) -> None:
    """The ISP matrix (left) next to the corruption matrix at ``severity`` (right), as figures 4 and 5."""
    fig, axes = plt.subplots(1, 2, figsize=(24, 10), gridspec_kw={"width_ratios": [12, 11]})
    r = corr["severity"][str(severity)]
    both = np.concatenate([np.ravel(cross["mean"]), np.ravel(r["mean"])])
    vrange = (float(both.min()), float(both.max()))        # one colour scale, so the panels compare
    im = matrix_heatmap(axes[0], np.asarray(cross["mean"]), np.asarray(cross["std"]), cross["views"], cross["views"],
                        vrange=vrange)
    axes[0].set_title("data models (ISP): test view")
    axes[0].set_ylabel("train view (rank by average over the row)")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    im = matrix_heatmap(axes[1], np.asarray(r["mean"]), np.asarray(r["std"]), corr["views"], corr["columns"],
                        vrange=vrange)
    axes[1].set_title(f"common corruptions, severity {severity}: identity, then corruptions")
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=80)
    plt.close(fig)


def pair_figure(a: np.ndarray, b, labels, out: str | Path, title: str) -> None:
    """One tile as A and as each B, with |A - B| per channel: one row per B.

    a: (3, H, W) in [0, 1]; b: one such array or a list of them; labels: (label A, label B, ...).
    """
    bs = [b] if isinstance(b, np.ndarray) else list(b)
    fig, axes = plt.subplots(len(bs), 5, figsize=(17, 3.6 * len(bs)), squeeze=False)
    vmax = max(max(float(np.abs(a - bb).max()) for bb in bs), 1e-6)
    for r, bb in enumerate(bs):
        diff = np.abs(a - bb)
        axes[r, 0].imshow(a.transpose(1, 2, 0), interpolation="nearest")
        axes[r, 0].set_title(labels[0], fontsize=9)
        axes[r, 1].imshow(bb.transpose(1, 2, 0), interpolation="nearest")
        axes[r, 1].set_title(labels[1 + r], fontsize=9)
        for c, name in enumerate("RGB"):
            im = axes[r, 2 + c].imshow(diff[c], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            axes[r, 2 + c].set_title(f"|A - B| {name} (mean {diff[c].mean():.3f})", fontsize=9)
        for ax in axes[r]:
            ax.axis("off")
    fig.colorbar(im, ax=axes[:, 2:].ravel().tolist(), shrink=0.8)
    fig.suptitle(title)
    save_figure(fig, out, dpi=80)
    plt.close(fig)


def forensics_figure(result: dict, out: str | Path, title: str) -> None:
    """Figure 6 (a, c): metric vs lambda per searched group (left), l2 distance vs metric (right).

    Error bars are the std over folds; the dashed line is the clean metric (initial parameters).
    """
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    clean = result["clean"]["mean"]
    for g in result["groups"]:
        rows = sorted((float(k), v) for k, v in result["results"][g].items())
        lam = np.array([r[0] for r in rows])
        m = np.array([r[1]["metric"]["mean"] for r in rows])
        s = np.array([r[1]["metric"]["std"] for r in rows])
        l2 = np.array([r[1]["l2"]["mean"] for r in rows])
        style = {"lw": 2.4, "color": "black"} if g == "all" else {"lw": 1.2}
        axes[0].errorbar(np.maximum(lam, 1e-12), m, yerr=s, marker="o", ms=3, capsize=2, label=g.replace("_", " "), **style)
        axes[1].plot(np.maximum(l2, 1e-12), m, marker="o", ms=3, label=g.replace("_", " "), **style)
    for ax in axes:
        ax.axhline(clean, ls="--", color="grey", lw=1, label="clean (bi,s,ga)")
        ax.set_xscale("log")
        ax.set_ylabel(f"held-out {result['metric']} after the search")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("lambda (weight of the l2 term; smaller = larger search space)")
    axes[1].set_xlabel("l2 distance to the clean views (mean squared difference per pixel and channel)")
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=80)
    plt.close(fig)


def forensics_tiles(clean: np.ndarray, searched: list[np.ndarray], labels: list[str], out: str | Path,
                    title: str) -> None:
    """Figure 6 (b): one tile in the clean view next to the same tile after searches at several lambda.

    clean: (3, H, W) in [0, 1]; searched: list of such arrays; labels: one per searched tile.
    """
    n = 1 + len(searched)
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.7), squeeze=False)
    for ax, img, label in zip(axes[0], [clean] + list(searched), ["clean (bi,s,ga)"] + list(labels)):
        ax.imshow(np.clip(img, 0, 1).transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out, dpi=80)
    plt.close(fig)


#: Line colours of the drift-optimization modes (figure 7: learned blue, frozen red).
MODE_COLOURS = {"learned": "tab:blue", "frozen": "tab:red", "raw": "tab:green"}


def optimization_figure(summary: dict, tiles: dict, out: str | Path, title: str) -> None:
    """Figure 7: per intensity (rows), one tile through the frozen and the learned data model,
    and the held-out metric over optimisation steps (mean over folds, std band) of every mode.

    summary: :func:`optimization_summary` output; tiles: {intensity: {"frozen": (3, H, W),
    "learned": (3, H, W)}} in [0, 1] (either may be missing).
    """
    by_intensity: dict[float, list] = {}
    for name, s in summary["settings"].items():
        by_intensity.setdefault(s["intensity"], []).append((name, s))
    rows = sorted(by_intensity)
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 3.4 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 2.4]})
    for r, intensity in enumerate(rows):
        for c, mode in enumerate(("frozen", "learned")):
            ax = axes[r, c]
            img = tiles.get(intensity, {}).get(mode)
            if img is not None:
                ax.imshow(np.clip(img, 0, 1).transpose(1, 2, 0), interpolation="nearest")
            ax.set_title(f"{mode} ISP, raw intensity {intensity:g}", fontsize=8)
            ax.axis("off")
        ax = axes[r, 2]
        for name, s in sorted(by_intensity[intensity], key=lambda kv: kv[1]["mode"]):
            curve = s["curve"]
            x, m, sd = np.array(curve["step"]), np.array(curve["mean"]), np.array(curve["std"])
            colour = MODE_COLOURS.get(s["mode"])
            ax.plot(x, m, color=colour, lw=1.6,
                    label=f"{s['mode']} ({s['table']['mean']:.2f} +- {s['table']['std']:.2f})")
            ax.fill_between(x, m - sd, m + sd, color=colour, alpha=0.2, lw=0)
        ax.set_xlabel("optimisation step")
        ax.set_ylabel(f"held-out {summary['metric']}")
        ax.set_title(f"raw intensity {intensity:g}: mean over folds, band = 1 std "
                     f"(legend: table 2, mean +- std over folds and steps)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, out, dpi=80)
    plt.close(fig)


# --- Tables ----------------------------------------------------------------------------------------------------------

#: The ranking tables of the 12 x 12 matrix (metrics/rankings.json), kept out of metrics/summary.json.
VIEW_TABLES = ("train_view_ranking", "rank_per_test_view", "best_train_view_per_test_view")
#: The ranking tables of a corruption matrix at one severity.
CORRUPTION_TABLES = ("train_view_ranking", "rank_per_column", "best_train_view_per_column")


def matrix_frame(mean, rows, columns) -> pd.DataFrame:
    """A (rows x columns) matrix of scores as a float64 DataFrame labelled by its rows and columns."""
    return pd.DataFrame(np.asarray(mean, dtype=np.float64), index=list(rows), columns=list(columns))


def values(frame: pd.DataFrame) -> np.ndarray:
    """A frame's values as a row-major (C-contiguous) array, the order the matrices are given
    in (``to_numpy()`` of a frame is column-major: numpy would sum its rows in another order)."""
    return np.ascontiguousarray(frame.to_numpy())


def row_averages(matrix: pd.DataFrame) -> pd.Series:
    """Each row's average over the columns (numpy's row means, see the module docstring)."""
    return pd.Series(values(matrix).mean(1), index=matrix.index)


def ranking(matrix: pd.DataFrame) -> list[dict]:
    """Rows by their average over the columns, best first, ties in row order:
    ``[{"view": row, "average": value}, ...]`` (paper tables 5, 7, 9)."""
    averages = row_averages(matrix).sort_values(ascending=False, kind="stable")
    return [{"view": row, "average": float(value)} for row, value in averages.items()]


def rank_per_column(matrix: pd.DataFrame) -> dict[str, dict[str, int]]:
    """``{column: {row: rank}}``, 1 = the column's best row, ties ranked in row order (paper
    tables 6, 8; the bracketed ranks of figures 4, 5)."""
    return (-matrix).rank(axis=0, method="first").astype(int).to_dict()


def best_row_per_column(matrix: pd.DataFrame) -> dict[str, str]:
    """``{column: the first row with the column's best value}``."""
    return matrix.idxmax(axis=0).to_dict()


def best_rows_per_column(matrix: pd.DataFrame) -> dict[str, list[str]]:
    """``{column: [every row with the column's best value]}``: several when they tie, none when
    the whole column ties (e.g. a corruption every model fails completely)."""
    return {c: (list(col.index[col == col.max()]) if col.max() > col.min() else []) for c, col in matrix.items()}


def write_csv(frame: pd.DataFrame, path: str | Path, float_format: str | None = None) -> None:
    """``frame`` as CSV without its index, as Python's csv module writes it (CRLF line ends,
    minimal quoting; floats as ``repr`` or ``float_format``), atomically."""
    if float_format is None:     # pandas' own float format drops the 17th digit of some values
        floats = frame.select_dtypes("float").columns
        frame = frame.assign(**{c: frame[c].map(lambda v: repr(float(v))) for c in floats})
    with atomic_file(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\r\n", float_format=float_format)


def matrix_table(result: dict) -> pd.DataFrame:
    """The crosseval matrix in long format: one row per (train view, test view), in the
    matrix's order (row by row), with the mean and std over folds."""
    views = result["views"]
    cells = pd.DataFrame({result["metric"]: matrix_frame(result["mean"], views, views).stack(),
                          "std": matrix_frame(result["std"], views, views).stack()})
    return cells.rename_axis(["train_view", "test_view"]).reset_index()


def write_matrix_csv(result: dict, path: str | Path) -> None:
    """:func:`matrix_table` as ``plots/crosseval/<dataset>.csv`` (6 significant digits), atomically:
    ``dvc plots`` draws it with the ``matrix`` template and compares it with ``dvc plots diff``."""
    write_csv(matrix_table(result), path, float_format="%.6g")


def curve_table(results: dict, metric: str) -> pd.DataFrame:
    """Drift optimization's validations in long format, one row per setting, fold and
    validation: ``step, setting, fold, <metric>`` (figure 7's bands; ``plots/optimize/<dataset>/curves.csv``).

    ``results``: {setting name: [:class:`rawdrift.optimization.JointFold` per fold]}.
    """
    rows = [(step, name, f.fold, value) for name, folds in results.items() for f in folds
            for step, value in zip(f.steps, f.val_metric)]
    return pd.DataFrame(rows, columns=["step", "setting", "fold", metric])


def train_curve_table(train_dir: str | Path, views: Sequence[str]) -> pd.DataFrame:
    """The train stages' curves of ``views`` in long format, one row per view and epoch:
    ``view, step, train_loss, val_<metric>`` (the mean over folds, as dvclive logged them in
    ``<train_dir>/<view>/plots/metrics/*.tsv``; ``plots/train/<dataset>.csv``, one line per view in
    ``dvc plots show``)."""
    frames = []
    for view in views:
        folder = Path(train_dir) / view / "plots" / "metrics"
        files = sorted(folder.glob("*.tsv")) if folder.is_dir() else []
        if not files:
            raise RawdriftError(f"{folder}: no training curves (run the train stage of {view} first)")
        curves = [pd.read_csv(f, sep="\t", float_precision="round_trip").set_index("step") for f in files]
        frames.append(pd.concat(curves, axis=1).reset_index().assign(view=view))
    table = pd.concat(frames, ignore_index=True)
    return table[["view", "step", *sorted(c for c in table.columns if c not in ("view", "step"))]]


def _mean_std(values: pd.Series) -> dict:
    """Mean and sample std (ddof 1; 0.0 for a single value) of a Series (pandas' 1-D reductions
    are numpy's)."""
    return {"mean": float(values.mean()), "std": float(values.std()) if len(values) > 1 else 0.0}


def optimization_summary(results: dict, metric: str) -> dict:
    """The metrics of ``metrics/optimize/<dataset>.json`` from every setting's folds.

    Per setting: ``table`` (paper table 2: mean and std of the held-out metric over folds and
    steps), ``final`` (mean and std over folds of the last value, and per fold) and ``curve``
    (per step: mean and std over folds, the lines and bands of figure 7). Folds of a setting
    must have been validated at the same steps.
    """
    out: dict = {"metric": metric, "settings": {}}
    for name, folds in results.items():
        steps = folds[0].steps
        if any(f.steps != steps for f in folds):
            raise RawdriftError(f"{name}: folds were validated at different steps")
        wide = pd.DataFrame([f.val_metric for f in folds], index=[f.fold for f in folds], columns=steps,
                            dtype=np.float64)                     # folds x validations
        v = values(wide)
        out["settings"][name] = {
            "mode": folds[0].mode, "intensity": folds[0].intensity, "folds": len(folds), "steps": steps[-1],
            "table": _mean_std(pd.Series(v.ravel())),
            "final": {**_mean_std(wide.iloc[:, -1]), "per_fold": wide.iloc[:, -1].tolist()},
            "curve": {"step": list(steps), "mean": v.mean(0).tolist(),
                      "std": (v.std(0, ddof=1) if len(folds) > 1 else np.zeros(len(steps))).tolist()},
        }
    return out


def summary_tables(head: dict, per_severity: dict[str, dict], severity: int) -> tuple[dict, dict]:
    """One dataset's entries of ``metrics/summary.json`` and ``metrics/rankings.json``.

    ``head``: :func:`rawdrift.crosseval.headline`; ``per_severity``: {severity:
    :func:`rawdrift.corruptions.corruption_headline`}, ``severity`` among them (the comparison).
    The summary keeps the figures (and the top 3 train views), the rankings the tables.
    """
    chead = per_severity[str(severity)]
    summary = {
        "drift_synthesis": {k: v for k, v in head.items() if k not in VIEW_TABLES}
        | {"top3_train_views": [r["view"] for r in head["train_view_ranking"][:3]]},
        "corruptions": {k: v for k, v in chead.items() if k not in CORRUPTION_TABLES}
        | {"per_severity": {s: {k: h[k] for k in ("corrupted_mean", "corruption_drop", "ratio")}
                            for s, h in per_severity.items()}},
    }
    rankings = {"drift_synthesis": {t: head[t] for t in VIEW_TABLES},
                "corruptions": {t: chead[t] for t in CORRUPTION_TABLES}}
    return summary, rankings
