"""The fetch and render stage scripts end to end, and what bad input gets."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import ROOT, stage
from rawdrift.camera import Camera
from rawdrift.errors import RawdriftError
from rawdrift.io import atomic_dir
from rawdrift.isp import VIEWS
from rawdrift.rendering import render_stack
from rawdrift.runtime import native_bf16
from rawdrift.sensor import intensity_name
from rawdrift.sources.store import load_raw_dataset, load_view

SMALL = {"seed": 1, "device": "cpu", "precision": "auto", "deterministic": True, "compile": "none",
         "views": list(VIEWS),
         "data": {"source": "synthetic", "folds": 3, "intensities": [0.1, 1.0],
                  "microscopy": {"count": 18, "tile": 32}, "drone": {"count": 6, "tile": 32}}}


def project(tmp_path: Path, params: dict | str) -> Path:
    text = params if isinstance(params, str) else yaml.safe_dump(params)
    (tmp_path / "params.yaml").write_text(text)
    return tmp_path


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    wd = project(tmp_path_factory.mktemp("proj"), SMALL)
    for ds in ("microscopy", "drone"):
        r = stage(wd, "fetch.py", ds)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"fetch@{ds}: ")
    return wd


def test_fetch_then_render(fetched):
    r = stage(fetched, "render.py", "drone")
    assert r.returncode == 0, r.stderr
    assert "view-images/s" in r.stdout
    ds = load_raw_dataset(fetched / "data/raw/drone", verify=True)
    for view in VIEWS:
        v = load_view(fetched / "data/views/drone", view)
        assert v.shape == (6, 3, 32, 32) and v.dtype == np.float32 and 0 <= v.min() and v.max() <= 1
    assert (fetched / "plots/views/drone.png").stat().st_size > 10_000
    assert not [p for p in (fetched / "data/views").iterdir() if p.name.startswith(".")]   # no temp leftovers
    assert ds.meta["folds"] == 3


BAD_PARAMS = [
    ({"data": {"microscopy": {"count": -5}}}, "data.microscopy.count"),
    ({"data": {"microscopy": {"tile": 33}}}, "data.microscopy.tile"),
    ({"data": {"intensities": [0.5, 1.5, 1.0]}}, "data.intensities"),
    ({"data": {"intensities": [0.0, 1.0]}}, "data.intensities"),
    ({"data": {"source": "cloud"}}, "data.source"),
    ({"data": {"folds": 1}}, "data.folds"),
    ({"data": {"intensities": [0.1, 0.1, 1.0]}}, "data.intensities"),
    ({"data": {"microscopy": {"optics": "zoom"}}}, "data.microscopy.optics"),
    ({"seed": -1}, "seed"),
]


def merge(base: dict, patch: dict) -> dict:
    out = json.loads(json.dumps(base))
    for k, v in patch.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


@pytest.mark.parametrize("patch, name", BAD_PARAMS)
def test_bad_params_fail_with_one_line_naming_the_param(tmp_path, patch, name):
    wd = project(tmp_path, merge(SMALL, patch))
    r = stage(wd, "fetch.py", "microscopy")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0]
    assert not (wd / "data/raw/microscopy").exists()


@pytest.mark.parametrize("patch, line", [
    ({"data": {"microscopy": {"count": 2}}}, "error: params.yaml: data.microscopy.count: must be an integer >= 3, got 2"),
    ({"data": {"microscopy": {"tile": 33}}}, "error: params.yaml: data.microscopy.tile: must be even (whole RGGB cells), "
                                             "got 33"),
    ({"data": {"intensities": [0.5, 1.5, 1.0]}}, "error: params.yaml: data.intensities[1]: must be a number in (0, 1], "
                                                 "got 1.5"),
    ({"data": {"source": "cloud"}}, "error: params.yaml: data.source: must be one of synthetic, folder, zenodo, "
                                    "got 'cloud'"),
    ({"data": {"microscopy": {"optics": "zoom"}}}, "error: params.yaml: data.microscopy.optics: must be one of "
                                                   "matched, objective, got 'zoom'"),
    ({"data": {"source": "folder"}}, "error: params.yaml: data.microscopy.path: must be the folder to read "
                                     "(data.source: folder), got None"),
])
def test_param_errors_read_file_block_key_and_value(tmp_path, patch, line):
    """The config model words the value; the stage adds the file and the block: one whole line."""
    wd = project(tmp_path, merge(SMALL, patch))
    r = stage(wd, "fetch.py", "microscopy")
    assert r.returncode == 1 and r.stderr.strip() == line
    assert not (wd / "data").exists()


def test_device_errors_name_the_param(tmp_path):
    """resolve_device names the value ``device``; the stage says it came from params.yaml."""
    wd = project(tmp_path, merge(merge(SMALL, TRAIN), {"device": "gpu"}))
    r = stage(wd, "train.py", "microscopy", "bi_s_ga")
    assert r.returncode == 1 and r.stderr.strip() == ("error: params.yaml: device: "
                                                      "must be one of auto, cpu, cuda, got 'gpu'")
    wd = project(tmp_path, merge(merge(SMALL, TRAIN), {"train": {"microscopy": {"epochs": 0}}}))
    r = stage(wd, "train.py", "microscopy", "bi_s_ga")
    assert r.returncode == 1 and r.stderr.strip() == ("error: params.yaml: train.microscopy.epochs: "
                                                      "must be an integer >= 1, got 0")
    wd = project(tmp_path, merge(merge(SMALL, TRAIN), {"train": {"views": {"microscopy-bi_s_ga": {"lr": 0}}}}))
    r = stage(wd, "train.py", "microscopy", "bi_s_ga")
    assert r.returncode == 1 and r.stderr.strip() == ("error: params.yaml: train.views.microscopy-bi_s_ga.lr: "
                                                      "must be a number > 0, got 0")
    assert not (wd / "models").exists() and not (wd / "metrics").exists()


def test_device_auto_and_a_bad_deterministic_flag_are_refused_by_stages(tmp_path):
    """A stage's device must be named: DVC's run-cache keys on the param, not on what auto resolves to."""
    wd = project(tmp_path, merge(merge(SMALL, TRAIN), {"device": "auto"}))
    for script, args in (("train.py", ("microscopy", "bi_s_ga")), ("render.py", ("microscopy",))):
        r = stage(wd, script, *args)
        assert r.returncode == 1 and r.stderr.strip() == (
            "error: params.yaml: device: auto is resolved only when a stage runs, where DVC's run-cache cannot "
            "see it: name the device (cpu or cuda, e.g. -S device=cuda)")
    wd = project(tmp_path, merge(merge(SMALL, TRAIN), {"deterministic": "yes"}))
    r = stage(wd, "train.py", "microscopy", "bi_s_ga")
    assert r.returncode == 1 and r.stderr.strip() == "error: params.yaml: deterministic: must be true or false, got 'yes'"


@pytest.mark.parametrize("views, line", [
    (["bi_s_ga"], "views: must list at least 2 views (a cross evaluation needs an off-diagonal), got ['bi_s_ga']"),
    (["bi_s_me", "ma_s_ga"], "views: must include bi_s_ga (the reference view forensics starts from), "
                             "got ['bi_s_me', 'ma_s_ga']"),
    (["bi_s_ga", "bi_s_ga"], "views: lists 'bi_s_ga' twice"),
    (["bi_s_ga", "xx_s_ga"], "views[1]: must be one of bi_s_me, bi_s_ga, "),
])
def test_views_param_errors_name_the_entry(fetched, tmp_path, views, line):
    wd = project(tmp_path, merge(SMALL, {"views": views}))
    shutil.copytree(fetched / "data/raw/drone", wd / "data/raw/drone")
    r = stage(wd, "render.py", "drone")
    assert r.returncode == 1 and r.stderr.strip().startswith(f"error: params.yaml: {line}"), r.stderr
    assert not (wd / "data/views").exists()


def test_render_writes_the_listed_views_only(fetched, tmp_path):
    wd = project(tmp_path, merge(SMALL, {"views": ["me_u_me", "bi_s_ga"]}))
    shutil.copytree(fetched / "data/raw/drone", wd / "data/raw/drone")
    r = stage(wd, "render.py", "drone")
    assert r.returncode == 0 and r.stdout.startswith("render@drone: 2 views x 6 tiles"), r.stdout + r.stderr
    assert sorted(p.name for p in (wd / "data/views/drone").iterdir()) == ["bi_s_ga.npy", "me_u_me.npy"]
    ds = load_raw_dataset(wd / "data/raw/drone")
    render_stack(ds.root / f"{intensity_name(1.0)}.npy", ds.camera, tmp_path / "one", views=("me_u_me",), workers=1)
    np.testing.assert_array_equal(load_view(wd / "data/views/drone", "me_u_me"), load_view(tmp_path / "one", "me_u_me"))


def test_unknown_dataset_malformed_and_missing_params(tmp_path):
    r = stage(project(tmp_path, SMALL), "fetch.py", "satellite")
    assert r.returncode == 1 and "unknown dataset 'satellite'" in r.stderr
    r = stage(project(tmp_path, "data: [unclosed\n"), "fetch.py", "drone")
    assert r.returncode == 1 and "params.yaml: malformed YAML" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "params.yaml").unlink()
    r = stage(tmp_path, "fetch.py", "drone")
    assert r.returncode == 1 and r.stderr.strip() == "error: params.yaml: file not found"


def test_render_reports_corrupt_and_changed_files_by_name(fetched, tmp_path):
    wd = project(tmp_path, SMALL)
    shutil.copytree(fetched / "data/raw/microscopy", wd / "data/raw/microscopy")
    raw_path = wd / "data/raw/microscopy/raw_scale100.npy"
    data = raw_path.read_bytes()
    raw_path.write_bytes(data[: len(data) // 2])                    # truncated download
    r = stage(wd, "render.py", "microscopy")
    assert r.returncode == 1 and "raw_scale100.npy: checksum mismatch" in r.stderr
    assert not (wd / "data/views/microscopy").exists()
    with pytest.raises(RawdriftError, match="truncated or corrupt"):
        load_raw_dataset(wd / "data/raw/microscopy").raw(1.0)


@pytest.mark.parametrize("path", ["cpu", "torch"])
def test_render_rejects_wrong_bit_depth_and_odd_sides(tmp_path, path):
    """Both render paths (worker processes, batched torch) check the stack before writing."""
    from rawdrift.camera import CAMERAS
    from rawdrift.rendering import render_stack, render_stack_torch

    def render(name):
        if path == "cpu":
            return render_stack(tmp_path / name, CAMERAS["drone"], tmp_path / "views", workers=1, progress=False)
        return render_stack_torch(tmp_path / name, CAMERAS["drone"], tmp_path / "views", "cpu", progress=False)

    np.save(tmp_path / "float.npy", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(RawdriftError, match="float.npy: expected uint16"):
        render("float.npy")
    np.save(tmp_path / "odd.npy", np.zeros((2, 7, 8), np.uint16))
    with pytest.raises(RawdriftError, match="odd.npy: raw sides must be even"):
        render("odd.npy")
    assert not (tmp_path / "views").exists()


def test_unknown_class_in_labels(fetched, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(fetched / "data/raw/microscopy", root)
    text = (root / "labels.csv").read_text().splitlines()
    text[3] = text[3].split(",")[0] + ",XYZ"
    (root / "labels.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(RawdriftError, match=r"labels.csv: line 4: unknown class 'XYZ'"):
        load_raw_dataset(root).labels()


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.npy").write_bytes(b"x")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_camera_validation_and_json(tmp_path):
    with pytest.raises(RawdriftError, match="black_level: expected 4"):
        Camera([0.1, 0.1], [1, 1, 1], np.eye(3))
    with pytest.raises(RawdriftError, match="singular"):
        Camera([0] * 4, [1, 0, 1], np.eye(3))
    with pytest.raises(RawdriftError, match="finite"):
        Camera([0] * 4, [1, np.nan, 1], np.eye(3))
    (tmp_path / "camera.json").write_text("{not json")
    with pytest.raises(RawdriftError, match="camera.json: not valid JSON"):
        Camera.load(tmp_path / "camera.json")
    cam = Camera([0.01] * 4, [2, 1, 1.5], np.eye(3))
    assert Camera.from_dict(json.loads(json.dumps(cam.to_dict()))) == cam


TRAIN = {"device": "cpu",
         "train": {"eval_every_epochs": 1, "microscopy": {"epochs": 4, "batch_size": 4, "lr": 0.001},
                   "views": {"microscopy-bi_s_ga": {}}}}


def test_killed_train_stage_reruns_cleanly(fetched, tmp_path):
    """SIGKILL after the first logged epoch leaves no weights behind; the rerun equals a clean run."""
    import signal
    import time
    runs = {}
    for name in ("killed", "clean"):
        (tmp_path / name).mkdir()
        wd = project(tmp_path / name, merge(SMALL, TRAIN))
        shutil.copytree(fetched / "data/raw/microscopy", wd / "data/raw/microscopy")
        assert stage(wd, "render.py", "microscopy").returncode == 0
        if name == "killed":
            env = dict(os.environ, RAWDRIFT_WORKERS="1")
            proc = subprocess.Popen([sys.executable, str(ROOT / "stages/train.py"), "microscopy", "bi_s_ga"], cwd=wd,
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            live = wd / "plots/train/microscopy/bi_s_ga/metrics.json"
            deadline = time.time() + 120
            while not live.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, "training finished before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert not (wd / "models/microscopy/bi_s_ga").exists()
            assert not (wd / "metrics/train/microscopy/bi_s_ga.json").exists()
        r = stage(wd, "train.py", "microscopy", "bi_s_ga")
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in (wd / "models/microscopy/bi_s_ga").iterdir()) == [
            "fold0.safetensors", "fold1.safetensors", "fold2.safetensors", "model.json"]
        runs[name] = json.loads((wd / "metrics/train/microscopy/bi_s_ga.json").read_text())
    assert runs["killed"] == runs["clean"]


CORR = {"corruptions": {"names": ["gaussian_noise", "contrast"], "severities": [1, 3], "summary_severity": 3,
                        "reference_tile": 256}}


@pytest.mark.parametrize("patch, msg", [
    ({"names": ["fog"]}, "error: params.yaml: corruptions.names[0]: must be one of gaussian_noise, "),
    ({"severities": [3, 6]}, "error: params.yaml: corruptions.severities[1]: must be an integer in [1, 5], got 6"),
])
def test_corruptions_stage_rejects_bad_params(tmp_path, patch, msg):
    wd = project(tmp_path, merge(SMALL, merge(CORR, {"corruptions": patch})))
    r = stage(wd, "corruptions.py", "drone")
    assert r.returncode == 1 and r.stderr.strip().startswith(msg) and len(r.stderr.strip().splitlines()) == 1
    assert not (wd / "metrics").exists()


def fake_results(rng, k=3, n=12, columns=3, severities=(1, 3)):
    """Crosseval and corruption results with the contract's shapes (mean/std computed from per_fold)."""
    def block(shape):
        pf = rng.uniform(0.3, 0.9, (k, *shape))
        return {"mean": pf.mean(0).tolist(), "std": pf.std(0, ddof=1).tolist(), "per_fold": pf.tolist()}
    cross = {"metric": "accuracy", "views": list(VIEWS), "folds": k, **block((n, n))}
    for i in range(n):      # the diagonal is the best cell of each row
        cross["mean"][i][i] = 0.95
    corr = {"metric": "accuracy", "views": list(VIEWS), "columns": ["identity", "gaussian_noise", "contrast"],
            "corruptions": ["gaussian_noise", "contrast"], "severities": list(severities), "folds": k, "scale": 0.125,
            "seed": 1, "severity": {str(s): block((n, columns)) for s in severities}}
    for s in severities:
        for i in range(n):
            corr["severity"][str(s)]["mean"][i][0] = cross["mean"][i][i]
    return cross, corr


