"""The one Gaussian-kernel builder (rawdrift.kernels)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from rawdrift.kernels import gaussian_1d, gaussian_2d, scipy_radius, three_sigma_radius


@pytest.mark.parametrize("sigma, truncate", [(0.5, 4.0), (1.5, 4.0), (2.3, 3.0), (7.0, 4.0)])
def test_2d_kernel_is_what_scipy_gaussian_filter_applies(sigma, truncate):
    r = scipy_radius(sigma, truncate)
    delta = np.zeros((2 * r + 1, 2 * r + 1))
    delta[r, r] = 1.0
    ref = ndimage.gaussian_filter(delta, sigma, truncate=truncate, mode="constant")
    np.testing.assert_allclose(gaussian_2d(sigma, r), ref, rtol=0, atol=1e-16)


def test_numpy_and_torch_taps_agree_to_rounding_and_sum_to_one():
    for sigma in (0.5, 0.7, 1.5, 40.0):
        r = scipy_radius(sigma)
        a, b = gaussian_1d(sigma, r), gaussian_1d(sigma, r, torch)
        assert a.shape == (2 * r + 1,) and b.dtype == torch.float64
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-15, atol=1e-18)
        assert abs(a.sum() - 1) < 1e-14 and np.array_equal(a, a[::-1])


def test_radius_rules():
    assert [scipy_radius(s) for s in (0.1, 0.5, 1.5, 2.0)] == [0, 2, 6, 8]
    assert [scipy_radius(s, 3.0) for s in (0.5, 1.5)] == [2, 5]
    assert [three_sigma_radius(s) for s in (0.0, 0.2, 1.0, 1.01)] == [1, 1, 3, 4]
