"""Stage curves@<dataset>: the training curves of every train view in one long table.

Usage: python stages/curves.py <dataset>
Reads the dvclive curves the train stages wrote for each view of the ``views`` param
(plots/train/<dataset>/<view>/plots/metrics/*.tsv, means over folds) and writes
plots/train/<dataset>.csv (view, step, train_loss, val_<metric>): the data of ``dvc plots show``'s
one-line-per-view figures, for whichever views the run has.
"""

from __future__ import annotations

from pathlib import Path

from rawdrift import params as P
from rawdrift.cli import dataset_arg, run
from rawdrift.isp.static import REFERENCE_VIEW, VIEWS
from rawdrift.reports import train_curve_table, write_csv


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "curves.py")
    params = P.load_params()
    views = P.views(params, VIEWS, (REFERENCE_VIEW,))
    table = train_curve_table(Path("plots/train") / dataset, views)
    write_csv(table, Path("plots/train") / f"{dataset}.csv")
    return f"curves@{dataset}: {len(views)} views x {table['step'].nunique()} epochs -> plots/train/{dataset}.csv"


if __name__ == "__main__":
    run(main)
