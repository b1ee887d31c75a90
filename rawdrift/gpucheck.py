"""``make gpu-check``: the CUDA acceptance run, one command on a machine with an NVIDIA GPU.

``python -m rawdrift.gpucheck`` runs, within one time budget (10 minutes), steps 1 to 3 at the
same time (they time nothing; ``--serial``: one after the other), then step 4 alone:

1. ``tests``: the CUDA tests (``pytest -m cuda``: tests/test_cuda.py and the ``device``
   fixture's CUDA cases elsewhere; ``make test`` runs the rest, this module's own tests
   included), report ``bench/gpu-check/pytest.xml``, and each test's outcome and seconds as
   it ends in ``bench/gpu-check/tests-progress.log`` (kept through a crash);
2. ``repro``: the whole DAG at the demo's tiny profile in a scratch git + DVC workspace
   (:mod:`rawdrift.demo`) with ``device: cuda`` and ``precision: auto``, i.e. ``dvc repro`` as
   ``-S device=cuda`` gives it; its metrics are copied to ``bench/gpu-check/repro-metrics/``;
3. ``warm``: ``python -m rawdrift.bench --warm --datasets <dataset>``, one process per dataset:
   every graph the bench compiles, compiled into the run's inductor cache and not timed;
4. ``bench``: ``python -m rawdrift.bench`` (what ``make bench`` runs), ``bench/cuda.json``; its
   compiles load from that cache.

``repro`` and ``warm`` run at a lower CPU priority (``nice``): the tests take longest of the
three, and the other two take the cores the tests leave idle. Every step runs with
``TORCHINDUCTOR_CACHE_DIR`` at a new temporary folder (unless it is set), removed at the end:
a run compiles from scratch, as on a fresh machine, save what ``warm`` compiled for ``bench``.

One more step runs only when named (``--steps paper``, or ``make gpu-check GPU_CHECK_ARGS="--steps
paper"``): ``paper``, one paper-size train stage per dataset (``train@<dataset>-bi_s_ga`` at
``profiles/paper.yaml`` with ``device: cuda``) in a scratch workspace, its fetch and render first
and then the train stage alone, timed: ``bench/gpu-check/paper.json``, next to what
``bench/cuda.json``'s rates project for that stage when that file is there;
``--paper-datasets`` picks the datasets and ``--paper-epochs`` shortens the stages (the
projection scaled to match), for a machine whose time limit a whole stage would pass;
``--paper-set KEY=VALUE`` sets a param over the profile as ``dvc exp run -S`` does (e.g.
``deterministic=false``: the fast path, its projection to match).

Each step's output goes to ``bench/gpu-check/<step>.log``; ``bench/gpu-check/report.json``
records every step's exit status and seconds, the device, and the torch, Python and numpy
versions; it is rewritten as each step ends (``"finished": false`` and the ``pending`` steps
until the run ends), so a run killed from outside keeps what it finished. The exit status
is 0 only if every step passed inside the budget. Without a CUDA device it stops at once with
one line and exit status 2. Nothing outside ``bench/`` and a temporary folder is written; the
workspace's own DVC cache is not touched.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rawdrift.errors import RawdriftError
from rawdrift.io import write_json
from rawdrift.params import DATASETS

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = "make gpu-check: no CUDA device (torch.cuda.is_available() is false)"
STEPS = ("tests", "repro", "warm", "bench")
#: Steps that time nothing: they run at the same time, before the others (unless ``--serial``);
#: ``bench`` and ``paper`` then run one at a time, alone on the machine.
UNTIMED_STEPS = ("tests", "repro", "warm")
#: The CPU priority (``nice``) of ``repro`` and ``warm``: beside the tests, the longest of the
#: three, they take the cores the tests leave idle.
SIDE_NICENESS = 10
#: Steps run only when ``--steps`` names them.
OPTIONAL_STEPS = ("paper",)
#: The view whose train stage the ``paper`` step times (forensics starts from it).
PAPER_VIEW = "bi_s_ga"
#: The tests step runs the tests marked so (pytest.ini): all of tests/test_cuda.py and the
#: CUDA case of tests/conftest.py's ``device`` fixture.
TEST_MARKER = "cuda"
#: The files that hold them (tests/test_gpucheck.py checks the list against the marker).
TESTS = ("tests/test_cuda.py", "tests/isp/test_differentiable.py", "tests/test_bench.py")
BUDGET_S = 600


#: What the steps import beyond torch, numpy and the scientific stack a GPU image has (module names).
NEEDED = ("dvc", "dvclive", "segmentation_models_pytorch", "colour_demosaicing", "colour", "corrupt_tta", "yaml",
          "pytest")


def missing_packages(names=NEEDED) -> list[str]:
    """The modules of ``names`` this interpreter cannot import."""
    import importlib.util
    return [n for n in names if importlib.util.find_spec(n) is None]


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


#: The run's temporary folders by purpose ("bin": the python shim, "inductor": the compile
#: cache), removed when the interpreter exits (:func:`_remove_scratch`).
_SCRATCH: dict[str, Path] = {}


def _scratch(purpose: str) -> Path:
    """The run's temporary folder for ``purpose``, made on first use."""
    if purpose not in _SCRATCH:
        if not _SCRATCH:
            atexit.register(_remove_scratch)
        _SCRATCH[purpose] = Path(tempfile.mkdtemp(prefix=f"rawdrift-gpucheck-{purpose}-"))
    return _SCRATCH[purpose]


