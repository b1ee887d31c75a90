"""DVC's own screens on the whole DAG at the tiny profile (``make demo``, run once for the module).

``dvc exp show`` must show the headline figures in a 200-column terminal; after
``dvc exp run -S forensics.lambda=1e-3`` only ``forensics@*`` reruns and ``dvc metrics diff``
lists a screenful of rows, all of them forensic headline figures; ``dvc plots show`` draws the
cross-evaluation matrices from data.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rawdrift import demo
from rawdrift.headline import GROUP, PREFIX, flatten

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 200
V = len(demo.PROFILE["views"])    # the demo's views: V train stages per dataset, a V x V matrix
SUMMARY_KEYS = [f"{p}.{k}" for p in PREFIX.values() for k in ("diag", "off", "drop", "cdrop", "ratio", "top3")]


def dvc(ws: Path, *args: str, width: int = WIDTH) -> str:
    env = dict(demo._env(), COLUMNS=str(width), LINES="50")
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, f"dvc {' '.join(args)}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The demo: code copied to a scratch git + DVC repository, `dvc repro` at the tiny profile, committed."""
    return demo.run_demo(tmp_path_factory.mktemp("demo") / "ws", quiet=True)


@pytest.fixture(scope="module")
def forensics_exp(workspace):
    """`dvc exp run -S forensics.lambda=1e-3` in the demo workspace: its output."""
    return dvc(workspace, "exp", "run", "-S", "forensics.lambda=1e-3")


def test_demo_leaves_the_source_untouched_and_writes_every_artifact(workspace):
    assert not subprocess.run(["git", "status", "--porcelain"], cwd=workspace, capture_output=True,
                              text=True).stdout.strip()                       # everything committed
    assert (workspace / ".dvc/cache").is_dir() and (workspace / ".git").is_dir()
    for ds, p in PREFIX.items():
        assert (workspace / f"plots/crosseval/{ds}.csv").read_text().count("\n") == 1 + V * V
        assert set(flatten(json.loads((workspace / f"metrics/headline/forensics_{ds}.json").read_text()))) >= {
            f"{p}.l2.{g}" for g in GROUP.values()}
        assert len(list((workspace / f"metrics/headline/train/{ds}").glob("*.json"))) == V
    summary = flatten(json.loads((workspace / "metrics/headline/summary.json").read_text()))
    assert sorted(summary) == sorted(SUMMARY_KEYS)
    text = demo.tour(workspace)
    assert str(workspace) in text and "metrics/headline/" in text


def test_only_headline_files_are_metrics(workspace):
    shown = json.loads(dvc(workspace, "metrics", "show", "--json"))
    files = {f for rev in shown.values() for f in rev["data"]}
    assert files and all(f.startswith("metrics/headline/") for f in files), files
    assert len(files) == 1 + 2 * 2 + 2 * V
    assert sum(len(flatten(rev["data"][f]["data"])) for rev in shown.values() for f in rev["data"]) < 100


def test_exp_show_fits_the_headline_figures_in_200_columns(workspace, forensics_exp):
    """What the first 200 columns of `dvc exp show` show: every summary figure, whole, for the
    workspace, the commit and the experiment (the pager scrolls right to the rest)."""
    out = dvc(workspace, "exp", "show")
    lines = [line[:WIDTH] for line in out.splitlines()]
    (h,) = [i for i, line in enumerate(lines) if "Experiment" in line]
    header = lines[h]
    summary = flatten(json.loads((workspace / "metrics/headline/summary.json").read_text()))
    keys = [k for k in SUMMARY_KEYS if summary[k] is not None]     # a ratio over a zero drop is null: no column
    assert header.split()[:2 + len(keys)] == ["Experiment", "Created", *keys], header
    rows = [line for line in lines[h + 1:] if line.strip() and set(line.strip()) != {"─"}]
    assert len(rows) == 3 and rows[0].split()[0] == "workspace" and "[" in rows[2], out
    for key in keys:                         # right-aligned under its header, a number, not an ellipsis
        end = header.index(f" {key} ") + 1 + len(key)
        for row in rows:
            float(row[:end].split()[-1])


def test_forensics_experiment_reruns_forensics_only_and_metrics_diff_lists_what_changed(workspace, forensics_exp):
    ran = re.findall(r"Running stage '([^']+)'", forensics_exp)
    assert sorted(ran) == ["forensics@drone", "forensics@microscopy"], forensics_exp
    out = dvc(workspace, "metrics", "diff")
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    assert 1 <= len(rows) <= 40, out
    assert all(re.fullmatch(r"metrics/headline/forensics_(microscopy|drone)\.json", r[0]) for r in rows), out
    assert all(re.fullmatch(r"(mic|dro)\.(l2|lam)\.\w+", r[1]) for r in rows), out
    everything = dvc(workspace, "metrics", "diff", "--all").splitlines()[1:]      # unchanged rows too
    assert len(everything) >= 12 + 2 * V + len(rows), everything


def test_plots_show_draws_the_matrices_from_data(workspace, forensics_exp):
    shown = json.loads(dvc(workspace, "plots", "show", "--json"))
    assert not shown.get("errors"), shown.get("errors")
    for ds, metric in (("microscopy", "accuracy"), ("drone", "iou")):
        (plot,) = shown["data"][f"{ds}_crosseval"]
        assert plot["type"] == "vega"
        values = plot["content"]["data"]["values"]
        assert len(values) == V * V and {"train_view", "test_view", metric} <= set(values[0])
        curves = shown["data"][f"{ds}_val_{metric}"][0]["content"]["data"]["values"]
        assert {v["view"] for v in curves} == set(demo.PROFILE["views"])     # one line per train view
        assert {v["step"] for v in curves} == {"0"}                           # the demo's one epoch
        band = shown["data"][f"{ds}_optimize"][0]["content"]["data"]["values"]     # figure 7, from data
        assert band and {"step", "setting", metric} <= set(band[0])
    diff = json.loads(dvc(workspace, "plots", "diff", "HEAD", "--json"))
    (plot,) = diff["data"]["microscopy_crosseval"]
    assert {v["rev"] for v in plot["content"]["data"]["values"]} == {"HEAD", "workspace"}   # one panel per run


def test_profile_overrides_and_a_checkout_without_git(tmp_path):
    """What `make gpu-check` builds on: the device param laid over the tiny profile, and the
    files to copy from a copy of the working tree that has no .git (as a GPU machine gets it)."""
    p = demo.profile(ROOT, {"device": "cuda", "train": {"microscopy": {"epochs": 3}}})
    assert p["device"] == "cuda" and p["precision"] == demo.PROFILE["precision"]
    assert p["train"]["microscopy"]["epochs"] == 3 and p["train"]["microscopy"]["arch"] == "resnet18"
    assert demo.profile(ROOT)["device"] == "cpu"
    files = demo.code_files(ROOT)
    for f in files + [".venv/bin/python", "data/raw/x.npy", "rawdrift/__pycache__/a.pyc", ".whl/a.whl"]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    assert sorted(demo.code_files(tmp_path)) == sorted(files)