def test_summary_stage_compares_view_drift_with_corruptions(fetched, tmp_path):
    wd = project(tmp_path, merge(SMALL, CORR))
    rng = np.random.default_rng(0)
    for ds in ("microscopy", "drone"):
        shutil.copytree(fetched / f"data/raw/{ds}", wd / f"data/raw/{ds}")
        assert stage(wd, "render.py", ds).returncode == 0
        cross, corr = fake_results(rng)
        for kind, obj in (("crosseval", cross), ("corruptions", corr)):
            (wd / "metrics" / kind).mkdir(parents=True, exist_ok=True)
            (wd / "metrics" / kind / f"{ds}.json").write_text(json.dumps(obj))
    r = stage(wd, "summary.py")
    assert r.returncode == 0, r.stderr
    summary = json.loads((wd / "metrics/summary.json").read_text())
    rankings = json.loads((wd / "metrics/rankings.json").read_text())
    for ds in ("microscopy", "drone"):
        cross = json.loads((wd / f"metrics/crosseval/{ds}.json").read_text())
        corr = json.loads((wd / f"metrics/corruptions/{ds}.json").read_text())
        cm, m = np.asarray(cross["mean"]), np.asarray(corr["severity"]["3"]["mean"])
        view_drop = np.diag(cm).mean() - cm[~np.eye(12, dtype=bool)].mean()
        c = summary[ds]["corruptions"]
        assert c["severity"] == 3
        assert c["view_drop"] == pytest.approx(view_drop)
        assert c["corruption_drop"] == pytest.approx(m[:, 0].mean() - m[:, 1:].mean())
        assert c["ratio"] == pytest.approx(c["corruption_drop"] / view_drop)
        assert set(c["per_severity"]) == {"1", "3"}
        assert len(c["top3_isp"]) == 3 and set(c["top_overlap"]) == set(c["top3_isp"]) & set(c["top3_corruptions"])
        assert set(rankings[ds]["corruptions"]["best_train_view_per_column"]) == {"identity", "gaussian_noise",
                                                                                 "contrast"}
        for fig in ("matrices", "tiles"):
            assert (wd / f"plots/comparison/{ds}_{fig}.png").stat().st_size > 10_000


