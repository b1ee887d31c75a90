"""`make bench`: every measurement runs on a CPU (rates only checked to be positive: no
timing assertions), and the paper projection counts the protocol's images exactly."""

import re
from pathlib import Path

import pytest
import torch
import yaml

from rawdrift.bench import (PAPER_PROTOCOL, PAPER_TILES, bench_concurrent, bench_corruptions, bench_inference,
                            bench_joint_step, bench_task, project_paper)
from rawdrift.corruptions import CORRUPTIONS
from rawdrift.training import BN_TILES

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def test_bench_measures_both_paths_on_cpu():
    r = bench_task("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, n_data=16, warmup=1, windows=1,
                   steps=1)
    assert r["ceiling_images_per_s"] > 0 and r["pipeline_images_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["pipeline_images_per_s"] / r["ceiling_images_per_s"])
    only = bench_task("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, n_data=16, warmup=1, windows=1,
                      steps=1, modes=("ceiling",))
    assert "pipeline_images_per_s" not in only and "ratio" not in only


def test_corruption_bench_covers_every_corruption_and_severity():
    r = bench_corruptions(CPU, size=16, batch=2, severities=(1, 5), windows=1, steps=1)
    assert len(r["images_per_s"]) == 2 * len(CORRUPTIONS) and min(r["images_per_s"].values()) > 0
    per_image = sum(1 / v for v in r["images_per_s"].values())
    assert r["paper_all_views_s"] == pytest.approx(PAPER_TILES * 12 * per_image)


def test_inference_and_joint_step_benches_run_on_cpu():
    seg = dict(arch="unet", encoder="resnet18", encoder_depth=3, decoder_channels=[16, 8, 4], loss="dice")
    assert bench_inference("drone", seg, size=16, batch=4, device=CPU, n_data=8, windows=1) > 0
    assert bench_joint_step("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, warmup=1, windows=1,
                            steps=1) > 0


def test_concurrent_bench_counts_every_process():
    r = bench_concurrent("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, processes=2, warmup=1,
                         steps=2, n_data=16, threads=1)
    assert r["processes"] == 2 and r["images_per_s"] > 0


def test_concurrent_bench_reports_a_failing_worker():
    with pytest.raises(RuntimeError, match="a worker failed"):
        bench_concurrent("microscopy", {"arch": "resnet18", "encoder_depth": -1}, size=16, batch=4, device=CPU,
                         processes=2, warmup=1, steps=1, n_data=16, threads=1)


def _unit_rates(size=256):
    return {d: {"size": size, "train": 1.0, "inference": 1.0, "joint": 1.0} for d in ("microscopy", "drone")}


def test_projection_counts_the_protocol_images():
    p = PAPER_PROTOCOL
    V, F, E = p["views"], p["folds"], p["epochs"]
    proj = project_paper(_unit_rates(), render_view_images_per_s=1.0, corruption_s_per_image=1.0)
    n = p["datasets"]["drone"]["tiles"]
    d = proj["datasets"]["drone"]
    assert d["render"] == pytest.approx(n * V)
    assert d["train"] == pytest.approx(V * E * (F - 1) * n + V * E * (n + F * BN_TILES))
    assert d["crosseval"] == pytest.approx(V * V * n)
    assert d["corruptions"] == pytest.approx(V * n * (1 + 30))
    assert d["forensics"] == pytest.approx(8 * 6 * (20 * (F - 1) * n + n))
    assert d["train_concurrent"] == pytest.approx(d["train"])      # no concurrent rate: the lockstep one
    assert d["optimize_concurrent"] == pytest.approx(d["optimize"])
    rates = _unit_rates()
    rates["drone"]["search"] = 2.0                                   # forensics' batched search rate
    forensics = project_paper(rates, 1.0, 1.0)["datasets"]["drone"]["forensics"]
    assert forensics == pytest.approx(8 * 6 * (10 * (F - 1) * n + n))
    assert proj["total_s"] == pytest.approx(sum(v for st in proj["datasets"].values() for k, v in st.items()
                                                if not k.endswith("_concurrent")))


def test_projection_scales_with_rates_and_tile_size():
    base = project_paper(_unit_rates(), 1.0, 1.0)
    faster = _unit_rates()
    for r in faster.values():
        r["train_concurrent"] = 4.0
    conc = project_paper(faster, 1.0, 1.0)
    assert conc["total_s"] == pytest.approx(base["total_s"])
    saved = {d: sum(base["datasets"][d][s] - conc["datasets"][d][f"{s}_concurrent"] for s in ("train", "optimize"))
             for d in base["datasets"]}
    # 4x the rate: train and optimize save three quarters of their training-step time
    V, F, E = PAPER_PROTOCOL["views"], PAPER_PROTOCOL["folds"], PAPER_PROTOCOL["epochs"]
    n = PAPER_PROTOCOL["datasets"]["drone"]["tiles"]
    assert saved["drone"] == pytest.approx(0.75 * (V * E * (F - 1) * n + 2 * E * (F - 1) * n * 3))
    assert conc["total_concurrent_s"] == pytest.approx(base["total_s"] - sum(saved.values()))
    # rates measured at 128 px stand for a quarter of the work of a 256-px image
    half = project_paper(_unit_rates(128), 1.0, 1.0)
    for d in base["datasets"]:
        assert half["datasets"][d]["crosseval"] == pytest.approx(4 * base["datasets"][d]["crosseval"])
        assert half["datasets"][d]["render"] == pytest.approx(base["datasets"][d]["render"])


def _paper_sets() -> dict:
    text = (ROOT / "Makefile").read_text()
    block = text[text.index("PAPER_SETS :="):text.index(".PHONY")]
    return {k: v for k, v in re.findall(r"""-S ["']?([\w.]+)=([^'"\s\\]+)""", block)}


def test_projection_protocol_is_the_one_make_repro_paper_runs():
    sets, params = _paper_sets(), yaml.safe_load((ROOT / "params.yaml").read_text())
    p = PAPER_PROTOCOL
    assert int(sets["data.folds"]) == p["folds"]
    for d, spec in p["datasets"].items():
        assert int(sets[f"data.{d}.count"]) == spec["tiles"]
        assert int(sets[f"data.{d}.tile"]) == 256
        assert int(sets[f"train.{d}.epochs"]) == p["epochs"] == int(sets[f"optimize.{d}.epochs"])
        assert int(sets[f"train.{d}.batch_size"]) == spec["batch"]
        assert int(sets[f"optimize.{d}.eval_every"]) == spec["eval_every"]
    assert len(sets["forensics.lambda"].strip('"[]').split(",")) == p["forensics"]["lambdas"]
    assert len(params["forensics"]["parameters"]) == p["forensics"]["groups"]
    assert params["forensics"]["epochs"] == p["forensics"]["epochs"]
    assert len(params["corruptions"]["names"]) == p["corruptions"] == len(CORRUPTIONS)
    assert len(params["corruptions"]["severities"]) == p["severities"]
    assert len(params["optimize"]["modes"]) == p["optimize"]["modes"]
    assert len(params["optimize"]["intensities"]) == p["optimize"]["intensities"]
