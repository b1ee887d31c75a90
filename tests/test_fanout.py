"""Fanning stages out (rawdrift.fanout): Ray with two fake GPUs and a local S3 server (moto),
submitit's local executor with worktrees sharing one DVC cache, the command line with the local
engine, and the pieces that keep a fan-out from hanging or retrying for ever.

Every end-to-end test builds a tiny project (rawdrift.demo's scratch workspace: this working
tree's code, its own git and DVC, a profile smaller than the demo's) and asserts behaviour from
DVC's own output: the driver's closing ``dvc repro`` restores the fanned-out stages ("is cached -
skipping run") instead of running them. Ray, submitit and moto come with ``make test``
(requirements-test.txt, requirements-fanout.txt); a missing one is an error, not a skip.
"""

import faulthandler
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import ray
import submitit  # noqa: F401  (imported by rawdrift.fanout on use; a missing package fails here)
import yaml

from rawdrift import demo
from rawdrift.fanout import (TIMED_OUT, CommandTimeout, TaskResult, TaskSpec, fanout, run_task,
                             run_with_retries, sh as fanout_sh)

ROOT = Path(__file__).resolve().parents[1]
# drone: 3 MB of model per fold where microscopy's resnet18 has 45 MB, which every task pushes
TARGETS = ["train@drone-bi_s_ga", "train@drone-me_u_me"]      # two of the demo profile's views, in its order
RESTORED = "Stage '{}' is cached - skipping run, checking out outputs"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "fanout-test-key", "AWS_SECRET_ACCESS_KEY": "fanout-test-secret"}
#: What a test may take at most (CI: 2 cores); past it the test fails with every thread's stack.
WATCHDOG_S = 420
# Cheap stages (one fails after writing half its output) to test failures and the engines fast.
TOY_STAGES = {
    "toy_ok": {"cmd": "python -c \"open('toy_ok.txt', 'w').write('ok')\"", "params": ["seed"],
               "outs": ["toy_ok.txt"]},
    "toy_ok2": {"cmd": "python -c \"open('toy_ok2.txt', 'w').write('ok2')\"", "params": ["seed"],
                "outs": ["toy_ok2.txt"]},
    "toy_boom": {"cmd": "python -c \"open('toy_boom.txt', 'w').write('half'); raise SystemExit(3)\"",
                 "params": ["seed"], "outs": ["toy_boom.txt"]},
}


class Hung(Exception):
    """Raised in the main thread by the watchdog."""


