"""``make gpu-check`` (:mod:`rawdrift.gpucheck`) on the CPU: its orchestration with the steps
replaced, what each step runs, the ``paper`` step at a tiny size, and the one-line failure
without a GPU. The CUDA tests it runs are tests/test_cuda.py and the ``device`` fixture's
CUDA cases (marker ``cuda``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rawdrift.params import DATASETS
from rawdrift.profiles import resolve

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()

@pytest.mark.skipif(CUDA, reason="a CUDA device is present: make gpu-check would run for real")
def test_gpu_check_without_cuda_fails_with_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "rawdrift.gpucheck", "--out", str(tmp_path / "bench")], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip() == "make gpu-check: no CUDA device (torch.cuda.is_available() is false)"
    assert not (tmp_path / "bench").exists()
    if shutil.which("make"):
        r = subprocess.run(["make", "-s", "gpu-check", f"PYTHON={sys.executable}", f"BIN={tmp_path}/no-venv"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode != 0
        assert "make gpu-check: no CUDA device (torch.cuda.is_available() is false)" in r.stderr.splitlines()


def test_gpu_check_reports_every_step_and_fails_on_any_failure(tmp_path, monkeypatch):
    """The orchestration, with the steps replaced: report.json, exit status, the budget."""
    from rawdrift import gpucheck
    monkeypatch.setattr(gpucheck, "cuda_available", lambda: True)
    calls = []

    def fake(rc):
        def step(out, left):
            calls.append(left)
            return {"step": "x", "rc": rc, "seconds": 0.0, "log": str(out / "x.log")}
        return step
    seen_by_bench = []

    def bench(out, left):                      # what a run killed during the bench would leave
        seen_by_bench.append(json.loads((out / "report.json").read_text()))
        return fake(0)(out, left)
    monkeypatch.setattr(gpucheck, "RUNNERS", {"tests": fake(0), "repro": fake(0), "warm": fake(0), "bench": bench})
    assert gpucheck.main(["--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a/gpu-check/report.json").read_text())
    assert report["passed"] and len(report["steps"]) == 4 and report["budget_s"] == 600
    assert report["finished"] and report["pending"] == []
    partial = seen_by_bench[0]
    assert not partial["passed"] and not partial["finished"] and partial["pending"] == ["bench"]
    assert len(partial["steps"]) == 3 and partial["environment"] == report["environment"]
    assert {"python", "torch", "numpy"} <= set(report["environment"])
    monkeypatch.setitem(gpucheck.RUNNERS, "repro", fake(1))
    assert gpucheck.main(["--out", str(tmp_path / "b"), "--steps", "tests,repro"]) == 1
    assert [s["rc"] for s in json.loads((tmp_path / "b/gpu-check/report.json").read_text())["steps"]] == [0, 1]
    calls.clear()
    assert gpucheck.main(["--out", str(tmp_path / "c"), "--budget", "0"]) == 1      # out of time: nothing starts
    assert not calls
    assert gpucheck.main(["--out", str(tmp_path / "d"), "--steps", "tests,lint"]) == 2


def test_gpu_check_tests_step_keeps_each_outcome_through_a_crash(tmp_path, monkeypatch):
    """The tests step's progress log (tests/conftest.py's hook) holds every ended test's outcome
    and seconds and a failure's report, though the run then dies of a segmentation fault."""
    from rawdrift import gpucheck
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_crash.py").write_text(
        "import ctypes\n\nimport pytest\n\npytestmark = pytest.mark.cuda\n\n"
        "def test_a():\n    assert 1 + 1 == 2\n\n"
        "def test_b():\n    assert sum([0.1] * 3) == 0.3, 'rounding'\n\n"
        "def test_c():\n    ctypes.string_at(0)\n")
    monkeypatch.setattr(gpucheck, "TESTS", ("-p", "conftest", str(suite / "test_crash.py")))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    out.mkdir()
    r = gpucheck.step_tests(out, 120)
    assert r["rc"] not in (0, 1, 124)                                         # died, not failed
    lines = (out / "tests-progress.log").read_text().splitlines()
    assert [ln.split()[1] for ln in lines if "::test_" in ln] == ["passed", "failed"]
    assert all(float(ln.split()[2]) >= 0 for ln in lines if "::test_" in ln)
    assert any("AssertionError: rounding" in ln for ln in lines)
    assert not (out / "pytest.xml").exists()                                  # what the log stands in for


