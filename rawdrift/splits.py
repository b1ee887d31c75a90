"""Fixed k-fold split assignment (the same held-out tiles for every view)."""

from __future__ import annotations

import numpy as np

from rawdrift.errors import RawdriftError


def stratified_folds(strata: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Assign each item to one of ``folds`` test folds, stratified by ``strata``.

    Within each stratum the items are shuffled (seeded) and dealt round-robin, continuing
    the deal across strata, so every fold gets a near-equal share of every stratum and
    fold sizes differ by at most one.

    Args:
        strata: (N,) labels (any hashable values).
        folds: number of folds k >= 2.
        seed: shuffle seed.

    Returns:
        (N,) int array of fold indices in [0, k).
    """
    strata = np.asarray(strata)
    if folds < 2:
        raise RawdriftError(f"data.folds: need at least 2 folds, got {folds}")
    if strata.size < folds:
        raise RawdriftError(f"data.folds: {folds} folds need at least {folds} items, got {strata.size}")
    rng = np.random.default_rng(seed)
    out = np.empty(strata.size, dtype=np.int64)
    start = 0
    for value in sorted(set(strata.tolist()), key=str):
        idx = np.flatnonzero(strata == value)
        rng.shuffle(idx)
        out[idx] = (start + np.arange(idx.size)) % folds
        start = (start + idx.size) % folds
    return out
