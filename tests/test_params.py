"""params.yaml (rawdrift.params): reading it as DVC writes it, and each block's errors naming the
param (train, corruptions, forensics, optimize)."""

import pytest

from rawdrift.errors import RawdriftError
from rawdrift.forensics import REGULARISERS, SEARCHES
from rawdrift.optimization import MODES
from rawdrift.params import forensics_params, load_params, optimize_params, train_config
from rawdrift.tasks import task_config


def train_config_(params: dict, dataset: str, view: str):
    return train_config(params, dataset, view, task_config)


@pytest.mark.parametrize("values, key, problem", [
    ({"epochs": 0}, "epochs", "must be an integer >= 1, got 0"), ({"lr": -1}, "lr", "must be a number > 0, got -1"),
    ({"loss": "dice"}, "loss", "must be one of ce, got 'dice'"), ({"bogus": 1}, "", "unknown key(s) ['bogus']"),
    ({"arch": "vgg"}, "arch", "must be one of resnet18, efficientnet_lite0, got 'vgg'"),
    ({"epochs": True}, "epochs", "must be an integer")])
def test_bad_train_params(values, key, problem):
    """The library names the key; params.train_config adds the block and the file."""
    with pytest.raises(RawdriftError) as e:
        task_config("microscopy", values)
    assert str(e.value).startswith(f"{key}: {problem}" if key else problem) and "params.yaml" not in str(e.value)
    with pytest.raises(RawdriftError) as e:
        train_config_({"train": {"microscopy": values, "views": {"microscopy-bi_s_ga": None}}}, "microscopy", "bi_s_ga")
    assert str(e.value).startswith(f"params.yaml: train.microscopy{'.' + key if key else ''}: {problem}")


def test_per_view_override_merges_over_dataset_defaults():
    params = {"train": {"microscopy": {"epochs": 3, "lr": 0.01},
                        "views": {"microscopy-bi_s_ga": {"epochs": 7}, "microscopy-bi_s_me": {}}}}
    assert train_config_(params, "microscopy", "bi_s_ga").epochs == 7
    assert train_config_(params, "microscopy", "bi_s_ga").lr == 0.01
    assert train_config_(params, "microscopy", "bi_s_me").epochs == 3
    with pytest.raises(RawdriftError, match="missing param train.views.microscopy-me_u_ga"):
        train_config_(params, "microscopy", "me_u_ga")


def test_corruption_params():
    from rawdrift.corruptions import CORRUPTIONS
    from rawdrift.params import corruption_params

    def corruption_params_(p: dict) -> dict:
        return corruption_params(p, CORRUPTIONS)
    good = {"names": ["contrast"], "severities": [3, 1], "summary_severity": 3, "reference_tile": 256}
    assert corruption_params_({"corruptions": good}).severities == [1, 3]
    for patch, msg in [({"names": ["fog"]}, "corruptions.names[0]: must be one of gaussian_noise, "),
                       ({"names": ["contrast", "contrast"]}, "corruptions.names: lists 'contrast' twice"),
                       ({"severities": [0, 3]}, "corruptions.severities[0]: must be an integer in [1, 5], got 0"),
                       ({"severities": [3, 6]}, "corruptions.severities[1]: must be an integer in [1, 5], got 6"),
                       ({"summary_severity": 5}, "corruptions.summary_severity: must be one of the severities [1, 3], "
                                                 "got 5"),
                       ({"names": []}, "corruptions.names: must be a non-empty list, got []"),
                       ({"reference_tile": 0}, "corruptions.reference_tile: must be an integer >= 1, got 0")]:
        with pytest.raises(RawdriftError) as e:
            corruption_params_({"corruptions": {**good, **patch}})
        assert str(e.value).startswith(f"params.yaml: {msg}"), str(e.value)


def check_forensics(params: dict) -> dict:
    return forensics_params(params, SEARCHES, REGULARISERS)


