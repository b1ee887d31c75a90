"""Stage corruptions@<dataset>: the common-corruption baseline (paper section 5.1.2).

Usage: python stages/corruptions.py <dataset>
Each train view's fold models on their held-out tiles in that view, corrupted by each
corruption at each severity -> metrics/corruptions/<dataset>.json (per severity a V x (1 + C)
matrix, V = the ``views`` param, identity first) and plots/corruptions/<dataset>.png (one heatmap per severity).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rawdrift import params as P
from rawdrift.corruptions import CORRUPTIONS, corruption_eval
from rawdrift.io import write_json
from rawdrift.isp.static import REFERENCE_VIEW, VIEWS
from rawdrift.reports import corruption_heatmaps
from rawdrift.runtime import stage_platform
from rawdrift.sources.store import load_raw_dataset, load_targets
from rawdrift.cli import dataset_arg, run


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "corruptions.py")
    params = P.load_params()
    cp = P.corruption_params(params, CORRUPTIONS)
    views = P.views(params, VIEWS, (REFERENCE_VIEW,))
    seed = P.seed(params)
    with P.sourced():             # the values are checked there; params.yaml is where they came from
        platform = stage_platform(*P.platform_values(params))
    device, amp = platform.device, platform.amp
    ds = load_raw_dataset(Path("data/raw") / dataset)
    scale = int(ds.meta["width"]) / cp.reference_tile     # same field of view, larger pixels
    result = corruption_eval(Path("models") / dataset, Path("data/views") / dataset, load_targets(ds), ds.folds,
                             ds.task, device, cp.names, cp.severities, seed=seed, scale=scale, amp=amp,
                             views=views)
    write_json(Path("metrics/corruptions") / f"{dataset}.json", result | {"platform": platform.record()})
    corruption_heatmaps(result, Path("plots/corruptions") / f"{dataset}.png",
                        f"{dataset}: train view x corruption of its held-out tiles, {result['metric']} "
                        f"(* best train view per column; pixel constants x {scale:.3g})")
    s = str(cp.summary_severity)
    m = np.asarray(result["severity"][s]["mean"])
    return (f"corruptions@{dataset}: {len(cp.names)} corruptions x {len(cp.severities)} severities x "
            f"{result['folds']} folds; severity {s}: {result['metric']} {m[:, 0].mean():.3f} -> {m[:, 1:].mean():.3f}")


if __name__ == "__main__":
    run(main)
