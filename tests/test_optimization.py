"""Drift optimization: learned / frozen / raw training, packing, summaries, ISP export."""

import numpy as np
import pytest
import torch

from helpers import mosaic_from_rgb, photo_raw
from rawdrift.camera import CAMERAS
from rawdrift.errors import RawdriftError
from rawdrift.isp import PARAMETER_GROUPS, ParametrizedISP
from rawdrift.optimization import (MODES, JointFold, isp_export, load_isp, make_front, pack_raw, setting_name,
                                   train_jointly, train_settings_concurrently)
from rawdrift.reports import curve_table, optimization_summary
from rawdrift.tasks import TaskConfig
from rawdrift.training import train_folds

CPU = torch.device("cpu")


def test_pack_raw_puts_each_bayer_site_in_its_plane():
    rgb = np.random.default_rng(0).random((6, 8, 3))
    raw = torch.from_numpy(mosaic_from_rgb(rgb))[None]
    planes = pack_raw(raw)[0].numpy()
    assert planes.shape == (4, 3, 4)
    np.testing.assert_array_equal(planes[0], rgb[0::2, 0::2, 0])
    np.testing.assert_array_equal(planes[1], rgb[0::2, 1::2, 1])
    np.testing.assert_array_equal(planes[2], rgb[1::2, 0::2, 1])
    np.testing.assert_array_equal(planes[3], rgb[1::2, 1::2, 2])
    with pytest.raises(RawdriftError, match="even"):
        pack_raw(torch.zeros(1, 6, 7))


@pytest.fixture(scope="module")
def toy():
    """12 raw tiles (16 x 16) cut from a photograph; the class is whether the tile is brighter than the median."""
    camera = CAMERAS["microscopy"]
    photo = photo_raw(camera, "astronaut", crop=(slice(0, 256), slice(0, 192)), scale=0.8)
    tiles = np.stack([photo[r:r + 16, c:c + 16] for r in range(0, 256, 64) for c in range(0, 192, 64)])
    raw = torch.from_numpy(tiles).float()
    means = raw.mean(dim=(1, 2))
    labels = (means > means.median()).long()
    folds = np.arange(12) % 3
    cfg = TaskConfig(task="classification", classes=2, epochs=2, batch_size=4, lr=1e-3)
    return camera, raw, labels, folds, cfg


def _run(toy, mode, camera=None, **kw):
    cam, raw, labels, folds, cfg = toy
    return train_jointly(cfg, mode, raw, labels, folds, camera or cam, seed=3, device=CPU, progress=False, **kw)


def test_learned_moves_the_data_model_within_its_constraints(toy):
    camera = toy[0]
    initial = ParametrizedISP(camera).to_dict()
    result = _run(toy, "learned", isp_lr=0.05, eval_every=2)
    assert len(result) == 3 and all(f.steps == [2, 4] for f in result)      # 8 training tiles, batch 4, 2 epochs
    for f in result:
        moved = {g: float(np.abs(np.subtract(f.isp[g], initial[g])).max()) for g in PARAMETER_GROUPS}
        # every group took steps of about isp_lr (black level 0.1 x), not float noise
        assert all(v > 1e-3 for g, v in moved.items() if g != "black_level"), moved
        assert moved["black_level"] > 1e-4
        # constraints: kernel sums and colour-matrix row sums kept, gains keep their sign, gamma > 0
        np.testing.assert_allclose(np.sum(f.isp["denoising"]), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.sum(f.isp["colour_matrix"], axis=1), np.sum(initial["colour_matrix"], axis=1),
                                   atol=1e-5)
        assert np.all(np.sign(f.isp["white_balance"]) == np.sign(initial["white_balance"]))
        assert f.isp["gamma"][0] > 0 and all(0 <= b <= 1 for b in f.isp["black_level"])


@pytest.mark.parametrize("mode", MODES)
def test_raw_tiles_are_checked_once_before_any_step(toy, mode):
    """The learned ISP runs unchecked in the training loop (no host sync per step); out-of-range
    tiles are refused up front, for every mode, with a one-line error."""
    camera, raw, labels, folds, cfg = toy
    assert make_front("learned", camera).check_inputs is False
    assert ParametrizedISP(camera, check_inputs=False)(raw[:2] + 2.0).shape == (2, 3, 16, 16)    # trusts its input
    bad = raw.clone()
    bad[3, 0, 0] = 1.5
    with pytest.raises(RawdriftError, match=r"^raw tiles: values must lie in \[0, 1\], got \[.*, 1\.5\]$"):
        train_jointly(cfg, mode, bad, labels, folds, camera, seed=3, device=CPU, progress=False)


def test_frozen_keeps_the_initial_data_model_and_matches_drift_synthesis_training(toy):
    """Frozen = the task model of train_folds on view bi_s_ga: same seeds, batches, augmentation."""
    camera, raw, labels, folds, cfg = toy
    frozen = _run(toy, "frozen", eval_every=2)     # 2 steps per epoch: validated at each epoch's end
    initial = ParametrizedISP(camera).to_dict()
    assert all(f.isp == initial for f in frozen)
    with torch.no_grad():
        views = ParametrizedISP(camera)(raw)
    reference = train_folds(cfg, views, labels, folds, seed=3, device=CPU, progress=False)
    for f, r in zip(frozen, reference):
        np.testing.assert_allclose(f.val_metric, r.val_metric, atol=1e-9)
        np.testing.assert_allclose(f.train_loss, r.train_loss, rtol=1e-5)


