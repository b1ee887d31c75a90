"""Camera model: Bayer layout, bit depth, black level, white balance and colour matrix.

All raw values in rawdrift are normalised to [0, 1] by ``2**16 - 1`` (16-bit scale),
whatever the ADC's native depth; a 12-bit ADC whose values are left-justified to 16 bits
(as in Raw-Drone) is described by ``adc_bits=12``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rawdrift.errors import RawdriftError
from rawdrift.io import read_json

#: Number of DN on the 16-bit scale that map to 1.0.
RAW_SCALE: int = 2**16 - 1

#: Bayer sites of the RGGB pattern, in the order black levels are given: (row, col) offsets.
BAYER_SITES: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))
#: Colour channel (0=R, 1=G, 2=B) sampled at each site of :data:`BAYER_SITES`.
BAYER_CHANNELS: tuple[int, ...] = (0, 1, 1, 2)


@dataclass(frozen=True)
class Camera:
    """Colour and layout parameters of one camera (one dataset).

    Args:
        black_level: 4 values, one per Bayer site R, G(0,1), G(1,0), B, on the [0, 1] scale.
        white_balance: 3 gains for R, G, B (may be negative when folded into an unusual
            colour matrix, as for Raw-Microscopy; the product ``colour_matrix @ diag(wb)``
            must be invertible).
        colour_matrix: 3x3 row-major matrix, ``v_cc[c] = sum_k M[c, k] * v_wb[k]``.
        pattern: Bayer pattern; only ``"RGGB"`` is supported.
        adc_bits: native ADC depth (values are left-justified to 16 bits).
        name: free-form label.
    """

    black_level: tuple[float, float, float, float]
    white_balance: tuple[float, float, float]
    colour_matrix: tuple[tuple[float, float, float], ...]
    pattern: str = "RGGB"
    adc_bits: int = 16
    name: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __init__(self, black_level, white_balance, colour_matrix, pattern: str = "RGGB",
                 adc_bits: int = 16, name: str = "", extra: dict | None = None) -> None:
        bl = np.asarray(black_level, dtype=np.float64).reshape(-1)
        wb = np.asarray(white_balance, dtype=np.float64).reshape(-1)
        cm = np.asarray(colour_matrix, dtype=np.float64)
        if bl.size == 1:
            bl = np.repeat(bl, 4)
        if bl.shape != (4,):
            raise RawdriftError(f"camera black_level: expected 4 values (R, G, G, B), got {bl.size}")
        if wb.shape != (3,):
            raise RawdriftError(f"camera white_balance: expected 3 values (R, G, B), got {wb.size}")
        if cm.size != 9:
            raise RawdriftError(f"camera colour_matrix: expected 9 values (3x3), got {cm.size}")
        cm = cm.reshape(3, 3)
        for name_, arr in (("black_level", bl), ("white_balance", wb), ("colour_matrix", cm)):
            if not np.all(np.isfinite(arr)):
                raise RawdriftError(f"camera {name_}: values must be finite, got {arr.tolist()}")
        if np.any(bl < 0) or np.any(bl >= 1):
            raise RawdriftError(f"camera black_level: values must lie in [0, 1), got {bl.tolist()}")
        transform = cm @ np.diag(wb)
        cond = np.linalg.cond(transform)
        if not np.isfinite(cond) or cond > 1e4:
            raise RawdriftError(
                f"camera colour_matrix @ diag(white_balance) is singular or ill-conditioned (cond={cond:.3g})")
        if pattern != "RGGB":
            raise RawdriftError(f"camera pattern: only RGGB is supported, got {pattern!r}")
        if not (8 <= int(adc_bits) <= 16):
            raise RawdriftError(f"camera adc_bits: expected 8..16, got {adc_bits}")
        object.__setattr__(self, "black_level", tuple(float(v) for v in bl))
        object.__setattr__(self, "white_balance", tuple(float(v) for v in wb))
        object.__setattr__(self, "colour_matrix", tuple(tuple(float(v) for v in row) for row in cm))
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "adc_bits", int(adc_bits))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "extra", dict(extra or {}))

    @property
    def colour_transform(self) -> np.ndarray:
        """The 3x3 map from demosaiced camera RGB to linear output RGB: ``M @ diag(wb)``."""
        return np.asarray(self.colour_matrix) @ np.diag(self.white_balance)

    def camera_from_linear_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Map linear output RGB (..., 3) to camera RGB (..., 3) above black level.

        This is the inverse of white balance + colour correction, used to put scene
        colours into camera space so the static data model renders them back.
        """
        inv = np.linalg.inv(self.colour_transform)
        return np.asarray(rgb, dtype=np.float64) @ inv.T

    def black_level_map(self, height: int, width: int) -> np.ndarray:
        """Per-pixel black level (H, W) of the RGGB mosaic, on the [0, 1] scale."""
        out = np.empty((height, width), dtype=np.float64)
        for (r, c), value in zip(BAYER_SITES, self.black_level):
            out[r::2, c::2] = value
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "pattern": self.pattern, "adc_bits": self.adc_bits,
                "black_level": list(self.black_level), "white_balance": list(self.white_balance),
                "colour_matrix": [list(r) for r in self.colour_matrix], **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        known = {"name", "pattern", "adc_bits", "black_level", "white_balance", "colour_matrix"}
        missing = {"black_level", "white_balance", "colour_matrix"} - set(d)
        if missing:
            raise RawdriftError(f"camera: missing field(s) {sorted(missing)}")
        return cls(d["black_level"], d["white_balance"], d["colour_matrix"],
                   pattern=d.get("pattern", "RGGB"), adc_bits=d.get("adc_bits", 16),
                   name=d.get("name", ""), extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def load(cls, path: str | Path) -> "Camera":
        """Read ``camera.json``; errors name the file."""
        d = read_json(path)
        try:
            return cls.from_dict(d)
        except RawdriftError as e:
            raise RawdriftError(f"{path}: {e}") from None


#: Camera parameters of the two published datasets (facts.md).
DRONE_CAMERA = Camera(
    black_level=(0.0625, 0.0626, 0.0625, 0.0626),
    white_balance=(2.86653646, 1.0, 1.73079425),
    colour_matrix=((1.50768983, -0.33571374, -0.17197604),
                   (-0.23048614, 1.70698738, -0.47650126),
                   (-0.03119153, -0.32803956, 1.35923111)),
    adc_bits=12, name="Raw-Drone (Hasselblad L1D-20c, Sony IMX183)")

MICROSCOPY_CAMERA = Camera(
    black_level=(9.834368023181512e-06,) * 4,
    white_balance=(-0.6567, 1.9673, 3.5304),
    colour_matrix=((-2.0338, 0.0933, 0.4157),
                   (-0.0286, 2.6464, -0.0574),
                   (-0.5516, -0.0947, 2.9308)),
    adc_bits=16, name="Raw-Microscopy (PCO edge 5.5, 450/525/620 nm)")

CAMERAS: dict[str, Camera] = {"drone": DRONE_CAMERA, "microscopy": MICROSCOPY_CAMERA}


def check_mosaic_shape(shape: tuple[int, ...], where: str = "raw") -> None:
    """The layout rule of an RGGB mosaic (H, W) or a batch of them (..., H, W): both sides even
    (whole 2x2 :data:`BAYER_SITES` cells) and >= 4. ``where`` starts the error message."""
    h, w = shape[-2:]
    if h < 4 or w < 4 or h % 2 or w % 2:
        raise RawdriftError(f"{where}: raw sides must be even and >= 4 for an RGGB mosaic, got {h}x{w}")


def check_raw(raw, where: str = "raw", batched: bool = False):
    """Validate normalised raw data, one set of rules for numpy and torch: a mosaic (H, W)
    (``batched``: a batch (B, H, W)), floating dtype, sides even and >= 4, every value finite
    and inside [0, 1].

    A numpy mosaic comes back as float64; a torch tensor comes back as it is (the value check
    is one fused reduction, one host sync on a GPU). ``where`` names the file or array in errors.
    """
    is_tensor = hasattr(raw, "is_floating_point") and not isinstance(raw, np.ndarray)
    arr = raw if is_tensor else np.asarray(raw)
    ndim = 3 if batched else 2
    if arr.ndim != ndim:
        expected = "a batch of raw mosaics (B, H, W)" if batched else "a 2-D raw mosaic (H, W)"
        raise RawdriftError(f"{where}: expected {expected}, got shape {tuple(arr.shape)}")
    floating = arr.is_floating_point() if is_tensor else np.issubdtype(arr.dtype, np.floating)
    if not floating:
        raise RawdriftError(
            f"{where}: expected float values in [0, 1], got dtype {arr.dtype} (divide uint16 by 65535)")
    check_mosaic_shape(tuple(arr.shape), where)
    if not bool(((arr >= 0) & (arr <= 1)).all()):       # NaN and inf fail both comparisons
        finite = arr.isfinite() if is_tensor else np.isfinite(arr)
        if not bool(finite.all()):
            raise RawdriftError(f"{where}: contains NaN or inf")
        raise RawdriftError(f"{where}: values must lie in [0, 1], got [{float(arr.min()):.4g}, {float(arr.max()):.4g}]")
    return arr if is_tensor else arr.astype(np.float64, copy=False)
