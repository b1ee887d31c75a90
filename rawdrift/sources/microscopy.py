"""Synthetic Raw-Microscopy: bright-field blood-smear tiles with one leukocyte each.

Physics, in order (one tile):
1. Scene: stain densities on a supersampled grid (um units): red cells (haemoglobin/eosin,
   central pallor), the leukocyte's cytoplasm, nucleus (class-specific shape, chromatin
   texture) and granules (class-specific size, number and stain), plasma.
2. Beer-Lambert: transmission per camera channel ``T_c = exp(-sum_s eps[s, c] d_s)``; the
   channels are the 620 / 525 / 450 nm filter exposures (R, G, B) of the original set-up,
   and ``eps`` gives each stain its optical density at those wavelengths.
3. Illumination: the halogen lamp through each filter, i.e. the camera response to the
   empty field, chosen as the camera-space colour that the dataset's white balance and
   colour matrix render as neutral white (the inverse of the colour transform).
4. Optics: Airy PSF per wavelength, scaled so the FWHM at 525 nm is the measured 450 nm of the
   study's 40x / 0.95 objective on 0.1625 um pixels (facts.md), i.e. 2.77 pixels; a small random
   defocus per tile; pixel-area integration. See "Tile geometry" for tiles of fewer pixels.
5. Sensor: RGGB sampling (the original subsampled three monochrome exposures into a mosaic),
   Poisson shot noise, read noise, 16-bit quantisation (:mod:`rawdrift.sensor`), at each
   exposure ratio from the same mean signal.

Tile geometry: a tile always covers the original field (256 px x 0.1625 um = 41.6 um); a
smaller ``tile`` samples it with larger pixels, so the cell stays whole at every size. That is
a lower-magnification objective on the same camera, and ``optics`` says which one:

- ``matched`` (default): an objective whose resolution matches the new pixel, as objectives are
  made (numerical aperture roughly proportional to magnification: 40x / 0.95, 10x / 0.25,
  4x / 0.10) and as a microscopist pairs them with a camera (Nyquist sampling). The PSF and the
  focus spread keep their size in pixels (FWHM 2.77 px at 525 nm), so every tile size sees the
  study's relation between optical blur and the ISP's 3 x 3 / 5 x 5 kernels. At 40 px this is a
  6.2x objective of NA 0.15 (FWHM 2.9 um).
- ``objective``: the study's 40x / 0.95 objective whatever the pixel (FWHM 0.45 um), i.e. a
  sensor with larger pixels behind the same lens: at 40 px (1.04 um) the PSF is 0.43 px wide and
  the image is aliased, so the ISP's pixel-scale filters act on the cells' structure itself.
"""

from __future__ import annotations

import numpy as np

from rawdrift.camera import MICROSCOPY_CAMERA, RAW_SCALE
from rawdrift.optics import AIRY_FWHM_PER_R0, airy_kernel, bin_pixels, blur, gaussian_kernel, mosaic_rggb
from rawdrift.sources import shapes as S

#: Classes of Raw-Microscopy and their shares in % (facts.md).
CLASS_SHARES: dict[str, float] = {
    "BAS": 1.91, "EOS": 5.74, "KSC": 17.34, "LYA": 3.19, "LYT": 24.47,
    "MON": 20.32, "NGB": 0.85, "NGS": 22.98, "UNC": 3.19}
CLASSES: tuple[str, ...] = tuple(CLASS_SHARES)

FIELD_UM: float = 256 * 0.1625
NATIVE_PITCH_UM: float = 0.1625
WAVELENGTH_UM: tuple[float, float, float] = (0.620, 0.525, 0.450)   # camera R, G, B filters
NA_OBJECTIVE: float = 0.95
PSF_FWHM_UM_AT_525: float = 0.45
#: Largest focus error per tile, as the sigma (um) of the Gaussian blur it adds to the PSF; tiles draw uniformly below it.
DEFOCUS_SIGMA_UM: float = 0.12
#: How the optics follow the pixel of a tile smaller than the study's (module docstring).
OPTICS: tuple[str, ...] = ("matched", "objective")
#: Linear brightness of the empty field after white balance + colour matrix.
BACKGROUND_LINEAR: float = 0.82

