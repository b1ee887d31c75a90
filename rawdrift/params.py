"""The config model: ``params.yaml`` read into one typed section per block, errors naming the param.

A section is a frozen dataclass whose ``parse`` checks the block's values with the field
checkers of :mod:`rawdrift.checks` (one checker per kind of value, the same everywhere) and
raises :class:`~rawdrift.errors.ParamError` naming the key inside the block; the readers below
(:func:`section` and the ``*_params`` functions) add the block and the file, so a stage's error
reads ``params.yaml: forensics.lr: must be a number > 0, got 0``. Library code called with
param values raises plain :class:`ParamError` too (``epochs: ...``); stages wrap such calls in
:func:`sourced` to say where the value came from.

=====================  ====================================  ===============================
block                  section                               reader
=====================  ====================================  ===============================
seed                   int                                   :func:`seed`
views                  names (checked against the ISP's)     :func:`views`
device, precision,     names, flag (``rawdrift.runtime``     :func:`platform_values` inside
deterministic          checks)                               :func:`sourced`
data                   :class:`DataParams` (+ ``zenodo``:    :func:`data_params`
                       :class:`ZenodoParams`)
train.<dataset>        ``rawdrift.tasks.TaskConfig``         :func:`task_params`, :func:`train_config`
corruptions            :class:`CorruptionParams`             :func:`corruption_params`
forensics              :class:`ForensicsParams`              :func:`forensics_params`
optimize               :class:`OptimizeParams`               :func:`optimize_params`
=====================  ====================================  ===============================

Every stage imports this module, so it imports nothing of rawdrift but ``errors`` and
``checks``: what a section is checked against (corruption names, task config builder, ...) is
passed in by the stage, which imports that module anyway. Otherwise each stage's import
closure, and so its DVC code deps, would be the whole package (``python -m rawdrift.stage_deps``).
A stage reads only the blocks its ``dvc.yaml`` entry lists.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

import yaml

from rawdrift import checks
from rawdrift.errors import ParamError, RawdriftError

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


def get(params: dict, dotted: str, source: str = "params.yaml") -> Any:
    """``get(p, "data.microscopy.count")``; a missing key names the param and ``source``."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RawdriftError(f"{source}: missing param {dotted}")
        node = node[part]
    return node


def workers() -> int:
    """CPU worker processes from ``RAWDRIFT_WORKERS`` (default 0: one per available core,
    :func:`rawdrift.processes.process_count`).

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


def concurrent_folds(device=None) -> bool:
    """``RAWDRIFT_CONCURRENT_FOLDS=1``: train stages run their folds in one process each on
    the same device (:func:`rawdrift.training.train_folds_concurrently`), optimize stages every
    fold of every setting in a pool of as many processes
    (:func:`rawdrift.optimization.train_settings_concurrently`). Like the worker count an
    execution resource, not a param: the results are the same either way (tested). With a CPU
    ``device`` (a ``torch.device``) it says on stderr, in one line, that each process keeps
    torch's thread count (fewer threads would change the float sums), so they fight over the cores."""
    raw = os.environ.get("RAWDRIFT_CONCURRENT_FOLDS", "0")
    if raw not in ("0", "1"):
        raise RawdriftError(f"RAWDRIFT_CONCURRENT_FOLDS must be 0 or 1, got {raw!r}")
    if raw == "1" and device is not None and device.type == "cpu":
        print("warning: RAWDRIFT_CONCURRENT_FOLDS=1 on cpu: the fold processes share the CPU cores and run "
              "slower than the serial loop (same results); it is meant for a GPU", file=sys.stderr)
    return raw == "1"


@contextmanager
def sourced(prefix: str = "", source: str = "params.yaml") -> Iterator[None]:
    """Within the block, a :class:`ParamError` (``epochs: ...``) becomes a one-line error saying
    where the value came from: ``params.yaml: <prefix>.epochs: ...``."""
    try:
        yield
    except ParamError as e:
        raise RawdriftError(f"{source}: {e.under(prefix)}") from None


def section(params: dict, name: str, parse: Callable[..., Any], *args: Any, source: str = "params.yaml") -> Any:
    """``parse(params[name], *args)`` with errors named ``<source>: <name>.<key>``."""
    value = get(params, name, source)
    with sourced(name, source):
        return parse(value, *args)


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise RawdriftError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return name