def _remove_scratch() -> None:
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.popitem()[1], ignore_errors=True)


def _python_shim() -> Path:
    """A folder with a ``python`` script that runs this interpreter (a script, not a link: a
    venv's interpreter finds its packages only when started under its own path)."""
    folder = _scratch("bin")
    script = folder / "python"
    if not script.exists():
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        script.chmod(0o755)
    return folder


def _env(extra_path: Path | None = None) -> dict:
    """This interpreter's environment, with the repository (or ``extra_path``) first on
    PYTHONPATH (the GPU machine has no editable install) and a ``python`` on PATH that is this
    interpreter (DVC stages run ``python stages/...``; the machine may only have ``python3``),
    and ``TORCHINDUCTOR_CACHE_DIR`` the run's compile cache unless it is set."""
    env = dict(os.environ)
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_scratch("inductor")))
    code = str(extra_path or ROOT)
    env["PYTHONPATH"] = os.pathsep.join([code] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PATH"] = os.pathsep.join([str(_python_shim()), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _run(name: str, args: list[str], log: Path, timeout: float, cwd: Path = ROOT, env: dict | None = None,
         nice: int = 0) -> dict:
    """Run one step with its output in ``log``; {"step", "rc", "seconds", "log"} (rc 124: out of time).
    ``nice`` > 0 runs it, and every process it starts, at that lower CPU priority (``nice -n``)."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        fh.write(f"$ {' '.join(args)}\n")
        fh.flush()
        # its own process group, so that running out of time also ends the stages DVC started
        proc = subprocess.Popen(["nice", "-n", str(nice), *args] if nice > 0 else args, cwd=cwd, env=env or _env(),
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
            fh.write(f"\nmake gpu-check: {name} ran out of the time budget\n")
    return {"step": name, "rc": rc, "seconds": round(time.perf_counter() - start, 1), "log": str(log)}


def _append_part(log: Path, part: Path) -> None:
    """Append the log ``part`` of one command of a step to the step's ``log`` and remove it."""
    with open(log, "a") as fh:
        fh.write(part.read_text())
    part.unlink()


def step_tests(out: Path, timeout: float) -> dict:
    """The CUDA tests; besides ``tests.log`` and ``pytest.xml`` (both written at the end),
    ``tests-progress.log`` gets each test's outcome and seconds, and a failure's report, as the
    test ends (tests/conftest.py, ``RAWDRIFT_TEST_PROGRESS``): what a crash later in the run
    (a segmentation fault in compiled code) leaves of it."""
    env = dict(_env(), RAWDRIFT_TEST_PROGRESS=str(out / "tests-progress.log"))
    return _run("tests", [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", TEST_MARKER,
                          f"--junitxml={out / 'pytest.xml'}", *TESTS], out / "tests.log", timeout, env=env)


