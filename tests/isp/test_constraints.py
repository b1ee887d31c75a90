"""The constrained ISP (rawdrift.isp.constraints): parametrizations that invert and have gradients,
the soft clamp, and a constrained ParametrizedISP that reproduces the plain one and keeps its
bounds under a search."""

import numpy as np
import pytest
import torch

from helpers import photo_raw
from rawdrift.camera import CAMERAS
from rawdrift.errors import RawdriftError
from rawdrift.isp import PARAMETER_GROUPS, ParametrizedISP
from rawdrift.isp.constraints import FixedSum, Positive, SignedPositive, SoftClamp, constrain, free_parameters


@pytest.mark.parametrize("module, value", [
    (SoftClamp(), torch.tensor([9.8e-6, 0.0625, 0.5, 0.97], dtype=torch.float64)),
    (SignedPositive(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)),
     torch.tensor([-0.6567, 1.9673, 0.004], dtype=torch.float64)),
    (Positive(), torch.tensor([2.2], dtype=torch.float64)),
    (FixedSum(torch.eye(3, dtype=torch.float64) * 2, ndim=1), torch.eye(3, dtype=torch.float64) * 2),
])
def test_parametrizations_invert_and_have_gradients(module, value):
    u = module.right_inverse(value)
    np.testing.assert_allclose(module(u).numpy(), value.numpy(), rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(module, (u.clone().requires_grad_(True),), eps=1e-7, atol=1e-6)


def test_soft_clamp_is_identity_inside_and_bounded_outside():
    f = SoftClamp()
    u = torch.tensor([-5.0, -0.01, 0.02, 0.5, 0.98, 1.01, 7.0], dtype=torch.float64)
    v = f(u)
    assert ((v >= 0) & (v <= 1)).all()
    np.testing.assert_allclose(v[2:5].numpy(), u[2:5].numpy(), atol=1e-12)
    assert v[0] < 1e-30 and v[-1] == pytest.approx(1.0)


def test_constrained_isp_reproduces_the_plain_one(camera):
    raw = torch.from_numpy(photo_raw(camera, "astronaut"))[None].float()
    plain, constrained = ParametrizedISP(camera), constrain(ParametrizedISP(camera))
    # float32 rounding of the mapped parameters (~1e-12 on a black level) is amplified only
    # where gamma's slope diverges (outputs near 0), as in the plain model's own eq. 6 test
    assert (plain(raw) - constrained(raw)).abs().max() < 1e-4
    for g in PARAMETER_GROUPS:
        assert torch.allclose(getattr(plain, g), getattr(constrained, g), rtol=1e-6, atol=1e-9), g


def test_constraints_hold_under_a_search_pushing_past_them(camera):
    raw = torch.from_numpy(photo_raw(camera, "coffee"))[None].float()
    isp = constrain(ParametrizedISP(camera))
    start = {g: getattr(isp, g).detach().clone() for g in PARAMETER_GROUPS}
    opt = torch.optim.Adam(free_parameters(isp, "all"), lr=0.3)
    g = torch.Generator().manual_seed(0)
    pull = {k: torch.randn(start[k].shape, generator=g) for k in ("demosaic", "sharpening", "denoising", "colour_matrix")}
    for _ in range(40):     # black level up, gains and gamma down, kernels and matrix anywhere
        loss = (-isp.black_level.sum() + isp.white_balance.abs().sum() + isp.gamma.sum()
                - sum((getattr(isp, k) * w).sum() for k, w in pull.items()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    bl, wb, gamma = isp.black_level.detach(), isp.white_balance.detach(), isp.gamma.detach()
    assert ((bl >= 0) & (bl <= 1)).all() and bl.min() > 0.9
    assert (torch.sign(wb) == torch.sign(start["white_balance"])).all() or (wb == 0).any()
    assert (wb.abs() < 0.05).all() and (gamma > 0).all() and gamma < 0.1
    for g, dims in (("demosaic", (1, 2)), ("sharpening", (0, 1)), ("denoising", (0, 1)), ("colour_matrix", (1,))):
        now, before = getattr(isp, g).detach().sum(dims), start[g].sum(dims)
        assert torch.allclose(now, before, atol=2e-5), g
        assert (getattr(isp, g).detach() - start[g]).abs().max() > 0.5, g       # and it did move
    assert torch.isfinite(isp(raw)).all()


def test_searching_one_group_leaves_the_others_exactly():
    camera = CAMERAS["drone"]
    raw = torch.from_numpy(photo_raw(camera, "chelsea"))[None].float()
    isp = constrain(ParametrizedISP(camera))
    before = isp.to_dict()
    opt = torch.optim.Adam(free_parameters(isp, "gamma"), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        isp(raw).mean().backward()
        opt.step()
    after = isp.to_dict()
    assert after["gamma"] != before["gamma"]
    assert all(after[g] == before[g] for g in PARAMETER_GROUPS if g != "gamma")
    with pytest.raises(RawdriftError, match="unknown parameter group"):
        free_parameters(isp, "saturation")


def test_load_dict_into_a_constrained_isp_round_trips():
    camera = CAMERAS["microscopy"]
    raw = torch.from_numpy(photo_raw(camera, "astronaut"))[None].float()
    a = constrain(ParametrizedISP(camera))
    opt = torch.optim.Adam(free_parameters(a, "all"), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        a(raw).std().backward()
        opt.step()
    b = constrain(ParametrizedISP(camera)).load_dict(a.to_dict())
    c = ParametrizedISP(camera).load_dict(a.to_dict())
    with torch.no_grad():
        assert (a(raw) - b(raw)).abs().max() < 1e-5 and (a(raw) - c(raw)).abs().max() < 1e-5
