"""Drift forensics (rawdrift.forensics): SSIM, the adversarial search, the signature. The constrained
ISP it searches: tests/isp/test_constraints.py; the forensics params: tests/test_params.py."""

import numpy as np
import pytest
import torch
from torch import nn

from rawdrift.camera import CAMERAS
from rawdrift.errors import RawdriftError
from rawdrift.forensics import (SearchSettings, adversarial_search, adversarial_searches, describe_change,
                                forensic_signature, forensics_sweep, l2_distance, lambda_key, signature_markdown, ssim)
from rawdrift.isp import PARAMETER_GROUPS, ParametrizedISP
from rawdrift.tasks import TaskConfig, loss_fn


# --- SSIM ----------------------------------------------------------------------------------

def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (2, 3, 24, 30))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ours = float(ssim(torch.from_numpy(a), torch.from_numpy(b)))
    ref = np.mean([structural_similarity(a[i], b[i], channel_axis=0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0) for i in range(2)])
    assert ours == pytest.approx(ref, abs=1e-10)
    assert float(ssim(torch.from_numpy(a), torch.from_numpy(a))) == pytest.approx(1.0)


# --- the search on a small case --------------------------------------------------------------

class BrightnessClassifier(nn.Module):
    """A frozen two-class model: 'bright' when a view's mean exceeds a threshold."""

    def __init__(self, threshold: float, slope: float = 40.0) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.tensor(threshold))
        self.slope = slope

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        z = self.slope * (v.mean((1, 2, 3)) - self.threshold)
        return torch.stack([-z, z], dim=1)


