"""How many processes the pools start: the user's count, else the cores this process may use."""

import os

import numpy as np
import pytest

from helpers import photo_raw
from rawdrift import processes
from rawdrift.processes import available_cores, process_count


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(processes, "available_cores", lambda: 8)


def test_process_count_takes_the_users_count_else_the_cores_and_never_exceeds_the_jobs(eight_cores):
    assert [process_count(100, w) for w in (0, 1, 3, 16)] == [8, 1, 3, 16]
    assert [process_count(5, w) for w in (0, 1, 3, 16)] == [5, 1, 3, 5]
    assert process_count(0, 0) == process_count(0, 4) == 1


def test_available_cores_is_the_affinity_not_the_machines_count(monkeypatch):
    """A Slurm or taskset allocation of 2 cores on a 64-core node: 2 processes, not 64."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert available_cores() == 2
    monkeypatch.delattr(os, "sched_getaffinity")           # macOS, Windows: the machine's count
    assert available_cores() == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cores() == 1


def test_render_stack_starts_the_processes_asked_for_with_the_same_views(tmp_path, eight_cores):
    from rawdrift.camera import CAMERAS
    from rawdrift.rendering import render_stack
    cam = CAMERAS["microscopy"]
    raws = np.stack([photo_raw(cam, p, crop=(slice(60, 92), slice(100, 132))) for p in ("astronaut", "coffee", "chelsea")])
    np.save(tmp_path / "raw.npy", np.round(raws * 65535).astype(np.uint16))
    views = ("bi_s_ga", "me_u_me")
    counts = {w: render_stack(tmp_path / "raw.npy", cam, tmp_path / f"w{w}", views=views, workers=w,
                              progress=False)["workers"] for w in (1, 2, 0)}
    assert counts == {1: 1, 2: 2, 0: 3}                      # 0: the 8 cores, capped at the 3 tiles
    for v in views:
        ref = (tmp_path / "w1" / f"{v}.npy").read_bytes()
        assert (tmp_path / "w2" / f"{v}.npy").read_bytes() == ref == (tmp_path / "w0" / f"{v}.npy").read_bytes(), v
