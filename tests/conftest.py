"""Fixtures shared by the whole test tree (plain helper functions: tests/helpers.py)."""

import pytest
import torch


@pytest.fixture(params=["microscopy", "drone"])
def camera(request):
    from rawdrift.camera import CAMERAS
    return CAMERAS[request.param]


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is false)"))])
def device(request):
    """The devices a cheap test runs on (Kornia style): the CPU always, CUDA when present
    (reported as skipped, with the reason, where there is none)."""
    return torch.device(request.param)
