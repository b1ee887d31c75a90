"""Plain helpers shared by several test files (fixtures live in conftest.py).

Importable as ``helpers`` from every test file, in tests/ and its subfolders: pytest's default
"prepend" import mode puts tests/ on ``sys.path`` when it loads tests/conftest.py."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

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


# --- a miniature Zenodo record (the folder and Zenodo sources) ---------------------------------

#: The intensities of the miniature record.
RATIOS = [0.01, 1.0]


def raw_tile(rng: np.random.Generator, h: int = 32, w: int = 32, level: int = 4000) -> np.ndarray:
    """A uint16 raw frame of noise above ``level``."""
    return rng.integers(level, level + 3000, size=(h, w)).astype(np.uint16)


def record_tree(root: Path, bad_class_images: int = 2) -> dict:
    """A miniature record: microscopy (3 classes, one too small) and one drone image with a car."""
    import tifffile
    from PIL import Image
    rng = np.random.default_rng(0)
    files = {}
    lines = []
    classes = {"LYT": 5, "MON": 6, "BAS": bad_class_images}
    for cls, n in classes.items():
        for i in range(n):
            stem = f"Ma190c_{cls}_{i}"
            base = raw_tile(rng)
            for r in RATIOS:
                p = root / f"microscopy/images/raw_scale{round(r * 100):03d}/{stem}.tiff"
                p.parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(p, (base * r).astype(np.uint16))
            files[stem] = base
            lines.append(f"{stem}.tiff {cls}")
    lab = root / "microscopy/labels/Ma190c_annotations.dat"
    lab.parent.mkdir(parents=True)
    lab.write_text("\n".join(lines) + "\n")
    img = raw_tile(rng, 64, 96)
    for r in RATIOS:
        p = root / f"drone/images_full/raw_scale{round(r * 100):03d}/DJI_0001.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(p, (img * r).astype(np.uint16))
    mask = np.zeros((64, 96), np.uint8)
    mask[5:15, 40:50] = 255           # one car in tile (0, 32); the other 5 tiles are empty
    (root / "drone/masks_full").mkdir(parents=True)
    Image.fromarray(mask).save(root / "drone/masks_full/DJI_0001.png")
    return {"micro": files, "drone": img, "mask": mask}


# --- toy tasks (training, cross-evaluation, task models) -------------------------------------

#: A small segmentation network (drone task) that learns square_task in a few epochs.
SEG = dict(arch="unetplusplus", encoder="mobilenet_v2", encoder_depth=3, decoder_channels=[16, 8, 4],
           epochs=12, batch_size=8, lr=3e-3, schedule="cosine", loss="dice_bce")


def colour_task(n=48, size=16, seed=0):
    """Three classes told apart by colour, with noise: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    base = torch.tensor([[0.8, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.2, 0.8]])[y]
    x = (base[:, :, None, None] + 0.15 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    folds = np.arange(n) % 2
    return x, y, folds


def square_task(n=48, size=32, seed=0):
    """Bright squares on a textured background; the mask is the square."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.1 * torch.rand(n, 3, size, size, generator=g)
    m = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        r, c = torch.randint(0, size - 10, (2,), generator=g).tolist()
        x[i, :, r:r + 10, c:c + 10] = 0.9
        m[i, r:r + 10, c:c + 10] = 1
    return x, m, np.arange(n) % 2