def test_gpu_check_tests_step_runs_every_cuda_test_and_nothing_else(tmp_path, monkeypatch):
    """The tests step's files are exactly those with tests marked ``cuda``, it selects by that
    marker, and the ``device`` fixture's CUDA case carries it where its CPU case does not."""
    from rawdrift import gpucheck
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "-m", gpucheck.TEST_MARKER, "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    selected = [ln for ln in r.stdout.splitlines() if "::" in ln]
    assert {ln.split("::")[0] for ln in selected} == set(gpucheck.TESTS)
    assert "tests/isp/test_differentiable.py::test_every_group_gets_a_finite_nonzero_gradient[microscopy-cuda]" in selected
    assert not any(ln.startswith("tests/isp/") and "cuda" not in ln for ln in selected)
    assert not any(ln.startswith("tests/test_gpucheck.py") for ln in selected)
    seen = []

    def fake_run(name, args, log, timeout, **kw):
        seen.append(args)
        return {"step": name, "rc": 0, "seconds": 0.0, "log": str(log)}
    monkeypatch.setattr(gpucheck, "_run", fake_run)
    gpucheck.step_tests(tmp_path, 30)
    assert seen[0][seen[0].index("-m", 3) + 1] == "cuda" and seen[0][-len(gpucheck.TESTS):] == list(gpucheck.TESTS)


def test_gpu_check_side_steps_run_at_lower_cpu_priority(tmp_path, monkeypatch):
    """repro and warm run under ``nice``, the tests at the caller's priority: ``_run`` with
    ``nice`` starts the command (and what it starts) that much lower."""
    from rawdrift import gpucheck
    own = os.nice(0)
    r = gpucheck._run("x", ["sh", "-c", "nice"], tmp_path / "x.log", 30, nice=gpucheck.SIDE_NICENESS)
    assert r["rc"] == 0
    assert int((tmp_path / "x.log").read_text().split()[-1]) == min(19, own + gpucheck.SIDE_NICENESS)
    seen = {}

    def fake_run(name, args, log, timeout, **kw):
        seen[name] = kw.get("nice", 0)
        log.write_text("")
        return {"step": name, "rc": 0, "seconds": 0.0, "log": str(log)}
    monkeypatch.setattr(gpucheck, "_run", fake_run)
    monkeypatch.setattr("rawdrift.demo.create", lambda ws, **kw: ws.mkdir(parents=True))
    gpucheck.step_tests(tmp_path, 30)
    gpucheck.step_warm(tmp_path, 30)
    gpucheck.step_repro(tmp_path, 30)
    assert seen == {"tests": 0, "warm": gpucheck.SIDE_NICENESS, "repro": gpucheck.SIDE_NICENESS}


def test_gpu_check_paper_step_times_one_train_stage_per_dataset(tmp_path):
    """The ``paper`` step on the CPU at a tiny size (overrides over profiles/paper.yaml): fetch
    and render, then the train stage alone, timed, next to the projection of a ``cuda.json``."""
    from rawdrift import gpucheck
    bench = tmp_path / "bench"
    out = bench / "gpu-check"
    out.mkdir(parents=True)
    (bench / "cuda.json").write_text(json.dumps({
        "protocol": {"views": 12, "datasets": {"microscopy": {"epochs": 100}}},
        "projection": {"datasets": {"microscopy": {"train": 1200.0, "train_concurrent": 600.0}},
                       "deterministic": {"datasets": {"microscopy": {"train": 2400.0, "train_concurrent": 1200.0}}}}}))
    tiny = {"device": "cpu", "views": ["bi_s_ga", "ma_s_ga"],
            "data": {"folds": 2, "microscopy": {"count": 18, "tile": 32}},
            "train": {"microscopy": {"batch_size": 6}}}
    r = gpucheck.step_paper(out, 600, datasets=("microscopy",), overrides=tiny, epochs=1)
    assert r["rc"] == 0, Path(r["log"]).read_text()[-2000:]
    report = json.loads((out / "paper.json").read_text())
    m = report["microscopy"]
    assert m["render_s"] > 0 and m["train_s"] > 0 and m["epochs"] == m["projected_epochs"] == 1
    assert report["deterministic"] is resolve("paper", ROOT)["deterministic"] is True
    assert m["projected_deterministic"]                        # the stage runs deterministic: true: its projection
    assert m["projected_s"] == pytest.approx(2400.0 / 12 / 100)                   # one view's stage, 1 epoch of 100
    assert m["projected_concurrent_s"] == pytest.approx(1200.0 / 12 / 100)
    assert m["projected_compile"] == "none" and report["compile"] == resolve("paper", ROOT)["compile"]
    assert m["projected_from"] == str(bench / "cuda.json") and m["projected_device"] is None
    fast = gpucheck._projected_train_stage(bench / "cuda.json", "microscopy")
    assert fast["projected_s"] == pytest.approx(100.0) and not fast["projected_deterministic"]
    ws = Path(r["workspace"])
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert params["train"]["microscopy"]["lr"] == 0.0001 and params["data"]["microscopy"]["tile"] == 32
    assert params["train"]["microscopy"]["epochs"] == 1 and params["train"]["drone"]["epochs"] == 100
    assert (ws / "metrics/train/microscopy/bi_s_ga.json").is_file()
    assert not (ws / "metrics/train/microscopy/ma_s_ga.json").exists()       # one train stage, not the matrix
    assert "Running stage 'train@microscopy-bi_s_ga'" in Path(r["log"]).read_text()
    shutil.rmtree(ws.parent)


