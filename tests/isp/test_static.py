"""The static data model against an independent, step-by-step implementation of appendix A.1.1."""

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import skimage.color
import skimage.filters
import colour_demosaicing as cd

from helpers import photo_raw
from rawdrift.camera import CAMERAS
from rawdrift.errors import RawdriftError
from rawdrift.isp import VIEWS, render_static


def reference_view(raw, camera, view):
    """Written from facts.md alone (not from rawdrift), as a check of order and conventions."""
    dm, sh, dn = view.split("_")
    x = raw.astype(np.float64).copy()
    x -= camera.black_level_map(*x.shape)
    f = {"bi": cd.demosaicing_CFA_Bayer_bilinear, "ma": cd.demosaicing_CFA_Bayer_Malvar2004,
         "me": cd.demosaicing_CFA_Bayer_Menon2007}[dm]
    rgb = f(x, "RGGB")
    rgb = rgb * np.array(camera.white_balance)
    M = np.array(camera.colour_matrix)
    rgb = np.einsum("ck,hwk->hwc", M, rgb)
    yuv = skimage.color.rgb2yuv(rgb)
    y = yuv[..., 0]
    if sh == "s":
        y = scipy.signal.convolve2d(y, np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]), mode="same")
    else:
        y = skimage.filters.unsharp_mask(y, radius=1.0, amount=1.0, preserve_range=True)
    y = scipy.ndimage.median_filter(y, size=3) if dn == "me" else scipy.ndimage.gaussian_filter(y, sigma=0.5)
    yuv[..., 0] = y
    out = np.clip(skimage.color.yuv2rgb(yuv), 0, 1) ** (1 / 2.2)
    return out.transpose(2, 0, 1)


def test_views_contract():
    assert VIEWS == ("bi_s_me", "bi_s_ga", "bi_u_me", "bi_u_ga", "ma_s_me", "ma_s_ga", "ma_u_me", "ma_u_ga",
                     "me_s_me", "me_s_ga", "me_u_me", "me_u_ga")


@pytest.mark.parametrize("photo", ["astronaut", "chelsea"])
def test_all_views_match_reference_on_photographs(camera, photo):
    raw = photo_raw(camera, photo)
    for view in VIEWS:
        out = render_static(raw, camera, view)
        assert out.shape == (3,) + raw.shape
        assert out.min() >= 0 and out.max() <= 1
        np.testing.assert_allclose(out, reference_view(raw, camera, view), atol=1e-3, rtol=0)


def test_views_differ_and_round_trip_colours():
    """Views are not all the same, and the inverse colour transform renders the photo back."""
    from skimage import data
    camera = CAMERAS["drone"]
    raw = photo_raw(camera, "astronaut", scale=1.0)
    outs = {v: render_static(raw, camera, v) for v in VIEWS}
    diffs = [np.abs(outs[a] - outs[b]).mean() for a in VIEWS for b in VIEWS if a < b]
    assert min(diffs) > 1e-4            # every pair of views differs
    assert max(diffs) > 5e-3            # and some differ a lot
    img = data.astronaut()[80:176, 140:236].astype(float).transpose(2, 0, 1) / 255
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert np.abs(outs["bi_s_ga"][inner] - img[inner]).mean() < 0.08


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((5, 8)), "even"),
    (np.zeros((8, 8), dtype=np.uint16), "dtype"),
    (np.full((8, 8), np.nan), "NaN"),
    (np.full((8, 8), 1.5), r"\[0, 1\]"),
    (np.zeros((2, 8, 8)), "2-D"),
])
def test_bad_raw_is_rejected(bad, msg):
    with pytest.raises(RawdriftError, match=msg):
        render_static(bad, CAMERAS["drone"], "bi_s_ga")


def test_unknown_view_is_rejected():
    with pytest.raises(RawdriftError, match="unknown view 'bi_x_ga'"):
        render_static(np.zeros((8, 8)), CAMERAS["drone"], "bi_x_ga")


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((1, 5, 8)), "even"),
    (np.full((1, 8, 8), np.nan), "NaN or inf"),
    (np.full((1, 8, 8), -np.inf), "NaN or inf"),
    (np.full((1, 8, 8), 1.5), r"\[0, 1\]"),
    (np.zeros((8, 8)), r"\(B, H, W\)"),
])
def test_one_raw_check_for_numpy_torch_and_batched_paths(bad, msg):
    """render_static, ParametrizedISP and render_batch reject the same input with the same rule
    (rawdrift.camera.check_raw); the torch paths used to let NaN and out-of-range values through."""
    import torch

    from rawdrift.isp import ParametrizedISP
    from rawdrift.isp.batched import render_batch
    from rawdrift.optimization import pack_raw
    cam = CAMERAS["drone"]
    t = torch.from_numpy(bad)
    for call in (lambda: ParametrizedISP(cam).double()(t), lambda: render_batch(t, cam, "bi_s_ga"),
                 lambda: pack_raw(t)):
        with pytest.raises(RawdriftError, match=msg):
            call()
    if bad.ndim == 3:
        with pytest.raises(RawdriftError, match=msg):
            render_static(bad[0], cam, "bi_s_ga")
