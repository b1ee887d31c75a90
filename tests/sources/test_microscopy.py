"""The synthetic microscopy scenes' optics (rawdrift.sources.microscopy): the PSF that follows the
pixel (``matched``) or the 40x objective (``objective``)."""

import numpy as np
import pytest

from rawdrift.sources import microscopy


def _fwhm_px(kernel: np.ndarray, pitch: float, pixel: float) -> float:
    """Full width at half maximum of a centred kernel's middle row, in units of ``pixel`` (linear interpolation)."""
    row = kernel[kernel.shape[0] // 2] / kernel.max()
    c = row.size // 2
    i = c + np.flatnonzero(row[c:] < 0.5)[0]
    x = i - 1 + (row[i - 1] - 0.5) / (row[i - 1] - row[i])
    return 2 * (x - c) * pitch / pixel


@pytest.mark.parametrize("tile", [40, 80, 160])
def test_matched_optics_keep_the_psf_width_in_pixels(tile):
    """``matched``: the PSF follows the pixel, so its FWHM stays the study's 0.45 um / 0.1625 um = 2.77 px
    at 525 nm (scaled by wavelength) at every tile size; the 40x objective (``objective``) keeps 0.45 um,
    i.e. 0.43 px at 40 px: an aliased image."""
    pixel = microscopy.FIELD_UM / tile
    grid = pixel / 8                                   # a fine grid to measure on
    for optics, expected_px in (("matched", 0.45 / 0.1625), ("objective", 0.45 / pixel)):
        kernels = microscopy.psf_kernels(grid, microscopy.optical_scale(tile, optics))
        for k, lam in zip(kernels, microscopy.WAVELENGTH_UM):
            assert _fwhm_px(k, grid, pixel) == pytest.approx(expected_px * lam / 0.525, rel=0.06), (optics, lam)


def test_optical_scale_follows_the_pixel():
    assert microscopy.optical_scale(40, "matched") == pytest.approx(6.4)
    assert microscopy.optical_scale(256, "matched") == 1.0 == microscopy.optical_scale(40, "objective")
    assert microscopy.optical_scale(512, "matched") == 1.0          # never sharper than the study's objective
    with pytest.raises(ValueError, match="optics"):
        microscopy.optical_scale(40, "zoom")


def test_matched_optics_change_only_the_blur():
    """Same random stream -> same scene and light; only the sharpness differs (objective sharper at 40 px)."""
    def tiles(optics):
        return [microscopy.render_tile(np.random.default_rng([7, i]), "NGS", 40, optics) for i in range(3)]
    for a, b in zip(tiles("matched"), tiles("objective")):
        assert a.mean() == pytest.approx(b.mean(), rel=0.02)
        ga, gb = a[0::2, 1::2], b[0::2, 1::2]
        assert np.abs(np.diff(ga, axis=1)).mean() < 0.8 * np.abs(np.diff(gb, axis=1)).mean()

def test_optics_at_the_study_scale_are_the_objective():
    rng_a, rng_b = np.random.default_rng([8, 0]), np.random.default_rng([8, 0])
    assert np.array_equal(microscopy.render_tile(rng_a, "LYT", 256, "matched"),
                          microscopy.render_tile(rng_b, "LYT", 256, "objective"))
