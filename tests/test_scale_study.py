"""The pixel-scale study: one tiny point end to end, its bookkeeping, and its params checks."""

import numpy as np
import pytest
import torch

from rawdrift.errors import RawdriftError
from rawdrift.scale_study import StudyPoint, check_point, run_point, scale_figure, separate_labels, summarise
from rawdrift.tasks import TaskConfig


def test_summarise_matches_the_pipeline_definitions():
    """drop = diagonal mean - off-diagonal mean (crosseval.headline); corruption drop = diagonal - corrupted."""
    matrix = np.array([[[0.9, 0.6], [0.7, 0.8]], [[0.7, 0.4], [0.5, 0.6]]])      # k=2 folds, 2 views
    corrupted = np.full((2, 2, 3), 0.4)
    s = summarise(matrix, corrupted)
    assert s["diagonal"] == pytest.approx(0.75) and s["off_diagonal"] == pytest.approx(0.55)
    assert s["drop"] == pytest.approx(0.20) and s["worst_cell"] == pytest.approx(0.5)
    assert s["corruption_drop"] == pytest.approx(0.35) and s["ratio"] == pytest.approx(1.75)
    assert summarise(np.ones((2, 2, 2)), corrupted)["ratio"] is None      # no view drop: no ratio


@pytest.mark.parametrize("spec, key", [
    ({"dataset": "radar", "tile": 32}, "dataset"),
    ({"dataset": "drone", "tile": 33}, "tile"),
    ({"dataset": "drone", "tile": 32, "optics": "matched"}, "optics"),
    ({"dataset": "microscopy", "tile": 32, "optics": "zoom"}, "optics"),
    ({"dataset": "microscopy", "tile": 32, "count": 5}, "count"),
    ({"dataset": "microscopy", "tile": 32, "batch_size": 8}, "unknown key"),
])
def test_bad_points_are_named(spec, key):
    with pytest.raises(RawdriftError, match=key):
        check_point(spec)


