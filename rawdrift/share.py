"""Sharing stage results between machines through a DVC remote and the run-cache.

``dvc push --run-cache`` uploads the run-cache entries (which stage, run with which
dependencies and params, produced which outputs) and the outputs that ``dvc.lock`` tracks
with ``cache: true``; it does not upload the outputs declared ``cache: false`` (rawdrift keeps
its metrics, dvclive curves and figures in git that way). The run-cache keeps copies of those
in the local cache, so a second machine that finds an entry can restore the stage only when
they are on the remote too. :func:`push_run_cache_outputs` uploads every output the local
run-cache entries name; then ``dvc repro --pull`` on another clone (same code and params,
with or without the first one's ``dvc.lock``) restores those stages instead of running them.

Usage: ``python -m rawdrift.share [-r REMOTE]`` after ``dvc push --run-cache``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rawdrift.errors import RawdriftError


def run_cache_entries(root: str | Path = ".") -> list[tuple[str, str]]:
    """(key, value) of every local run-cache entry (``.dvc/cache/runs/<xx>/<key>/<value>``)."""
    runs = Path(root) / ".dvc" / "cache" / "runs"
    return sorted((p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file())


def push_run_cache_outputs(root: str | Path = ".", remote: str | None = None) -> int:
    """Upload every output that the local run-cache names to the DVC remote; returns how many
    objects the remote did not have."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    entries = run_cache_entries(root)
    if not entries:
        raise RawdriftError(f"{Path(root) / '.dvc/cache/runs'}: no run-cache entries (run dvc repro first)")
    try:
        with Repo(str(root)) as repo:
            used = repo.stage_cache.get_used_objs(entries)
            count = 0
            for objs in used.values():        # keyed by the local cache they are in
                result = repo.cloud.push(objs, remote=remote)
                count += len(result.transferred)
                if result.failed:
                    raise RawdriftError(f"{len(result.failed)} object(s) could not be pushed to the remote")
            return count
    except DvcException as e:
        raise RawdriftError(f"dvc: {e}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rawdrift.share", description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--remote", help="DVC remote (default: the default remote)")
    args = parser.parse_args(argv)
    try:
        n = push_run_cache_outputs(".", args.remote)
    except RawdriftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"pushed {n} object(s) named by the run-cache ({len(run_cache_entries('.'))} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
