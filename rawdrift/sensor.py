"""Physical exposure / intensity model of an image sensor.

A pixel collects ``n ~ Poisson(r * lambda)`` photo-electrons at exposure ratio ``r`` (mean
``lambda`` at the reference exposure), the read-out adds Gaussian noise of ``read_noise_e``
electrons, the amplifier converts at ``gain`` DN per electron (on the 16-bit scale), the
black level is added and the ADC quantises to ``adc_bits`` (values left-justified to 16
bits, so a 12-bit ADC yields multiples of 16 DN), clipping at 0 and at its white level.

Photon transfer (in DN above black, before quantisation): ``mean = g * r * lambda`` and
``var = g * mean + (g * read_noise_e)**2``; quantisation adds ``step**2 / 12``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rawdrift.camera import BAYER_SITES, RAW_SCALE
from rawdrift.errors import RawdriftError

#: Exposure ratios of the published datasets (fraction of the reference exposure).
INTENSITIES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def intensity_name(ratio: float) -> str:
    """Folder / file stem of an exposure ratio as the original data names it: 0.05 -> 'raw_scale005'."""
    return f"raw_scale{int(round(ratio * 100)):03d}"


def check_ratio(ratio: float, where: str = "ratio") -> float:
    """An exposure ratio must lie in (0, 1]."""
    r = float(ratio)
    if not np.isfinite(r) or not (0.0 < r <= 1.0):
        raise RawdriftError(f"{where}: exposure ratio must lie in (0, 1], got {ratio}")
    return r


@dataclass(frozen=True)
class Sensor:
    """Electronics of one sensor.

    Args:
        gain: DN per electron on the 16-bit scale (Raw-Drone: 0.528 * 16 = 8.448).
        read_noise_e: read noise, electrons rms.
        full_well_e: full-well capacity, electrons (charge above it is lost).
        adc_bits: ADC depth; codes are left-justified to 16 bits.
        black_level_dn: offset added before quantisation, 16-bit DN (scalar or 4 per Bayer site).
    """

    gain: float
    read_noise_e: float
    full_well_e: float
    adc_bits: int = 16
    black_level_dn: tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        for name in ("gain", "full_well_e"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise RawdriftError(f"sensor {name}: must be > 0, got {getattr(self, name)}")
        if not (self.read_noise_e >= 0):
            raise RawdriftError(f"sensor read_noise_e: must be >= 0, got {self.read_noise_e}")
        if not (8 <= self.adc_bits <= 16):
            raise RawdriftError(f"sensor adc_bits: expected 8..16, got {self.adc_bits}")

    @property
    def step_dn(self) -> int:
        """Quantisation step on the 16-bit scale (16 for a left-justified 12-bit ADC)."""
        return 2 ** (16 - self.adc_bits)

    @property
    def white_level_dn(self) -> int:
        """Largest code on the 16-bit scale."""
        return (2**self.adc_bits - 1) * self.step_dn

    def black_map(self, shape: tuple[int, ...]) -> np.ndarray:
        """Black level in DN broadcast to (..., H, W) following RGGB sites."""
        bl = np.asarray(self.black_level_dn, dtype=np.float64).reshape(-1)
        if bl.size == 1:
            return np.full(shape[-2:], bl[0])
        out = np.empty(shape[-2:])
        for (r, c), value in zip(BAYER_SITES, bl):
            out[r::2, c::2] = value
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def quantise(dn: np.ndarray, sensor: Sensor) -> np.ndarray:
    """ADC: round to the sensor's code step, clip to [0, white level], uint16."""
    step = sensor.step_dn
    codes = np.floor(np.asarray(dn) / step + 0.5) * step
    return np.clip(codes, 0, sensor.white_level_dn).astype(np.uint16)


