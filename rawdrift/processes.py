"""How many CPU processes to start: one rule for every process pool (fetch, render, the scale
study's views) and for the CPUs a fanned-out stage asks Ray for.

"All cores" means the cores this process may run on, its CPU affinity: a Slurm or ``taskset``
allocation, or a container's cpuset, on a many-core node, not the node's whole count
(``os.cpu_count``). A CPU quota without a cpuset (``docker run --cpus``) is not an affinity and
is not seen. The count never changes a result, only how many processes share the work.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (its affinity where the OS has one, else the machine's); >= 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):     # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def process_count(jobs: int, workers: int = 0) -> int:
    """Processes to start for ``jobs`` independent jobs: ``workers`` when > 0 (the user's
    ``RAWDRIFT_WORKERS``), else one per available core; never more than ``jobs``, at least 1."""
    return max(1, min(workers if workers > 0 else available_cores(), jobs))
