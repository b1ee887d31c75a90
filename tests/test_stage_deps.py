"""DVC sees all code a stage runs: code deps are the scripts' import closures (rawdrift.stage_deps)."""

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rawdrift.stage_deps import closure, imported_modules, stale_stages, write_deps

ROOT = Path(__file__).resolve().parents[1]


def test_dvc_yaml_code_deps_are_the_import_closures_of_the_stage_scripts():
    """Fails when a stage imports a rawdrift module (even lazily) that its deps do not list:
    `python -m rawdrift.stage_deps --write` regenerates them."""
    assert stale_stages(ROOT) == {}


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_closure_follows_lazy_relative_and_package_imports(tmp_path):
    root = tree(tmp_path, {
        "stages/s.py": "import numpy as np\nfrom rawdrift import a\n",
        "rawdrift/__init__.py": "",
        "rawdrift/a.py": "def f():\n    from rawdrift.sub import b   # lazy: still runs\n    return b\n",
        "rawdrift/sub/__init__.py": "",
        "rawdrift/sub/b.py": "from . import c\nfrom .c import x\n",
        "rawdrift/sub/c.py": "import rawdrift.deep.d\nx = 1\n",
        "rawdrift/deep/__init__.py": "",
        "rawdrift/deep/d.py": "",
        "rawdrift/unused.py": "import rawdrift.a\n",
    })
    assert closure(root, "stages/s.py") == [
        "rawdrift/__init__.py", "rawdrift/a.py", "rawdrift/deep/__init__.py", "rawdrift/deep/d.py",
        "rawdrift/sub/__init__.py", "rawdrift/sub/b.py", "rawdrift/sub/c.py"]
    # an __init__'s relative import is relative to the package itself
    assert imported_modules("from . import x", "rawdrift.sub", is_package=True) == {"rawdrift", "rawdrift.sub",
                                                                                    "rawdrift.sub.x"}
    assert imported_modules("from .. import y", "rawdrift.sub.b") == {"rawdrift", "rawdrift.y"}


def test_params_validation_imports_no_other_rawdrift_module():
    """Every stage imports rawdrift.params; it must not drag the package into every closure:
    the config model needs its field checkers and its errors, nothing else."""
    assert closure(ROOT, "rawdrift/params.py") == ["rawdrift/__init__.py", "rawdrift/checks.py", "rawdrift/errors.py"]
    assert closure(ROOT, "rawdrift/checks.py") == ["rawdrift/__init__.py", "rawdrift/errors.py"]


def test_write_adds_a_new_lazy_import_and_keeps_data_deps_and_comments(tmp_path):
    for path in ("rawdrift", "stages"):
        shutil.copytree(ROOT / path, tmp_path / path, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    with open(tmp_path / "rawdrift/rendering.py", "a") as f:
        f.write("\n\ndef _split_helper():\n    from rawdrift.splits import stratified_folds\n    return stratified_folds\n")
    stale = stale_stages(tmp_path)
    assert set(stale) == {"render"}
    assert stale["render"] == (["rawdrift/splits.py"], [])
    before = (tmp_path / "dvc.yaml").read_text()
    assert write_deps(tmp_path) == ["render"]
    after = (tmp_path / "dvc.yaml").read_text()
    assert stale_stages(tmp_path) == {}
    # one line more (the new dep, in order), everything else (comments, flow lists, data deps) as it was
    diff = [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d.startswith(("+ ", "- "))]
    assert diff == ["+         - rawdrift/splits.py"]
    render = yaml.safe_load(after)["stages"]["render"]["do"]["deps"]
    assert render[-1] == "data/raw/${item}" and "rawdrift/splits.py" in render
    assert write_deps(tmp_path) == []          # idempotent


@pytest.mark.slow     # eight dvc commands; test_dvc_yaml_code_deps_are_... checks the same deps statically

def test_dvc_status_sees_a_change_in_any_module_the_stage_imports(tmp_path):
    """With DVC itself: after `dvc repro` of fetch+render, touching a module in render's closure
    that the hand-written deps missed (sensor.py, params.py) makes `dvc status` list render;
    touching one outside it (forensics.py) does not."""
    wd = tmp_path / "proj"
    wd.mkdir()
    for path in ("rawdrift", "stages"):
        shutil.copytree(ROOT / path, wd / path, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", wd / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(seed=1, device="cpu")
    params["data"].update(source="synthetic", folds=3, intensities=[1.0])
    params["data"]["microscopy"].update(count=12, tile=16)
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, RAWDRIFT_WORKERS="1", PYTHONPATH=str(wd))   # the copy is the code that runs
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"

    def sh(*cmd: str) -> str:
        r = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "repro", "-q", "render@microscopy")
    targets = ("fetch@microscopy", "render@microscopy")

    def stale() -> set[str]:
        out = sh("dvc", "status", *targets)
        return {t for t in targets if f"{t}:" in out}

    assert stale() == set()
    with open(wd / "rawdrift/forensics.py", "a") as f:
        f.write("\n# not imported by fetch or render\n")
    assert stale() == set()
    with open(wd / "rawdrift/params.py", "a") as f:     # both stages import it
        f.write("\n# touched\n")
    assert stale() == {"fetch@microscopy", "render@microscopy"}
    sh("dvc", "repro", "-q", "render@microscopy")
    assert stale() == set()
    with open(wd / "rawdrift/isp/__init__.py", "a") as f:  # render's closure, not fetch's
        f.write("\n# touched\n")
    assert stale() == {"render@microscopy"}


def test_study_pipelines_are_covered_with_their_path_to_the_root():
    """A study's stages run from studies/<name>/ and name code as ../../...: the same closure, prefixed."""
    from rawdrift.stage_deps import expected_deps, pipeline_files, stage_script
    assert Path("studies/scale/dvc.yaml") in pipeline_files(ROOT)
    assert stage_script("python ../../stages/scale_study.py") == "stages/scale_study.py"
    deps = expected_deps(ROOT, ["../../stages/old.py", "../../rawdrift/gone.py", "results"], "stages/scale_study.py",
                         "../../")
    assert deps[0] == "../../stages/scale_study.py" and deps[-1] == "results"
    assert "../../rawdrift/scale_study.py" in deps and "../../rawdrift/sources/microscopy.py" in deps
    assert not any(d.endswith(("old.py", "gone.py")) for d in deps)
