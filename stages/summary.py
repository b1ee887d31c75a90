"""Stage summary: headline numbers per dataset into metrics/summary.json, and the ranking
tables (paper tables 5, 6, 8; the stars of figures 4, 5) into metrics/rankings.json.

Usage: python stages/summary.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rawdrift.crosseval import headline  # noqa: E402
from rawdrift.io import read_json, write_json  # noqa: E402
from rawdrift.params import DATASETS  # noqa: E402
from stages._cli import run  # noqa: E402


def main(argv: list[str]) -> str:
    summary, rankings = {}, {}
    tables = ("train_view_ranking", "rank_per_test_view", "best_train_view_per_test_view")
    for dataset in DATASETS:
        head = headline(read_json(Path("metrics/crosseval") / f"{dataset}.json", " (run crosseval first)"))
        rankings[dataset] = {t: head[t] for t in tables}
        summary[dataset] = {"drift_synthesis": {k: v for k, v in head.items() if k not in tables}
                            | {"top3_train_views": [r["view"] for r in head["train_view_ranking"][:3]]}}
    write_json(Path("metrics/summary.json"), summary)
    write_json(Path("metrics/rankings.json"), rankings)
    parts = [f"{d} {s['drift_synthesis']['metric']} {s['drift_synthesis']['diagonal_mean']:.3f} -> "
             f"{s['drift_synthesis']['off_diagonal_mean']:.3f}" for d, s in summary.items()]
    return "summary: " + "; ".join(parts)


if __name__ == "__main__":
    run(main)