def _stage():
    import importlib.util

    from helpers import ROOT
    spec = importlib.util.spec_from_file_location("scale_study_stage", ROOT / "stages/scale_study.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def test_the_stage_passes_a_points_recipe_overrides_on():
    stage = _stage()
    study = {"count": {"microscopy": 240, "drone": 180}, "folds": 3, "views": ["bi_s_ga", "ma_s_ga"]}
    points = {"p": {"dataset": "microscopy", "tile": 64, "arch": "efficientnet_lite0", "pretrained": True,
                    "lr": 1e-4, "epochs": 16, "label": "ImageNet"},
              "plain": {"dataset": "drone", "tile": 64}}
    p = stage._point(study, points, "p", seed=7)
    assert p.task == {"epochs": 16, "arch": "efficientnet_lite0", "pretrained": True, "lr": 1e-4}
    assert (p.count, p.folds, p.seed, p.label, p.views) == (240, 3, 7, "ImageNet", ("bi_s_ga", "ma_s_ga"))
    plain = stage._point(study, points, "plain", seed=7)
    assert plain.task == {} and plain.count == 180 and not plain.ablation
    root = {"train": {"microscopy": {"epochs": 4, "batch_size": 32, "lr": 1e-3},
                      "drone": {"arch": "unet", "epochs": 3, "batch_size": 8, "loss": "dice"}}}
    cfg = stage._recipe(root, p, "p")
    assert (cfg.arch, cfg.pretrained, cfg.lr, cfg.epochs, cfg.batch_size) == ("efficientnet_lite0", True, 1e-4, 16, 32)
    base = stage._recipe(root, plain, "plain")
    assert (base.arch, base.epochs, base.batch_size) == ("unet", 3, 8)


@pytest.mark.parametrize("dataset, override, key", [
    ("microscopy", {"epochs": 0}, "epochs"),
    ("microscopy", {"lr": 0}, "lr"),
    ("microscopy", {"arch": "unet"}, "arch"),
    ("drone", {"arch": "efficientnet_lite0"}, "arch"),
    ("microscopy", {"pretrained": "yes"}, "pretrained"),
])
def test_bad_recipe_overrides_are_named_by_point(dataset, override, key):
    """A point's override is checked by task_config, and the error names the point's key in the
    study's params file; a bad train.<dataset> is named in params.yaml."""
    stage = _stage()
    root = {"train": {"microscopy": {"epochs": 4, "batch_size": 32}, "drone": {"arch": "unet", "batch_size": 8, "loss": "dice"}}}
    with pytest.raises(RawdriftError, match=rf"^studies/scale/params.yaml: points.p.{key}: "):
        stage._recipe(root, StudyPoint(dataset, 32, task=override), "p")
    root["train"][dataset]["batch_size"] = 0
    with pytest.raises(RawdriftError, match=rf"^params.yaml: train.{dataset}.batch_size: "):
        stage._recipe(root, StudyPoint(dataset, 32), "p")


def test_tiny_point_end_to_end(tmp_path):
    cfg = TaskConfig(task="classification", epochs=1, batch_size=8, lr=1e-3)
    point = StudyPoint("microscopy", 32, count=18, folds=3, views=("bi_s_ga", "me_s_me"))
    r = run_point(point, cfg, ["gaussian_noise", "contrast"], device=torch.device("cpu"), workers=1)
    assert r["views"] == ["bi_s_ga", "me_s_me"] and np.asarray(r["matrix"]).shape == (2, 2)
    m = np.asarray(r["matrix"])
    assert r["diagonal"] == pytest.approx(np.diag(m).mean())
    assert r["drop"] == pytest.approx(r["diagonal"] - r["off_diagonal"])
    assert 0 <= m.min() and m.max() <= 1 and len(r["corruption_scores"]) == 2
    assert r["pixel"] == pytest.approx(41.6 / 32) and not r["ablation"]
    assert set(r["nyquist"]) == {"bi_s_ga", "me_s_me"} and all(0 <= a < 0.1 for a in r["nyquist"].values())
    assert r["seconds"] > 0
    # the same point again, its two views trained at once, gives the same numbers (seeded generator,
    # training and corruption noise; one thread per view process whatever the worker count)
    again = run_point(point, cfg, ["gaussian_noise", "contrast"], device=torch.device("cpu"), workers=2)
    assert again["matrix"] == r["matrix"] and again["corruption_scores"] == r["corruption_scores"]
    assert again["nyquist"] == r["nyquist"]
    scale_figure([r, {**r, "tile": 64, "pixel": 0.65, "label": "x", "ablation": True}], tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_labels_on_one_spot_are_stacked_without_overlap():
    """Four labels at one point and one far away: afterwards no two overlap, the lowest and the
    lone one stay where they were, the others only moved up."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    texts = [ax.annotate(t, (0.3, 0.3 + 0.001 * i), xytext=(4, 2), textcoords="offset points", fontsize=7)
             for i, t in enumerate(["EfficientNet scratch", "96 px", "128 px", "a"])]
    lone = ax.annotate("far", (0.9, 0.9), xytext=(4, 2), textcoords="offset points", fontsize=7)
    renderer = fig.canvas.get_renderer()
    before = [t.get_window_extent(renderer) for t in texts + [lone]]
    assert before[0].overlaps(before[1])
    separate_labels(texts + [lone])
    after = [t.get_window_extent(renderer) for t in texts + [lone]]
    for i in range(len(after)):
        for j in range(i):
            assert not after[i].overlaps(after[j]), (i, j)
    assert after[0].y0 == pytest.approx(before[0].y0) and after[-1].y0 == pytest.approx(before[-1].y0)
    assert all(a.y0 >= b.y0 - 1e-9 and a.x0 == pytest.approx(b.x0) for a, b in zip(after, before))
    plt.close(fig)


def test_nyquist_amplitude_measures_the_two_pixel_pattern():
    from rawdrift.scale_study import nyquist_amplitude
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = (0.5 + 0.2 * torch.sin(yy / 9) * torch.cos(xx / 7)).expand(2, 3, 32, 32)
    assert nyquist_amplitude(smooth) < 1e-3
    for pattern in ((-1.0) ** (yy + xx), (-1.0) ** xx, (-1.0) ** yy):
        assert abs(nyquist_amplitude(smooth + 0.01 * pattern) - 0.01) < 1e-3
    both = smooth + 0.03 * (-1.0) ** xx + 0.04 * (-1.0) ** yy
    assert abs(nyquist_amplitude(both) - 0.05) < 1e-3          # root sum of squares
    with pytest.raises(RawdriftError, match="nyquist_amplitude"):
        nyquist_amplitude(torch.zeros(1, 3, 8, 8))


def test_each_point_is_its_own_stage_reading_its_own_params():
    """Adding or changing one point (or one dataset's recipe) reruns that point only."""
    import yaml
    from helpers import ROOT
    stages = yaml.safe_load((ROOT / "studies/scale/dvc.yaml").read_text())["stages"]
    point = stages["point"]
    assert point["foreach"] == "${points}"
    params = point["do"]["params"]
    assert "points.${key}" in params and "points" not in params
    root = next(p["../../params.yaml"] for p in params if isinstance(p, dict))
    assert "train.${item.dataset}" in root and not {"train", "train.microscopy", "train.drone"} & set(root)
    assert point["do"]["metrics"] == [{"../../metrics/scale_study/${key}.json": {"cache": False}}]
    assert "../../metrics/scale_study" in stages["summary"]["deps"]
    local = yaml.safe_load((ROOT / "studies/scale/params.yaml").read_text())
    for name, spec in local["points"].items():
        check_point(spec)
