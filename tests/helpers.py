"""Plain helpers shared by several test files (fixtures live in conftest.py).

Importable as ``helpers`` from every test file, in tests/ and its subfolders: pytest's default
"prepend" import mode puts tests/ on ``sys.path`` when it loads tests/conftest.py."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

#: The repository root.
ROOT = Path(__file__).resolve().parents[1]


# --- raw photographs (the ISP tests) ----------------------------------------------------------

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


# --- stage scripts ----------------------------------------------------------------------------

def stage(workdir: Path, script: str, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    """Runs ``stages/<script>`` in ``workdir`` (which holds a params.yaml) as DVC would."""
    env = dict(os.environ, RAWDRIFT_WORKERS="2", **env_vars)
    return subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
