"""Stage optimize@<dataset>: drift optimization (paper section 5.3, figure 7, table 2).

Usage: python stages/optimize.py <dataset>
For every mode (learned, frozen, raw) x raw intensity x fold, the task model of train.<dataset>
is trained from the raw tiles at that exposure (epochs from optimize.<dataset>.epochs), the
held-out metric measured every optimize.<dataset>.eval_every steps. Writes
metrics/optimize/<dataset>.json (table 2 and final metrics), its headline
metrics/headline/optimize_<dataset>.json (table 2's means), plots/optimize/<dataset>/ (dvclive
curves per setting and fold, curves.csv for the band plot of figure 7), plots/optimize/
<dataset>.png (figure 7) and models/optimize/<dataset>/isp_<scale>_fold<k>.json (learned ISPs,
readable by rawdrift.optimization.load_isp). RAWDRIFT_CONCURRENT_FOLDS=1 trains every fold of
every setting in a pool of processes on the same device (same results).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rawdrift import params as P
from rawdrift.camera import RAW_SCALE
from rawdrift.errors import RawdriftError
from rawdrift.io import atomic_dir, write_json
from rawdrift.isp import ParametrizedISP
from rawdrift.headline import ROOT as HEADLINE, optimize_headline
from rawdrift.optimization import (MODES, isp_export, load_isp, setting_name, train_jointly,
                                   train_settings_concurrently, with_epochs)
from rawdrift.reports import curve_table, optimization_figure, optimization_summary, write_csv
from rawdrift.runtime import stage_platform
from rawdrift.sensor import intensity_name
from rawdrift.sources.store import load_raw_dataset, load_targets
from rawdrift.tasks import METRIC, task_config
from rawdrift.cli import dataset_arg, run


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "optimize.py")
    params = P.load_params()
    op = P.optimize_params(params, dataset, MODES)
    cfg = with_epochs(P.task_params(params, dataset, task_config), op.epochs)
    seed = P.seed(params)
    with P.sourced():             # the values are checked there; params.yaml is where they came from
        platform = stage_platform(*P.platform_values(params), compile=P.compile_value(params))
    device, amp = platform.device, platform.amp
    concurrent = P.concurrent_folds(device)
    ds = load_raw_dataset(Path("data/raw") / dataset)
    for v in op.intensities:
        if not any(abs(v - f) < 1e-9 for f in ds.intensities):
            raise RawdriftError(f"params.yaml: optimize.intensities: {v:g} is not among the exposures of "
                                f"data/raw/{dataset} ({ds.intensities}; see data.intensities)")
    targets = load_targets(ds)
    raws = {i: torch.from_numpy(np.asarray(ds.raw(i), dtype=np.float32) / np.float32(RAW_SCALE))
            for i in op.intensities}
    settings = [(mode, i, raws[i]) for i in op.intensities for mode in op.modes]
    names = [setting_name(mode, i) for mode, i, _ in settings]
    if concurrent:
        done = train_settings_concurrently(cfg, settings, targets, ds.folds, ds.camera, seed, device,
                                           isp_lr=op.isp_lr, eval_every=op.eval_every, amp=amp,
                                           compile_mode=platform.compile)
    else:
        done = [train_jointly(cfg, mode, raw, targets, ds.folds, ds.camera, seed, device, intensity=i,
                              isp_lr=op.isp_lr, eval_every=op.eval_every, amp=amp,
                              desc=f"optimize {dataset} {name}", compile_mode=platform.compile)
                for (mode, i, raw), name in zip(settings, names)]
    results = dict(zip(names, done))
    summary = optimization_summary(results, METRIC[cfg.task])
    summary.update(dataset=dataset, epochs=cfg.epochs, eval_every=op.eval_every, isp_lr=op.isp_lr)
    metric = summary["metric"]

    with atomic_dir(Path("models/optimize") / dataset) as tmp:
        for name, folds in results.items():
            for f in folds:
                if f.mode == "learned":
                    write_json(tmp / f"isp_{intensity_name(f.intensity).removeprefix('raw_')}_fold{f.fold}.json",
                               isp_export(f, ds.camera, dataset))
    plots = Path("plots/optimize") / dataset
    with atomic_dir(plots) as tmp:
        _write_curves(tmp, results, metric)
    write_json(Path("metrics/optimize") / f"{dataset}.json", summary | {"platform": platform.record()})
    write_json(HEADLINE / f"optimize_{dataset}.json", optimize_headline(dataset, summary))
    optimization_figure(summary, _tiles(ds, results, op.intensities), Path("plots/optimize") / f"{dataset}.png",
                        f"{dataset}: drift optimization (task model {cfg.arch}, {cfg.epochs} epochs, "
                        f"{int(ds.folds.max()) + 1} folds, ISP lr {op.isp_lr:g})")
    table = ", ".join(f"{n} {s['table']['mean']:.3f}+-{s['table']['std']:.3f}" for n, s in summary["settings"].items())
    return f"optimize@{dataset}: table 2 ({metric}, mean +- std over folds and steps): {table}"


def _write_curves(out: Path, results: dict, metric: str) -> None:
    """dvclive curves (one step per validation; per fold and the mean over folds of every
    setting) and the long-format ``curves.csv`` for the band template."""
    from dvclive import Live
    first = next(iter(results.values()))[0]
    with Live(str(out), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        for j, step in enumerate(first.steps):
            live.step = step
            for name, folds in results.items():
                values = [f.val_metric[j] for f in folds]
                for f in folds:
                    live.log_metric(f"{name}/fold{f.fold}/val_{metric}", f.val_metric[j])
                live.log_metric(f"{name}/val_{metric}", float(np.mean(values)))
    write_csv(curve_table(results, metric), out / "curves.csv")


def _tiles(ds, results: dict, intensities: list[float]) -> dict:
    """The first held-out tile of fold 0 through the frozen ISP and through fold 0's learned ISP."""
    index = int(np.flatnonzero(ds.folds == 0)[0])
    out = {}
    for intensity in intensities:
        x = torch.from_numpy(np.asarray(ds.raw(intensity)[index:index + 1], dtype=np.float32) / np.float32(RAW_SCALE))
        tiles = {}
        with torch.no_grad():
            tiles["frozen"] = ParametrizedISP(ds.camera)(x)[0].numpy()
            learned = results.get(setting_name("learned", intensity))
            if learned:
                isp = load_isp(isp_export(learned[0], ds.camera, ""))
                tiles["learned"] = isp(x)[0].numpy()
        out[intensity] = tiles
    return out


if __name__ == "__main__":
    run(main)