def step_repro(out: Path, timeout: float) -> dict:
    """The tiny DAG on CUDA in a scratch workspace (``rawdrift.demo`` with ``device: cuda``)."""
    from rawdrift import demo
    ws = Path(tempfile.mkdtemp(prefix="rawdrift-gpucheck-")) / "ws"
    log = out / "repro.log"
    start = time.perf_counter()
    try:
        demo.create(ws, overrides={"device": "cuda", "precision": "auto"})
        env = _env(ws)
        result = _run("repro", [sys.executable, "-m", "dvc", "repro"], log, timeout - (time.perf_counter() - start),
                      cwd=ws, env=env, nice=SIDE_NICENESS)
        if (ws / "metrics").is_dir():
            shutil.copytree(ws / "metrics", out / "repro-metrics", dirs_exist_ok=True)
        result["workspace"] = str(ws)
    except Exception as exc:      # the workspace could not be made (git, dvc init): the step fails, the rest runs
        log.write_text(f"make gpu-check: could not create the scratch workspace: {exc}\n")
        result = {"step": "repro", "rc": 1, "seconds": round(time.perf_counter() - start, 1), "log": str(log)}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def step_warm(out: Path, timeout: float) -> dict:
    """What the bench compiles, compiled beforehand into the run's inductor cache: one
    ``python -m rawdrift.bench --warm --datasets <dataset>`` process per dataset, all at once;
    ``warm.log`` holds their logs in turn. The step fails if any of them does."""
    from rawdrift.bench import PAPER_PROTOCOL
    datasets = list(PAPER_PROTOCOL["datasets"])
    with ThreadPoolExecutor(len(datasets)) as pool:
        parts = list(pool.map(lambda d: _run("warm", [sys.executable, "-m", "rawdrift.bench", "--warm", "--datasets", d],
                                             out / f"warm-{d}.log", timeout, nice=SIDE_NICENESS), datasets))
    log = out / "warm.log"
    log.write_text("")
    for p in parts:
        _append_part(log, Path(p["log"]))
    return {"step": "warm", "rc": next((p["rc"] for p in parts if p["rc"] != 0), 0),
            "seconds": max(p["seconds"] for p in parts), "log": str(log)}


def step_bench(out: Path, timeout: float) -> dict:
    return _run("bench", [sys.executable, "-m", "rawdrift.bench", "--out", str(out.parent)], out / "bench.log",
                timeout)


def _projected_train_stage(bench_json: Path, dataset: str, epochs: int | None = None,
                           deterministic: bool = False) -> dict:
    """What ``bench_json``'s rates (``make bench``) project for one train stage of ``dataset`` at
    the paper protocol: the projection's train time over the number of views of the protocol it
    projected (its ``protocol`` record), in lockstep and with concurrent folds, and the
    ``compile`` mode its training steps were measured in; {} without the file.
    ``deterministic``: the stage runs ``deterministic: true``, so the projection with its cost
    (``projection.deterministic``) where the file has one; ``projected_deterministic`` says
    which was taken. ``epochs``: the stage at that many epochs instead of the protocol's, the
    projection scaled by their ratio (exact where every epoch is evaluated,
    ``eval_every_epochs: 1`` as in the paper profile; with sparser evaluations a short stage
    evaluates relatively more often than the scaling counts)."""
    if not bench_json.is_file():
        return {}
    bench = json.loads(bench_json.read_text())
    protocol = bench["protocol"]
    where = bench_json.resolve()
    use_det = deterministic and "deterministic" in bench["projection"]
    proj = (bench["projection"]["deterministic"] if use_det else bench["projection"])["datasets"][dataset]
    full = protocol["datasets"][dataset]["epochs"]
    epochs = full if epochs is None else epochs
    scale = epochs / full / protocol["views"]
    return {"projected_s": proj["train"] * scale, "projected_concurrent_s": proj["train_concurrent"] * scale,
            "projected_compile": protocol.get("compile", "none"), "projected_epochs": epochs,
            "projected_deterministic": use_det, "projected_device": bench.get("device"),
            "projected_from": str(where.relative_to(ROOT) if where.is_relative_to(ROOT) else where)}


def projection_file(out: Path) -> Path:
    """The ``cuda.json`` whose rates the ``paper`` step's stages are set against: the one this
    run's ``bench`` wrote (``out``'s parent) if there is one, else the repository's committed
    ``bench/cuda.json`` (which may be of another GPU: ``projected_device`` says which)."""
    here = out.parent / "cuda.json"
    return here if here.is_file() else ROOT / "bench" / "cuda.json"


def paper_params(overrides: dict | None = None, epochs: int | None = None,
                 datasets: tuple[str, ...] = DATASETS) -> dict:
    """The ``paper`` step's params: ``profiles/paper.yaml`` over ``params.yaml``, ``overrides``
    over that (nested as a profile, or dotted keys as ``--paper-set`` gives them), and
    ``epochs`` as every one of ``datasets``' ``train.<dataset>.epochs``; validated as the stages
    read them (a one-line :class:`RawdriftError` naming the param)."""
    from rawdrift import profiles
    params = profiles.apply(profiles.resolve("paper", ROOT), overrides or {}, "--paper-set")
    if epochs is not None:
        params = profiles.apply(params, {"train": {ds: {"epochs": epochs} for ds in datasets}}, "--paper-epochs")
    profiles.validate(params, "--paper-set over profiles/paper.yaml")
    return params


