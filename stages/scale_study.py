"""Stages of the pixel-scale study (studies/scale/dvc.yaml; `make scale-study`).

Usage (from studies/scale/, as its dvc.yaml runs them):

    python ../../stages/scale_study.py point NAME   # one point -> metrics/scale_study/NAME.json
    python ../../stages/scale_study.py summary      # every point -> metrics/scale_study.json, plots/scale_study.png

A point's settings come from ``points.<name>`` of studies/scale/params.yaml (dataset, tile, and
optionally optics, count, label, and epochs, arch, pretrained, lr over the recipe); the study's
views, folds, count and severity from ``study``; the training recipe (``train.<dataset>``), seed
and corruptions from the project's params.yaml. A point trains its views in ``RAWDRIFT_WORKERS`` processes (default: all cores),
one thread each, so its numbers do not depend on the worker or core count. Each point is its own
DVC stage: adding or changing one point reruns that point and the summary only.
"""

from __future__ import annotations

from pathlib import Path

from rawdrift import params as P
from rawdrift.cli import run
from rawdrift.errors import RawdriftError
from rawdrift.io import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
#: Where the points come from, as errors name it.
STUDY = "studies/scale/params.yaml"
#: One file per point, written by ``point NAME``, read by ``summary``.
POINTS_DIR = ROOT / "metrics/scale_study"
USAGE = "usage: python stages/scale_study.py point NAME | summary (from studies/scale/)"


def _study() -> tuple[dict, dict]:
    local = P.load_params("params.yaml")
    points = P.get(local, "points")
    if not isinstance(points, dict) or not points:
        raise RawdriftError(f"{STUDY}: points must be a non-empty mapping of name -> settings")
    return local, points


def _point(study: dict, points: dict, name: str, seed: int):
    from rawdrift.scale_study import TASK_KEYS, StudyPoint, check_point
    if name not in points:
        raise RawdriftError(f"{STUDY}: no point {name!r} under points")
    with P.sourced(f"points.{name}", STUDY):
        spec = check_point(points[name])
    dataset = spec["dataset"]
    count = spec.get("count", study["count"][dataset])
    return StudyPoint(dataset=dataset, tile=spec["tile"], label=spec.get("label", name),
                      optics=spec.get("optics", "matched"), count=count, folds=study["folds"], seed=seed,
                      views=tuple(study["views"]), task={k: spec[k] for k in TASK_KEYS if k in spec},
                      ablation=count != study["count"][dataset])


def _recipe(root: dict, point, name: str):
    """The point's training recipe: ``train.<dataset>`` of params.yaml with the point's
    overrides applied and checked (errors name ``points.<name>.<key>`` in the study's file)."""
    from rawdrift.tasks import task_config
    base = P.task_params(root, point.dataset, task_config)
    if not point.task:
        return base
    with P.sourced(f"points.{name}", STUDY):
        return task_config(point.dataset, {**P.get(root, f"train.{point.dataset}"), **point.task})


def run_one(name: str) -> str:
    from rawdrift.corruptions import CORRUPTIONS
    from rawdrift.runtime import resolve_device
    from rawdrift.scale_study import run_point
    local, points = _study()
    root = P.load_params(ROOT / "params.yaml")
    point = _point(P.get(local, "study"), points, name, P.seed(root))
    cp = P.corruption_params(root, CORRUPTIONS)
    severity = P.int_param(local, "study.severity", 1, 5, source=STUDY)
    with P.sourced():
        device = resolve_device(P.get(root, "device"), allow_auto=False)
    r = run_point(point, _recipe(root, point, name), cp.names, severity=severity,
                  reference_tile=cp.reference_tile, device=device, workers=P.workers())
    r.pop("name")      # the point's key names it
    write_json(POINTS_DIR / f"{name}.json", r)
    return f"scale study point {name}: drop {r['drop']:.3f} ratio {r['ratio'] or float('nan'):.1f} ({r['seconds']:.0f} s)"


def summarise_all() -> str:
    from rawdrift.scale_study import scale_figure
    local, points = _study()
    study = P.get(local, "study")
    severity = P.int_param(local, "study.severity", 1, 5, source=STUDY)
    results = {}
    for name in points:
        path = POINTS_DIR / f"{name}.json"
        if not path.is_file():
            raise RawdriftError(f"{path.relative_to(ROOT)}: missing; run dvc repro studies/scale/dvc.yaml")
        results[name] = read_json(path)
    write_json(ROOT / "metrics/scale_study.json",
               {"views": list(study["views"]), "folds": study["folds"], "severity": severity, "points": results})
    scale_figure(list(results.values()), ROOT / "plots/scale_study.png")
    return f"scale study: {len(results)} points -> metrics/scale_study.json, plots/scale_study.png"


def main(argv: list[str]) -> str:
    if len(argv) == 2 and argv[0] == "point":
        return run_one(argv[1])
    if argv == ["summary"]:
        return summarise_all()
    raise RawdriftError(USAGE)


if __name__ == "__main__":
    run(main)