def test_gpu_check_paper_flags_reach_the_paper_step_or_are_refused(tmp_path, monkeypatch, capsys):
    from rawdrift import gpucheck
    monkeypatch.setattr(gpucheck, "cuda_available", lambda: True)
    monkeypatch.setattr(gpucheck, "missing_packages", lambda: [])
    seen = []

    def paper(out, left, **kw):
        seen.append(kw)
        return {"step": "paper", "rc": 0, "seconds": 0.0, "log": None}
    monkeypatch.setitem(gpucheck.RUNNERS, "paper", paper)
    assert gpucheck.main(["--out", str(tmp_path / "a"), "--steps", "paper", "--paper-datasets", "drone",
                          "--paper-epochs", "10"]) == 0
    assert gpucheck.main(["--out", str(tmp_path / "b"), "--steps", "paper", "--paper-datasets", "drone,drone"]) == 0
    assert gpucheck.main(["--out", str(tmp_path / "b"), "--steps", "paper"]) == 0
    assert gpucheck.main(["--out", str(tmp_path / "b"), "--steps", "paper", "--paper-set", "deterministic=false",
                          "--paper-set", "train.drone.lr=1e-4"]) == 0
    assert seen == [{"datasets": ("drone",), "epochs": 10, "overrides": {}},
                    {"datasets": ("drone",), "epochs": None, "overrides": {}},
                    {"datasets": DATASETS, "epochs": None, "overrides": {}},
                    {"datasets": DATASETS, "epochs": None,
                     "overrides": {"deterministic": False, "train.drone.lr": 1e-4}}]
    assert isinstance(seen[-1]["overrides"]["train.drone.lr"], float)          # YAML 1.2, as dvc exp run -S
    capsys.readouterr()
    for flags, line in ((["--paper-datasets", "drone,sky"], "make gpu-check: --paper-datasets: 'drone,sky': of "
                         "microscopy, drone"),
                        (["--paper-epochs", "0"], "make gpu-check: --paper-epochs: 0: at least 1"),
                        (["--paper-set", "deterministic"], "make gpu-check: --paper-set: 'deterministic': expected "
                         "KEY=VALUE"),
                        (["--paper-set", "train.drone.lrate=1"], "make gpu-check: --paper-set: train.drone.lrate: "
                         "not a param of params.yaml"),
                        (["--paper-set", "train.drone.epochs=0"], "make gpu-check: --paper-set over "
                         "profiles/paper.yaml: train.drone.epochs: must be an integer >= 1, got 0"),
                        (["--paper-set", "views=[bi_s_ga,"], "make gpu-check: --paper-set: views: '[bi_s_ga,': "
                         "malformed YAML value")):
        assert gpucheck.main(["--out", str(tmp_path / "c"), "--steps", "paper", *flags]) == 2
        assert capsys.readouterr().err.strip() == line
    for flags in (["--paper-epochs", "5"], ["--paper-set", "deterministic=false"]):   # no paper step to change
        assert gpucheck.main(["--out", str(tmp_path / "c"), *flags]) == 2
        assert capsys.readouterr().err.strip() == ("make gpu-check: --paper-datasets, --paper-epochs and "
                                                   "--paper-set: only with the paper step (--steps paper)")
    assert not (tmp_path / "c").exists() and len(seen) == 4


def test_gpu_check_paper_step_sets_its_stages_against_this_runs_bench_or_the_committed_one(tmp_path, monkeypatch):
    from rawdrift import gpucheck
    bench = tmp_path / "bench"
    (bench / "gpu-check").mkdir(parents=True)
    assert gpucheck.projection_file(bench / "gpu-check") == ROOT / "bench" / "cuda.json"
    (bench / "cuda.json").write_text(json.dumps({
        "device": "NVIDIA X", "protocol": {"views": 12, "datasets": {"drone": {"epochs": 100}}},
        "projection": {"datasets": {"drone": {"train": 2400.0, "train_concurrent": 3600.0}}}}))
    assert gpucheck.projection_file(bench / "gpu-check") == bench / "cuda.json"
    m = gpucheck._projected_train_stage(bench / "cuda.json", "drone", epochs=10, deterministic=True)
    assert m["projected_s"] == pytest.approx(2400.0 / 12 * 10 / 100)              # one view, 10 epochs of 100
    assert m["projected_concurrent_s"] == pytest.approx(3600.0 / 12 * 10 / 100)
    assert not m["projected_deterministic"] and m["projected_device"] == "NVIDIA X"   # no deterministic projection
    monkeypatch.setattr(gpucheck, "ROOT", tmp_path)
    assert gpucheck._projected_train_stage(bench / "cuda.json", "drone")["projected_from"] == "bench/cuda.json"


