"""Stage train@<dataset>-<view>: k fold models on one view (the fixed split assignment).

Usage: python stages/train.py <dataset> <view>
Writes models/<dataset>/<view>/ (fold<k>.safetensors + model.json, atomically),
metrics/train/<dataset>/<view>.json, its headline
metrics/headline/train/<dataset>/<view>.json and dvclive curves under plots/train/<dataset>/<view>/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rawdrift import params as P
from rawdrift.errors import RawdriftError
from rawdrift.io import write_json
from rawdrift.isp import parse_view
from rawdrift.models import save_fold_models
from rawdrift.sources.store import load_raw_dataset, load_targets, load_view
from rawdrift.tasks import METRIC, task_config
from rawdrift.runtime import stage_platform
from rawdrift.training import train_folds, train_folds_concurrently
from rawdrift.cli import run
from rawdrift.headline import ROOT as HEADLINE, train_headline


def main(argv: list[str]) -> str:
    if len(argv) != 2:
        raise RawdriftError("usage: python stages/train.py <dataset> <view>")
    dataset, view = P.check_dataset(argv[0]), argv[1]
    parse_view(view)
    params = P.load_params()
    cfg = P.train_config(params, dataset, view, task_config)
    seed = P.seed(params)
    eval_epochs = P.train_eval_epochs(params)
    with P.sourced():             # the values are checked there; params.yaml is where they came from
        platform = stage_platform(*P.platform_values(params), compile=P.compile_value(params))
    device, amp = platform.device, platform.amp
    concurrent = P.concurrent_folds(device)
    torch.manual_seed(seed)
    ds = load_raw_dataset(Path("data/raw") / dataset)
    views = torch.from_numpy(load_view(Path("data/views") / dataset, view))
    targets = load_targets(ds)
    from dvclive import Live
    live_dir = Path("plots/train") / dataset / view
    with Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        if concurrent:
            results = train_folds_concurrently(cfg, views, targets, ds.folds, seed, device, live=live, amp=amp,
                                               compile_mode=platform.compile, eval_epochs=eval_epochs)
        else:
            results = train_folds(cfg, views, targets, ds.folds, seed, device, live=live,
                                  desc=f"train {dataset}-{view}", amp=amp, compile_mode=platform.compile,
                                  eval_epochs=eval_epochs)
    save_fold_models(Path("models") / dataset / view, cfg, [r.model for r in results],
                     info={"dataset": dataset, "view": view, "seed": seed, "platform": platform.record()})
    metric = METRIC[cfg.task]
    final = [r.val_metric[-1] for r in results]
    mean, std = float(np.mean(final)), float(np.std(final, ddof=1)) if len(final) > 1 else 0.0
    write_json(Path("metrics/train") / dataset / f"{view}.json",
               {"metric": metric, "folds": len(final), "per_fold": final, "mean": mean, "std": std,
                "epochs": cfg.epochs, "eval_every_epochs": eval_epochs, "platform": platform.record()})
    write_json(HEADLINE / "train" / dataset / f"{view}.json", train_headline(dataset, view, mean))
    return (f"train@{dataset}-{view}: {len(final)} folds x {cfg.epochs} epochs on {device.type}"
            f"{' (bf16)' if amp else ''}, held-out {metric} {mean:.3f} +- {std:.3f}")


if __name__ == "__main__":
    run(main)
