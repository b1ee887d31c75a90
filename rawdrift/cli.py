"""Shared entry point of the stage scripts: one-line errors, non-zero exit."""

from __future__ import annotations

import sys
import time
from typing import Callable

from rawdrift.errors import RawdriftError


def dataset_arg(argv: list[str], script: str) -> str:
    """The single ``<dataset>`` argument of a per-dataset stage script, validated."""
    from rawdrift.params import check_dataset
    if len(argv) != 1:
        raise RawdriftError(f"usage: python stages/{script} <dataset>")
    return check_dataset(argv[0])


def run(main: Callable[[list[str]], str]) -> None:
    """Call ``main(argv)``; print its summary line, or one ``error:`` line and exit 1."""
    start = time.perf_counter()
    try:
        summary = main(sys.argv[1:])
    except RawdriftError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
        sys.exit(1)
    except MemoryError:
        print("error: out of memory (lower the data.*.count or tile params)", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    print(f"{summary} [{time.perf_counter() - start:.1f} s]")
