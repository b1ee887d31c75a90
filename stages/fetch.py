"""Stage fetch@<dataset>: write data/raw/<dataset>/ from the configured source.

Usage: python stages/fetch.py <dataset>
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rawdrift import params as P  # noqa: E402
from rawdrift.errors import RawdriftError  # noqa: E402
from rawdrift.sources import synthetic  # noqa: E402
from stages._cli import dataset_arg, run  # noqa: E402


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "fetch.py")
    params = P.load_params()
    source = P.get(params, "data.source")
    if source not in P.SOURCES:
        raise RawdriftError(f"params.yaml: data.source must be one of {', '.join(P.SOURCES)}, got {source!r}")
    meta = synthetic.generate(
        dataset, Path("data/raw") / dataset,
        count=P.int_param(params, f"data.{dataset}.count", 1),
        tile=P.int_param(params, f"data.{dataset}.tile", 16, 4096),
        folds=P.int_param(params, "data.folds", 2, 100),
        seed=P.int_param(params, "seed", 0),
        intensities=P.ratios_param(params, "data.intensities"),
        workers=P.workers())
    counts = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in meta["class_counts"].items())
    return (f"fetch@{dataset}: {meta['count']} tiles {meta['height']}x{meta['width']} at "
            f"{len(meta['intensities'])} intensities, {meta['folds']} folds ({counts})")


if __name__ == "__main__":
    run(main)
