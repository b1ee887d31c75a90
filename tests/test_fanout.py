"""Fanning stages out (rawdrift.fanout): Ray with fake GPUs and a local S3 server (moto on
127.0.0.1), submitit's local executor, and worktrees sharing one DVC cache.

Every test builds a tiny project (a clone of this repository with a tiny profile) and asserts
behaviour from DVC's own output: the driver's closing ``dvc repro`` restores the fanned-out
stages ("is cached - skipping run") instead of running them.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rawdrift.fanout import fanout

# Marked slow (`make test-all`, which installs requirements-fanout.txt): the two Ray + S3 tests
# have hung in the workers' `dvc push --run-cache` against the local S3 server; until that is
# understood they stay out of `make test`, and so do the others, which need Ray / submitit.
pytestmark = pytest.mark.slow
pytest.importorskip("ray", reason="pip install -r requirements-fanout.txt")
pytest.importorskip("submitit", reason="pip install -r requirements-fanout.txt")
moto_server = pytest.importorskip("moto.moto_server.threaded_moto_server", reason="pip install -r requirements-test.txt")
pytest.importorskip("dvc_s3", reason="pip install -r requirements-test.txt")

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["train@microscopy-bi_s_ga", "train@microscopy-bi_s_me"]
RESTORED = "Stage '{}' is cached - skipping run, checking out outputs"
# Two cheap stages (one fails after writing half its output) to test failures and the engines fast.
TOY_STAGES = {
    "toy_ok": {"cmd": "python -c \"open('toy_ok.txt', 'w').write('ok')\"", "params": ["seed"],
               "outs": ["toy_ok.txt"]},
    "toy_ok2": {"cmd": "python -c \"open('toy_ok2.txt', 'w').write('ok2')\"", "params": ["seed"],
                "outs": ["toy_ok2.txt"]},
    "toy_boom": {"cmd": "python -c \"open('toy_boom.txt', 'w').write('half'); raise SystemExit(3)\"",
                 "params": ["seed"], "outs": ["toy_boom.txt"]},
}


def sh(cmd: list[str], cwd: Path, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    return r


def commit(repo: Path, message: str) -> None:
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


@pytest.fixture
def env(monkeypatch):
    """The tests' process environment: the venv first, one worker, the fake S3 credentials."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "RAWDRIFT_WORKERS": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return dict(os.environ)


@pytest.fixture
def s3(env):
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    import boto3
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket="rawdrift")
    yield f"http://{host}:{port}", client
    server.stop()


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with two fake GPUs (Ray sets CUDA_VISIBLE_DEVICES per task)."""
    ray = pytest.importorskip("ray", reason="pip install -r requirements-fanout.txt")
    saved = dict(os.environ)            # Ray's workers get the credentials from their environment
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1", RAWDRIFT_WORKERS="1")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)


def tiny_project(dest: Path, toy: bool = False) -> Path:
    """This repository's working tree (code, dvc.yaml) with a tiny microscopy profile, committed."""
    sh(["git", "clone", "-q", str(ROOT), str(dest)], ROOT)
    for path in ("rawdrift", "stages", "dvc.yaml"):
        src, dst = ROOT / path, dest / path
        if src.is_dir():
            shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(folds=3, intensities=[1.0])
    params["data"]["microscopy"].update(count=18, tile=32)
    params["data"]["drone"].update(count=6, tile=32)
    params["train"]["microscopy"].update(epochs=1, batch_size=6)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if toy:
        dvc_yaml = yaml.safe_load((dest / "dvc.yaml").read_text())
        dvc_yaml["stages"].update(TOY_STAGES)
        (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    commit(dest, "tiny profile")
    return dest


def add_s3_remote(repo: Path, endpoint: str) -> None:
    """The remote in .dvc/config (committed), its endpoint in .dvc/config.local; credentials from the env."""
    sh(["dvc", "remote", "add", "-d", "shared", "s3://rawdrift/cache"], repo)
    sh(["dvc", "remote", "modify", "--local", "shared", "endpointurl", endpoint], repo)
    commit(repo, "remote")


def bucket_keys(client) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket="rawdrift").get("Contents", [])}