def test_raw_mode_sees_no_isp(toy):
    camera = toy[0]
    front = make_front("raw", camera)
    assert not list(front.parameters())
    x = toy[1][:2]
    assert torch.equal(front(x), pack_raw(x))
    other = CAMERAS["drone"]          # another camera changes the ISP, not the raw mosaic
    a, b = _run(toy, "raw", eval_every=3), _run(toy, "raw", camera=other, eval_every=3)
    assert all(f.isp is None for f in a)
    assert [f.val_metric for f in a] == [f.val_metric for f in b]
    assert [f.train_loss for f in a] == [f.train_loss for f in b]
    fa, fb = _run(toy, "frozen", eval_every=3), _run(toy, "frozen", camera=other, eval_every=3)
    assert [f.train_loss for f in fa] != [f.train_loss for f in fb]


def test_settings_trained_concurrently_equal_settings_trained_one_after_another(toy):
    """A pool of fold processes (what keeps a GPU busy) changes nothing any fold sees."""
    cam, raw, labels, folds, cfg = toy
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # the same intra-op threads as each worker: identical float sums
    try:
        serial = [_run(toy, mode, isp_lr=0.05, eval_every=2, intensity=0.5) for mode in MODES]
    finally:
        torch.set_num_threads(threads)
    pooled = train_settings_concurrently(cfg, [(mode, 0.5, raw) for mode in MODES], labels, folds, cam, seed=3,
                                         device=CPU, isp_lr=0.05, eval_every=2, processes=2, threads=1)
    assert [[f.fold for f in s] for s in pooled] == [[0, 1, 2]] * 3
    for a, b in zip(serial, pooled):
        for fa, fb in zip(a, b):
            assert (fa.mode, fa.intensity, fa.steps) == (fb.mode, fb.intensity, fb.steps)
            assert fa.val_metric == fb.val_metric and fa.train_loss == fb.train_loss
            assert fa.isp == fb.isp
    assert pooled[0][0].isp is not None and pooled[1][0].isp == ParametrizedISP(cam).to_dict()
    assert pooled[2][0].isp is None


def test_raw_mode_segmentation_predicts_full_resolution_masks():
    camera = CAMERAS["drone"]
    raw = torch.from_numpy(np.stack([photo_raw(camera, "coffee", crop=(slice(r, r + 32), slice(0, 32)))
                                     for r in range(0, 192, 32)])).float()
    masks = (raw > raw.mean()).to(torch.uint8)
    cfg = TaskConfig(task="segmentation", arch="unet", encoder="resnet18", encoder_depth=3,
                     decoder_channels=(16, 8, 4), epochs=1, batch_size=2, lr=1e-3, loss="dice_bce")
    out = train_jointly(cfg, "raw", raw, masks, np.arange(6) % 3, camera, 0, CPU, eval_every=1, progress=False)
    assert [f.steps for f in out] == [[1, 2]] * 3
    assert all(0 <= v <= 1 for f in out for v in f.val_metric)


def test_summary_table_is_mean_and_std_over_folds_and_steps():
    folds = [JointFold("learned", 0.01, k, steps=[2, 4], val_metric=v) for k, v in
             enumerate([[0.5, 0.7], [0.6, 0.8], [0.4, 0.9]])]
    s = optimization_summary({setting_name("learned", 0.01): folds}, "accuracy")
    e = s["settings"]["learned_scale001"]
    values = [0.5, 0.7, 0.6, 0.8, 0.4, 0.9]
    assert s["metric"] == "accuracy" and e["steps"] == 4 and e["folds"] == 3
    assert e["table"]["mean"] == pytest.approx(np.mean(values))
    assert e["table"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert e["final"]["per_fold"] == [0.7, 0.8, 0.9] and e["final"]["mean"] == pytest.approx(0.8)
    assert e["curve"]["mean"] == pytest.approx([0.5, 0.8]) and e["curve"]["std"] == pytest.approx([0.1, 0.1])
    rows = curve_table({"learned_scale001": folds}, "accuracy")
    assert len(rows) == 6 and rows.iloc[0].to_dict() == {"step": 2, "setting": "learned_scale001", "fold": 0,
                                                         "accuracy": 0.5}
    bad = [JointFold("raw", 1.0, 0, steps=[2], val_metric=[0.1]), JointFold("raw", 1.0, 1, steps=[3], val_metric=[0.1])]
    with pytest.raises(RawdriftError, match="different steps"):
        optimization_summary({"raw_scale100": bad}, "accuracy")


def test_learned_isp_export_reads_back(toy):
    camera, raw = toy[0], toy[1][:3]
    fold = _run(toy, "learned", isp_lr=0.05, eval_every=6)[1]
    exported = isp_export(fold, camera, "microscopy")
    assert exported["fold"] == 1 and exported["mode"] == "learned" and exported["final_metric"] == fold.val_metric[-1]
    isp = load_isp(exported)
    for g in PARAMETER_GROUPS:
        np.testing.assert_allclose(isp.to_dict()[g], fold.isp[g], rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        assert (isp(raw) - ParametrizedISP(camera)(raw)).abs().max() > 1e-3
    with pytest.raises(RawdriftError, match="missing key 'camera'"):
        load_isp({"parameters": fold.isp})
    with pytest.raises(RawdriftError, match="no learned ISP"):
        isp_export(JointFold("frozen", 1.0, 0, isp=fold.isp), camera, "microscopy")