def _ratio(key: str, value: Any) -> float:
    """An exposure ratio in (0, 1]."""
    return checks.number(key, value, 0, 1, above=True)


def _percent(value: float) -> int:
    """The exposure's name (``raw_scale010``): ratios with the same percent share a name."""
    return round(value * 100)


# --- seed, device, precision, deterministic, compile --------------------------------------------------------------
# Top-level scalars: ``seed`` here; ``device``, ``precision``, ``deterministic`` and ``compile`` are checked
# against the machine by rawdrift.runtime.stage_platform, which a stage calls inside sourced().

def platform_values(params: dict, source: str = "params.yaml") -> tuple[Any, Any, Any]:
    """The ``device``, ``precision`` and ``deterministic`` params as written, for
    ``rawdrift.runtime.stage_platform`` (called inside :func:`sourced`), which checks them."""
    return get(params, "device", source), get(params, "precision", source), get(params, "deterministic", source)


def compile_value(params: dict, source: str = "params.yaml") -> Any:
    """The ``compile`` param as written, for the stages that train or search (train, optimize,
    forensics), which pass it to ``rawdrift.runtime.stage_platform`` (called inside
    :func:`sourced`), which checks it."""
    return get(params, "compile", source)


def seed(params: dict, source: str = "params.yaml") -> int:
    """The ``seed`` param: an integer >= 0."""
    with sourced("", source):
        return checks.integer("seed", get(params, "seed", source), 0)


# --- views -------------------------------------------------------------------------------------------------------
def views(params: dict, known: Collection[str], required: Collection[str] = (), source: str = "params.yaml") -> tuple[str, ...]:
    """The ``views`` param: the views the pipeline renders, trains on and evaluates, in order.

    A list of distinct names from ``known`` (the stage passes ``rawdrift.isp.VIEWS``), at least two
    (a cross evaluation needs an off-diagonal), holding every name of ``required`` (the reference
    view forensics starts from). Errors read ``params.yaml: views: ...``.
    """
    with sourced("", source):
        out = checks.items("views", get(params, "views", source), lambda k, v: checks.choice(k, v, known))
        if len(out) < 2:
            raise ParamError("views", f"must list at least 2 views (a cross evaluation needs an off-diagonal), got {out!r}")
        missing = [v for v in required if v not in out]
        if missing:
            raise ParamError("views", f"must include {', '.join(missing)} (the reference view forensics starts from), "
                                      f"got {out!r}")
    return tuple(out)


# --- data ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZenodoParams:
    """``data.zenodo``: the record, the API, where archives are kept, the extraction limit, retries."""

    record: int
    api: str
    downloads: str
    max_bytes: int
    retries: int

    @classmethod
    def parse(cls, values: Any) -> "ZenodoParams":
        z = checks.mapping("", values)
        return cls(record=checks.integer("record", z.get("record"), 1),
                   api=checks.text("api", z.get("api"), "an http(s) URL", ("http://", "https://")),
                   downloads=checks.text("downloads", z.get("downloads"), "the name of a folder"),
                   max_bytes=int(checks.number("max_extract_gb", z.get("max_extract_gb"), 0, above=True) * (1 << 30)),
                   retries=checks.integer("retries", z.get("retries"), 0, 100))


