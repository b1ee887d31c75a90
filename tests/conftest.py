"""Fixtures shared by the whole test tree (plain helper functions: tests/helpers.py)."""

import os
import time

import pytest
import torch

from rawdrift.processes import available_cores


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``), each worker takes its share of the
    cores for torch's intra-op threads, in-process and in the stage processes tests start
    (``OMP_NUM_THREADS``, unless set): workers that each spin up every core's threads slow down
    one another. A test that needs a thread count sets it itself."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "PYTEST_XDIST_WORKER" in os.environ:
        threads = max(1, available_cores() // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


_START = time.monotonic()


def pytest_runtest_logreport(report):
    """With ``RAWDRIFT_TEST_PROGRESS`` naming a file (``make gpu-check``'s tests step), each
    test's outcome and seconds, and a failure's full report, are appended to it as the test
    ends, not at the end of the run, so that a crash later on (a segmentation fault in
    compiled code) does not take them along. A line: seconds since the start, outcome, the
    phase's seconds, the test."""
    path = os.environ.get("RAWDRIFT_TEST_PROGRESS")
    if not path or not (report.when == "call" or report.failed or report.skipped):
        return
    with open(path, "a") as fh:
        fh.write(f"{time.monotonic() - _START:8.1f} {report.outcome:7} {report.duration:7.1f} s "
                 f"{report.nodeid}{'' if report.when == 'call' else f' ({report.when})'}\n")
        if report.failed:
            fh.write(report.longreprtext + "\n")


@pytest.fixture(params=["microscopy", "drone"])
def camera(request):
    from rawdrift.camera import CAMERAS
    return CAMERAS[request.param]


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is false)")])])
def device(request):
    """The devices a cheap test runs on (Kornia style): the CPU always, CUDA when present
    (reported as skipped, with the reason, where there is none); the CUDA case is marked
    ``cuda``, which ``make gpu-check`` selects."""
    return torch.device(request.param)
