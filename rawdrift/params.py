"""Reading and validating ``params.yaml``; errors name the param.

Every stage imports this module, so it imports nothing of rawdrift but ``errors``: what a
section is checked against (corruption names, task config builder, ...) is passed in by the
stage, which imports that module anyway. Otherwise each stage's import closure, and so its
DVC code deps, would be the whole package (``python -m rawdrift.stage_deps``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Collection

import yaml

from rawdrift.errors import RawdriftError

DATASETS: tuple[str, ...] = ("microscopy", "drone")
SOURCES: tuple[str, ...] = ("synthetic", "folder", "zenodo")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does (``1e-3``; YAML 1.1 needs ``1.0e-3``).

    ``dvc exp run -S train.microscopy.lr=1e-4`` writes ``1e-4`` (DVC's ruamel speaks 1.2);
    without this, PyYAML would hand the stages the string '1e-4'.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_params(path: str | Path = "params.yaml") -> dict:
    """Parse params.yaml into a dict; a missing or malformed file is a one-line error."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except FileNotFoundError:
        raise RawdriftError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RawdriftError(f"{path}: malformed YAML{where}") from None
    if not isinstance(data, dict):
        raise RawdriftError(f"{path}: expected a mapping at the top level")
    return data


def get(params: dict, dotted: str) -> Any:
    """``get(p, "data.microscopy.count")``; a missing key names the param."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RawdriftError(f"params.yaml: missing param {dotted}")
        node = node[part]
    return node


def workers() -> int:
    """CPU worker processes from ``RAWDRIFT_WORKERS`` (default 0 = all cores).

    An execution resource, not a param: results do not depend on it, so changing it must
    not make DVC rerun anything.
    """
    raw = os.environ.get("RAWDRIFT_WORKERS", "0")
    try:
        value = int(raw)
    except ValueError:
        raise RawdriftError(f"RAWDRIFT_WORKERS must be an integer >= 0, got {raw!r}") from None
    if value < 0:
        raise RawdriftError(f"RAWDRIFT_WORKERS must be an integer >= 0, got {raw!r}")
    return value


def concurrent_folds() -> bool:
    """``RAWDRIFT_CONCURRENT_FOLDS=1``: train stages run their folds in one process each on
    the same device (:func:`rawdrift.training.train_folds_concurrently`), optimize stages every
    fold of every setting in a pool of as many processes
    (:func:`rawdrift.optimization.train_settings_concurrently`). Like the worker count an
    execution resource, not a param: the results are the same either way (tested)."""
    raw = os.environ.get("RAWDRIFT_CONCURRENT_FOLDS", "0")
    if raw not in ("0", "1"):
        raise RawdriftError(f"RAWDRIFT_CONCURRENT_FOLDS must be 0 or 1, got {raw!r}")
    return raw == "1"


def warn_concurrent_on_cpu(device) -> None:
    """One stderr line when folds run concurrently on a CPU: each process keeps torch's thread
    count (fewer threads would change the float sums), so they fight over the cores."""
    if device.type == "cpu":
        print("warning: RAWDRIFT_CONCURRENT_FOLDS=1 on cpu: the fold processes share the CPU cores and run "
              "slower than the serial loop (same results); it is meant for a GPU", file=sys.stderr)


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise RawdriftError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return name


def int_param(params: dict, dotted: str, low: int | None = None, high: int | None = None) -> int:
    """An integer param within [low, high]."""
    value = get(params, dotted)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RawdriftError(f"params.yaml: {dotted} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise RawdriftError(f"params.yaml: {dotted} must lie in {bounds}, got {value}")
    return value


def ratios_param(params: dict, dotted: str) -> list[float]:
    """A list of exposure ratios, each in (0, 1], including 1.0 (the reference)."""
    values = get(params, dotted)
    if not isinstance(values, list) or not values:
        raise RawdriftError(f"params.yaml: {dotted} must be a non-empty list of ratios in (0, 1]")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < float(v) <= 1):
            raise RawdriftError(f"params.yaml: {dotted} entries must lie in (0, 1], got {v!r}")
        out.append(float(v))
    if 1.0 not in out:
        raise RawdriftError(f"params.yaml: {dotted} must include the reference exposure 1.0")
    if len(set(round(v * 100) for v in out)) != len(out):
        raise RawdriftError(f"params.yaml: {dotted} has ratios that share a name (percent, rounded)")
    return sorted(out)


def task_params(params: dict, dataset: str, task_config: Callable[[str, dict, str], Any]):
    """``train.<dataset>`` as a TaskConfig, without per-view overrides (drift optimization).

    ``task_config`` is :func:`rawdrift.tasks.task_config`, passed in by the caller so that
    reading params does not import the task models (see the module docstring)."""
    base = get(params, f"train.{dataset}")
    if not isinstance(base, dict):
        raise RawdriftError(f"params.yaml: train.{dataset} must be a mapping")
    return task_config(dataset, base, f"train.{dataset}")


def train_config(params: dict, dataset: str, view: str, task_config: Callable[[str, dict, str], Any]):
    """``train.<dataset>`` with the per-view overrides ``train.views.<dataset>-<view>`` applied,
    built by ``task_config`` (:func:`rawdrift.tasks.task_config`)."""
    base = get(params, f"train.{dataset}")
    override = get(params, f"train.views.{dataset}-{view}") or {}
    if not isinstance(base, dict) or not isinstance(override, dict):
        raise RawdriftError(f"params.yaml: train.{dataset} and train.views.{dataset}-{view} must be mappings")
    where = f"train.views.{dataset}-{view}" if override else f"train.{dataset}"
    return task_config(dataset, {**base, **override}, where)


def corruption_params(params: dict, known: Collection[str]) -> dict:
    """``corruptions.{names, severities, reference_tile, summary_severity}``, validated;
    ``known``: the corruption names (:data:`rawdrift.corruptions.CORRUPTIONS`)."""
    CORRUPTIONS = tuple(known)
    names = get(params, "corruptions.names")
    if not isinstance(names, list) or not names:
        raise RawdriftError("params.yaml: corruptions.names must be a non-empty list")
    for n in names:
        if n not in CORRUPTIONS:
            raise RawdriftError(f"params.yaml: corruptions.names: unknown corruption {n!r}; "
                                f"expected some of {', '.join(CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise RawdriftError("params.yaml: corruptions.names lists a corruption twice")
    sev = get(params, "corruptions.severities")
    if not isinstance(sev, list) or not sev:
        raise RawdriftError("params.yaml: corruptions.severities must be a non-empty list of integers in 1..5")
    for s in sev:
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 5:
            raise RawdriftError(f"params.yaml: corruptions.severities entries must be integers in 1..5, got {s!r}")
    if len(set(sev)) != len(sev):
        raise RawdriftError("params.yaml: corruptions.severities lists a severity twice")
    summary_severity = int_param(params, "corruptions.summary_severity", 1, 5)
    if summary_severity not in sev:
        raise RawdriftError(f"params.yaml: corruptions.summary_severity {summary_severity} is not one of "
                            f"corruptions.severities {sev}")
    return {"names": list(names), "severities": sorted(sev), "summary_severity": summary_severity,
            "reference_tile": int_param(params, "corruptions.reference_tile", 1)}


def _number_list(params: dict, dotted: str) -> list:
    value = get(params, dotted)
    return list(value) if isinstance(value, list) else [value]


def forensics_params(params: dict, searches: Collection[str], regularisers: Collection[str]) -> dict:
    """``forensics.*``: lambda (one value or a list), parameters (searches), epochs, lr,
    batch_size, search_tiles, regulariser, tolerance; validated, errors name the param.
    ``searches`` / ``regularisers``: :data:`rawdrift.forensics.SEARCHES` / ``REGULARISERS``."""
    SEARCHES, REGULARISERS = tuple(searches), tuple(regularisers)
    lambdas = _number_list(params, "forensics.lambda")
    if not lambdas:
        raise RawdriftError("params.yaml: forensics.lambda must be a number >= 0 or a non-empty list of them")
    for v in lambdas:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0) or v == float("inf"):
            raise RawdriftError(f"params.yaml: forensics.lambda values must be finite numbers >= 0, got {v!r}")
    if len(set(float(v) for v in lambdas)) != len(lambdas):
        raise RawdriftError("params.yaml: forensics.lambda lists a value twice")
    groups = _number_list(params, "forensics.parameters")
    for g in groups:
        if g not in SEARCHES:
            raise RawdriftError(f"params.yaml: forensics.parameters: unknown group {g!r}; expected some of "
                                f"{', '.join(SEARCHES)}")
    if not groups or len(set(groups)) != len(groups):
        raise RawdriftError("params.yaml: forensics.parameters must list each group at most once, and at least one")
    lr = get(params, "forensics.lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise RawdriftError(f"params.yaml: forensics.lr must be a number > 0, got {lr!r}")
    tol = get(params, "forensics.tolerance")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol <= 1:
        raise RawdriftError(f"params.yaml: forensics.tolerance must be a number in [0, 1], got {tol!r}")
    reg = get(params, "forensics.regulariser")
    if reg not in REGULARISERS:
        raise RawdriftError(f"params.yaml: forensics.regulariser must be one of {', '.join(REGULARISERS)}, got {reg!r}")
    return {"lambdas": sorted((float(v) for v in lambdas), reverse=True), "groups": groups,
            "epochs": int_param(params, "forensics.epochs", 1), "lr": float(lr),
            "batch_size": int_param(params, "forensics.batch_size", 1),
            "search_tiles": int_param(params, "forensics.search_tiles", 0),
            "regulariser": reg, "tolerance": float(tol)}


def optimize_params(params: dict, dataset: str, modes: Collection[str]) -> dict:
    """``optimize.{modes, intensities, isp_lr}`` and ``optimize.<dataset>.{epochs, eval_every}``,
    validated; errors name the param. Whether the data holds those exposures is the stage's check.
    ``modes``: :data:`rawdrift.optimization.MODES`."""
    MODES = tuple(modes)
    modes = _number_list(params, "optimize.modes")
    for m in modes:
        if m not in MODES:
            raise RawdriftError(f"params.yaml: optimize.modes: unknown mode {m!r}; expected some of {', '.join(MODES)}")
    if not modes or len(set(modes)) != len(modes):
        raise RawdriftError("params.yaml: optimize.modes must list each mode at most once, and at least one")
    values = _number_list(params, "optimize.intensities")
    intensities = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) <= 1:
            raise RawdriftError(f"params.yaml: optimize.intensities entries must lie in (0, 1], got {v!r}")
        intensities.append(float(v))
    if not intensities or len(set(round(v * 100) for v in intensities)) != len(intensities):
        raise RawdriftError("params.yaml: optimize.intensities must be a non-empty list of distinct ratios")
    lr = get(params, "optimize.isp_lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise RawdriftError(f"params.yaml: optimize.isp_lr must be a number > 0, got {lr!r}")
    return {"modes": modes, "intensities": sorted(intensities), "isp_lr": float(lr),
            "epochs": int_param(params, f"optimize.{dataset}.epochs", 1),
            "eval_every": int_param(params, f"optimize.{dataset}.eval_every", 1)}


def zenodo_params(params: dict) -> dict:
    """``data.zenodo.{record, api, downloads, max_extract_gb, retries}`` (the ``zenodo`` source)."""
    z = get(params, "data.zenodo")
    if not isinstance(z, dict):
        raise RawdriftError("params.yaml: data.zenodo must be a mapping")
    api = z.get("api")
    if not isinstance(api, str) or not api.startswith(("http://", "https://")):
        raise RawdriftError(f"params.yaml: data.zenodo.api must be an http(s) URL, got {api!r}")
    downloads = z.get("downloads")
    if not isinstance(downloads, str) or not downloads:
        raise RawdriftError(f"params.yaml: data.zenodo.downloads must name a folder, got {downloads!r}")
    gb = z.get("max_extract_gb")
    if isinstance(gb, bool) or not isinstance(gb, (int, float)) or not gb > 0:
        raise RawdriftError(f"params.yaml: data.zenodo.max_extract_gb must be a number > 0, got {gb!r}")
    return {"record": int_param(params, "data.zenodo.record", 1), "api": api, "downloads": downloads,
            "max_bytes": int(gb * (1 << 30)), "retries": int_param(params, "data.zenodo.retries", 0, 100)}