@pytest.mark.parametrize("patch, msg", [
    ({"lambda": -1e-3}, "forensics.lambda[0]: must be a number >= 0, got -0.001"),
    ({"lambda": [1e-3, "big"]}, "forensics.lambda[1]: must be a number >= 0, got 'big'"),
    ({"lambda": [1.0, float("inf")]}, "forensics.lambda[1]: must be a number >= 0, got inf"),
    ({"lambda": [1.0, 1]}, "forensics.lambda: lists 1.0 twice"),
    ({"parameters": ["all", "saturation"]}, "forensics.parameters[1]: must be one of all, black_level, "),
    ({"regulariser": "l1"}, "forensics.regulariser: must be one of l2, ssim, got 'l1'"),
    ({"tolerance": 2}, "forensics.tolerance: must be a number in [0, 1], got 2"),
    ({"epochs": 0}, "forensics.epochs: must be an integer >= 1, got 0"),
    ({"max_batch": 0}, "forensics.max_batch: must be an integer >= 1, got 0"),
])
def test_forensics_params_reject_out_of_range_values(patch, msg):
    base = {"lambda": [1.0, 1e-3], "parameters": ["all", "gamma"], "epochs": 20, "lr": 0.01, "batch_size": 16,
            "search_tiles": 0, "regulariser": "l2", "tolerance": 0.05, "max_batch": 64}
    assert check_forensics({"forensics": base}).lambdas == [1.0, 1e-3]
    assert check_forensics({"forensics": {**base, "lambda": 1e-3}}).lambdas == [1e-3]   # -S forensics.lambda=1e-3
    with pytest.raises(RawdriftError) as e:
        check_forensics({"forensics": {**base, **patch}})
    assert str(e.value).startswith(f"params.yaml: {msg}"), str(e.value)


def test_train_evaluation_schedule_param():
    from rawdrift.params import train_eval_epochs
    assert train_eval_epochs({"train": {"eval_every_epochs": 3}}) == 3
    with pytest.raises(RawdriftError) as e:
        train_eval_epochs({"train": {"eval_every_epochs": 0}})
    assert str(e.value) == "params.yaml: train.eval_every_epochs: must be an integer >= 1, got 0"


def test_params_read_exponent_floats_as_dvc_writes_them(tmp_path):
    """`dvc exp run -S forensics.lambda=1e-3` writes `1e-3`, a string to plain PyYAML (YAML 1.1)."""
    path = tmp_path / "params.yaml"
    path.write_text("forensics:\n  lambda: 1e-3\n  lr: 2.5E+1\n  epochs: 20\n  name: 1e3x\n"
                    "  list: [1e4, 1.5, .5, 7]\n")
    f = load_params(path)["forensics"]
    assert f["lambda"] == 1e-3 and f["lr"] == 25.0 and f["list"] == [1e4, 1.5, 0.5, 7]
    assert type(f["epochs"]) is int and type(f["list"][3]) is int and f["name"] == "1e3x"


@pytest.mark.parametrize("patch, msg", [
    ({"modes": ["learned", "tuned"]}, "optimize.modes[1]: must be one of learned, frozen, raw, got 'tuned'"),
    ({"intensities": [0.01, 1.5]}, "optimize.intensities[1]: must be a number in (0, 1], got 1.5"),
    ({"intensities": [0.01, 0.012]}, "optimize.intensities: lists 0.01 and 0.012, which count as the same entry"),
    ({"isp_lr": 0}, "optimize.isp_lr: must be a number > 0, got 0"),
    ({"microscopy": {"epochs": 0, "eval_every": 1}}, "optimize.microscopy.epochs: must be an integer >= 1, got 0"),
])
def test_optimize_params_errors_name_the_param(patch, msg):
    base = {"modes": ["learned", "frozen", "raw"], "intensities": [0.01, 1.0], "isp_lr": 0.01,
            "microscopy": {"epochs": 2, "eval_every": 1}}
    assert optimize_params({"optimize": base}, "microscopy", MODES).intensities == [0.01, 1.0]
    with pytest.raises(RawdriftError) as e:
        optimize_params({"optimize": {**base, **patch}}, "microscopy", MODES)
    assert str(e.value) == f"params.yaml: {msg}"