FORENSICS = {"forensics": {"lambda": [100.0, 0.0], "parameters": ["all", "gamma"], "epochs": 2, "lr": 0.05,
                           "batch_size": 4, "search_tiles": 0, "regulariser": "l2", "tolerance": 0.05,
                           "max_batch": 8}}        # two searches of four tiles per pass


def test_forensics_stage_writes_sweep_signature_and_figures(fetched, tmp_path):
    wd = project(tmp_path, merge(merge(SMALL, TRAIN), FORENSICS))
    shutil.copytree(fetched / "data/raw/microscopy", wd / "data/raw/microscopy")
    assert stage(wd, "render.py", "microscopy").returncode == 0
    assert stage(wd, "train.py", "microscopy", "bi_s_ga").returncode == 0
    r = stage(wd, "forensics.py", "microscopy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("forensics@microscopy: 2 groups x 2 lambdas x 3 folds")
    sweep = json.loads((wd / "metrics/forensics/microscopy.json").read_text())
    assert sweep["metric"] == "accuracy" and sweep["lambdas"] == [100.0, 0.0] and sweep["groups"] == ["all", "gamma"]
    assert sweep["settings"]["max_batch"] == 8
    for g in ("all", "gamma"):
        for key in ("1e+02", "0.0"):
            e = sweep["results"][g][key]
            assert len(e["metric"]["per_fold"]) == 3 and 0 <= e["metric"]["mean"] <= 1 and e["l2"]["mean"] >= 0
            assert len(e["parameters"]) == 3 and set(e["parameters"][0]) >= {"gamma", "black_level"}
    assert sweep["results"]["gamma"]["0.0"]["parameters"][0]["black_level"] == pytest.approx(
        sweep["initial"]["black_level"], rel=1e-6)          # unsearched: unchanged (float32 round trip)
    sig = json.loads((wd / "metrics/forensics/microscopy_signature.json").read_text())
    assert set(sig["groups"]) == {"all", "gamma"} and sig["tolerance"] == 0.05
    assert "gamma" in sig["groups"]["gamma"]["most_harmful_change"]
    assert (wd / "metrics/forensics/microscopy_signature.md").read_text().count("\n| ") == 3
    for fig in ("microscopy.png", "microscopy_tiles.png"):
        assert (wd / "plots/forensics" / fig).stat().st_size > 5_000


@pytest.mark.parametrize("patch, msg", [
    ({"lambda": [1.0, -1e-3]}, "error: params.yaml: forensics.lambda[1]: must be a number >= 0, got -0.001"),
    ({"parameters": ["all", "hue"]}, "error: params.yaml: forensics.parameters[1]: must be one of all, "),
])
def test_forensics_stage_rejects_bad_params(tmp_path, patch, msg):
    wd = project(tmp_path, merge(SMALL, merge(FORENSICS, {"forensics": patch})))
    r = stage(wd, "forensics.py", "drone")
    assert r.returncode == 1 and r.stderr.strip().startswith(msg) and len(r.stderr.strip().splitlines()) == 1
    assert not (wd / "metrics").exists() and not (wd / "plots").exists()


def test_only_forensics_stages_read_forensics_params_or_outputs():
    """`dvc exp run -S forensics.lambda=...` reruns forensics@* and nothing else."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        body = st.get("do", st)
        reads = [p for p in body.get("params", []) if isinstance(p, str) and p.startswith("forensics")]
        deps = [d for d in body.get("deps", []) if "forensics" in d and not d.startswith(("stages/", "rawdrift/"))]
        assert (name == "forensics") == bool(reads), name
        assert not deps, (name, deps)


# fp32: bf16 autocast on a CPU is not reproducible run to run at these tiny sizes (1 x 1 feature
# maps), and the concurrent rerun below must give the same bytes
OPTIMIZE = {"precision": "fp32",
            "train": {"drone": {"arch": "unet", "encoder": "resnet18", "encoder_depth": 3,
                                "decoder_channels": [16, 8, 4], "epochs": 1, "batch_size": 2, "lr": 0.001,
                                "loss": "dice_bce"}},
            "optimize": {"modes": ["learned", "frozen", "raw"], "intensities": [0.1, 1.0], "isp_lr": 0.05,
                         "microscopy": {"epochs": 2, "eval_every": 2}, "drone": {"epochs": 2, "eval_every": 1}}}


@pytest.mark.parametrize("dataset", ["microscopy", "drone"])
def test_optimize_stage_writes_table_curves_isps_and_figure(fetched, tmp_path, dataset):
    from rawdrift.optimization import load_isp
    wd = project(tmp_path, merge(merge(SMALL, TRAIN), OPTIMIZE))
    shutil.copytree(fetched / f"data/raw/{dataset}", wd / f"data/raw/{dataset}")
    # one intra-op thread: the same float sums as in each worker of the concurrent rerun below
    threads = {"OMP_NUM_THREADS": "1"} if dataset == "microscopy" else {}
    r = stage(wd, "optimize.py", dataset, **threads)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"optimize@{dataset}: table 2 (")
    m = json.loads((wd / f"metrics/optimize/{dataset}.json").read_text())
    names = {f"{mode}_{s}" for mode in ("learned", "frozen", "raw") for s in ("scale010", "scale100")}
    assert set(m["settings"]) == names and m["metric"] == ("accuracy" if dataset == "microscopy" else "iou")
    for s in m["settings"].values():
        assert s["folds"] == 3 and 0 <= s["table"]["mean"] <= 1 and len(s["final"]["per_fold"]) == 3
        assert len(s["curve"]["step"]) == len(s["curve"]["mean"]) == len(s["curve"]["std"]) >= 2
    curves = (wd / f"plots/optimize/{dataset}/curves.csv").read_text().splitlines()
    assert curves[0] == f"step,setting,fold,{m['metric']}"
    assert len(curves) - 1 == sum(len(s["curve"]["step"]) * 3 for s in m["settings"].values())
    assert (wd / f"plots/optimize/{dataset}/plots/metrics/learned_scale010/val_{m['metric']}.tsv").exists()
    isps = sorted(p.name for p in (wd / f"models/optimize/{dataset}").iterdir())
    assert isps == [f"isp_{s}_fold{k}.json" for s in ("scale010", "scale100") for k in range(3)]
    exported = json.loads((wd / f"models/optimize/{dataset}/isp_scale100_fold2.json").read_text())
    assert load_isp(exported).to_dict()["gamma"][0] == pytest.approx(exported["parameters"]["gamma"][0], rel=1e-6)
    assert (wd / f"plots/optimize/{dataset}.png").stat().st_size > 10_000
    if dataset == "microscopy":     # every fold of every setting in a pool of processes: the same numbers
        r = stage(wd, "optimize.py", dataset, RAWDRIFT_CONCURRENT_FOLDS="1", **threads)
        assert r.returncode == 0, r.stderr
        assert json.loads((wd / f"metrics/optimize/{dataset}.json").read_text()) == m
        assert json.loads((wd / f"models/optimize/{dataset}/isp_scale100_fold2.json").read_text()) == exported


@pytest.mark.parametrize("patch, msg", [
    ({"optimize": {"intensities": [0.05, 1.0]}},
     "error: params.yaml: optimize.intensities: 0.05 is not among the exposures of data/raw/microscopy"),
    ({"optimize": {"modes": ["learned", "learned"]}}, "error: params.yaml: optimize.modes: lists 'learned' twice"),
])
def test_optimize_stage_rejects_bad_params(fetched, tmp_path, patch, msg):
    wd = project(tmp_path, merge(merge(merge(SMALL, TRAIN), OPTIMIZE), patch))
    shutil.copytree(fetched / "data/raw/microscopy", wd / "data/raw/microscopy")
    r = stage(wd, "optimize.py", "microscopy")
    assert r.returncode == 1 and r.stderr.strip().startswith(msg) and len(r.stderr.strip().splitlines()) == 1
    assert not (wd / "metrics").exists() and not (wd / "plots").exists() and not (wd / "models").exists()


def test_optimize_stages_start_from_raw_data_and_alone_read_optimize_params():
    """The DAG of DESIGN.md: fetch -> optimize (no trained models, no views); `-S optimize.*`
    reruns optimize@* only."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    opt = stages["optimize"]["do"]
    data = [d for d in opt["deps"] if not d.startswith(("stages/", "rawdrift/"))]
    assert data == ["data/raw/${item}"]
    for name, st in stages.items():
        body = st.get("do", st)
        reads = [p for p in body.get("params", []) if isinstance(p, str) and p.startswith("optimize")]
        assert (name == "optimize") == bool(reads), name


def test_train_stage_with_concurrent_folds_writes_the_same_models(fetched, tmp_path):
    """Lockstep and one process per fold: the same metrics, models and curves (here evaluated
    every other epoch: after epochs 2 and 4 of 4, logged at steps 1 and 3)."""
    wd = project(tmp_path, merge(merge(SMALL, TRAIN), {"train": {"eval_every_epochs": 2}}))
    shutil.copytree(fetched / "data/raw/microscopy", wd / "data/raw/microscopy")
    assert stage(wd, "render.py", "microscopy").returncode == 0
    env = dict(os.environ, RAWDRIFT_WORKERS="2")
    runs = {}
    for flag in ("0", "1"):
        r = subprocess.run([sys.executable, str(ROOT / "stages/train.py"), "microscopy", "bi_s_ga"], cwd=wd,
                           env=dict(env, RAWDRIFT_CONCURRENT_FOLDS=flag), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert ("warning: RAWDRIFT_CONCURRENT_FOLDS=1 on cpu" in r.stderr) == (flag == "1")
        runs[flag] = (json.loads((wd / "metrics/train/microscopy/bi_s_ga.json").read_text()),
                      (wd / "models/microscopy/bi_s_ga/fold1.safetensors").read_bytes(),
                      (wd / "plots/train/microscopy/bi_s_ga/plots/metrics/val_accuracy.tsv").read_text())
    assert runs["0"] == runs["1"]
    assert [line.split("\t")[0] for line in runs["0"][2].splitlines()] == ["step", "1", "3"]
    assert runs["0"][0]["eval_every_epochs"] == 2
    record = runs["0"][0]["platform"]         # what the run computed on, in the metrics and the models
    assert {k: record[k] for k in ("device", "precision", "deterministic", "backends", "compile")} == {
        "device": "cpu", "precision": "bf16" if native_bf16(torch.device("cpu")) else "fp32",   # SMALL: auto
        "deterministic": True, "backends": {}, "compile": "none"}
    assert record["torch"] == torch.__version__ and record["numpy"] == np.__version__
    assert json.loads((wd / "models/microscopy/bi_s_ga/model.json").read_text())["platform"] == record
    r = subprocess.run([sys.executable, str(ROOT / "stages/train.py"), "microscopy", "bi_s_ga"], cwd=wd,
                       env=dict(env, RAWDRIFT_CONCURRENT_FOLDS="yes"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip() == "error: RAWDRIFT_CONCURRENT_FOLDS must be 0 or 1, got 'yes'"
