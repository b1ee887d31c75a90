"""The task models (rawdrift.tasks): scores, a model on the ISP's output, bf16 inference."""

import pytest
import torch

from helpers import SEG, square_task
from rawdrift.tasks import TaskModel, predict, score, task_config
from rawdrift.training import train_folds


def test_scores():
    assert score("classification", torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])) == 0.75
    p = torch.zeros(1, 4, 4, dtype=torch.uint8)
    t = torch.zeros(1, 4, 4, dtype=torch.uint8)
    p[0, :2] = 1
    t[0, 1:3] = 1
    assert score("segmentation", p, t) == pytest.approx(4 / 12)


def test_model_accepts_isp_output():
    from rawdrift.camera import CAMERAS
    from rawdrift.isp import ParametrizedISP
    isp = ParametrizedISP(CAMERAS["drone"])
    model = TaskModel(task_config("drone", SEG))
    raw = torch.rand(2, 32, 32) * 0.5 + 0.0625
    out = model(isp(raw))
    assert out.shape == (2, 1, 32, 32)
    out.sum().backward()
    assert isp.gamma.grad is not None and torch.isfinite(isp.gamma.grad).all()
    assert predict(model, isp(raw).detach(), 4).shape == (2, 32, 32)


def test_bf16_inference_agrees_with_fp32():
    """bf16 autocast changes predictions only near the decision boundary."""
    x, m, folds = square_task(n=16)
    cfg = task_config("drone", dict(SEG, epochs=3))
    model = train_folds(cfg, x, m, folds, seed=0, device=torch.device("cpu"), progress=False)[0].model
    a, b = predict(model, x, 8, amp=False), predict(model, x, 8, amp=True)
    assert (a != b).float().mean() < 0.02