#: Optical density per unit stain density at (620, 525, 450) nm.
STAINS: dict[str, tuple[float, float, float]] = {
    "plasma": (0.02, 0.03, 0.03),
    "rbc": (0.10, 0.85, 0.70),          # haemoglobin + eosin: salmon pink
    "nucleus": (1.25, 1.75, 0.80),      # azure B - eosinate chromatin: purple
    "cyto_lymph": (0.55, 0.32, 0.10),   # basophilic cytoplasm: sky blue
    "cyto_mono": (0.38, 0.32, 0.20),    # grey-blue
    "cyto_neut": (0.10, 0.24, 0.12),    # pale pink-lilac
    "gran_neut": (0.30, 0.55, 0.25),    # fine lilac granules
    "gran_eos": (0.12, 1.45, 0.95),     # eosinophilic granules: orange-red
    "gran_bas": (1.60, 2.00, 1.00),     # basophilic granules: blue-black
}


def electrons_white(pitch_um: float) -> np.ndarray:
    """Mean photo-electrons per pixel of the empty field for camera R, G, B (3,), at ratio 1.

    The value is the camera-space colour of neutral white at :data:`BACKGROUND_LINEAR`,
    so it is independent of pixel size (exposure is set per field, as a user would).
    """
    from rawdrift.sensor import MICROSCOPY_SENSOR
    raw = MICROSCOPY_CAMERA.camera_from_linear_rgb(np.full(3, BACKGROUND_LINEAR))
    return raw * RAW_SCALE / MICROSCOPY_SENSOR.gain


def _lobes_on_arc(rng, n, arc_r, spread, r_lobe, rot):
    ang = np.linspace(-spread / 2, spread / 2, n) + rot + rng.normal(0, 0.12, n)
    pts = [(arc_r * np.sin(a) + rng.normal(0, 0.25), arc_r * np.cos(a) + rng.normal(0, 0.25)) for a in ang]
    radii = r_lobe * rng.uniform(0.85, 1.15, n)
    return pts, radii


def _nucleus(rng, y, x, kind: str, cell_r: float, rot: float, edge: float) -> np.ndarray:
    """Nuclear density (0..~1.2) of a leukocyte centred at 0; shape by ``kind``."""
    if kind == "round":           # lymphocyte: round, slightly eccentric
        off = rng.uniform(0, 0.15) * cell_r
        sdf = S.sdf_blob(y, x, off * np.sin(rot), off * np.cos(rot), rng.uniform(0.72, 0.85) * cell_r,
                         [(2, rng.uniform(0, 0.05), rng.uniform(0, 6.3)), (3, rng.uniform(0, 0.03), 0.0)], rot)
    elif kind == "irregular":     # atypical lymphocyte
        sdf = S.sdf_blob(y, x, 0, 0, rng.uniform(0.45, 0.6) * cell_r,
                         [(2, rng.uniform(0.05, 0.15), rng.uniform(0, 6.3)),
                          (3, rng.uniform(0.03, 0.1), rng.uniform(0, 6.3))], rot)
    elif kind == "kidney":        # monocyte: reniform / folded
        a, b = rng.uniform(0.55, 0.68) * cell_r, rng.uniform(0.38, 0.48) * cell_r
        sdf = S.sdf_ellipse(y, x, 0, 0, a, b, rot)
        dent = S.sdf_disc(y, x, (b * 1.05) * np.cos(rot), -(b * 1.05) * np.sin(rot), 0.55 * b)
        sdf = np.maximum(sdf, -dent)
    elif kind in ("segmented", "bilobed"):
        n = rng.integers(3, 6) if kind == "segmented" else 2
        spread = rng.uniform(2.0, 3.2) if kind == "segmented" else rng.uniform(1.6, 2.4)
        pts, radii = _lobes_on_arc(rng, n, 0.45 * cell_r, spread, 0.24 * cell_r, rot)
        sdf = np.full(y.shape, np.inf)
        for (py, px), r in zip(pts, radii):
            sdf = np.minimum(sdf, S.sdf_ellipse(y, x, py, px, r, r * rng.uniform(0.7, 0.95), rng.uniform(0, 6.3)))
        sdf = np.minimum(sdf, S.sdf_polyline(y, x, pts, 0.12))      # thin chromatin filaments
    elif kind == "band":          # band neutrophil: C/U-shaped band of even width
        arc = rng.uniform(2.4, 3.6)
        ang = np.linspace(-arc / 2, arc / 2, 12) + rot
        rr = 0.42 * cell_r * (1 + rng.normal(0, 0.04, ang.size))
        pts = list(zip(rr * np.sin(ang), rr * np.cos(ang)))
        sdf = S.sdf_polyline(y, x, pts, rng.uniform(0.12, 0.15) * cell_r)
    elif kind == "smudge":        # smudge cell: ruptured, spread, streaky chromatin
        sdf = S.sdf_blob(y, x, 0, 0, cell_r, [(k, rng.uniform(0.05, 0.2), rng.uniform(0, 6.3)) for k in (2, 3, 5)], rot)
    else:
        raise ValueError(kind)
    cov = S.coverage(sdf, edge)
    return cov