def test_gpu_check_runs_the_untimed_steps_together_and_the_bench_alone(tmp_path, monkeypatch):
    """tests, repro and warm overlap (each waits on a barrier only the others can open); bench
    starts after all ended; with --serial nothing overlaps."""
    import threading
    import time
    from rawdrift import gpucheck
    monkeypatch.setattr(gpucheck, "cuda_available", lambda: True)
    spans, barrier = {}, threading.Barrier(3, timeout=10)

    def step(name, wait):
        def run(out, left):
            t0 = time.monotonic()
            if wait:
                barrier.wait()
            time.sleep(0.05)
            spans[name] = (t0, time.monotonic())
            return {"step": name, "rc": 0, "seconds": 0.0, "log": None}
        return run
    monkeypatch.setattr(gpucheck, "RUNNERS", {"tests": step("tests", True), "repro": step("repro", True),
                                             "warm": step("warm", True), "bench": step("bench", False)})
    assert gpucheck.main(["--out", str(tmp_path / "a"), "--steps", "bench,tests,warm,repro"]) == 0
    assert spans["bench"][0] >= max(spans["tests"][1], spans["repro"][1], spans["warm"][1])
    report = json.loads((tmp_path / "a/gpu-check/report.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["bench", "tests", "warm", "repro"]      # as asked
    monkeypatch.setattr(gpucheck, "RUNNERS", {n: step(n, False) for n in ("tests", "repro", "warm", "bench")})
    spans.clear()
    assert gpucheck.main(["--out", str(tmp_path / "b"), "--serial"]) == 0
    assert spans["tests"][1] <= spans["repro"][0] <= spans["repro"][1] <= spans["warm"][0]
    assert spans["warm"][1] <= spans["bench"][0]


def test_gpu_check_warm_step_compiles_each_dataset_in_its_own_process(tmp_path, monkeypatch):
    """``warm``: one ``rawdrift.bench --warm --datasets <d>`` per dataset, at the same time, one
    log; the step fails if any process did; every step shares the run's inductor cache."""
    import threading
    from rawdrift import gpucheck
    from rawdrift.bench import PAPER_PROTOCOL
    barrier, seen = threading.Barrier(len(PAPER_PROTOCOL["datasets"]), timeout=10), []

    def fake_run(name, args, log, timeout, **kw):
        barrier.wait()                               # returns only once every dataset's process started
        seen.append(args[1:])
        log.write_text(f"{args[-1]} compiled\n")
        return {"step": name, "rc": 3 if args[-1] == "drone" else 0, "seconds": 1.0, "log": str(log)}
    monkeypatch.setattr(gpucheck, "_run", fake_run)
    r = gpucheck.step_warm(tmp_path, 60)
    assert sorted(seen) == sorted(["-m", "rawdrift.bench", "--warm", "--datasets", d] for d in PAPER_PROTOCOL["datasets"])
    assert r["rc"] == 3 and r["step"] == "warm"
    assert sorted(Path(r["log"]).read_text().splitlines()) == sorted(f"{d} compiled" for d in PAPER_PROTOCOL["datasets"])
    assert [p.name for p in tmp_path.iterdir()] == ["warm.log"]
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    cache = gpucheck._env()["TORCHINDUCTOR_CACHE_DIR"]
    assert Path(cache).is_dir() and gpucheck._env()["TORCHINDUCTOR_CACHE_DIR"] == cache
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert gpucheck._env()["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    gpucheck._remove_scratch()
    assert not Path(cache).exists()


def test_gpu_check_names_missing_packages_in_one_line(tmp_path, monkeypatch, capsys):
    from rawdrift import gpucheck
    assert gpucheck.missing_packages() == []                  # the test venv has them all
    assert gpucheck.missing_packages(("yaml", "no_such_module_here")) == ["no_such_module_here"]
    monkeypatch.setattr(gpucheck, "cuda_available", lambda: True)
    monkeypatch.setattr(gpucheck, "missing_packages", lambda: ["no_such_module_here"])
    assert gpucheck.main(["--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("make gpu-check: no_such_module_here not importable by ")
    assert not (tmp_path / "b").exists()
