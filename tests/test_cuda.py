"""CUDA against the CPU: the ISPs on the device, the stages on tiny data, the backend policy.

Tests that need a GPU are skipped (with the reason) where ``torch.cuda.is_available()`` is
false; ``make gpu-check`` runs this file on a CUDA machine (every test here is marked
``cuda``; its tests step runs ``pytest -m cuda``). The cheap ISP tests take the ``device``
fixture (tests/conftest.py) and run on the CPU as well. The tests of
:func:`rawdrift.runtime.configure_backends` and of the cached ISP constants run on the CPU;
``make gpu-check`` itself is tested in tests/test_gpucheck.py.

What "agree" means:
- render (float64): the stored uint16 views bit-identical, the float64 views within 1e-12
  (cuDNN may sum a convolution in another order than the CPU: last-bit differences);
- the differentiable ISP: float32 within 1e-4 with TF32 off (``configure_backends``), float64
  within 1e-10, gradients to a relative 1e-6 (float64);
- train, crosseval, corruptions, forensics, optimize on tiny data: the CUDA run's fold mean
  within the fold spread of the CPU's (3 pooled standard deviations, at least 0.25: a few
  tiles, few epochs, and CUDA draws its shuffles, augmentation and noise from other random
  streams, so the two runs differ like two seeds). This catches a broken device path (NaN,
  a constant prediction, wrong layout), not small biases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import photo_raw
from rawdrift.camera import CAMERAS
from rawdrift.isp import VIEWS, ParametrizedISP, render_static
from rawdrift.isp.batched import render_batch
from rawdrift.runtime import configure_backends, stage_platform

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
NO_CUDA_REASON = "no CUDA device (torch.cuda.is_available() is false)"
requires_cuda = pytest.mark.skipif(not CUDA, reason=NO_CUDA_REASON)
pytestmark = pytest.mark.cuda


# ---------------------------------------------------------------------------------------------
# the backend policy (runs on the CPU)

def _backend_state() -> dict:
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "benchmark": torch.backends.cudnn.benchmark, "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


@pytest.fixture
def restore_backends(monkeypatch):
    """Put every process-wide flag configure_backends may touch back as it was."""
    before = _backend_state()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.backends.cuda.matmul.allow_tf32 = before["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = before["cudnn_tf32"]
    torch.backends.cudnn.benchmark = before["benchmark"]
    torch.backends.cudnn.deterministic = before["cudnn_deterministic"]
    torch.use_deterministic_algorithms(before["deterministic"], warn_only=before["warn_only"])


@requires_cuda
@pytest.mark.parametrize("deterministic", [False, True])
def test_stage_platform_on_cuda_configures_and_records_the_backends(restore_backends, deterministic):
    p = stage_platform("cuda", "auto", deterministic)
    assert p.device.type == "cuda" and p.amp is True            # every GPU we target computes bf16
    r = p.record()
    assert r["device"] == "cuda" and r["device_name"] == torch.cuda.get_device_name(0) and r["precision"] == "bf16"
    assert r["deterministic"] is deterministic and r["backends"]["cudnn_benchmark"] is (not deterministic)
    assert torch.are_deterministic_algorithms_enabled() is deterministic


@pytest.mark.parametrize("deterministic", [False, True])
def test_configure_backends_changes_nothing_on_cpu(restore_backends, deterministic):
    before = _backend_state()
    assert configure_backends(torch.device("cpu"), deterministic) == {}
    assert _backend_state() == before


def test_configure_backends_sets_the_cuda_flags(restore_backends):
    """The flags are process-wide and can be set without a GPU: checked here on any machine."""
    cuda = torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = True
    fast = configure_backends(cuda, deterministic=False)
    assert fast == {"tf32": False, "cudnn_benchmark": True, "deterministic": False}
    s = _backend_state()
    assert not s["matmul_tf32"] and not s["cudnn_tf32"] and s["benchmark"] and not s["deterministic"]
    assert s["cublas"] is None
    exact = configure_backends(cuda, deterministic=True, warn_only=False)
    s = _backend_state()
    assert not s["matmul_tf32"] and not s["cudnn_tf32"] and not s["benchmark"] and s["cudnn_deterministic"]
    assert s["deterministic"] and not s["warn_only"]
    assert s["cublas"] == ":4096:8" and exact["cublas_workspace_config"] == ":4096:8"
    assert exact["deterministic"] and exact["warn_only"] is False
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"          # the user's own setting is kept
    assert configure_backends(cuda, deterministic=True)["cublas_workspace_config"] == ":16:8"
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    configure_backends(cuda, deterministic=False)             # and back: deterministic algorithms off
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark


def test_configure_backends_leaves_cpu_results_unchanged(restore_backends):
    """The CUDA policy set in a process changes no CPU number (the ISP forward, bit for bit)."""
    cam = CAMERAS["microscopy"]
    raw = torch.from_numpy(photo_raw(cam, "astronaut", crop=(slice(80, 112), slice(140, 172))))[None].float()
    before = ParametrizedISP(cam)(raw).detach()
    configure_backends(torch.device("cuda"), deterministic=True)
    assert torch.equal(ParametrizedISP(cam)(raw).detach(), before)


# ---------------------------------------------------------------------------------------------
# ISP constants cached on the device

def test_cached_constants_give_the_same_bits_and_survive_inference_mode():
    from rawdrift.isp import differentiable as D
    cam = CAMERAS["drone"]
    raw = torch.from_numpy(photo_raw(cam, "coffee", crop=(slice(60, 92), slice(100, 132))))[None]
    D._CONSTANTS.clear()
    with torch.inference_mode():                  # constants first made under inference mode ...
        cold = ParametrizedISP(cam, dtype=torch.float64)(raw)
    assert D._CONSTANTS
    isp = ParametrizedISP(cam, dtype=torch.float64)
    warm = isp(raw)                                # ... are saved for backward without an error
    warm.sum().backward()
    assert torch.equal(cold, warm.detach()) and all(p.grad is not None for p in isp.parameters())
    for v in ("me_u_me", "ma_s_ga"):
        D._CONSTANTS.clear()
        first = render_batch(raw, cam, v)
        assert torch.equal(render_batch(raw, cam, v), first)
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = D.device_constant(m, torch.float32, "cpu")
    assert t is D.device_constant(m.copy(), torch.float32, torch.device("cpu"))
    assert torch.equal(t, torch.as_tensor(m, dtype=torch.float32))
    assert D.device_constant(m, torch.float64, "cpu").dtype == torch.float64


@requires_cuda
def test_isp_forward_copies_nothing_from_the_host():
    """Once warm, a ParametrizedISP forward + backward on CUDA makes no host-to-device copy."""
    from torch.profiler import ProfilerActivity, profile
    cam = CAMERAS["microscopy"]
    isp = ParametrizedISP(cam).cuda()
    raw = (torch.rand(4, 64, 64, device="cuda") * 0.5 + 0.07)
    isp(raw).sum().backward()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        isp(raw).sum().backward()
        torch.cuda.synchronize()
    copies = [e.name for e in prof.events() if "HtoD" in e.name]
    assert not copies, copies


# ---------------------------------------------------------------------------------------------
# the ISPs on each device (cheap: they run on the CPU too)

@pytest.fixture(scope="module")
def photos():
    out = {}
    for name, cam in CAMERAS.items():
        raws = np.stack([photo_raw(cam, p, crop=(slice(60, 124), slice(100, 164))) for p in ("astronaut", "coffee")])
        raws[1, 8:20, 4:28] = raws[1, 8:9, 4:5]         # a flat patch: Menon's direction decision ties exactly
        out[name] = (cam, np.round(raws * 65535) / 65535)   # quantised, as the render stage reads them
    return out


@pytest.mark.parametrize("view", VIEWS)
def test_render_float64_on_device_equals_the_cpu(photos, device, view):
    from rawdrift.sources.store import view_to_uint16
    for cam, raws in photos.values():
        x = torch.from_numpy(raws)
        cpu = render_batch(x, cam, view).numpy()
        got = render_batch(x.to(device), cam, view).cpu().numpy()
        assert np.abs(got - cpu).max() <= 1e-12, (view, np.abs(got - cpu).max())
        np.testing.assert_array_equal(view_to_uint16(got), view_to_uint16(cpu))
        ref = np.stack([render_static(r, cam, view) for r in raws])
        np.testing.assert_array_equal(view_to_uint16(got), view_to_uint16(ref))


@requires_cuda
def test_render_stack_on_cuda_writes_the_reference_views(tmp_path, photos):
    from rawdrift.rendering import render_stack, render_stack_torch
    cam, raws = photos["drone"]
    np.save(tmp_path / "raw.npy", np.round(raws * 65535).astype(np.uint16))
    render_stack(tmp_path / "raw.npy", cam, tmp_path / "ref", workers=1, progress=False)
    render_stack_torch(tmp_path / "raw.npy", cam, tmp_path / "cuda", torch.device("cuda"), progress=False)
    for v in VIEWS:
        assert (tmp_path / "cuda" / f"{v}.npy").read_bytes() == (tmp_path / "ref" / f"{v}.npy").read_bytes(), v


def _isp_run(cam, raw: torch.Tensor, device: torch.device, dtype: torch.dtype, constrained: bool):
    from rawdrift.isp.constraints import constrain
    isp = ParametrizedISP(cam, dtype=dtype)
    if constrained:
        isp = constrain(isp)
    isp = isp.to(device)
    out = isp(raw.to(device, dtype))
    w = torch.linspace(0, 1, out.numel(), dtype=dtype, device=device).reshape(out.shape)
    (out * w).sum().backward()
    return out.detach().cpu(), {n: p.grad.detach().cpu() for n, p in isp.named_parameters()}


@pytest.mark.parametrize("constrained", [False, True])
def test_differentiable_isp_on_device_matches_the_cpu(photos, device, constrained, restore_backends):
    configure_backends(device, deterministic=False)          # TF32 off: the luma convolutions go to cuDNN
    for cam, raws in photos.values():
        raw = torch.from_numpy(raws)
        out32, _ = _isp_run(cam, raw, device, torch.float32, constrained)
        ref32, _ = _isp_run(cam, raw, torch.device("cpu"), torch.float32, constrained)
        assert (out32 - ref32).abs().max() < 1e-4
        out64, g64 = _isp_run(cam, raw, device, torch.float64, constrained)
        ref64, r64 = _isp_run(cam, raw, torch.device("cpu"), torch.float64, constrained)
        assert (out64 - ref64).abs().max() < 1e-10
        for name in r64:
            torch.testing.assert_close(g64[name], r64[name], rtol=1e-6, atol=1e-9, msg=name)


def test_gradcheck_on_device(device):
    from rawdrift.isp.differentiable import process
    gen = torch.Generator().manual_seed(0)
    raw = (0.07 + 0.3 * torch.rand(1, 8, 8, dtype=torch.float64, generator=gen)).to(device)
    isp = ParametrizedISP(CAMERAS["drone"], dtype=torch.float64).to(device)
    params = tuple(p.detach().clone().requires_grad_(True) for p in isp.parameters())
    assert torch.autograd.gradcheck(lambda *ps: process(raw, *ps), params, eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the task-level stages on tiny data, CUDA against the CPU (stage scripts, as tests/stages/test_stages.py)

TRAIN_VIEWS = ("bi_s_ga", "me_u_me")
CORRUPTIONS = ("gaussian_noise", "contrast")
SEVERITIES = (1, 3)
#: Threads and render workers per stage process (four run at once on the GPU machine's 16 cores).
STAGE_ENV = {"OMP_NUM_THREADS": "4", "RAWDRIFT_WORKERS": "2"}


def _params(device: str) -> dict:
    from rawdrift.demo import profile
    return profile(ROOT, {
        "device": device, "precision": "fp32", "views": list(VIEWS), "data": {"folds": 3},
        "train": {"microscopy": {"epochs": 3, "batch_size": 4}, "drone": {"epochs": 3}},
        "forensics": {"lambda": [100.0, 1.0], "parameters": ["all", "gamma"], "epochs": 2, "search_tiles": 0,
                      "batch_size": 4},
        "optimize": {"modes": ["learned", "frozen", "raw"], "intensities": [1.0],
                     "microscopy": {"epochs": 2, "eval_every": 2}, "drone": {"epochs": 2, "eval_every": 2}}})


def _stage(wd: Path, script: str, *args: str, **env_vars: str) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", **STAGE_ENV, **env_vars)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    r = subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=wd, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{script} {' '.join(args)} in {wd}:\n{r.stderr[-3000:]}"
    return r.stdout


def _pipeline(wd: Path, dataset: str) -> list[str]:
    """render, train (two views), forensics, optimize of one dataset in workspace ``wd``."""
    lines = [_stage(wd, "render.py", dataset)]
    lines += [_stage(wd, "train.py", dataset, v) for v in TRAIN_VIEWS]
    lines += [_stage(wd, "forensics.py", dataset), _stage(wd, "optimize.py", dataset)]
    return lines


def _evaluate(wd: Path, dataset: str, device: torch.device) -> None:
    """crosseval and corruptions of the two trained views (the library calls of their stages)."""
    from rawdrift.corruptions import corruption_eval
    from rawdrift.crosseval import crosseval
    from rawdrift.sources.store import load_raw_dataset, load_targets
    ds = load_raw_dataset(wd / "data/raw" / dataset)
    targets = load_targets(ds)
    cross = crosseval(wd / "models" / dataset, wd / "data/views" / dataset, targets, ds.folds, ds.task, device,
                      views=TRAIN_VIEWS, amp=False, progress=False)
    corr = corruption_eval(wd / "models" / dataset, wd / "data/views" / dataset, targets, ds.folds, ds.task, device,
                           CORRUPTIONS, SEVERITIES, seed=1, scale=int(ds.meta["width"]) / 256, views=TRAIN_VIEWS,
                           amp=False, progress=False)
    (wd / "eval").mkdir(exist_ok=True)
    (wd / "eval" / f"crosseval_{dataset}.json").write_text(json.dumps(cross))
    (wd / "eval" / f"corruptions_{dataset}.json").write_text(json.dumps(corr))


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """The same tiny project run on the CPU and on CUDA (fetched once, the four dataset chains
    at once: a GPU machine has the cores); {"cpu": path, "cuda": path}."""
    if not CUDA:
        pytest.skip(NO_CUDA_REASON)
    base = tmp_path_factory.mktemp("cuda_vs_cpu")
    fetched = base / "fetched"
    fetched.mkdir()
    (fetched / "params.yaml").write_text(yaml.safe_dump(_params("cpu")))
    for ds in ("microscopy", "drone"):
        _stage(fetched, "fetch.py", ds)
    out = {}
    for dev in ("cpu", "cuda"):
        wd = base / dev
        shutil.copytree(fetched / "data", wd / "data")
        (wd / "params.yaml").write_text(yaml.safe_dump(_params(dev)))
        out[dev] = wd
    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(_pipeline, out[dev], ds) for dev in out for ds in ("microscopy", "drone")]
        summaries = [line for j in jobs for line in j.result()]
    assert any(" on cuda" in s for s in summaries), summaries
    for dev, wd in out.items():
        for ds in ("microscopy", "drone"):
            _evaluate(wd, ds, torch.device(dev))
    return out


def assert_within_fold_spread(cpu: list[float], cuda: list[float], what: str, floor: float = 0.25) -> None:
    cpu, cuda = np.asarray(cpu, float), np.asarray(cuda, float)
    assert np.isfinite(cuda).all() and ((0 <= cuda) & (cuda <= 1)).all(), (what, cuda)
    pooled = np.sqrt((cpu.var(ddof=1) + cuda.var(ddof=1)) / 2) if len(cpu) > 1 else 0.0
    tol = max(3 * pooled, floor)
    assert abs(cuda.mean() - cpu.mean()) <= tol, f"{what}: cuda {cuda.mean():.3f} vs cpu {cpu.mean():.3f} (tol {tol:.3f})"


def _json(wd: Path, rel: str) -> dict:
    return json.loads((wd / rel).read_text())


@requires_cuda
def test_render_stage_on_cuda_writes_the_cpu_views_byte_for_byte(workspaces):
    for ds in ("microscopy", "drone"):
        for v in VIEWS:
            rel = f"data/views/{ds}/{v}.npy"
            assert (workspaces["cuda"] / rel).read_bytes() == (workspaces["cpu"] / rel).read_bytes(), rel


@requires_cuda
@pytest.mark.parametrize("dataset", ["microscopy", "drone"])
def test_train_on_cuda_agrees_with_the_cpu(workspaces, dataset):
    for v in TRAIN_VIEWS:
        rel = f"metrics/train/{dataset}/{v}.json"
        a, b = _json(workspaces["cpu"], rel), _json(workspaces["cuda"], rel)
        assert_within_fold_spread(a["per_fold"], b["per_fold"], rel)


@requires_cuda
@pytest.mark.parametrize("dataset", ["microscopy", "drone"])
def test_crosseval_and_corruptions_on_cuda_agree_with_the_cpu(workspaces, dataset):
    a, b = (_json(workspaces[d], f"eval/crosseval_{dataset}.json") for d in ("cpu", "cuda"))
    pa, pb = np.asarray(a["per_fold"]), np.asarray(b["per_fold"])
    for i, tr in enumerate(TRAIN_VIEWS):
        for j, te in enumerate(TRAIN_VIEWS):
            assert_within_fold_spread(pa[:, i, j], pb[:, i, j], f"crosseval {dataset} {tr}->{te}")
    a, b = (_json(workspaces[d], f"eval/corruptions_{dataset}.json") for d in ("cpu", "cuda"))
    for s in map(str, SEVERITIES):
        pa, pb = np.asarray(a["severity"][s]["per_fold"]), np.asarray(b["severity"][s]["per_fold"])
        assert pa.shape == pb.shape
        for idx in np.ndindex(pa.shape[1:]):
            assert_within_fold_spread(pa[(slice(None), *idx)], pb[(slice(None), *idx)],
                                      f"corruptions {dataset} severity {s} {idx}")


@requires_cuda
@pytest.mark.parametrize("dataset", ["microscopy", "drone"])
def test_forensics_on_cuda_agrees_with_the_cpu(workspaces, dataset):
    rel = f"metrics/forensics/{dataset}.json"
    a, b = _json(workspaces["cpu"], rel), _json(workspaces["cuda"], rel)
    assert a["groups"] == b["groups"] and a["lambdas"] == b["lambdas"]
    for g, per_lambda in a["results"].items():
        for key, e in per_lambda.items():
            assert_within_fold_spread(e["metric"]["per_fold"], b["results"][g][key]["metric"]["per_fold"],
                                      f"forensics {dataset} {g} lambda {key}")
            assert np.isfinite(b["results"][g][key]["l2"]["mean"])


@requires_cuda
@pytest.mark.parametrize("dataset", ["microscopy", "drone"])
def test_optimize_on_cuda_agrees_with_the_cpu(workspaces, dataset):
    rel = f"metrics/optimize/{dataset}.json"
    a, b = _json(workspaces["cpu"], rel), _json(workspaces["cuda"], rel)
    assert set(a["settings"]) == set(b["settings"])
    for name, s in a["settings"].items():
        assert_within_fold_spread(s["final"]["per_fold"], b["settings"][name]["final"]["per_fold"],
                                  f"optimize {dataset} {name}")


@requires_cuda
def test_concurrent_folds_on_cuda(workspaces, tmp_path):
    """RAWDRIFT_CONCURRENT_FOLDS=1 on CUDA: the folds in one process each on the one GPU give
    models as good as the serial loop's (byte-identity, which holds on the CPU, needs
    deterministic kernels on CUDA and is not asserted)."""
    wd = tmp_path / "concurrent"
    shutil.copytree(workspaces["cuda"] / "data", wd / "data")
    shutil.copy2(workspaces["cuda"] / "params.yaml", wd / "params.yaml")
    line = _stage(wd, "train.py", "microscopy", "bi_s_ga", RAWDRIFT_CONCURRENT_FOLDS="1")
    assert " on cuda" in line
    rel = "metrics/train/microscopy/bi_s_ga.json"
    conc, serial = _json(wd, rel), _json(workspaces["cuda"], rel)
    assert len(conc["per_fold"]) == len(serial["per_fold"])
    assert_within_fold_spread(serial["per_fold"], conc["per_fold"], "concurrent folds")
    assert sorted(p.name for p in (wd / "models/microscopy/bi_s_ga").iterdir()) == sorted(
        p.name for p in (workspaces["cuda"] / "models/microscopy/bi_s_ga").iterdir())


@requires_cuda
@pytest.mark.parametrize("dataset", ["microscopy", "drone"])
def test_compiled_steps_on_cuda_agree_with_eager(workspaces, tmp_path, dataset):
    """``compile: reduce-overhead`` (torch.compile with CUDA graphs) on the train stage, then on
    forensics' searches: models as good as the eager step's on the same device; over the same
    (compiled-trained) models, compiled searches' metrics within the fold spread of eager
    searches'; the mode recorded."""
    wd = tmp_path / "compiled"
    shutil.copytree(workspaces["cuda"] / "data", wd / "data")
    (wd / "params.yaml").write_text(yaml.safe_dump(dict(_params("cuda"), compile="reduce-overhead")))
    view = TRAIN_VIEWS[0]
    assert " on cuda" in _stage(wd, "train.py", dataset, view)
    rel = f"metrics/train/{dataset}/{view}.json"
    compiled, eager = _json(wd, rel), _json(workspaces["cuda"], rel)
    assert compiled["platform"]["compile"] == "reduce-overhead" and eager["platform"]["compile"] == "none"
    assert_within_fold_spread(eager["per_fold"], compiled["per_fold"], f"compiled {rel}")
    assert view == "bi_s_ga"                                  # the models forensics searches against
    rel = f"metrics/forensics/{dataset}.json"
    (wd / "params.yaml").write_text(yaml.safe_dump(_params("cuda")))
    _stage(wd, "forensics.py", dataset)
    eager = _json(wd, rel)
    (wd / "params.yaml").write_text(yaml.safe_dump(dict(_params("cuda"), compile="reduce-overhead")))
    _stage(wd, "forensics.py", dataset)
    compiled = _json(wd, rel)
    assert compiled["platform"]["compile"] == "reduce-overhead" and eager["platform"]["compile"] == "none"
    for g, per_lambda in eager["results"].items():
        for key, e in per_lambda.items():
            assert_within_fold_spread(e["metric"]["per_fold"], compiled["results"][g][key]["metric"]["per_fold"],
                                      f"compiled forensics {dataset} {g} lambda {key}")
