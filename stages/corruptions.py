"""Stage corruptions@<dataset>: the common-corruption baseline (paper section 5.1.2).

Usage: python stages/corruptions.py <dataset>
Each train view's fold models on their held-out tiles in that view, corrupted by each
corruption at each severity -> metrics/corruptions/<dataset>.json (per severity a 12 x (1 + C)
matrix, identity first) and plots/corruptions/<dataset>.png (one heatmap per severity).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rawdrift import params as P
from rawdrift.corruptions import CORRUPTIONS, corruption_eval
from rawdrift.io import write_json
from rawdrift.reports import corruption_heatmaps
from rawdrift.runtime import resolve_device, resolve_precision
from rawdrift.sources.store import load_raw_dataset, load_targets
from rawdrift.cli import dataset_arg, run


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "corruptions.py")
    params = P.load_params()
    cp = P.corruption_params(params, CORRUPTIONS)
    seed = P.seed(params)
    with P.sourced():             # resolve_* name the value; params.yaml is where it came from
        device = resolve_device(P.get(params, "device"))
        amp = resolve_precision(P.get(params, "precision"), device)
    ds = load_raw_dataset(Path("data/raw") / dataset)
    scale = int(ds.meta["width"]) / cp.reference_tile     # same field of view, larger pixels
    result = corruption_eval(Path("models") / dataset, Path("data/views") / dataset, load_targets(ds), ds.folds,
                             ds.task, device, cp.names, cp.severities, seed=seed, scale=scale, amp=amp)
    write_json(Path("metrics/corruptions") / f"{dataset}.json", result)
    corruption_heatmaps(result, Path("plots/corruptions") / f"{dataset}.png",
                        f"{dataset}: train view x corruption of its held-out tiles, {result['metric']} "
                        f"(* best train view per column; pixel constants x {scale:.3g})")
    s = str(cp.summary_severity)
    m = np.asarray(result["severity"][s]["mean"])
    return (f"corruptions@{dataset}: {len(cp.names)} corruptions x {len(cp.severities)} severities x "
            f"{result['folds']} folds; severity {s}: {result['metric']} {m[:, 0].mean():.3f} -> {m[:, 1:].mean():.3f}")


if __name__ == "__main__":
    run(main)
