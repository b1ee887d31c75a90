"""The field checkers of the config model: one per kind of value, reused by every section.

Each takes the name of the value as its caller knows it (``epochs``, ``severities``) and the
value, returns the value in its canonical type, and raises :class:`~rawdrift.errors.ParamError`
worded about the value alone (``epochs: must be an integer >= 1, got 0``). Where the value came
from (``params.yaml: train.microscopy.``, ``--device``) is added by the caller that knows it
(:func:`rawdrift.params.sourced`). Imports nothing of rawdrift but its errors (see
``rawdrift/params.py``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Collection, Hashable

from rawdrift.errors import ParamError


def _bounds(low: float | None, high: float | None, above: bool) -> str:
    """`` >= 1``, `` <= 5``, `` in [16, 4096]``, `` in (0, 1]`` or nothing."""
    if low is not None and high is not None:
        return f" in {'(' if above else '['}{low:g}, {high:g}]"
    if low is not None:
        return f" {'>' if above else '>='} {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""


def integer(key: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool) in [low, high]; either bound may be None (open)."""
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or (
            high is not None and value > high):
        raise ParamError(key, f"must be an integer{_bounds(low, high, False)}, got {value!r}")
    return value


def number(key: str, value: Any, low: float | None = None, high: float | None = None, *, above: bool = False) -> float:
    """A finite int or float (not a bool) in [low, high], or in (low, high] with ``above``."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if above else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise ParamError(key, f"must be a{' finite' if low is None and high is None else ''} number"
                              f"{_bounds(low, high, above)}, got {value!r}")
    return float(value)


def flag(key: str, value: Any) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        raise ParamError(key, f"must be true or false, got {value!r}")
    return value


def choice(key: str, value: Any, options: Collection[str]) -> str:
    """One of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ParamError(key, f"must be one of {', '.join(options)}, got {value!r}")
    return value


def text(key: str, value: Any, what: str = "a non-empty string", starts: tuple[str, ...] = ()) -> str:
    """A non-empty string, starting with one of ``starts`` when given (``what`` words the rule)."""
    if not isinstance(value, str) or not value or (starts and not value.startswith(starts)):
        raise ParamError(key, f"must be {what}, got {value!r}")
    return value


def mapping(key: str, value: Any, allowed: Collection[str] | None = None) -> dict:
    """A mapping (an empty value counts as an empty one), with keys among ``allowed`` when given."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamError(key, f"must be a mapping, got {value!r}")
    unknown = sorted(set(value) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ParamError(key, f"unknown key(s) {unknown}; expected some of {', '.join(allowed)}")
    return value


def items(key: str, value: Any, check: Callable[[str, Any], Any], *, scalar: bool = False,
          same: Callable[[Any], Hashable] | None = lambda v: v) -> list:
    """A non-empty list, each entry through ``check`` (named ``key[i]``); ``scalar``: one bare
    value stands for a list of it (``-S forensics.lambda=1e-3``); ``same``: entries with equal
    ``same(entry)`` are duplicates (None: allowed)."""
    if scalar and not isinstance(value, list):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ParamError(key, f"must be a non-empty list, got {value!r}")
    out = [check(f"{key}[{i}]", v) for i, v in enumerate(value)]
    if same is not None:
        seen: dict = {}
        for v in out:
            if same(v) in seen:
                first = seen[same(v)]
                raise ParamError(key, f"lists {v!r} twice" if first == v else
                                 f"lists {first!r} and {v!r}, which count as the same entry")
            seen[same(v)] = v
    return out
