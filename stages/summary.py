"""Stage summary: headline numbers per dataset into metrics/summary.json, the ranking tables
(paper tables 5-9; the stars of figures 4, 5) into metrics/rankings.json, the few figures
compared between runs into metrics/headline/summary.json, and the data-model vs
common-corruption comparison figures into plots/comparison/.

Usage: python stages/summary.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from rawdrift import params as P
from rawdrift.corruptions import CORRUPTIONS, corrupt, corruption_headline, corruption_seed
from rawdrift.crosseval import headline
from rawdrift.errors import RawdriftError
from rawdrift.io import read_json, write_json
from rawdrift.reports import comparison_figure, pair_figure, summary_tables
from rawdrift.sources.store import load_raw_dataset, load_view
from rawdrift.cli import run
from rawdrift.headline import ROOT as HEADLINE, summary_headline


def comparison_tiles(dataset: str, head: dict, corr_head: dict, seed: int, reference_tile: int, out: Path) -> None:
    """One held-out tile: the worst view change next to the worst severity-s corruption, with |A - B|."""
    ds = load_raw_dataset(Path("data/raw") / dataset)
    views_dir = Path("data/views") / dataset
    worst = head["worst_pair"]
    name = max(corr_head["drop_per_corruption"], key=corr_head["drop_per_corruption"].get)
    sev = corr_head["severity"]
    tile = int((ds.folds == 0).nonzero()[0][0])
    a = load_view(views_dir, worst["train_view"], [tile])
    b = load_view(views_dir, worst["test_view"], [tile])[0]
    gen = torch.Generator().manual_seed(corruption_seed(seed, 0, name, sev))
    c = corrupt(torch.from_numpy(a), name, sev, gen, int(ds.meta["width"]) / reference_tile)[0].numpy()
    pair_figure(a[0], [b, c], (f"A: {worst['train_view']} (train view)", f"B: {worst['test_view']} (worst view change)",
                               f"B: {name.replace('_', ' ')}, severity {sev} (worst corruption)"), out,
                f"{dataset} tile {ds.ids[tile]}: view change (drop {worst['drop']:.3f}) vs corruption "
                f"(drop {corr_head['drop_per_corruption'][name]:.3f})")


def main(argv: list[str]) -> str:
    params = P.load_params()
    cp = P.corruption_params(params, CORRUPTIONS)
    seed = P.seed(params)
    sev = cp.summary_severity
    summary, rankings = {}, {}
    for dataset in P.DATASETS:
        cross = read_json(Path("metrics/crosseval") / f"{dataset}.json", " (run crosseval first)")
        corr = read_json(Path("metrics/corruptions") / f"{dataset}.json", " (run corruptions first)")
        head = headline(cross)
        per_sev = {s: corruption_headline(corr, cross, int(s)) for s in corr["severity"]}
        if str(sev) not in per_sev:
            raise RawdriftError(f"metrics/corruptions/{dataset}.json: corruptions.summary_severity {sev} was not "
                                f"evaluated (rerun corruptions@{dataset})")
        chead = per_sev[str(sev)]
        summary[dataset], rankings[dataset] = summary_tables(head, per_sev, sev)
        comparison_figure(cross, corr, sev, Path("plots/comparison") / f"{dataset}_matrices.png",
                          f"{dataset}: data-model drift (left) vs common corruptions (right), {cross['metric']}")
        comparison_tiles(dataset, head, chead, seed, cp.reference_tile,
                         Path("plots/comparison") / f"{dataset}_tiles.png")
    write_json(Path("metrics/summary.json"), summary)
    write_json(Path("metrics/rankings.json"), rankings)
    write_json(HEADLINE / "summary.json", summary_headline(summary))
    parts = []
    for d, s in summary.items():
        ratio = s["corruptions"]["ratio"]
        parts.append(f"{d} {s['drift_synthesis']['metric']} {s['drift_synthesis']['diagonal_mean']:.3f} -> "
                     f"{s['drift_synthesis']['off_diagonal_mean']:.3f} (views), "
                     f"-> {s['corruptions']['corrupted_mean']:.3f} (corruptions, severity {sev}, "
                     f"{'n/a' if ratio is None else f'{ratio:.1f}x'} the view drop)")
    return "summary: " + "; ".join(parts)


if __name__ == "__main__":
    run(main)