@pytest.fixture(autouse=True)
def watchdog():
    """A hang is a failure, never a stuck CI: SIGALRM after WATCHDOG_S raises in the test (Ray's
    ray.get and subprocess waits both let Python signal handlers run) after dumping every thread's
    stack; should even that not get through, faulthandler ends the process a minute later."""
    def hung(signum, frame):
        faulthandler.dump_traceback(all_threads=True)
        raise Hung(f"test ran past {WATCHDOG_S} s (stacks above)")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(WATCHDOG_S)
    faulthandler.dump_traceback_later(WATCHDOG_S + 60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def sh(cmd: list[str], cwd: Path, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    return r


def commit(repo: Path, message: str) -> None:
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", message], repo)


def clean_env() -> dict:
    """The tests' subprocess environment: the venv first, one worker and one thread per stage, no credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               RAWDRIFT_WORKERS="1", OMP_NUM_THREADS="1", AWS_EC2_METADATA_DISABLED="true")
    return env


@pytest.fixture
def env(monkeypatch):
    """This process's environment as clean_env(), with the S3 credentials (what the driver sees)."""
    for key, value in {**clean_env(), **CREDENTIALS}.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("AWS_") and k not in CREDENTIALS]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return dict(os.environ)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(tmp_path):
    """A local S3 server (moto) in its own process, and a bucket ``rawdrift``: endpoint URL, boto3 client."""
    port = free_port()
    log = open(tmp_path / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              env=clean_env(), start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **{
        k.lower(): v for k, v in CREDENTIALS.items()})
    try:
        for _ in range(300):
            try:
                client.create_bucket(Bucket="rawdrift")
                break
            except Exception:      # noqa: BLE001  (not listening yet)
                assert server.poll() is None, (tmp_path / "moto.log").read_text()
                time.sleep(0.1)
        else:
            pytest.fail(f"moto server did not answer on {endpoint}: {(tmp_path / 'moto.log').read_text()}")
        yield endpoint, client
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with two fake GPUs (Ray sets CUDA_VISIBLE_DEVICES per task). Its workers
    get the environment of a node started with the S3 credentials exported (docs/fanout.md)."""
    saved, node_env = dict(os.environ), {**clean_env(), **CREDENTIALS}
    try:
        os.environ.clear()
        os.environ.update(node_env)
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024 ** 2)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield ray
    ray.shutdown()


def tiny_project(dest: Path, toy: bool = False) -> Path:
    """rawdrift.demo's scratch workspace (this working tree's code, own git + DVC) with a profile
    even smaller than the demo's: 12 microscopy tiles of 16 px, 2 folds, 1 intensity, 1 epoch."""
    demo.create(dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"].update(folds=2, intensities=[1.0])
    params["data"]["microscopy"].update(count=12, tile=16)
    params["train"]["microscopy"].update(epochs=1, batch_size=4)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if toy:
        dvc_yaml = yaml.safe_load((dest / "dvc.yaml").read_text())
        dvc_yaml["stages"].update(TOY_STAGES)
        (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    commit(dest, "tiny profile")
    return dest


def add_s3_remote(repo: Path, endpoint: str, credentials_in_config_local: bool = False) -> None:
    """The remote in .dvc/config (committed), its endpoint (and credentials, if asked) in .dvc/config.local."""
    sh(["dvc", "remote", "add", "-d", "shared", "s3://rawdrift/cache"], repo, clean_env())
    sh(["dvc", "remote", "modify", "--local", "shared", "endpointurl", endpoint], repo, clean_env())
    if credentials_in_config_local:
        for option, value in (("access_key_id", CREDENTIALS["AWS_ACCESS_KEY_ID"]),
                              ("secret_access_key", CREDENTIALS["AWS_SECRET_ACCESS_KEY"])):
            sh(["dvc", "remote", "modify", "--local", "shared", option, value], repo, clean_env())
    commit(repo, "remote")


def bucket_keys(client) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket="rawdrift").get("Contents", [])}


def md5_objects(client) -> set[str]:
    """The md5 of every file object on the remote (``cache/files/md5/ab/cdef...``)."""
    return {k.rsplit("/", 2)[-2] + k.rsplit("/", 1)[-1] for k in bucket_keys(client) if "/files/md5/" in k}


def assert_no_credentials_written(repo: Path, allowed: tuple[str, ...] = ()) -> None:
    """No file of the project (but those ``allowed``, e.g. .dvc/config.local) holds a credential."""
    for f in repo.rglob("*"):
        if f.is_file() and ".git" not in f.parts and str(f.relative_to(repo)) not in allowed:
            text = f.read_bytes()
            assert not any(v.encode() in text for v in CREDENTIALS.values()), f


