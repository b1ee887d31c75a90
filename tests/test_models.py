"""Saved fold models (rawdrift.models): safetensors files that reload to the same predictions."""

import pytest
import torch

from helpers import colour_task
from rawdrift.errors import RawdriftError
from rawdrift.models import load_fold_model, save_fold_models
from rawdrift.tasks import task_config
from rawdrift.training import train_folds


def test_saved_models_reload_with_identical_predictions(tmp_path):
    x, y, folds = colour_task(n=12)
    cfg = task_config("microscopy", dict(epochs=1, batch_size=4, classes=3))
    res = train_folds(cfg, x, y, folds, seed=0, device=torch.device("cpu"), progress=False)
    save_fold_models(tmp_path / "m", cfg, [r.model for r in res], info={"view": "bi_s_ga"})
    from safetensors.torch import load_file
    assert "normalize.mean" in load_file(str(tmp_path / "m/fold1.safetensors"))
    for k, r in enumerate(res):
        loaded = load_fold_model(tmp_path / "m", k)
        r.model.eval()
        with torch.no_grad():
            assert torch.equal(loaded(x), r.model(x))
    with pytest.raises(RawdriftError, match="fold5.safetensors: file not found"):
        load_fold_model(tmp_path / "m", 5)


def test_a_model_started_from_imagenet_reloads_without_its_starting_weights(tmp_path, monkeypatch):
    import rawdrift.tasks as T
    x, y, folds = colour_task(n=12)
    cfg = task_config("microscopy", dict(arch="efficientnet_lite0", pretrained=True, epochs=1, batch_size=4, classes=3))
    res = train_folds(cfg, x, y, folds, seed=0, device=torch.device("cpu"), progress=False)
    save_fold_models(tmp_path / "m", cfg, [r.model for r in res], info={"view": "bi_s_ga"})

    def no_fetch(net):
        raise AssertionError("the stored weights need no ImageNet weights")
    monkeypatch.setattr(T, "load_efficientnet_lite0_imagenet", no_fetch)
    loaded = load_fold_model(tmp_path / "m", 1)
    assert loaded.cfg.pretrained and loaded.cfg.arch == "efficientnet_lite0"
    res[1].model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), res[1].model(x))
