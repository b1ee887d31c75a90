
import numpy as np
import pytest
import torch


def mosaic_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera RGB -> RGGB mosaic (H, W)."""
    from rawdrift.optics import mosaic_rggb
    return mosaic_rggb(np.moveaxis(np.asarray(rgb, dtype=np.float64), -1, 0))


def photo_raw(camera, name: str = "astronaut", crop=(slice(80, 176), slice(140, 236)), scale: float = 0.8):
    """A real photograph (shipped with scikit-image) turned into a plausible raw mosaic of ``camera``:
    sRGB -> linear -> camera space (inverse colour transform) -> RGGB -> + black level, in [0, 1]."""
    from skimage import data
    img = getattr(data, name)()[crop].astype(np.float64) / 255.0
    lin = img ** 2.2 * scale
    camrgb = camera.camera_from_linear_rgb(lin)
    raw = mosaic_from_rgb(camrgb) + camera.black_level_map(*img.shape[:2])
    return np.clip(raw, 0, 1)


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