def test_fanout_ray_s3_restores_both_train_stages(tmp_path, env, s3, ray_cluster):
    endpoint, client = s3
    a = tiny_project(tmp_path / "a")
    add_s3_remote(a, endpoint)
    report = fanout(a, TARGETS, engine="ray", gpus=1, finish_all=False, workdir=tmp_path / "work",
                    timeout_min=4, log=lambda _: None)
    assert report.failed == [] and [r.stage for r in report.results] == TARGETS, [r.log for r in report.results]
    assert report.upstream == ["fetch@drone", "render@drone"]
    assert all(r.attempts == 1 for r in report.results)
    for stage in TARGETS:                           # restored from the pulled run-cache, not rerun
        assert RESTORED.format(stage) in report.finish_output, report.finish_output
    assert "Running stage" not in report.finish_output and report.rerun == [], report.finish_output
    assert len(sh(["git", "worktree", "list"], a).stdout.splitlines()) == 1     # worktrees removed
    assert not list((tmp_path / "work" / "tasks").iterdir())
    keys = bucket_keys(client)
    assert any(k.startswith("cache/runs/") for k in keys) and any(k.startswith("cache/files/md5/") for k in keys)
    assert_no_credentials_written(a)                # the workers took them from their environment
    for view in ("bi_s_ga", "me_u_me"):
        assert (a / f"models/drone/{view}/fold1.safetensors").stat().st_size > 0
        assert (a / f"metrics/train/drone/{view}.json").is_file()
    assert sh(["dvc", "status", *TARGETS], a, env).stdout.strip() == "Data and pipelines are up to date."


def test_fanout_ray_reports_a_failing_stage_and_lands_nothing_of_it(tmp_path, env, s3, ray_cluster):
    endpoint, client = s3
    a = tiny_project(tmp_path / "a", toy=True)
    add_s3_remote(a, endpoint)
    report = fanout(a, ["toy_*"], engine="ray", gpus=0.25, workdir=tmp_path / "work", timeout_min=4,
                    log=lambda _: None)
    assert report.failed == ["toy_boom"], [r.log for r in report.results]
    boom = next(r for r in report.results if r.stage == "toy_boom")
    assert boom.returncode != 0 and "failed to reproduce 'toy_boom'" in boom.log, boom.log
    assert boom.attempts == 1 and not boom.crashed        # an error exit is reported, not retried
    assert "Running stage" not in report.finish_output, report.finish_output    # the driver never runs it
    for stage in ("toy_ok", "toy_ok2"):
        assert RESTORED.format(stage) in report.finish_output, report.finish_output
    assert (a / "toy_ok.txt").read_text() == "ok" and not (a / "toy_boom.txt").exists()
    assert "toy_boom" not in (a / "dvc.lock").read_text()
    objects = md5_objects(client)
    assert hashlib.md5(b"ok").hexdigest() in objects and hashlib.md5(b"half").hexdigest() not in objects
    runs = {k.split("/")[3] for k in bucket_keys(client) if k.startswith("cache/runs/")}
    assert len(runs) == 2, runs                    # run-cache entries of toy_ok and toy_ok2 only
    assert len(sh(["git", "worktree", "list"], a).stdout.splitlines()) == 1


def test_fanout_submitit_local_with_a_shared_cache(tmp_path, env):
    a = tiny_project(tmp_path / "a", toy=True)
    report = fanout(a, ["toy_ok*"], engine="submitit", submitit_cluster="local", shared_cache=True,
                    finish_all=False, workdir=tmp_path / "work", timeout_min=4, log=lambda _: None)
    assert report.failed == [] and report.rerun == [], [r.log for r in report.results]
    for stage in ("toy_ok", "toy_ok2"):        # the run-cache is in the shared cache: no remote, no push
        assert RESTORED.format(stage) in report.finish_output, report.finish_output
    assert (a / "toy_ok2.txt").read_text() == "ok2"


