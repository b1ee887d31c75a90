"""`make bench`: every measurement runs on a CPU (rates only checked to be positive: no
timing assertions), and the paper projection counts the protocol's images exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rawdrift.bench import (PAPER_PROTOCOL, PAPER_TILE, PAPER_TILES, QUICK, bench_concurrent, bench_corruptions,
                            bench_determinism, bench_inference, bench_joint_step, bench_saturation, bench_search,
                            bench_step_modes, bench_task, compiled_rates, deterministic_rates, floor_rates, main,
                            project_paper, search_shape, training_flops, warm_compiles)
from rawdrift.corruptions import CORRUPTIONS
from rawdrift.errors import ParamError
from rawdrift.profiles import load_profile
from rawdrift.training import BN_TILES

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def test_bench_measures_both_paths_on_cpu():
    r = bench_task("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, n_data=16, warmup=1, windows=1,
                   steps=1)
    assert r["ceiling_images_per_s"] > 0 and r["pipeline_images_per_s"] > 0 and r["assembled_images_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["pipeline_images_per_s"] / r["ceiling_images_per_s"])
    assert r["compile"] == "none"
    only = bench_task("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, n_data=16, warmup=1, windows=1,
                      steps=1, modes=("ceiling",))
    assert "pipeline_images_per_s" not in only and "ratio" not in only


def test_protocol_carries_the_profiles_execution_settings():
    """The projection measures the training steps in the profile's ``compile`` mode and the
    forensics searches at its ``forensics.max_batch``: both read from the profile over params.yaml."""
    import yaml
    paper = yaml.safe_load((ROOT / "profiles/paper.yaml").read_text())
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert PAPER_PROTOCOL["forensics"]["max_batch"] == paper["forensics"]["max_batch"]
    assert PAPER_PROTOCOL["compile"] == paper.get("compile", base["compile"])
    assert PAPER_PROTOCOL["deterministic"] is paper.get("deterministic", base["deterministic"])


def test_training_flops_grow_with_the_pixel_count():
    """Convolutions cost in proportion to the pixels: 4x the pixels, 4x the FLOPs (within 2 %:
    the classifier head does not grow); U-Net++ costs far more per image than ResNet18."""
    task = PAPER_PROTOCOL["datasets"]
    small, large = (training_flops("microscopy", task["microscopy"]["task"], s) for s in (32, 64))
    assert large / small == pytest.approx(4.0, rel=0.02)
    assert training_flops("drone", task["drone"]["task"], 64) > 5 * large


def test_deterministic_rates_slow_the_training_loop_by_its_measured_cost():
    rates = {"microscopy": {"size": 16, "train": 10.0, "train_concurrent": 20.0, "inference": 3.0, "joint": 4.0,
                            "search": 5.0},
             "drone": {"size": 16, "train": 1.0, "inference": 3.0, "joint": 4.0}}
    det = deterministic_rates(rates, {"microscopy": {"deterministic_cost": 0.25}})
    assert det["microscopy"] == dict(rates["microscopy"], train=7.5, train_concurrent=15.0)
    assert det["drone"] == rates["drone"] and "train_concurrent" not in det["drone"]
    assert rates["microscopy"]["train"] == 10.0                               # the measured rates untouched
    slow, fast = project_paper(det, 1.0, 1.0), project_paper(rates, 1.0, 1.0)
    for stage in ("train", "optimize", "train_concurrent", "optimize_concurrent"):     # slower, never faster
        assert slow["datasets"]["microscopy"][stage] > fast["datasets"]["microscopy"][stage]
    assert slow["datasets"]["microscopy"]["forensics"] == fast["datasets"]["microscopy"]["forensics"]
    assert slow["datasets"]["drone"] == fast["datasets"]["drone"]
    assert slow["total_concurrent_s"] > fast["total_concurrent_s"]


def test_saturation_and_floor_rates():
    setups = {"microscopy": ({"classes": 3}, 2)}
    sat = bench_saturation(setups, 16, CPU, amp=False, factors=(1, 2))
    assert sat["microscopy"]["batches"] == [2, 4] and len(sat["microscopy"]["images_per_s"]) == 2
    assert sat["microscopy"]["best_images_per_s"] == max(sat["microscopy"]["images_per_s"])
    rates = {"microscopy": {"size": 16, "train": 1.0, "train_concurrent": 2.0, "inference": 3.0, "joint": 4.0}}
    floor = floor_rates(rates, sat)["microscopy"]
    assert floor["train"] == floor["train_concurrent"] == sat["microscopy"]["best_images_per_s"]
    assert (floor["inference"], floor["joint"]) == (3.0, 4.0) and rates["microscopy"]["train"] == 1.0
    fast = sat["microscopy"]["best_images_per_s"] * 2          # a compiled step beyond the eager ceiling stays
    floor = floor_rates({"microscopy": dict(rates["microscopy"], train=fast)}, sat)["microscopy"]
    assert floor["train"] == fast and floor["train_concurrent"] == sat["microscopy"]["best_images_per_s"]


def test_step_modes_bench_compares_against_eager_and_records_failures():
    """Each mode's rate against eager (whose speedup is 1 by definition); a mode that cannot run
    (here U-Net++ of depth 5 on 16 px tiles: smp asks for sides divisible by 32) is recorded
    with its error."""
    r = bench_step_modes("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, amp=False,
                         modes=("eager", "fused_adam"), warmup=1, windows=1, steps=1)
    assert list(r) == ["eager", "fused_adam"]
    assert r["eager"]["speedup"] == 1.0 and r["eager"]["first_steps_s"] > 0
    assert r["fused_adam"]["speedup"] == pytest.approx(r["fused_adam"]["images_per_s"] / r["eager"]["images_per_s"])
    bad = bench_step_modes("drone", PAPER_PROTOCOL["datasets"]["drone"]["task"], size=16, batch=2, device=CPU,
                           amp=False, modes=("eager",), warmup=1, windows=1, steps=1)
    assert set(bad["eager"]) == {"error"} and "divisible by 32" in bad["eager"]["error"]


def test_determinism_bench_measures_both_policies_on_cuda_only(device):
    setups = {"microscopy": ({"classes": 3}, 4)}
    out = bench_determinism(setups, 16, device, amp=False, compile_mode="default")
    if device.type == "cpu":
        assert out == {}                              # the flag changes nothing on a CPU
        return
    d = out["microscopy"]
    assert d["compile"] == "default" and d["fast_images_per_s"] > 0 and d["deterministic_images_per_s"] > 0
    assert d["deterministic_cost"] == pytest.approx(1 - d["deterministic_images_per_s"] / d["fast_images_per_s"])
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


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


def test_joint_step_bench_runs_the_task_model_in_the_compile_mode_asked(monkeypatch):
    import rawdrift.bench as B
    seen = []
    monkeypatch.setattr(B, "compiled", lambda net, mode: seen.append((type(net).__name__, mode)) or net)
    assert bench_joint_step("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, warmup=1, windows=1,
                            steps=1, compile_mode="reduce-overhead") > 0
    assert seen == [("TaskModel", "reduce-overhead")]
    monkeypatch.undo()
    with pytest.raises(ParamError, match="compile_mode"):
        bench_joint_step("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, compile_mode="fast")


def test_search_bench_runs_forensics_searches_in_the_compile_mode_asked(monkeypatch):
    """bench_search times rawdrift.forensics.adversarial_searches itself: the searches stepped
    together, each of ``batch`` tiles, the task model in the compile mode asked."""
    import rawdrift.forensics as Fo
    seen = []
    real = Fo.adversarial_searches

    def spy(model, cfg, camera, raw, target, settings, seeds, amp, compile_mode):
        seen.append((len(settings), {s.batch_size for s in settings}, raw.shape[0], settings[0].epochs, compile_mode))
        return real(model, cfg, camera, raw, target, settings, seeds, amp, "none")
    monkeypatch.setattr(Fo, "adversarial_searches", spy)
    assert bench_search("microscopy", {"classes": 3}, size=16, batch=4, searches=3, device=CPU, windows=1,
                        steps=2, epochs=2, compile_mode="reduce-overhead") > 0
    # the compiling call (one epoch), one timed window (two epochs)
    assert seen == [(3, {4}, 8, 1, "reduce-overhead"), (3, {4}, 8, 2, "reduce-overhead")]


def test_warm_runs_every_compiled_measurement_at_the_bench_shapes(monkeypatch):
    """``--warm`` compiles what the bench compiles: the same functions with the same models,
    sizes, batches, searches and compile mode, one step each; nothing for ``compile: none``."""
    import rawdrift.bench as B
    calls = []

    def spy(name, steps):
        def f(*args, **kw):
            shapes = {k: v for k, v in kw.items() if k not in steps}
            calls.append((name, args, tuple(sorted(shapes.items())), {k: kw[k] for k in steps if k in kw}))
            return {"pipeline_images_per_s": 1.0} if name == "task" else 1.0
        return f
    counts = ("warmup", "windows", "steps", "epochs")
    for fn in ("task", "joint_step", "search"):
        monkeypatch.setattr(B, f"bench_{fn}", spy(fn, counts))
    setups = {"microscopy": ({"classes": 3}, 4), "drone": ({"classes": 2}, 2)}
    for name, (values, batch) in setups.items():
        compiled_rates(name, values, 16, batch, CPU, False, "reduce-overhead")
    measured, calls[:] = list(calls), []
    warm_compiles(setups, 16, CPU, False, "reduce-overhead")
    assert [c[:3] for c in calls] == [c[:3] for c in measured] and len(calls) == 6
    assert all(c[3] == {} for c in measured)
    assert all(c[3] == (QUICK if c[0] != "search" else {"windows": 1, "steps": 1, "epochs": 1}) for c in calls)
    tiles, searches = search_shape(CPU)
    assert [c[1][3:5] for c in calls if c[0] == "search"] == [(tiles, searches)] * 2
    assert tiles * searches <= 64 and search_shape(torch.device("cuda"))[1] * tiles == PAPER_PROTOCOL["forensics"]["max_batch"]
    calls.clear()
    warm_compiles(setups, 16, CPU, False, "none")
    assert calls == []


def test_eager_search_rate_measures_the_search_eager_at_the_bench_shapes(monkeypatch):
    """The eager search beside the compiled one: the same shapes (:func:`search_shape`), no
    compile; a real measurement at a tiny size is a positive rate."""
    import rawdrift.bench as B
    seen = []
    real = B.bench_search
    monkeypatch.setattr(B, "bench_search", lambda *a, **kw: seen.append((a, kw)) or real(*a, **kw))
    rate = B.eager_search_rate("microscopy", {"classes": 3}, 32, CPU, False, windows=1, steps=1, epochs=1)
    assert rate > 0
    (args, kw), = seen
    assert args[3:5] == search_shape(CPU) and kw["compile_mode"] == "none" and kw["amp"] is False


@pytest.mark.slow      # two processes compiling ResNet18's graphs on the CPU (about 2 minutes on 2 cores)
def test_warm_fills_the_compile_cache_a_later_bench_loads(tmp_path):
    """``python -m rawdrift.bench --warm`` in one process, then the bench's compiled
    measurements in another with the same ``TORCHINDUCTOR_CACHE_DIR``: every graph the second
    compiles comes from the cache (no FX-graph or AOTAutograd cache miss)."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    warm = subprocess.run([sys.executable, "-m", "rawdrift.bench", "--warm", "--datasets", "microscopy", "--device", "cpu",
                           "--size", "16", "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert "compiled (" in warm.stdout and not (tmp_path / "out").exists()
    measure = ("import json, torch\n"
               "from torch._dynamo.utils import counters\n"
               "from rawdrift.bench import PAPER_PROTOCOL, compiled_rates\n"
               "from rawdrift.runtime import resolve_precision\n"
               "d, cpu = PAPER_PROTOCOL['datasets']['microscopy'], torch.device('cpu')\n"
               "compiled_rates('microscopy', d['task'], 16, min(d['batch'], 32), cpu, resolve_precision('auto', cpu), "
               "PAPER_PROTOCOL['compile'], quick=True)\n"
               "print(json.dumps({**counters['inductor'], **counters['aot_autograd']}))\n")
    later = subprocess.run([sys.executable, "-c", measure], cwd=ROOT, env=env, capture_output=True, text=True)
    assert later.returncode == 0, later.stderr[-2000:]
    seen = json.loads(later.stdout.strip().splitlines()[-1])
    assert PAPER_PROTOCOL["compile"] != "none"
    assert seen.get("fxgraph_cache_hit", 0) >= 3 and seen.get("autograd_cache_hit", 0) >= 3, seen
    assert seen.get("fxgraph_cache_miss", 0) == 0 and seen.get("autograd_cache_miss", 0) == 0, seen


def test_concurrent_bench_counts_every_process():
    r = bench_concurrent("microscopy", {"classes": 3}, size=16, batch=4, device=CPU, processes=2, warmup=1,
                         steps=2, n_data=16, threads=1)
    assert r["processes"] == 2 and r["images_per_s"] > 0 and r["compile"] == "none"


def test_concurrent_bench_reports_a_failing_worker():
    with pytest.raises(RuntimeError, match="a worker failed"):
        bench_concurrent("microscopy", {"arch": "resnet18", "encoder_depth": -1}, size=16, batch=4, device=CPU,
                         processes=2, warmup=1, steps=1, n_data=16, threads=1)


def _unit_rates(size=PAPER_TILE):
    return {d: {"size": size, "train": 1.0, "inference": 1.0, "joint": 1.0} for d in ("microscopy", "drone")}


def test_projection_counts_the_protocol_images():
    p = PAPER_PROTOCOL
    V, F, E = p["views"], p["folds"], p["datasets"]["drone"]["epochs"]
    proj = project_paper(_unit_rates(), render_view_images_per_s=1.0, corruption_s_per_image=1.0)
    n = p["datasets"]["drone"]["tiles"]
    d = proj["datasets"]["drone"]
    assert d["render"] == pytest.approx(n * V)
    assert d["train"] == pytest.approx(V * E * (F - 1) * n + V * E * (n + F * BN_TILES))
    assert d["crosseval"] == pytest.approx(V * V * n)
    assert d["corruptions"] == pytest.approx(V * n * (1 + 30))
    assert d["forensics"] == pytest.approx(8 * 6 * (20 * (F - 1) * n + n))
    assert d["train_concurrent"] == pytest.approx(d["train"])      # no concurrent rate: the lockstep one
    assert p["eval_every_epochs"] == 1                               # the study evaluates every epoch
    sparse = project_paper(_unit_rates(), 1.0, 1.0, protocol=dict(p, eval_every_epochs=E))["datasets"]["drone"]
    assert sparse["train"] == pytest.approx(V * E * (F - 1) * n + V * 1 * (n + F * BN_TILES))   # the last only
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
    V, F = PAPER_PROTOCOL["views"], PAPER_PROTOCOL["folds"]
    E, E_opt = PAPER_PROTOCOL["datasets"]["drone"]["epochs"], PAPER_PROTOCOL["datasets"]["drone"]["optimize_epochs"]
    n = PAPER_PROTOCOL["datasets"]["drone"]["tiles"]
    assert saved["drone"] == pytest.approx(0.75 * (V * E * (F - 1) * n + 2 * E_opt * (F - 1) * n * 3))
    assert conc["total_concurrent_s"] == pytest.approx(base["total_s"] - sum(saved.values()))
    # rates measured at half the profile's tile stand for a quarter of the work of a full tile
    half = project_paper(_unit_rates(PAPER_TILE // 2), 1.0, 1.0)
    for d in base["datasets"]:
        assert half["datasets"][d]["crosseval"] == pytest.approx(4 * base["datasets"][d]["crosseval"])
        assert half["datasets"][d]["render"] == pytest.approx(base["datasets"][d]["render"])


def test_projection_protocol_is_the_paper_profile():
    """PAPER_PROTOCOL counts what `make repro-paper` runs: profiles/paper.yaml over params.yaml."""
    profile, params = load_profile("paper"), yaml.safe_load((ROOT / "params.yaml").read_text())
    p = PAPER_PROTOCOL
    assert p["profile"] == "paper" and p["folds"] == profile["data"]["folds"] and p["views"] == 12
    for d, spec in p["datasets"].items():
        assert spec["tiles"] == profile["data"][d]["count"] and spec["tile"] == profile["data"][d]["tile"]
        assert spec["epochs"] == profile["train"][d]["epochs"] == spec["task"]["epochs"]
        assert spec["batch"] == profile["train"][d]["batch_size"]
        assert (spec["optimize_epochs"], spec["eval_every"]) == (profile["optimize"][d]["epochs"],
                                                                 profile["optimize"][d]["eval_every"])
        assert {k: spec["task"][k] for k in profile["train"][d]} == {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in profile["train"][d].items()}
    assert PAPER_TILES == sum(profile["data"][d]["count"] for d in p["datasets"])
    assert p["forensics"]["lambdas"] == len(profile["forensics"]["lambda"])
    assert p["forensics"]["groups"] == len(params["forensics"]["parameters"])
    assert p["forensics"]["epochs"] == params["forensics"]["epochs"]
    assert p["corruptions"] == len(params["corruptions"]["names"]) == len(CORRUPTIONS)
    assert p["severities"] == len(params["corruptions"]["severities"])
    assert p["optimize"] == {"modes": len(params["optimize"]["modes"]),
                             "intensities": len(params["optimize"]["intensities"])}


def test_bench_cli_names_its_flags(tmp_path, capsys):
    """The library names the value; the bench says which flag it came from (not params.yaml)."""
    for argv, line in ((["--device", "gpu"], "error: --device: must be one of auto, cpu, cuda, got 'gpu'"),
                       (["--device", "cpu", "--precision", "fp16"],
                        "error: --precision: must be one of auto, fp32, bf16, got 'fp16'")):
        with pytest.raises(SystemExit) as e:
            main([*argv, "--out", str(tmp_path / "b")])
        assert e.value.code == 2 and capsys.readouterr().err == line + "\n"
    assert not (tmp_path / "b").exists()