def toy_case(n: int = 32, size: int = 16):
    """Raw tiles of two brightness classes through the drone camera, and a model that separates them."""
    camera = CAMERAS["drone"]
    g = torch.Generator().manual_seed(0)
    level = torch.where(torch.arange(n) % 2 == 0, 0.12, 0.3) * (1 + 0.1 * torch.rand(n, generator=g))
    raw = (camera.black_level[0] + level[:, None, None] * (1 + 0.2 * torch.rand(n, size, size, generator=g)))
    raw = raw.clamp(0, 1).float()
    labels = (torch.arange(n) % 2 == 1).long()
    with torch.no_grad():
        means = ParametrizedISP(camera)(raw).mean((1, 2, 3))
    # the bright class sits close to the threshold: the model's weak side, which the search must find
    model = BrightnessClassifier(float(means[labels == 1].min()) - 0.02)
    cfg = TaskConfig(task="classification", classes=2, loss="ce")
    folds = (np.arange(n) // 2) % 2          # both classes in every fold
    return camera, raw, labels, model, cfg, folds


def test_search_degrades_the_model_as_lambda_falls_and_keeps_the_l2_budget_as_it_rises():
    camera, raw, labels, model, cfg, folds = toy_case()
    lambdas = [1e4, 1e2, 1.0, 0.0]
    settings = SearchSettings(lam=0.0, epochs=15, lr=0.02, batch_size=8)
    result = forensics_sweep(lambda k: model, cfg, camera, raw, labels, folds, lambdas, ["all", "black_level"],
                             settings, seed=3, progress=False)
    assert result["clean"]["mean"] == 1.0 and result["lambdas"] == sorted(lambdas, reverse=True)
    for g in ("all", "black_level"):
        metric = [result["results"][g][lambda_key(lam)]["metric"]["mean"] for lam in result["lambdas"]]
        l2 = [result["results"][g][lambda_key(lam)]["l2"]["mean"] for lam in result["lambdas"]]
        assert metric[0] >= 0.95 and metric[-1] <= 0.6, (g, metric)        # strong lambda: harmless; none: harmful
        assert all(b <= a + 0.05 for a, b in zip(metric, metric[1:])), (g, metric)   # monotone within noise
        # the budget: a tight lambda keeps the views close and the distance grows as lambda falls, up
        # to Adam's own jitter around the optimum (~lr: l2 < 1e-3 here); lambda = 0 is unbounded
        assert l2[0] < 1e-3 and l2[0] < 0.01 * max(l2), (g, l2)
        assert all(b >= a * 0.9 or max(a, b) < 1e-3 for a, b in zip(l2[:-1], l2[1:-1])), (g, l2)
        for entry in result["results"][g].values():
            assert len(entry["parameters"]) == 2 and len(entry["metric"]["per_fold"]) == 2
    moved = result["results"]["black_level"][lambda_key(0.0)]["change"][0]
    assert moved["black_level"]["l2"] > 0 and all(moved[h]["l2"] == 0 for h in PARAMETER_GROUPS if h != "black_level")
    assert set(result["results"]["all"][lambda_key(0.0)]["l2_by_group"][0]) == set(PARAMETER_GROUPS)

    again = forensics_sweep(lambda k: model, cfg, camera, raw, labels, folds, lambdas, ["all", "black_level"],
                            settings, seed=3, progress=False)
    assert again == result                                                        # deterministic on CPU

    sig = forensic_signature(result, tolerance=0.1)
    bl = sig["groups"]["black_level"]
    assert bl["fails_at"] is not None and bl["strongest"]["lambda"] == 0.0 and bl["safe_l2"] < bl["fails_at"]["l2"]
    assert "black level" in bl["most_harmful_change"]
    text = signature_markdown(sig, "toy")
    assert text.count("\n| ") == 3 and "black level" in text


def test_ssim_regulariser_search_runs_and_respects_its_budget():
    camera, raw, labels, model, cfg, folds = toy_case()
    tight = adversarial_search(model, cfg, camera, raw, labels, SearchSettings(lam=1e4, group="gamma", epochs=5,
                                                                               regulariser="ssim"))
    loose = adversarial_search(model, cfg, camera, raw, labels, SearchSettings(lam=0.0, group="gamma", epochs=5,
                                                                               regulariser="ssim"))
    g0 = 2.2
    assert abs(tight.gamma.item() - g0) < abs(loose.gamma.item() - g0)


def test_signature_bounds_on_a_hand_made_sweep():
    def entry(metric, l2, rel):
        return {"metric": {"mean": metric, "std": 0.01, "per_fold": [metric]}, "l2": {"mean": l2},
                "change": [{g: {"relative": rel, "l2": rel, "mean": rel} for g in PARAMETER_GROUPS}],
                "parameters": [ParametrizedISP(CAMERAS["drone"]).to_dict()]}
    initial = ParametrizedISP(CAMERAS["drone"]).to_dict()
    result = {"metric": "iou", "clean": {"mean": 0.8, "std": 0.02}, "groups": ["gamma"], "initial": initial,
              "results": {"gamma": {"1e+02": entry(0.79, 1e-5, 0.01), "1e+00": entry(0.77, 1e-4, 0.05),
                                    "1e-02": entry(0.60, 1e-3, 0.2), "0.0": entry(0.40, 1e-2, 0.5)}}}
    g = forensic_signature(result, 0.05)["groups"]["gamma"]
    assert g["safe_l2"] == 1e-4 and g["safe_parameter_change"] == 0.05
    assert g["fails_at"] == {"lambda": 0.01, "metric": 0.60, "l2": 1e-3}
    assert g["strongest"]["lambda"] == 0.0 and g["strongest"]["metric"] == 0.40
    assert forensic_signature(result, 0.5)["groups"]["gamma"]["fails_at"] is None
    with pytest.raises(RawdriftError, match="tolerance"):
        forensic_signature(result, -0.1)


def test_describe_change_speaks_in_the_groups_terms():
    assert describe_change("black_level", [0.06] * 4, [0.08] * 4).startswith("black level up by 0.02")
    assert describe_change("gamma", [2.2], [1.9]).startswith("gamma down by 0.3")
    assert "B gain x2" in describe_change("white_balance", [2.0, 1.0, 1.5], [2.0, 1.0, 3.0])
    k = np.full((5, 5), 0.04)
    assert "more smoothing" in describe_change("denoising", k, k - np.eye(5)[2:3].T @ np.eye(5)[2:3] * 0.1)


def test_searches_stepped_together_equal_searches_run_alone():
    camera, raw, labels, model, cfg, folds = toy_case()
    settings = [SearchSettings(lam=lam, group=g, epochs=3, lr=0.02, batch_size=8)
                for g, lam in (("all", 1.0), ("black_level", 0.0), ("gamma", 10.0))]
    together = adversarial_searches(model, cfg, camera, raw, labels, settings, [1, 2, 3])
    for s, seed, isp in zip(settings, [1, 2, 3], together):
        alone = adversarial_search(model, cfg, camera, raw, labels, s, seed).to_dict()
        for g, value in isp.to_dict().items():
            np.testing.assert_allclose(value, alone[g], rtol=1e-5, atol=1e-6, err_msg=f"{s.group} {g}")
    with pytest.raises(RawdriftError, match="share epochs"):
        adversarial_searches(model, cfg, camera, raw, labels, [settings[0], SearchSettings(lam=1.0, epochs=4)], [1, 2])


def test_compiled_searches_agree_with_eager_ones():
    """``compile_mode``: the frozen model's pass and the ISP through torch.compile. At equal
    parameters compiled gradients equal eager ones to about 1e-4 (tests/isp), but Adam's
    normalised steps amplify rounding where a kernel tap's gradient is near zero, so searches
    that differ only in rounding end apart in their flat directions: here eager searches with
    another intra-op thread count (another reduction order at every step) or on tiles changed
    by one float32 ulp end up to a quarter of a tap's movement apart (compiled ones, at one
    thread count or another, up to a third), while what forensics reports of them, the views'
    distance from the initial ISP's and the task loss, differ by about 1 %. So: every searched
    group moves, the compiled search moves each the same way (apart at most half its movement:
    a search the wrong way or none is at least its movement apart), groups not searched stay
    exactly where they were, and the compiled searches' distance and loss lie within 5 % of the
    eager ones."""
    camera, raw, labels, model, cfg, folds = toy_case()
    settings = [SearchSettings(lam=lam, group=g, epochs=3, lr=0.02, batch_size=8)
                for g, lam in (("all", 1.0), ("gamma", 10.0))]
    initial_isp = ParametrizedISP(camera)
    with torch.no_grad():
        initial_views = initial_isp(raw)

    def search(tiles, mode="none"):
        out = []
        for isp in adversarial_searches(model, cfg, camera, tiles, labels, settings, [1, 2], compile_mode=mode):
            with torch.no_grad():
                views = isp(raw)
                reported = (float(l2_distance(views, initial_views)), float(loss_fn(cfg, model(views), labels)))
            out.append((isp.to_dict(), reported))
        return out
    eager, comp = search(raw), search(raw, "default")
    initial = initial_isp.to_dict()
    for s, (a, outcome_a), (b, outcome_b) in zip(settings, eager, comp):
        for g in PARAMETER_GROUPS:
            moved, apart = (np.abs(np.subtract(x[g], y[g])).max() for x, y in ((a, initial), (b, a)))
            if s.group in ("all", g):
                assert moved > 1e-2 and apart <= 0.5 * moved, (s.group, g, moved, apart)
            else:
                assert moved == apart == 0, (s.group, g, moved, apart)
        np.testing.assert_allclose(outcome_b, outcome_a, rtol=0.05, err_msg=f"{s.group}: (l2, loss)")
    with pytest.raises(RawdriftError, match="compile_mode: must be one of"):
        adversarial_searches(model, cfg, camera, raw, labels, settings, [1, 2], compile_mode="max")
