"""A shared DVC cache on S3 (dvc-s3) with the run-cache, against a local S3 server (moto).

One clone runs the train stage and pushes outputs and run-cache (``dvc push --run-cache``,
then ``python -m rawdrift.share`` for the ``cache: false`` outputs that DVC leaves behind); a
second clone, without the first one's dvc.lock, runs ``dvc repro --pull``, which pulls the
run-cache and restores the stages instead of running them. This is how several machines
share one train matrix.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

moto_server = pytest.importorskip("moto.moto_server.threaded_moto_server", reason="pip install -r requirements-test.txt")
pytest.importorskip("dvc_s3", reason="pip install -r requirements-test.txt")

ROOT = Path(__file__).resolve().parents[1]
TARGET = "train@microscopy-bi_s_ga"


@pytest.fixture
def s3():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", RAWDRIFT_WORKERS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    import boto3
    boto3.client("s3", endpoint_url=f"http://{host}:{port}", aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket="rawdrift")
    yield f"http://{host}:{port}", env
    server.stop()


def sh(cmd: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def small_project(dest: Path, env: dict) -> None:
    """The repository's committed state (code, dvc.yaml) with a tiny microscopy profile."""
    sh(["git", "clone", "-q", str(ROOT), str(dest)], ROOT, env)
    for path in ("rawdrift", "stages", "dvc.yaml"):           # the working tree under test
        src, dst = ROOT / path, dest / path
        if src.is_dir():
            shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(folds=2, intensities=[1.0])
    params["data"]["microscopy"].update(count=12, tile=16)
    params["train"]["microscopy"].update(epochs=1, batch_size=4)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "add", "-A"], dest, env)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny profile"], dest, env)


def test_second_clone_restores_the_train_stage_from_the_s3_run_cache(tmp_path, s3):
    endpoint, env = s3
    a, b = tmp_path / "a", tmp_path / "b"
    small_project(a, env)
    for clone in (a,):
        sh(["dvc", "remote", "add", "-d", "shared", "s3://rawdrift/cache"], clone, env)
        sh(["dvc", "remote", "modify", "--local", "shared", "endpointurl", endpoint], clone, env)
    out = sh(["dvc", "repro", TARGET], a, env)
    assert f"Running stage '{TARGET}'" in out
    sh(["git", "add", "-A"], a, env)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "remote"], a, env)
    sh(["dvc", "push", "--run-cache"], a, env)
    out = sh([sys.executable, "-m", "rawdrift.share"], a, env)
    assert out.startswith("pushed ") and "(3 entries)" in out, out

    sh(["git", "clone", "-q", str(a), str(b)], tmp_path, env)
    (b / "dvc.lock").unlink()            # b knows nothing of a's results but the shared run-cache
    sh(["dvc", "remote", "modify", "--local", "shared", "endpointurl", endpoint], b, env)
    out = sh(["dvc", "repro", "--pull", TARGET], b, env)
    assert "Running stage" not in out, out
    for stage in ("fetch@microscopy", "render@microscopy", TARGET):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in out, out
    for f in ("models/microscopy/bi_s_ga/fold0.safetensors", "metrics/train/microscopy/bi_s_ga.json",
              "metrics/headline/train/microscopy/bi_s_ga.json"):
        assert (b / f).read_bytes() == (a / f).read_bytes(), f