@dataclass(frozen=True)
class DataParams:
    """``data`` for one dataset: the source, the split, the exposures and ``data.<dataset>``.

    ``count``: tiles to make (synthetic: at least one per fold) or at most this many (folder,
    zenodo; 0 = all); ``tile``: even, 16..4096 px; ``optics`` (synthetic microscopy; checked by
    the generator), ``path`` (the folder source's folder) and ``classes`` (folder: your own
    classes, checked against the labels) as given; ``zenodo`` only for the zenodo source.
    """

    dataset: str
    source: str
    folds: int
    intensities: tuple[float, ...]
    count: int
    tile: int
    optics: str = "matched"
    path: str | None = None
    classes: Any = None
    zenodo: ZenodoParams | None = None

    @classmethod
    def parse(cls, values: Any, dataset: str, sources: Collection[str] = ("synthetic", "folder", "zenodo")) -> "DataParams":
        data = checks.mapping("", values)
        source = checks.choice("source", data.get("source"), sources)
        folds = checks.integer("folds", data.get("folds"), 2, 100)
        intensities = checks.items("intensities", data.get("intensities"), _ratio, same=_percent)
        if 1.0 not in intensities:
            raise ParamError("intensities", f"must include the reference exposure 1.0, got {data.get('intensities')!r}")
        mine = checks.mapping(dataset, data.get(dataset))
        count = checks.integer(f"{dataset}.count", mine.get("count"), folds if source == "synthetic" else 0)
        tile = checks.integer(f"{dataset}.tile", mine.get("tile"), 16, 4096)
        if tile % 2:
            raise ParamError(f"{dataset}.tile", f"must be even (whole RGGB cells), got {tile}")
        path = None
        if source == "folder":
            path = checks.text(f"{dataset}.path", mine.get("path"), "the folder to read (data.source: folder)")
        zenodo = None
        if source == "zenodo":
            try:
                zenodo = ZenodoParams.parse(data.get("zenodo"))
            except ParamError as e:
                raise e.under("zenodo") from None
        return cls(dataset=dataset, source=source, folds=folds, intensities=tuple(sorted(intensities)), count=count,
                   tile=tile, optics=mine.get("optics", "matched"), path=path, classes=mine.get("classes"),
                   zenodo=zenodo)


def data_params(params: dict, dataset: str, source: str = "params.yaml") -> DataParams:
    """``data.{source, folds, intensities}``, ``data.<dataset>`` and, for the zenodo source, ``data.zenodo``."""
    return section(params, "data", DataParams.parse, check_dataset(dataset), SOURCES, source=source)


def int_param(params: dict, dotted: str, low: int | None = None, high: int | None = None,
              source: str = "params.yaml") -> int:
    """An integer param within [low, high] (either bound None: open) of the file ``source``."""
    with sourced("", source):
        return checks.integer(dotted, get(params, dotted, source), low, high)


# --- train -----------------------------------------------------------------------------------------------------------

def task_params(params: dict, dataset: str, task_config: Callable[[str, dict], Any], source: str = "params.yaml"):
    """``train.<dataset>`` as a TaskConfig, without per-view overrides (drift optimization).

    ``task_config`` is :func:`rawdrift.tasks.task_config`, passed in by the caller so that
    reading params does not import the task models (see the module docstring)."""
    return section(params, f"train.{dataset}", lambda values: task_config(dataset, checks.mapping("", values)),
                   source=source)


def train_eval_epochs(params: dict, source: str = "params.yaml") -> int:
    """``train.eval_every_epochs``: epochs between two held-out evaluations of the train stage
    (an integer >= 1; the last epoch is always evaluated)."""
    with sourced("", source):
        return checks.integer("train.eval_every_epochs", get(params, "train.eval_every_epochs", source), 1)


def train_config(params: dict, dataset: str, view: str, task_config: Callable[[str, dict], Any]):
    """``train.<dataset>`` with the per-view overrides ``train.views.<dataset>-<view>`` applied,
    built by ``task_config`` (:func:`rawdrift.tasks.task_config`); errors name the override
    when there is one."""
    base = get(params, f"train.{dataset}")
    override = get(params, f"train.views.{dataset}-{view}")
    with sourced():
        base = checks.mapping(f"train.{dataset}", base)
        override = checks.mapping(f"train.views.{dataset}-{view}", override)
    with sourced(f"train.views.{dataset}-{view}" if override else f"train.{dataset}"):
        return task_config(dataset, {**base, **override})


# --- corruptions -----------------------------------------------------------------------------------------------------

def _severity(key: str, value: Any) -> int:
    return checks.integer(key, value, 1, 5)


@dataclass(frozen=True)
class CorruptionParams:
    """``corruptions``: names (distinct, known), severities (distinct, 1..5, sorted),
    summary_severity (one of them), reference_tile (px, >= 1)."""

    names: list[str]
    severities: list[int]
    summary_severity: int
    reference_tile: int

    @classmethod
    def parse(cls, values: Any, known: Collection[str]) -> "CorruptionParams":
        c = checks.mapping("", values)
        names = checks.items("names", c.get("names"), lambda k, v: checks.choice(k, v, tuple(known)))
        severities = sorted(checks.items("severities", c.get("severities"), _severity))
        summary = checks.integer("summary_severity", c.get("summary_severity"), 1, 5)
        if summary not in severities:
            raise ParamError("summary_severity", f"must be one of the severities {severities}, got {summary}")
        return cls(names=names, severities=severities, summary_severity=summary,
                   reference_tile=checks.integer("reference_tile", c.get("reference_tile"), 1))