_CLASS_SPEC = {
    #        cell diam (um), nucleus kind, cytoplasm stain, cyto density, granules
    "LYT": ((7.5, 10.0), "round", "cyto_lymph", 0.9, None),
    "LYA": ((12.0, 17.0), "irregular", "cyto_lymph", 1.2, None),
    "MON": ((14.0, 19.0), "kidney", "cyto_mono", 1.0, ("gran_neut", 0.10, 40, 0.35)),
    "NGS": ((10.5, 13.0), "segmented", "cyto_neut", 1.0, ("gran_neut", 0.09, 500, 0.55)),
    "NGB": ((10.5, 13.0), "band", "cyto_neut", 1.0, ("gran_neut", 0.09, 500, 0.55)),
    "EOS": ((12.0, 15.0), "bilobed", "cyto_neut", 0.6, ("gran_eos", 0.28, 260, 0.9)),
    "BAS": ((10.0, 13.0), "bilobed", "cyto_neut", 0.7, ("gran_bas", 0.33, 45, 0.9)),
}


def scene_densities(rng: np.random.Generator, label: str, n: int) -> np.ndarray:
    """Optical density per camera channel (3, n, n) of one tile's scene on an n x n grid."""
    pitch = FIELD_UM / n
    y, x = S.grid(n, FIELD_UM)
    edge = max(0.06, 0.4 * pitch)
    od = np.zeros((3, n, n))

    def add(stain: str, density: np.ndarray) -> None:
        od[:] += np.asarray(STAINS[stain]).reshape(3, 1, 1) * density

    add("plasma", np.ones((n, n)) * rng.uniform(0.5, 1.5))
    # the leukocyte, centred with jitter; the cell centre is the origin of its shapes
    cy, cx = rng.uniform(-3, 3, 2)
    ly, lx = y - cy, x - cx
    rot = rng.uniform(0, 2 * np.pi)
    kind = label
    if label == "UNC":   # unclear morphology: a degenerate or mixed cell of another class
        kind = rng.choice(["LYT", "LYA", "MON", "NGS", "NGB", "EOS", "BAS"])
    cell_r = 0.0
    if kind == "KSC":
        cell_r = rng.uniform(2.5, 6.0)
    else:
        (d0, d1), nuc_kind, cyto, cyto_d, gran = _CLASS_SPEC[kind]
        cell_r = rng.uniform(d0, d1) / 2
    # red cells around (not under) the leukocyte
    for _ in range(rng.integers(5, 13)):
        for _try in range(20):
            ry, rx = rng.uniform(-FIELD_UM / 2 - 3, FIELD_UM / 2 + 3, 2)
            if np.hypot(ry - cy, rx - cx) > cell_r + rng.uniform(2.0, 4.5):
                break
        rr = rng.uniform(3.4, 4.1)
        rho = np.hypot(y - ry, x - rx) / rr
        pallor = 1.0 - 0.45 * np.exp(-(rho / 0.45) ** 2)              # thinner centre
        add("rbc", S.coverage(S.sdf_ellipse(y, x, ry, rx, rr, rr * rng.uniform(0.88, 1.0), rng.uniform(0, 6.3)), edge)
            * pallor * rng.uniform(0.8, 1.1))
    if kind == "KSC":
        texture = 1 + 0.6 * S.smooth_noise(rng, (n, n), 0.35 / pitch)
        streaks = np.clip(1 + 0.8 * S.smooth_noise(rng, (n, n), 0.2 / pitch), 0, None)
        smudge = _nucleus(rng, ly, lx, "smudge", cell_r, rot, 4 * edge)
        add("nucleus", smudge * np.clip(texture * streaks, 0, 2.5) * rng.uniform(0.25, 0.55))
        for _ in range(rng.integers(0, 4)):                          # debris fragments
            fy, fx = rng.uniform(-cell_r - 3, cell_r + 3, 2)
            add("nucleus", S.coverage(S.sdf_blob(ly, lx, fy, fx, rng.uniform(0.4, 1.2), [(3, 0.2, rng.uniform(0, 6))]), edge)
                * rng.uniform(0.3, 0.8))
        return od
    cell = S.coverage(S.sdf_blob(ly, lx, 0, 0, cell_r, [(2, rng.uniform(0, 0.06), rng.uniform(0, 6.3)),
                                                       (3, rng.uniform(0, 0.03), rng.uniform(0, 6.3))]), edge)
    nucleus = _nucleus(rng, ly, lx, nuc_kind, cell_r, rot, edge)
    chromatin = 1 + (0.35 if kind == "MON" else 0.22) * S.smooth_noise(rng, (n, n), 0.25 / pitch)
    nuc_density = {"MON": 0.75, "LYT": 1.15, "LYA": 0.95}.get(kind, 1.05) * rng.uniform(0.9, 1.1)
    cyto_density = cell * (1 - nucleus) * cyto_d * rng.uniform(0.85, 1.15)
    if kind == "LYA":    # deeper basophilia towards the membrane
        cyto_density *= 0.6 + 0.8 * np.clip(np.hypot(ly, lx) / cell_r, 0, 1) ** 2
    if kind == "MON":    # vacuoles
        for _ in range(rng.integers(2, 8)):
            vy, vx = S.sample_inside(rng, cell * (1 - nucleus), 1)
            if vy.size:
                vr = rng.uniform(0.3, 0.8)
                cyto_density *= 1 - 0.8 * S.coverage(S.sdf_disc(y, x, y[int(vy[0]), 0], x[0, int(vx[0])], vr), edge)
    if label == "UNC":   # degenerate: pale, partly lysed, no crisp nucleus
        nuc_density *= rng.uniform(0.45, 0.75)
        cyto_density *= rng.uniform(0.3, 0.8)
    add(cyto, cyto_density)
    add("nucleus", nucleus * np.clip(chromatin, 0.2, None) * nuc_density)
    if gran is not None:
        stain, radius_um, count, amp = gran
        where = cell if stain == "gran_bas" else cell * (1 - 0.85 * nucleus)
        scale = (cell_r / 6.0) ** 2
        ys, xs = S.sample_inside(rng, where, int(rng.poisson(count * scale)))
        r_um = radius_um * rng.uniform(0.8, 1.2)
        add(stain, S.splat((n, n), ys, xs, r_um / pitch / 1.2, amp) * where)
    return od


