"""Stage crosseval@<dataset>: every fold model of every train view on its held-out tiles in every view
(the ``views`` param: all 12 by default).

Usage: python stages/crosseval.py <dataset>
Writes metrics/crosseval/<dataset>.json, the matrix as plot data plots/crosseval/<dataset>.csv,
plots/crosseval/<dataset>.png and
plots/crosseval/<dataset>_worst_pair.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rawdrift import params as P
from rawdrift.io import write_json
from rawdrift.isp.static import REFERENCE_VIEW, VIEWS
from rawdrift.reports import crosseval_heatmap, pair_figure, write_matrix_csv
from rawdrift.sources.store import load_raw_dataset, load_targets, load_view
from rawdrift.runtime import stage_platform
from rawdrift.cli import dataset_arg, run
from rawdrift.crosseval import crosseval, headline


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "crosseval.py")
    params = P.load_params()
    views = P.views(params, VIEWS, (REFERENCE_VIEW,))
    with P.sourced():             # the values are checked there; params.yaml is where they came from
        platform = stage_platform(*P.platform_values(params))
    device, amp = platform.device, platform.amp
    ds = load_raw_dataset(Path("data/raw") / dataset)
    views_dir = Path("data/views") / dataset
    result = crosseval(Path("models") / dataset, views_dir, load_targets(ds), ds.folds, ds.task, device,
                       views=views, amp=amp)
    write_json(Path("metrics/crosseval") / f"{dataset}.json", result | {"platform": platform.record()})
    write_matrix_csv(result, Path("plots/crosseval") / f"{dataset}.csv")
    head = headline(result)
    crosseval_heatmap(result, Path("plots/crosseval") / f"{dataset}.png",
                      f"{dataset}: train view x test view, {result['metric']} (* best train view per column)")
    worst = head["worst_pair"]
    tile = int(np.flatnonzero(ds.folds == 0)[0])
    a = load_view(views_dir, worst["train_view"])[tile]
    b = load_view(views_dir, worst["test_view"])[tile]
    pair_figure(a, b, (f"A: {worst['train_view']} (train)", f"B: {worst['test_view']} (test)"),
                Path("plots/crosseval") / f"{dataset}_worst_pair.png",
                f"{dataset}: worst train/test pair, {result['metric']} drop {worst['drop']:.3f} (tile {ds.ids[tile]})")
    return (f"crosseval@{dataset}: {result['metric']} diagonal {head['diagonal_mean']:.3f}, "
            f"off-diagonal {head['off_diagonal_mean']:.3f}, drop {head['drop']:.3f} over {result['folds']} folds")


if __name__ == "__main__":
    run(main)