def corruption_params(params: dict, known: Collection[str], source: str = "params.yaml") -> CorruptionParams:
    """``corruptions``; ``known``: the corruption names (:data:`rawdrift.corruptions.CORRUPTIONS`)."""
    return section(params, "corruptions", CorruptionParams.parse, known, source=source)


# --- forensics -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ForensicsParams:
    """``forensics``: lambda (one value or a list, finite, >= 0, distinct; here largest first as
    ``lambdas``), parameters (searched groups, distinct; ``groups``), epochs, lr (> 0),
    batch_size, search_tiles (0 = all), regulariser, tolerance (in [0, 1]), max_batch (tiles per
    task-model pass, >= 1: ``max_batch // batch_size`` searches of a fold step together)."""

    lambdas: list[float]
    groups: list[str]
    epochs: int
    lr: float
    batch_size: int
    search_tiles: int
    regulariser: str
    tolerance: float
    max_batch: int

    @classmethod
    def parse(cls, values: Any, searches: Collection[str], regularisers: Collection[str]) -> "ForensicsParams":
        f = checks.mapping("", values)
        lambdas = checks.items("lambda", f.get("lambda"), lambda k, v: checks.number(k, v, 0), scalar=True)
        groups = checks.items("parameters", f.get("parameters"), lambda k, v: checks.choice(k, v, tuple(searches)),
                              scalar=True)
        return cls(lambdas=sorted(lambdas, reverse=True), groups=groups,
                   epochs=checks.integer("epochs", f.get("epochs"), 1),
                   lr=checks.number("lr", f.get("lr"), 0, above=True),
                   batch_size=checks.integer("batch_size", f.get("batch_size"), 1),
                   search_tiles=checks.integer("search_tiles", f.get("search_tiles"), 0),
                   regulariser=checks.choice("regulariser", f.get("regulariser"), tuple(regularisers)),
                   tolerance=checks.number("tolerance", f.get("tolerance"), 0, 1),
                   max_batch=checks.integer("max_batch", f.get("max_batch"), 1))


def forensics_params(params: dict, searches: Collection[str], regularisers: Collection[str],
                     source: str = "params.yaml") -> ForensicsParams:
    """``forensics``; ``searches`` / ``regularisers``: :data:`rawdrift.forensics.SEARCHES` / ``REGULARISERS``."""
    return section(params, "forensics", ForensicsParams.parse, searches, regularisers, source=source)


# --- optimize --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OptimizeParams:
    """``optimize.{modes, intensities, isp_lr}`` and ``optimize.<dataset>.{epochs, eval_every}``.
    Whether the data holds those exposures is the stage's check."""

    modes: list[str]
    intensities: list[float]
    isp_lr: float
    epochs: int
    eval_every: int

    @classmethod
    def parse(cls, values: Any, dataset: str, modes: Collection[str]) -> "OptimizeParams":
        o = checks.mapping("", values)
        mine = checks.mapping(dataset, o.get(dataset))
        return cls(modes=checks.items("modes", o.get("modes"), lambda k, v: checks.choice(k, v, tuple(modes)),
                                      scalar=True),
                   intensities=sorted(checks.items("intensities", o.get("intensities"), _ratio, scalar=True,
                                                   same=_percent)),
                   isp_lr=checks.number("isp_lr", o.get("isp_lr"), 0, above=True),
                   epochs=checks.integer(f"{dataset}.epochs", mine.get("epochs"), 1),
                   eval_every=checks.integer(f"{dataset}.eval_every", mine.get("eval_every"), 1))


def optimize_params(params: dict, dataset: str, modes: Collection[str], source: str = "params.yaml") -> OptimizeParams:
    """``optimize`` for ``dataset``; ``modes``: :data:`rawdrift.optimization.MODES`."""
    return section(params, "optimize", OptimizeParams.parse, check_dataset(dataset), modes, source=source)