def optical_scale(tile: int, optics: str = "matched") -> float:
    """Factor on the study's PSF width and focus spread for a ``tile``-pixel tile (>= 1 below 256 px).

    ``matched``: ``max(1, pitch / 0.1625 um)`` (the blur keeps its size in pixels, never sharper
    than the study's 40x / 0.95 objective); ``objective``: 1.
    """
    if optics not in OPTICS:
        raise ValueError(f"optics must be one of {', '.join(OPTICS)}, got {optics!r}")
    return max(1.0, FIELD_UM / tile / NATIVE_PITCH_UM) if optics == "matched" else 1.0


def psf_kernels(pitch_um: float, blur_scale: float = 1.0, defocus_um: float = 0.0) -> list[np.ndarray]:
    """Point-spread function per camera channel (R, G, B) on a grid of ``pitch_um`` (um per pixel).

    The Airy pattern of FWHM ``0.45 um x lambda / 525 nm x blur_scale`` (the study's measured PSF,
    widened by :func:`optical_scale`), convolved with a Gaussian of sigma ``defocus_um`` (already
    scaled) for the tile's focus error when that is above 0.02 um x ``blur_scale``.
    """
    from scipy.signal import fftconvolve
    kernels = []
    for lam in WAVELENGTH_UM:
        fwhm = PSF_FWHM_UM_AT_525 * lam / 0.525 * blur_scale
        k = airy_kernel(fwhm / AIRY_FWHM_PER_R0 / pitch_um)
        if defocus_um > 0.02 * blur_scale:
            k = fftconvolve(k, gaussian_kernel(defocus_um / pitch_um), mode="full")
        kernels.append(k)
    return kernels


def render_tile(rng: np.random.Generator, label: str, tile: int, optics: str = "matched") -> np.ndarray:
    """Mean photo-electrons of one tile's RGGB mosaic (tile, tile) at exposure ratio 1.

    ``optics``: ``matched`` or ``objective`` (module docstring, "Tile geometry").
    """
    blur_scale = optical_scale(tile, optics)
    pitch_out = FIELD_UM / tile
    ss = max(2, int(np.ceil(pitch_out / NATIVE_PITCH_UM)))
    n = tile * ss
    pitch = FIELD_UM / n
    od = scene_densities(rng, label, n)
    transmission = np.exp(-od)
    white = electrons_white(pitch_out)
    illum = 1 + 0.03 * S.smooth_noise(rng, (n, n), n / 3)            # Koehler field flatness
    defocus_um = rng.uniform(0.0, DEFOCUS_SIGMA_UM) * blur_scale
    rgb = np.empty_like(transmission)
    for c, k in enumerate(psf_kernels(pitch, blur_scale, defocus_um)):
        rgb[c] = blur(transmission[c] * illum, k) * white[c]
    return mosaic_rggb(bin_pixels(rgb, ss))