def expose(electrons: np.ndarray, sensor: Sensor, ratio: float = 1.0,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Simulate one exposure from the noise-free mean signal.

    Args:
        electrons: mean photo-electrons per pixel at the reference exposure (..., H, W), >= 0.
        sensor: sensor electronics.
        ratio: exposure ratio in (0, 1] (fraction of the reference exposure time).
        rng: random generator (seeded by the caller for reproducibility).

    Returns:
        uint16 raw (..., H, W) on the 16-bit scale, black level included.
    """
    ratio = check_ratio(ratio)
    rng = np.random.default_rng() if rng is None else rng
    lam = np.asarray(electrons, dtype=np.float64)
    if not np.all(np.isfinite(lam)) or lam.min(initial=0.0) < 0:
        raise RawdriftError("electrons: mean signal must be finite and >= 0")
    n = np.minimum(rng.poisson(lam * ratio), sensor.full_well_e)
    return _read_out(n, sensor, rng)


def _read_out(n: np.ndarray, sensor: Sensor, rng: np.random.Generator) -> np.ndarray:
    signal_e = n + rng.normal(0.0, sensor.read_noise_e, size=n.shape) if sensor.read_noise_e > 0 else n
    return quantise(sensor.black_map(n.shape) + sensor.gain * signal_e, sensor)


def electrons_from_raw(raw_dn: np.ndarray, sensor: Sensor) -> np.ndarray:
    """Estimate collected electrons from a uint16 raw: ``(raw - black) / gain``, >= 0 (float)."""
    return np.maximum((np.asarray(raw_dn, dtype=np.float64) - sensor.black_map(np.shape(raw_dn))) / sensor.gain, 0.0)


def thin_exposure(raw_dn: np.ndarray, sensor: Sensor, ratio: float,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """The same scene at a shorter exposure, derived from a recorded raw.

    Binomial thinning keeps each collected electron with probability ``ratio``; if the
    reference count is Poisson(lambda) the result is exactly Poisson(ratio * lambda). The
    electron count is estimated from the raw (read noise and quantisation of the reference
    stay in it, scaled by ``ratio``), then a fresh read-out adds read noise and quantisation.

    Args:
        raw_dn: uint16 raw (..., H, W) at the reference exposure.
        ratio: exposure ratio in (0, 1].

    Returns:
        uint16 raw of the same shape.
    """
    ratio = check_ratio(ratio)
    rng = np.random.default_rng() if rng is None else rng
    raw_dn = np.asarray(raw_dn)
    if raw_dn.dtype != np.uint16:
        raise RawdriftError(f"raw: expected uint16 on the 16-bit scale, got {raw_dn.dtype}")
    n = np.rint(electrons_from_raw(raw_dn, sensor)).astype(np.int64)
    return _read_out(rng.binomial(n, ratio), sensor, rng)


def to_unit(raw_dn: np.ndarray) -> np.ndarray:
    """uint16 DN -> float32 in [0, 1] (division by 2**16 - 1)."""
    return np.asarray(raw_dn, dtype=np.float32) / np.float32(RAW_SCALE)


#: Raw-Drone: Sony IMX183 at ISO 200, 0.528 DN/e- on 12 bits left-justified to 16 bits.
#: Full well is the 12-bit range above black in electrons (4095 / 0.528 = 7,760 e-); read
#: noise 2.5 e- is an assumption (typical for the IMX183 at low gain; not published).
DRONE_SENSOR = Sensor(gain=8.448, read_noise_e=2.5, full_well_e=4095 / 0.528, adc_bits=12,
                      black_level_dn=(0.0625 * RAW_SCALE, 0.0626 * RAW_SCALE, 0.0625 * RAW_SCALE, 0.0626 * RAW_SCALE))

#: Raw-Microscopy: PCO edge 5.5, full well ~30,000 e- over 16 bits (gain 65535 / 30000 DN/e-),
#: read noise ~1.2 e- (datasheet figures, approximate).
MICROSCOPY_SENSOR = Sensor(gain=RAW_SCALE / 30000.0, read_noise_e=1.2, full_well_e=30000.0, adc_bits=16,
                           black_level_dn=(9.834368023181512e-06 * RAW_SCALE,))

SENSORS: dict[str, Sensor] = {"drone": DRONE_SENSOR, "microscopy": MICROSCOPY_SENSOR}
