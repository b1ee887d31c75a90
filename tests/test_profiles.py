"""Profiles: profiles/paper.yaml validates against the config model, DVC's own `-S` parser
turns its arguments into exactly that profile, and `make repro-paper` passes them."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rawdrift.errors import RawdriftError
from rawdrift.params import load_params
from rawdrift.profiles import apply, dvc_args, load_profile, overrides, parse_value, resolve, validate, yaml_value

ROOT = Path(__file__).resolve().parents[1]


def test_paper_profile_validates_against_the_config_model():
    sections = validate(resolve("paper"))
    data, train, opt = sections["data"], sections["train"], sections["optimize"]
    assert (data["microscopy"].count, data["microscopy"].tile) == (940, 256)
    assert (data["drone"].count, data["drone"].tile) == (548, 256)
    assert data["microscopy"].folds == data["drone"].folds == 5
    mic, dro = train["microscopy"], train["drone"]
    assert (mic.arch, mic.epochs, mic.batch_size, mic.lr, mic.schedule) == ("resnet18", 100, 128, 1e-4, "constant")
    assert (dro.arch, dro.encoder, dro.encoder_depth, dro.decoder_channels) == (
        "unetplusplus", "resnet34", 5, (256, 128, 64, 32, 16))
    assert (dro.epochs, dro.batch_size, dro.lr, dro.schedule, dro.loss) == (100, 12, 7.5e-5, "constant", "dice")
    assert [(o.epochs, o.eval_every) for o in opt.values()] == [(100, 6), (100, 37)]
    fo = sections["forensics"]
    assert fo.lambdas == [1e5, 1e4, 1e3, 1e2, 10.0, 1.0] and fo.search_tiles == 0 and fo.batch_size == 16
    # what the profile does not set is the default profile's
    default = validate(load_params(ROOT / "params.yaml"))
    assert fo.epochs == default["forensics"].epochs and fo.groups == default["forensics"].groups
    assert sections["corruptions"] == default["corruptions"] and sections["seed"] == default["seed"]
    assert data["microscopy"].intensities == default["data"]["microscopy"].intensities
    assert (mic.pretrained, dro.pretrained) == (False, False)
    assert sections["device"] == "cuda" and sections["views"] == default["views"] and len(default["views"]) == 12


def test_overrides_and_apply():
    profile = {"data": {"folds": 5, "drone": {"tile": 8}}, "forensics": {"lambda": [1.0, 2.0]}}
    assert overrides(profile) == {"data.folds": 5, "data.drone.tile": 8, "forensics.lambda": [1.0, 2.0]}
    base = {"data": {"folds": 3, "drone": {"tile": 64, "count": 2}}, "forensics": {"lambda": 1.0}}
    out = apply(base, profile)
    assert out == {"data": {"folds": 5, "drone": {"tile": 8, "count": 2}}, "forensics": {"lambda": [1.0, 2.0]}}
    assert base["data"]["folds"] == 3                       # a copy
    with pytest.raises(RawdriftError, match=r"^x.yaml: data.drone.cout: not a param of params.yaml$"):
        apply(base, {"data": {"drone": {"cout": 1}}}, "x.yaml")
    with pytest.raises(RawdriftError, match=r"^x.yaml: model.depth: not a param of params.yaml$"):
        apply(base, {"model": {"depth": 1}}, "x.yaml")


def test_parse_value_reads_back_what_yaml_value_writes():
    for value in (7.5e-05, 1e-4, 3, True, False, "reduce-overhead", [256, 128, 64], [1.0, 0.01], "bi_s_ga"):
        back = parse_value(yaml_value(value))
        assert back == value and type(back) is type(value)
    assert parse_value("1e-3") == pytest.approx(0.001) and parse_value("[a, b]") == ["a", "b"]
    with pytest.raises(RawdriftError, match=r"^'\[1,': malformed YAML value$"):
        parse_value("[1,")


def _workspace(tmp_path: Path, profile: dict) -> Path:
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles/x.yaml").write_text(yaml.safe_dump(profile))
    return tmp_path


@pytest.mark.parametrize("profile, msg", [
    ({"train": {"drone": {"epochs": 0}}},
     "profiles/x.yaml over params.yaml: train.drone.epochs: must be an integer >= 1, got 0"),
    ({"data": {"microscopy": {"tile": 255}}},
     "profiles/x.yaml over params.yaml: data.microscopy.tile: must be even (whole RGGB cells), got 255"),
    ({"forensics": {"lambda": [1.0, -1.0]}},
     "profiles/x.yaml over params.yaml: forensics.lambda[1]: must be a number >= 0, got -1.0"),
    ({"data": {"microscopy": {"cout": 5}}}, "profiles/x.yaml: data.microscopy.cout: not a param of params.yaml"),
    ({"device": "auto"}, "profiles/x.yaml over params.yaml: device: must be one of cpu, cuda, got 'auto'"),
    ({"deterministic": "no"}, "profiles/x.yaml over params.yaml: deterministic: must be true or false, got 'no'"),
    ({"views": ["ma_s_ga", "me_u_me"]}, "profiles/x.yaml over params.yaml: views: must include bi_s_ga (the reference "
                                        "view forensics starts from), got ['ma_s_ga', 'me_u_me']"),
])
def test_a_bad_profile_is_one_line_naming_the_file_and_param(tmp_path, profile, msg):
    root = _workspace(tmp_path, profile)
    with pytest.raises(RawdriftError) as e:
        resolve("x", root)
    assert str(e.value) == msg
    with pytest.raises(RawdriftError, match="unknown profile 'nope'; expected one of x"):
        load_profile("nope", root)


def test_dvc_applies_the_arguments_as_the_profile(tmp_path):
    """DVC's own `-S` parser (Hydra overrides) on params.yaml gives the profile laid over it."""
    from dvc.utils.hydra import apply_overrides
    args = dvc_args(load_profile("paper"))
    assert args[::2] == ["-S"] * (len(args) // 2)
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", args[1::2])
    assert load_params(tmp_path / "params.yaml") == resolve("paper")
    assert load_params(tmp_path / "params.yaml") != load_params(ROOT / "params.yaml")


def test_make_repro_paper_runs_dvc_exp_run_with_the_profile(tmp_path):
    """The Makefile's recipe, with `dvc` replaced by a script that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    (bin_dir / "dvc").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
                                 "'import json, os, sys; print(os.environ.get(\"RAWDRIFT_CONCURRENT_FOLDS\")); "
                                 "print(json.dumps(sys.argv[1:]))' \"$@\"\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    stamp = tmp_path / "stamp"
    stamp.touch()
    os.utime(stamp, (4e9, 4e9))                    # newer than requirements.txt: nothing to install
    env = {k: v for k, v in os.environ.items() if k != "RAWDRIFT_CONCURRENT_FOLDS"}
    for given, expected in ((None, "0"), ("1", "1")):       # folds in turn unless the user says otherwise
        r = subprocess.run(["make", "-s", "-C", str(ROOT), "repro-paper", f"BIN={bin_dir}", f"STAMP={stamp}"],
                           capture_output=True, text=True, timeout=300,
                           env=env if given is None else dict(env, RAWDRIFT_CONCURRENT_FOLDS=given))
        assert r.returncode == 0, r.stderr
        *_, concurrent, argv = r.stdout.strip().splitlines()
        assert yaml.safe_load(argv) == ["exp", "run", *dvc_args(load_profile("paper"))] and concurrent == expected


def test_profiles_cli_prints_quoted_dvc_args():
    r = subprocess.run([sys.executable, "-m", "rawdrift.profiles", "paper", "--dvc-args"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert shlex.split(r.stdout) == dvc_args(load_profile("paper"))
    assert "-S 'train.drone.decoder_channels=[256,128,64,32,16]'" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rawdrift.profiles", "nope"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and r.stderr.startswith("error: unknown profile 'nope'; expected one of ")
