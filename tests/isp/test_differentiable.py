"""ParametrizedISP: equation 6, gradients, dtypes, devices."""

import numpy as np
import pytest
import torch

from helpers import photo_raw
from rawdrift.camera import CAMERAS
from rawdrift.errors import RawdriftError
from rawdrift.isp import PARAMETER_GROUPS, ParametrizedISP, render_static
from rawdrift.isp.differentiable import (bayer_masks, clipped_gamma, compiled_process, gaussian_kernel_2d,
                                         pad_symmetric, process, symmetric_index)


def test_gaussian_kernel_matches_facts():
    k = gaussian_kernel_2d()
    assert k.shape == (5, 5)
    assert k[2, 2] == pytest.approx(0.61869, abs=1e-5)
    assert k[2, 1] == pytest.approx(0.083731, abs=1e-6)
    assert k[1, 1] == pytest.approx(0.011332, abs=1e-6)


def test_pad_symmetric_is_scipy_reflect():
    x = torch.arange(20.0).reshape(1, 4, 5)
    np.testing.assert_array_equal(pad_symmetric(x, 2)[0].numpy(), np.pad(x[0].numpy(), 2, mode="symmetric"))


@pytest.mark.parametrize("h,w,pad", [(6, 8, 1), (6, 8, 2), (5, 7, 3), (4, 4, 4)])
def test_pad_symmetric_backward_is_the_adjoint(h, w, pad):
    """The gradient of the pad is its adjoint: each sample collects the upstream gradients of
    every padded position it was copied to (numpy's symmetric pad of the sample indices, summed
    with np.add.at over columns, then rows); bit for bit where each sample is copied at most
    twice per axis (2 pad <= H, W), to rounding where more often."""
    gen = torch.Generator().manual_seed(pad)
    x = torch.rand(2, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
    up = torch.rand(2, h + 2 * pad, w + 2 * pad, dtype=torch.float64, generator=gen)
    grad = torch.autograd.grad((pad_symmetric(x, pad) * up).sum(), x)[0].numpy()
    by_cols = np.zeros((2, h + 2 * pad, w))
    np.add.at(by_cols, (slice(None), slice(None), np.pad(np.arange(w), pad, mode="symmetric")), up.numpy())
    expect = np.zeros((2, h, w))
    np.add.at(expect, (slice(None), np.pad(np.arange(h), pad, mode="symmetric")), by_cols)
    if 2 * pad <= min(h, w):
        np.testing.assert_array_equal(grad, expect)
    else:
        np.testing.assert_allclose(grad, expect, rtol=1e-14)


def test_constants_made_with_torch_equal_the_numpy_ones():
    for n in (4, 5, 64):
        for pad in (1, 2, 4):
            np.testing.assert_array_equal(symmetric_index(n, pad, "cpu").numpy(),
                                          np.pad(np.arange(n), pad, mode="symmetric"), err_msg=f"{n} {pad}")
    rggb = np.zeros((3, 6, 8))
    rggb[0, 0::2, 0::2] = rggb[1, 0::2, 1::2] = rggb[1, 1::2, 0::2] = rggb[2, 1::2, 1::2] = 1
    np.testing.assert_array_equal(bayer_masks(6, 8, dtype=torch.float64).numpy(), rggb)


def test_process_traces_as_one_graph_and_compiled_agrees_with_eager(camera):
    """torch.compile sees the whole ISP (constants made in the graph, the clipped gamma's own
    backward): one graph, no break; the compiled forward and every group's gradient agree with
    eager within float32 rounding."""
    raw = torch.from_numpy(photo_raw(camera, "astronaut", scale=1.0)[:32, :48]).float().repeat(3, 1, 1)
    isp = ParametrizedISP(camera)
    explained = torch._dynamo.explain(process)(raw, *isp.group_values())
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    runs = []
    for fn in (process, compiled_process()):
        out = fn(raw, *isp.group_values())
        grads = torch.autograd.grad((out * out.mean(1, keepdim=True)).sum(), isp.group_values())
        runs.append((out.detach(), grads))
    (o0, g0), (o1, g1) = runs
    assert o1.shape == (3, 3, 32, 48) and float((o1 - o0).abs().max()) < 1e-5
    for name, a, b in zip(PARAMETER_GROUPS, g0, g1):
        assert float((b - a).norm() / a.norm()) < 1e-4, name


def test_compiled_graph_takes_only_raw_and_the_groups_and_serves_every_frozen_subset():
    """The ISP's constants are part of the compiled code, not inputs copied to the device on
    every call: the traced graph's inputs are raw and the 7 groups. Searches of one group (the
    others frozen) and of all share one compiled graph."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(sum(node.op == "placeholder" for node in gm.graph.nodes))
        return gm.forward
    raw = torch.rand(2, 12, 20) * 0.5 + 0.07              # a shape no other test compiles
    isp = ParametrizedISP(CAMERAS["drone"])
    torch.compile(process, backend=capture, dynamic=False)(raw, *isp.group_values())
    assert graphs == [8]
    run = compiled_process()
    torch._dynamo.utils.counters.clear()
    for searched in (PARAMETER_GROUPS, ("gamma",), ("demosaic",)):
        values = [v.detach().requires_grad_(g in searched) for g, v in zip(PARAMETER_GROUPS, isp.group_values())]
        out = run(raw, *values)
        grads = torch.autograd.grad(out.sum(), [v for v in values if v.requires_grad])
        assert len(grads) == len(searched) and all(torch.isfinite(g).all() for g in grads)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
def test_equation_6_float64_borders_included(camera, photo):
    raw = photo_raw(camera, photo)
    isp = ParametrizedISP(camera, dtype=torch.float64)
    out = isp(torch.from_numpy(raw)[None])[0].detach().numpy()
    ref = render_static(raw, camera, "bi_s_ga")
    assert np.abs(out - ref).max() < 1e-5


def test_equation_6_float32_and_batched(camera):
    raws = np.stack([photo_raw(camera, "astronaut"), photo_raw(camera, "chelsea")])
    isp = ParametrizedISP(camera)
    out = isp(torch.from_numpy(raws).float())
    assert out.shape == (2, 3) + raws.shape[1:] and out.dtype == torch.float32
    for i in range(2):
        assert np.abs(out[i].detach().numpy() - render_static(raws[i], camera, "bi_s_ga")).max() < 2e-4


def test_every_group_gets_a_finite_nonzero_gradient(camera, device):
    raw = torch.from_numpy(photo_raw(camera, "astronaut", scale=1.0))[None]
    raw[0, :4, :4] = 0.0                     # dark corner: clipped pixels must not give inf/nan
    isp = ParametrizedISP(camera, dtype=torch.float64).to(device)
    out = isp(raw.to(device))
    (out * torch.linspace(0, 1, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)).sum().backward()
    assert [n for n, _ in isp.named_parameters()] == list(PARAMETER_GROUPS)
    for name, p in isp.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradcheck_all_parameters():
    camera = CAMERAS["drone"]
    torch.manual_seed(0)
    raw = (0.07 + 0.3 * torch.rand(1, 8, 8, dtype=torch.float64))
    isp = ParametrizedISP(camera, dtype=torch.float64)
    from rawdrift.isp.differentiable import process
    params = tuple(p.detach().clone().requires_grad_(True) for p in isp.parameters())
    assert torch.autograd.gradcheck(lambda *ps: process(raw, *ps), params, eps=1e-6, atol=1e-5)


def test_clipped_gamma_gradient_is_finite_at_zero_and_exact_inside():
    x = torch.tensor([-0.1, 0.0, 1e-9, 0.3, 0.7, 1.2], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([2.2], dtype=torch.float64, requires_grad=True)
    y = clipped_gamma(x, g)
    np.testing.assert_allclose(y.detach().numpy(), np.clip(x.detach().numpy(), 0, 1) ** (1 / 2.2))
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(g.grad).all()
    assert x.grad[0] == 0 and x.grad[5] == 0
    inner = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: clipped_gamma(a, b), (inner, g.detach().clone().requires_grad_(True)))


def test_parameters_round_trip_through_dict(camera):
    a = ParametrizedISP(camera)
    with torch.no_grad():
        a.gamma.fill_(1.8)
        a.white_balance.mul_(1.1)
    b = ParametrizedISP(camera).load_dict(a.to_dict())
    for g in PARAMETER_GROUPS:
        assert torch.equal(getattr(a, g), getattr(b, g))
    with pytest.raises(RawdriftError, match="missing group 'gamma'"):
        ParametrizedISP(camera).load_dict({k: v for k, v in a.to_dict().items() if k != "gamma"})


@pytest.mark.parametrize("bad, msg", [
    (torch.zeros(8, 8), r"\(B, H, W\)"), (torch.zeros(1, 7, 8), "even"),
    (torch.zeros(1, 8, 8, dtype=torch.int32), "expected float values")])
def test_bad_input_is_rejected(bad, msg, device):
    with pytest.raises(RawdriftError, match=msg):
        ParametrizedISP(CAMERAS["drone"]).to(device)(bad.to(device))

# CUDA against the CPU (TF32 off, gradients, constrained): tests/test_cuda.py
