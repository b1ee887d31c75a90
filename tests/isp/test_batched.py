"""The batched torch static views against render_static (the numpy / library reference)."""

import numpy as np
import pytest
import torch

from helpers import photo_raw
from rawdrift.isp import VIEWS, render_static
from rawdrift.isp import batched


@pytest.fixture(scope="module")
def photos():
    from rawdrift.camera import CAMERAS
    out = {}
    for name, cam in CAMERAS.items():
        raws = [photo_raw(cam, p, crop=(slice(60, 124), slice(100, 164))) for p in ("astronaut", "coffee", "chelsea")]
        out[name] = (cam, np.stack(raws))
    return out


@pytest.mark.parametrize("view", VIEWS)
def test_batched_views_equal_render_static(photos, view):
    for cam, raws in photos.values():
        ref = np.stack([render_static(r, cam, view) for r in raws])
        got64 = batched.render_batch(torch.from_numpy(raws), cam, view).numpy()
        np.testing.assert_allclose(got64, ref, atol=1e-10)
        got32 = batched.render_batch(torch.from_numpy(raws).float(), cam, view).numpy()
        assert np.abs(got32 - ref).max() < 1e-4, (view, np.abs(got32 - ref).max())


@pytest.mark.parametrize("name", ["bilinear", "malvar2004", "menon2007"])
def test_demosaicing_equals_colour_demosaicing_on_odd_content(name):
    import colour_demosaicing as cd
    ref_fn = {"bilinear": cd.demosaicing_CFA_Bayer_bilinear, "malvar2004": cd.demosaicing_CFA_Bayer_Malvar2004,
              "menon2007": cd.demosaicing_CFA_Bayer_Menon2007}[name]
    cfa = np.random.default_rng(0).random((2, 12, 18))      # noise: every branch and border is exercised
    got = getattr(batched, f"demosaic_{name}")(torch.from_numpy(cfa)).numpy()
    for i in range(2):
        np.testing.assert_allclose(got[i].transpose(1, 2, 0), ref_fn(cfa[i], "RGGB"), atol=1e-12)


def test_render_stack_on_torch_equals_the_reference_stack_bit_for_bit(tmp_path):
    """Quantised raws with flat areas: Menon's direction decision ties exactly there; the
    float64 torch stack decides like the library, so the stored views are identical."""
    from rawdrift.camera import CAMERAS
    from rawdrift.rendering import render_stack, render_stack_torch
    cam = CAMERAS["drone"]
    raws = np.stack([photo_raw(cam, p, crop=(slice(60, 92), slice(100, 132))) for p in ("astronaut", "coffee")])
    raws[:, 8:20, 4:28] = raws[:, 8:9, 4:5]                      # a flat patch: exact ties
    stack = np.round(raws * 65535).astype(np.uint16)
    np.save(tmp_path / "raw.npy", stack)
    render_stack(tmp_path / "raw.npy", cam, tmp_path / "ref", workers=1, progress=False)
    render_stack_torch(tmp_path / "raw.npy", cam, tmp_path / "torch", "cpu", progress=False)
    for v in VIEWS:
        np.testing.assert_array_equal(np.load(tmp_path / "torch" / f"{v}.npy"), np.load(tmp_path / "ref" / f"{v}.npy"))
