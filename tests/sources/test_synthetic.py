"""The embedded synthetic source (rawdrift.sources.synthetic): counts, physics, determinism, and that
the ISP matters. The microscopy optics it renders with: test_microscopy.py."""

import numpy as np
import pytest

from rawdrift.camera import RAW_SCALE
from rawdrift.isp import VIEWS, render_static
from rawdrift.sensor import INTENSITIES
from rawdrift.sources import microscopy
from rawdrift.sources.store import load_raw_dataset
from rawdrift.sources.synthetic import class_counts, generate


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw") / "microscopy"
    generate("microscopy", out, count=45, tile=32, folds=3, seed=3, intensities=list(INTENSITIES), workers=2,
             progress=False)
    return load_raw_dataset(out, verify=True)


@pytest.fixture(scope="module")
def drone_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw") / "drone"
    generate("drone", out, count=12, tile=32, folds=3, seed=3, intensities=[0.1, 1.0], workers=1, progress=False)
    return load_raw_dataset(out, verify=True)


def test_paper_size_class_counts_follow_published_shares():
    counts = class_counts(940, microscopy.CLASS_SHARES)
    assert sum(counts.values()) == 940
    for c, share in microscopy.CLASS_SHARES.items():
        assert abs(counts[c] - 940 * share / 100) <= 1, c
    small = class_counts(60, microscopy.CLASS_SHARES)
    assert sum(small.values()) == 60 and min(small.values()) >= 1


def test_microscopy_files_and_layout(micro):
    assert micro.meta["count"] == 45 and micro.task == "classification"
    assert micro.intensities == list(INTENSITIES)
    for r in INTENSITIES:
        raw = micro.raw(r)
        assert raw.dtype == np.uint16 and raw.shape == (45, 32, 32)
    labels = micro.labels()
    assert set(labels.tolist()) == set(range(9))               # every class present
    assert sorted(np.bincount(micro.folds).tolist()) == [15, 15, 15]
    for k in range(9):                                         # stratified: a class spreads over folds
        per_fold = np.bincount(micro.folds[labels == k], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1


def test_exposure_ladder_mean_scales_and_noise_grows(micro):
    bl = micro.camera.black_level[0] * RAW_SCALE
    means = np.array([micro.raw(r).astype(float).mean() - bl for r in INTENSITIES])
    np.testing.assert_allclose(means / means[-1], INTENSITIES, rtol=0.02, atol=1e-3)
    snr = []
    for r in (0.01, 1.0):   # relative noise of the red sites in the empty top-left corner
        patch = micro.raw(r)[:, 0:6:2, 0:6:2].astype(float) - bl
        snr.append(np.median(patch.mean(axis=(1, 2)) / (patch.std(axis=(1, 2)) + 1e-9)))
    assert snr[0] < snr[1]


def test_microscopy_background_renders_neutral_white(micro):
    raw = micro.raw(1.0)[0].astype(np.float64) / RAW_SCALE
    v = render_static(raw, micro.camera, "bi_s_ga")
    flat = v.reshape(3, -1)
    bright = flat[:, flat.mean(0) > np.quantile(flat.mean(0), 0.8)]   # the empty field
    rgb = bright.mean(1)
    assert rgb.min() > 0.8 and rgb.max() - rgb.min() < 0.06


def test_deterministic_and_independent_of_workers(tmp_path, micro):
    out = tmp_path / "again"
    generate("microscopy", out, count=45, tile=32, folds=3, seed=3, intensities=list(INTENSITIES), workers=1,
             progress=False)
    again = load_raw_dataset(out)
    assert np.array_equal(again.raw(0.05), micro.raw(0.05))
    assert again.meta["checksums"] == micro.meta["checksums"]


def test_drone_every_tile_has_a_car_and_masks_are_binary(drone_ds):
    masks = drone_ds.masks()
    assert masks.shape == (12, 32, 32) and set(np.unique(masks).tolist()) <= {0, 1}
    assert (masks.reshape(12, -1).sum(1) > 0).all()
    assert drone_ds.camera.black_level[0] == 0.0625
    raw = drone_ds.raw(1.0)
    assert np.all(raw % 16 == 0)                               # 12-bit ADC, left-justified
    assert raw.min() >= 0.0625 * RAW_SCALE - 200               # black level with read noise


def test_isp_choices_matter_most_where_the_task_looks(micro):
    """Views differ more on the leukocyte (the task) than on the empty field."""
    raw = micro.raw(1.0)[1].astype(np.float64) / RAW_SCALE
    views = np.stack([render_static(raw, micro.camera, v) for v in VIEWS])
    spread = views.std(axis=0).mean(axis=0)                    # (H, W) spread across the 12 views
    c = raw.shape[0] // 2
    centre = spread[c - 4:c + 4, c - 4:c + 4].mean()
    corner = np.median(spread)
    assert centre > 2 * corner


def test_classes_are_learnable_but_not_trivial(tmp_path):
    """A nearest-class-mean on colour statistics beats the majority class but is far from perfect."""
    out = tmp_path / "m"
    generate("microscopy", out, count=180, tile=32, folds=3, seed=5, intensities=[1.0], workers=2, progress=False)
    ds = load_raw_dataset(out)
    y = ds.labels()
    feats = []
    for raw in ds.raw(1.0):
        v = render_static(raw.astype(np.float64) / RAW_SCALE, ds.camera, "bi_s_ga")
        c = v[:, 8:24, 8:24].reshape(3, -1)
        feats.append(np.concatenate([c.mean(1), c.std(1), np.percentile(c, [5, 25], axis=1).ravel()]))
    X = np.array(feats)
    X = (X - X.mean(0)) / X.std(0)
    test = ds.folds == 0
    means = np.array([X[~test & (y == k)].mean(0) if np.any(~test & (y == k)) else np.full(X.shape[1], np.inf)
                      for k in range(9)])
    pred = np.argmin(((X[test, None] - means[None]) ** 2).sum(-1), axis=1)
    acc = (pred == y[test]).mean()
    majority = np.bincount(y[test]).max() / test.sum()
    assert majority + 0.1 < acc < 0.98


def test_unknown_optics_is_a_param_error(tmp_path):
    from rawdrift.errors import RawdriftError
    with pytest.raises(RawdriftError, match="optics: must be one of matched, objective"):
        generate("microscopy", tmp_path / "x", count=9, tile=32, folds=3, seed=0, intensities=[1.0], workers=1,
                 progress=False, optics="zoom")
    assert not (tmp_path / "x").exists()