def test_fanout_ray_s3_restores_both_train_stages_byte_identical(tmp_path, env, s3, ray_cluster):
    endpoint, client = s3
    a = tiny_project(tmp_path / "a")
    add_s3_remote(a, endpoint)
    report = fanout(a, TARGETS, engine="ray", gpus=1, finish_all=False, workdir=tmp_path / "work",
                    log=lambda _: None)
    assert report.failed == [] and [r.stage for r in report.results] == TARGETS, [r.log for r in report.results]
    assert report.upstream == ["fetch@microscopy", "render@microscopy"]
    assert report.rerun == []
    for stage in TARGETS:                           # restored from the pulled run-cache, not rerun
        assert RESTORED.format(stage) in report.finish_output, report.finish_output
    assert "Running stage" not in report.finish_output, report.finish_output
    assert len(sh(["git", "worktree", "list"], a).stdout.splitlines()) == 1     # worktrees removed
    assert not list((tmp_path / "work" / "tasks").iterdir())
    keys = bucket_keys(client)
    assert any(k.startswith("cache/runs/") for k in keys) and any(k.startswith("cache/files/md5/") for k in keys)
    for f in (a / ".dvc/config", a / ".dvc/config.local"):       # credentials only in the environment
        assert "testing" not in f.read_text() and "secret" not in f.read_text()

    b = tmp_path / "b"                               # a plain dvc repro of the same two stages
    sh(["git", "clone", "-q", str(a), str(b)], tmp_path)
    out = sh(["dvc", "repro", *TARGETS], b, env).stdout
    assert all(f"Running stage '{s}'" in out for s in TARGETS), out
    for view in ("bi_s_ga", "bi_s_me"):
        for f in (f"metrics/train/microscopy/{view}.json", f"models/microscopy/{view}/fold0.safetensors"):
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert sh(["dvc", "status", *TARGETS], a, env).stdout.strip() == "Data and pipelines are up to date."


def test_fanout_ray_reports_a_failing_stage_and_lands_nothing_of_it(tmp_path, env, s3, ray_cluster):
    endpoint, client = s3
    a = tiny_project(tmp_path / "a", toy=True)
    add_s3_remote(a, endpoint)
    report = fanout(a, ["toy_*"], engine="ray", gpus=0.25, workdir=tmp_path / "work", log=lambda _: None)
    assert report.failed == ["toy_boom"], [r.log for r in report.results]
    boom = next(r for r in report.results if r.stage == "toy_boom")
    assert boom.returncode != 0 and "failed to reproduce 'toy_boom'" in boom.log, boom.log
    assert "Running stage" not in report.finish_output                  # the driver never runs it
    for stage in ("toy_ok", "toy_ok2"):
        assert RESTORED.format(stage) in report.finish_output, report.finish_output
    assert (a / "toy_ok.txt").read_text() == "ok" and not (a / "toy_boom.txt").exists()
    assert "toy_boom" not in (a / "dvc.lock").read_text()
    objects = {k.rsplit("/", 2)[-2] + k.rsplit("/", 1)[-1] for k in bucket_keys(client) if "/files/md5/" in k}
    import hashlib
    assert hashlib.md5(b"ok").hexdigest() in objects and hashlib.md5(b"half").hexdigest() not in objects
    assert len(sh(["git", "worktree", "list"], a).stdout.splitlines()) == 1


def test_fanout_submitit_local_with_a_shared_cache(tmp_path, env):
    pytest.importorskip("submitit", reason="pip install -r requirements-fanout.txt")
    a = tiny_project(tmp_path / "a", toy=True)
    report = fanout(a, ["toy_ok*"], engine="submitit", submitit_cluster="local", shared_cache=True,
                    finish_all=False, workdir=tmp_path / "work", log=lambda _: None)
    assert report.failed == [] and report.rerun == []
    for stage in ("toy_ok", "toy_ok2"):        # the run-cache is in the shared cache: no remote, no push
        assert RESTORED.format(stage) in report.finish_output, report.finish_output
    assert (a / "toy_ok2.txt").read_text() == "ok2"


def test_fanout_cli_local_engine_and_errors(tmp_path, env):
    a = tiny_project(tmp_path / "a", toy=True)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return sh([sys.executable, "-m", "rawdrift.fanout", *args], a, env, ok=False)

    for args, message in [(("--engine", "dask"), "error: unknown engine 'dask'"),
                          (("nosuch@*", "--engine", "local"), "error: no stage matches 'nosuch@*'"),
                          (("toy_ok", "--engine", "local", "--gpus", "0.5"), "error: --gpus 0.5")]:
        r = cli(*args)
        assert r.returncode != 0 and r.stderr.startswith(message) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("toy_*", "--engine", "local", "--shared-cache", "--only", "-j", "2")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == "error: stage(s) failed: toy_boom", r.stderr
    assert "2 stage(s) fanned out and restored, 1 failed" in r.stdout
    assert not (a / "toy_boom.txt").exists()
    commit(a, "results")
    (a / "stray.txt").write_text("x")
    r = cli("toy_ok", "--engine", "local")
    assert r.returncode == 1 and r.stderr.startswith("error: working tree is dirty (stray.txt"), r.stderr
