"""Profiles: named sets of overrides of ``params.yaml``, one YAML file each under ``profiles/``.

``params.yaml`` is the default profile (small enough for a 2-core laptop CPU); a profile file
holds only what differs, nested as in ``params.yaml``. ``profiles/paper.yaml`` is the study's
protocol: the Makefile's ``repro-paper``, the benchmark's projection (:mod:`rawdrift.bench`)
and the docs all read it, none restates its numbers.

Usage (from the repository root)::

    python -m rawdrift.profiles paper              # the profile laid over params.yaml, validated
    python -m rawdrift.profiles paper --dvc-args   # the same as `-S key=value` arguments of `dvc exp run`

Every value of a profile must override a param that ``params.yaml`` has (a misspelt key is an
error, not a new param), and the result is validated by the config model
(:mod:`rawdrift.params`) before anything runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from rawdrift import checks, params as P
from rawdrift.errors import RawdriftError

#: The repository root (profiles are data of the repository, next to ``params.yaml``).
ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"


def profile_path(name: str, root: str | Path = ROOT) -> Path:
    """``profiles/<name>.yaml`` under ``root``; an unknown name lists the known ones."""
    path = Path(root) / "profiles" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(root) / "profiles").glob("*.yaml"))
        raise RawdriftError(f"unknown profile {name!r}; expected one of {', '.join(known) or '(none)'}")
    return path


def load_profile(name: str, root: str | Path = ROOT) -> dict:
    """The overrides of profile ``name`` as a nested mapping (YAML 1.2 floats, as params.yaml)."""
    return P.load_params(profile_path(name, root))


def overrides(profile: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> values, in file order; lists and scalars are leaves
    (``{"data": {"folds": 5}}`` -> ``{"data.folds": 5}``)."""
    out: dict[str, Any] = {}
    for key, value in profile.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(overrides(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def apply(params: dict, profile: dict, source: str = "profile") -> dict:
    """A copy of ``params`` with every override of ``profile`` set; an override of a param that
    ``params`` lacks is an error naming ``source`` and the key."""
    out = json.loads(json.dumps(params))
    for dotted, value in overrides(profile).items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise RawdriftError(f"{source}: {dotted}: not a param of params.yaml")
            node = node[part]
        if leaf not in node:
            raise RawdriftError(f"{source}: {dotted}: not a param of params.yaml")
        node[leaf] = value
    return out


def resolve(name: str, root: str | Path = ROOT) -> dict:
    """``params.yaml`` with profile ``name`` laid over it, validated (:func:`validate`)."""
    source = f"profiles/{name}.yaml over params.yaml"
    params = apply(P.load_params(Path(root) / "params.yaml"), load_profile(name, root), f"profiles/{name}.yaml")
    validate(params, source)
    return params


def validate(params: dict, source: str = "params.yaml") -> dict:
    """Every section of ``params`` through the config model, as the stages read them; returns
    them by block (``data`` and ``train`` per dataset). Errors name ``source`` and the param."""
    from rawdrift.corruptions import CORRUPTIONS
    from rawdrift.forensics import REGULARISERS, SEARCHES
    from rawdrift.isp.static import REFERENCE_VIEW, VIEWS
    from rawdrift.optimization import MODES
    from rawdrift.runtime import COMPILE_MODES, DEVICES, PRECISIONS
    from rawdrift.tasks import task_config
    out: dict[str, Any] = {"seed": P.seed(params, source=source), "data": {}, "train": {}, "optimize": {},
                           "views": P.views(params, VIEWS, (REFERENCE_VIEW,), source=source)}
    device, precision, deterministic = P.platform_values(params, source)
    with P.sourced("", source):   # named, not resolved: a profile for a CUDA box validates on a laptop
        out["device"] = checks.choice("device", device, tuple(d for d in DEVICES if d != "auto"))
        out["precision"] = checks.choice("precision", precision, PRECISIONS)
        out["deterministic"] = checks.flag("deterministic", deterministic)
        out["compile"] = checks.choice("compile", P.compile_value(params, source), COMPILE_MODES)
    for dataset in P.DATASETS:
        out["data"][dataset] = P.data_params(params, dataset, source=source)
        out["train"][dataset] = P.task_params(params, dataset, task_config, source=source)
        out["optimize"][dataset] = P.optimize_params(params, dataset, MODES, source=source)
    out["train_eval_every_epochs"] = P.train_eval_epochs(params, source=source)
    out["corruptions"] = P.corruption_params(params, CORRUPTIONS, source=source)
    out["forensics"] = P.forensics_params(params, SEARCHES, REGULARISERS, source=source)
    return out


def yaml_value(value: Any) -> str:
    """A value as ``dvc exp run -S`` parses it back (YAML flow: ``[256,128]``, ``7.5e-05``, ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value
    raise RawdriftError(f"cannot pass {value!r} to dvc exp run -S")


def parse_value(text: str) -> Any:
    """:func:`yaml_value` backwards: one value as ``dvc exp run -S key=value`` reads it, YAML 1.2
    flow as ``params.yaml`` is read (``1e-4`` a float, ``false`` a bool, ``[256,128]`` a list,
    anything else a string); malformed YAML is a one-line error."""
    try:
        return yaml.load(text, Loader=P._Loader)
    except yaml.YAMLError:
        raise RawdriftError(f"{text!r}: malformed YAML value") from None


def dvc_args(profile: dict) -> list[str]:
    """``["-S", "data.folds=5", ...]``: the profile as arguments of ``dvc exp run``."""
    args: list[str] = []
    for dotted, value in overrides(profile).items():
        args += ["-S", f"{dotted}={yaml_value(value)}"]
    return args


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="the profile: profiles/<name>.yaml")
    ap.add_argument("--dvc-args", action="store_true",
                    help="print the overrides as shell-quoted -S key=value arguments of `dvc exp run`")
    args = ap.parse_args(argv)
    try:
        params = resolve(args.name)
        profile = load_profile(args.name)
    except RawdriftError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if args.dvc_args:
        print(" ".join(shlex.quote(a) for a in dvc_args(profile)))
    else:
        for dotted in overrides(profile):
            print(f"{dotted}: {yaml_value(P.get(params, dotted))}")


if __name__ == "__main__":
    main()