def step_paper(out: Path, timeout: float, datasets: tuple[str, ...] = DATASETS,
               overrides: dict | None = None, epochs: int | None = None) -> dict:
    """One paper-size train stage per dataset, timed (``train@<dataset>-bi_s_ga``).

    The workspace's params are :func:`paper_params` (``overrides``: e.g. a small size for a
    test on the CPU; ``epochs``: for a stage that fits a machine's time limit). Per dataset,
    ``dvc repro render@<dataset>`` (fetch and render), then ``dvc repro
    train@<dataset>-bi_s_ga`` alone, each timed; ``out/paper.json``: {dataset: {"render_s",
    "train_s", "epochs", "projected_s", "projected_concurrent_s", "projected_compile",
    "projected_epochs", "projected_deterministic", "projected_device", "projected_from"},
    "concurrent_folds": the ``RAWDRIFT_CONCURRENT_FOLDS`` it ran with, "compile" and
    "deterministic": the workspace's params}
    (a projection measured in another mode than the stage ran is no yardstick for it: rerun
    ``make bench`` first; it counts no start-up or compiling, which a stage of few epochs
    pays in full). A dataset whose command fails or runs out of time ends the step."""
    from rawdrift import demo
    log = out / "paper.log"
    start = time.perf_counter()
    result = {"step": "paper", "rc": 0, "seconds": 0.0, "log": str(log)}
    report: dict = {"concurrent_folds": os.environ.get("RAWDRIFT_CONCURRENT_FOLDS", "0")}
    try:
        params = paper_params(overrides, epochs, datasets)
        report["compile"], report["deterministic"] = params["compile"], params["deterministic"]
        ws = Path(tempfile.mkdtemp(prefix="rawdrift-gpucheck-paper-")) / "ws"
        demo.create(ws, params=params)
    except Exception as exc:      # noqa: BLE001 - the step fails with the reason in its log, the rest runs
        log.write_text(f"make gpu-check: could not create the paper workspace: {exc}\n")
        return dict(result, rc=1, seconds=round(time.perf_counter() - start, 1))
    env = _env(ws)
    with open(log, "w"):
        pass
    for ds in datasets:
        timings = {}
        for key, target in (("render_s", f"render@{ds}"), ("train_s", f"train@{ds}-{PAPER_VIEW}")):
            part = out / f"paper-{key[:-2]}-{ds}.log"
            r = _run("paper", [sys.executable, "-m", "dvc", "repro", target], part,
                     timeout - (time.perf_counter() - start), cwd=ws, env=env)
            _append_part(log, part)
            if r["rc"] != 0:
                result["rc"] = r["rc"]
                break
            timings[key] = r["seconds"]
        report[ds] = {**timings, "epochs": params["train"][ds]["epochs"],
                      **_projected_train_stage(projection_file(out), ds, epochs, params["deterministic"])}
        (out / "paper.json").write_text(json.dumps(report, indent=2) + "\n")
        if result["rc"] != 0:
            break
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["workspace"] = str(ws)
    return result


#: step name -> function(results folder, seconds left) -> {"step", "rc", "seconds", "log", ...}
RUNNERS = {"tests": step_tests, "repro": step_repro, "warm": step_warm, "bench": step_bench, "paper": step_paper}


