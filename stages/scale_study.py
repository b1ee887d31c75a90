"""Stages of the pixel-scale study (studies/scale/dvc.yaml; `make scale-study`).

Usage (from studies/scale/, as its dvc.yaml runs it): python ../../stages/scale_study.py
Every point of studies/scale/params.yaml -> metrics/scale_study.json and plots/scale_study.png.
Points run in a pool of ``RAWDRIFT_WORKERS`` processes (default: all cores), one thread each, so
the numbers do not depend on the pool size.

A point's settings come from ``points.<name>`` of studies/scale/params.yaml (dataset, tile, and
optionally optics, epochs, label); the study's views, folds, count and severity from ``study``;
the training recipe (``train.<dataset>``), seed and corruptions from the project's params.yaml.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rawdrift import params as P
from rawdrift.errors import RawdriftError
from rawdrift.io import write_json
from rawdrift.cli import run

ROOT = Path(__file__).resolve().parents[1]
#: Where the points come from, as errors name it.
STUDY = "studies/scale/params.yaml"


def _point(study: dict, points: dict, name: str):
    from rawdrift.scale_study import StudyPoint, check_point
    if name not in points:
        raise RawdriftError(f"{STUDY}: no point {name!r} under points")
    with P.sourced(f"points.{name}", STUDY):
        spec = check_point(points[name])
    return StudyPoint(dataset=spec["dataset"], tile=spec["tile"], label=spec.get("label", name),
                      optics=spec.get("optics", "matched"), count=study["count"][spec["dataset"]],
                      folds=study["folds"], views=tuple(study["views"]),
                      task={"epochs": spec["epochs"]} if "epochs" in spec else {})


def _run_one(job):
    """One point in a worker process, single-threaded so its numbers do not depend on the pool size."""
    point, cfg, names, severity, reference_tile, device = job
    import torch
    from rawdrift.scale_study import run_point
    torch.set_num_threads(1)
    return run_point(point, cfg, names, severity=severity, reference_tile=reference_tile, device=device, workers=1)


def main(argv: list[str]) -> str:
    import multiprocessing as mp

    from rawdrift.corruptions import CORRUPTIONS
    from rawdrift.runtime import resolve_device
    from rawdrift.scale_study import scale_figure
    from rawdrift.tasks import task_config
    if argv:
        raise RawdriftError("usage: python stages/scale_study.py (from studies/scale/)")
    local = P.load_params("params.yaml")
    study, points = P.get(local, "study"), P.get(local, "points")
    if not isinstance(points, dict) or not points:
        raise RawdriftError(f"{STUDY}: points must be a non-empty mapping of name -> settings")
    root = P.load_params(ROOT / "params.yaml")
    seed = P.seed(root)
    cp = P.corruption_params(root, CORRUPTIONS)
    severity = P.int_param(local, "study.severity", 1, 5, source=STUDY)
    with P.sourced():
        device = resolve_device(P.get(root, "device"))
    jobs = []
    for name in points:
        point = _point(study, points, name)
        point = dataclasses.replace(point, seed=seed)
        jobs.append((point, P.task_params(root, point.dataset, task_config), cp.names, severity, cp.reference_tile, device))
    workers = max(1, min(len(jobs), P.workers() or mp.cpu_count() or 1))
    if device.type == "cuda":
        workers = 1
    with mp.get_context("spawn").Pool(workers) as pool:
        results = pool.map(_run_one, jobs, chunksize=1)
    for name, r in zip(points, results):
        r["name"] = name
    write_json(ROOT / "metrics/scale_study.json",
               {"views": list(study["views"]), "folds": study["folds"], "severity": severity,
                "points": {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in results}})
    scale_figure(results, ROOT / "plots/scale_study.png")
    lines = [f"{r['name']} drop {r['drop']:.3f} ratio {r['ratio'] or float('nan'):.1f}" for r in results]
    return f"scale study: {len(results)} points ({workers} processes): " + "; ".join(lines)


if __name__ == "__main__":
    run(main)
