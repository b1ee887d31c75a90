"""Photon transfer of the sensor model and exposure thinning."""

import numpy as np
import pytest

from rawdrift.errors import RawdriftError
from rawdrift.sensor import (DRONE_SENSOR, INTENSITIES, MICROSCOPY_SENSOR, Sensor, electrons_from_raw, expose,
                             intensity_name, thin_exposure)


def test_intensity_names_follow_the_original():
    assert [intensity_name(r) for r in INTENSITIES] == [
        "raw_scale001", "raw_scale005", "raw_scale010", "raw_scale025", "raw_scale050", "raw_scale075", "raw_scale100"]


@pytest.mark.parametrize("sensor", [DRONE_SENSOR, MICROSCOPY_SENSOR])
def test_photon_transfer_curve(sensor):
    """Mean above black scales with r; variance = gain * signal + (gain * read noise)^2 (+ quantisation)."""
    rng = np.random.default_rng(0)
    lam = 2000.0
    flat = np.full((200, 200), lam)
    black = sensor.black_map(flat.shape).mean()
    means = []
    for r in (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0):
        raw = expose(flat, sensor, r, rng).astype(np.float64)
        signal = raw.mean() - black
        expected_var = sensor.gain * signal + (sensor.gain * sensor.read_noise_e) ** 2 + sensor.step_dn**2 / 12
        assert signal == pytest.approx(sensor.gain * r * lam, rel=0.01, abs=2 * sensor.step_dn)
        assert raw.var() == pytest.approx(expected_var, rel=0.05)
        means.append(signal)
    assert np.all(np.diff(means) > 0)


def test_quantisation_clipping_and_full_well():
    rng = np.random.default_rng(1)
    raw = expose(np.full((64, 64), 1e6), DRONE_SENSOR, 1.0, rng)
    assert raw.dtype == np.uint16
    assert raw.max() <= DRONE_SENSOR.white_level_dn == 65520
    assert np.all(raw % 16 == 0)                      # 12-bit codes left-justified to 16 bits
    dark = expose(np.zeros((64, 64)), DRONE_SENSOR, 1.0, rng).astype(float)
    assert dark.mean() == pytest.approx(0.0625 * 65535, abs=20)


def test_thinning_gives_poisson_at_lower_exposure():
    """Binomial thinning of a recorded raw reproduces the direct exposure's mean and variance."""
    rng = np.random.default_rng(2)
    lam = np.full((300, 300), 3000.0)
    ref = expose(lam, MICROSCOPY_SENSOR, 1.0, rng)
    for r in (0.05, 0.25):
        thinned = thin_exposure(ref, MICROSCOPY_SENSOR, r, rng).astype(float)
        direct = expose(lam, MICROSCOPY_SENSOR, r, rng).astype(float)
        assert thinned.mean() == pytest.approx(direct.mean(), rel=0.01)
        assert thinned.var() == pytest.approx(direct.var(), rel=0.05)
    assert electrons_from_raw(ref, MICROSCOPY_SENSOR).mean() == pytest.approx(3000, rel=0.01)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan")])
def test_ratio_out_of_range(ratio):
    with pytest.raises(RawdriftError, match=r"\(0, 1\]"):
        expose(np.ones((4, 4)), DRONE_SENSOR, ratio)


def test_bad_sensor_and_signal():
    with pytest.raises(RawdriftError, match="gain"):
        Sensor(gain=-1, read_noise_e=1, full_well_e=100)
    with pytest.raises(RawdriftError, match="finite"):
        expose(np.full((4, 4), np.nan), DRONE_SENSOR)
    with pytest.raises(RawdriftError, match="uint16"):
        thin_exposure(np.ones((4, 4)), DRONE_SENSOR, 0.5)