def paper_overrides(settings: list[str]) -> dict:
    """``["deterministic=false", "train.drone.lr=1e-4"]`` -> ``{"deterministic": False,
    "train.drone.lr": 0.0001}`` (dotted keys, as :func:`rawdrift.profiles.apply` takes them),
    checked by :func:`paper_params` before any step runs; a setting without ``=``, a key that
    is no param or a value a param refuses is a one-line error naming it."""
    from rawdrift import profiles
    out: dict = {}
    for setting in settings:
        key, eq, text = setting.partition("=")
        if not eq or not key.strip():
            raise RawdriftError(f"--paper-set: {setting!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = profiles.parse_value(text)
        except RawdriftError as exc:
            raise RawdriftError(f"--paper-set: {key.strip()}: {exc}") from None
    if out:
        paper_params(out)
    return out


def environment() -> dict:
    import numpy
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "cuda": torch.version.cuda, "host": platform.node()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rawdrift.gpucheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench", help="results folder (default bench/)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all steps together (default 600)")
    ap.add_argument("--steps", default=",".join(STEPS),
                    help=f"comma-separated, of {','.join(STEPS + OPTIONAL_STEPS)} (default {','.join(STEPS)})")
    ap.add_argument("--serial", action="store_true",
                    help=f"one step at a time (default: {' and '.join(UNTIMED_STEPS)} together, then the rest)")
    ap.add_argument("--paper-datasets", default=",".join(DATASETS),
                    help=f"the paper step's datasets, comma-separated, in turn (default {','.join(DATASETS)})")
    ap.add_argument("--paper-epochs", type=int, default=None,
                    help="the paper step's train stages at this many epochs (default: the paper profile's, 100)")
    ap.add_argument("--paper-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a param of the paper step's workspace over profiles/paper.yaml, as dvc exp run -S "
                         "(e.g. deterministic=false); repeatable")
    args = ap.parse_args(argv)
    paper_datasets = tuple(dict.fromkeys(d for d in args.paper_datasets.split(",") if d))
    if not paper_datasets or any(d not in DATASETS for d in paper_datasets):
        print(f"make gpu-check: --paper-datasets: {args.paper_datasets!r}: of {', '.join(DATASETS)}",
              file=sys.stderr)
        return 2
    if args.paper_epochs is not None and args.paper_epochs < 1:
        print(f"make gpu-check: --paper-epochs: {args.paper_epochs}: at least 1", file=sys.stderr)
        return 2
    steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in steps if s not in STEPS + OPTIONAL_STEPS]
    if unknown:
        print(f"make gpu-check: unknown step {unknown[0]!r} (steps: {', '.join(STEPS + OPTIONAL_STEPS)})",
              file=sys.stderr)
        return 2
    if "paper" not in steps and (args.paper_epochs is not None or paper_datasets != DATASETS or args.paper_set):
        print("make gpu-check: --paper-datasets, --paper-epochs and --paper-set: only with the paper step "
              "(--steps paper)", file=sys.stderr)
        return 2
    runners = dict(RUNNERS)
    if "paper" in steps:
        try:
            overrides = paper_overrides(args.paper_set)
        except RawdriftError as exc:
            print(f"make gpu-check: {exc}", file=sys.stderr)
            return 2
        runners["paper"] = functools.partial(RUNNERS["paper"], datasets=paper_datasets, epochs=args.paper_epochs,
                                             overrides=overrides)
    if not cuda_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    missing = missing_packages()
    if missing:
        print(f"make gpu-check: {', '.join(missing)} not importable by {sys.executable} (without a package "
              "registry: ../shared/tools/device-wheels here, then docs/performance.md's install there)",
              file=sys.stderr)
        return 2
    out = args.out.resolve() / "gpu-check"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done: dict[str, dict] = {}

    env_info = environment()
    lock = threading.Lock()

    def write_report(final: bool) -> dict:
        """report.json as it stands: rewritten (atomically) as each step ends, so that a run
        killed from outside (a machine's time limit) leaves the steps it finished."""
        with lock:
            total = time.perf_counter() - start
            results = [done[name] for name in steps if name in done]
            passed = final and all(r["rc"] == 0 for r in results) and total <= args.budget
            report = {"passed": passed, "finished": final, "seconds": round(total, 1), "budget_s": args.budget,
                      "steps": results, "pending": [name for name in steps if name not in done],
                      "environment": env_info}
            write_json(out / "report.json", report)
            return report

    def run(name: str) -> None:
        left = args.budget - (time.perf_counter() - start)
        if left <= 0:
            done[name] = {"step": name, "rc": 124, "seconds": 0.0, "log": None, "note": "not started: budget spent"}
            return
        r = done[name] = runners[name](out, left)
        write_report(final=False)
        print(f"make gpu-check: {name}: {'ok' if r['rc'] == 0 else 'FAILED (exit %d)' % r['rc']} in {r['seconds']:.0f} s"
              f" (log {r['log']})", flush=True)
    write_report(final=False)
    together = [] if args.serial else [s for s in steps if s in UNTIMED_STEPS]
    if together:
        with ThreadPoolExecutor(len(together)) as pool:
            list(pool.map(run, together))
    for name in steps:
        if name not in done:
            run(name)
    report = write_report(final=True)
    print(f"make gpu-check: {'passed' if report['passed'] else 'FAILED'} in {report['seconds']:.0f} s of "
          f"{args.budget:.0f} ({env_info.get('device')}); report {out / 'report.json'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