def test_fanout_cli_local_engine_credentials_from_config_local_and_errors(tmp_path, s3):
    """The command line, in a process without AWS credentials in its environment: the tasks'
    worktrees find them in the driver's .dvc/config.local, and nothing else holds them."""
    endpoint, client = s3
    a = tiny_project(tmp_path / "a", toy=True)
    add_s3_remote(a, endpoint, credentials_in_config_local=True)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return sh([sys.executable, "-m", "rawdrift.fanout", *args], a, clean_env(), ok=False)

    for args, message in [(("--engine", "dask"), "error: unknown engine 'dask'"),
                          (("nosuch@*", "--engine", "local"), "error: no stage matches 'nosuch@*'"),
                          (("toy_ok", "--engine", "local", "--gpus", "0.5"), "error: --gpus 0.5")]:
        r = cli(*args)
        assert r.returncode != 0 and r.stderr.startswith(message) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("toy_ok", "toy_boom", "--engine", "local", "--only", "-j", "2", "--timeout-min", "4")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == "error: stage(s) failed: toy_boom", r.stderr
    assert "1 stage(s) fanned out and restored, 1 failed" in r.stdout, r.stdout
    assert (a / "toy_ok.txt").read_text() == "ok" and not (a / "toy_boom.txt").exists()
    assert hashlib.md5(b"half").hexdigest() not in md5_objects(client)
    assert_no_credentials_written(a, allowed=(".dvc/config.local",))
    commit(a, "results")
    (a / "stray.txt").write_text("x")
    r = cli("toy_ok", "--engine", "local")
    assert r.returncode == 1 and r.stderr.startswith("error: working tree is dirty (stray.txt"), r.stderr


def test_a_command_past_its_time_limit_is_killed_with_its_children(tmp_path):
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"no result after 1 s, killed \(last output: started\)"):
        fanout_sh(["bash", "-c", "echo started >&2; sleep 60 & sleep 60"], tmp_path, timeout=1)
    assert time.monotonic() - start < 20          # the background sleep holding the pipe was killed too


def test_a_task_past_its_time_limit_fails_by_name(tmp_path):
    """A hung command inside a task (here: git itself, replaced by a script that sleeps) ends the
    task with status 124 and says which command hung; the task is not retried."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text('#!/bin/sh\n[ "$2" = add ] && exec sleep 60\nexit 0\n')
    (fake / "git").chmod(0o755)
    spec = TaskSpec(stage="train@x-y", commit="0" * 40, repo=str(tmp_path), workdir=str(tmp_path / "tasks"),
                    path=str(fake), timeout_s=1)
    start = time.monotonic()
    result = run_task(spec)
    assert time.monotonic() - start < 20
    assert not result.ok and result.returncode == TIMED_OUT and not result.crashed, result
    assert "task time limit (1 s): git worktree add: no result after 1 s, killed" in result.log, result.log


def test_retries_are_bounded_and_only_for_crashes():
    calls: list[list[str]] = []

    def runner(specs):
        calls.append([s.stage for s in specs])
        return [TaskResult("crash", False, -9, "killed", 0.0) if s.stage == "crash" else
                TaskResult("oom", False, 1, "ERROR: failed to reproduce 'oom': failed to run: python x, "
                                               "exited with -9", 0.0) if s.stage == "oom" else
                TaskResult(s.stage, False, 1, "ERROR: failed to reproduce", 0.0) if s.stage == "error" else
                TaskResult(s.stage, True, 0, "", 0.0) for s in specs]

    specs = [TaskSpec(stage=s, commit="c", repo="r", workdir="w") for s in ("ok", "error", "crash", "oom")]
    results = run_with_retries(specs, runner, retries=2)
    assert calls == [["ok", "error", "crash", "oom"], ["crash", "oom"], ["crash", "oom"]]
    assert [(r.stage, r.ok, r.attempts) for r in results] == [
        ("ok", True, 1), ("error", False, 1), ("crash", False, 3), ("oom", False, 3)]
    calls.clear()
    run_with_retries(specs, runner, retries=0)
    assert calls == [["ok", "error", "crash", "oom"]]


def test_a_task_runs_with_the_drivers_thread_counts(monkeypatch):
    """Ray sets OMP_NUM_THREADS to a task's num_cpus; a CPU stage's sums depend on the thread count,
    so a task gets the driver's values back (unset where the driver had none)."""
    from rawdrift.fanout import driver_threads, task_env
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    threads = driver_threads()
    assert threads == {"MKL_NUM_THREADS": "3"}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")            # what a Ray worker sees
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    env = task_env(TaskSpec(stage="s", commit="c", repo="r", workdir="w", threads=threads))
    assert "OMP_NUM_THREADS" not in env and env["MKL_NUM_THREADS"] == "3"
