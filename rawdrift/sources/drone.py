"""Synthetic Raw-Drone: aerial tiles with roads, vegetation, roofs, shadows and cars.

Physics, in order (one tile):
1. Scene: linear reflectances (albedo, linear sRGB primaries) of ground cover (grass, soil,
   asphalt roads with markings, parking areas, roofs, tree canopies) and cars of varied
   colour and heading, on a supersampled grid in metres, plus a height for each object.
2. Illumination: direct sun plus bluer diffuse skylight; objects of height h cast shadows
   displaced by ``h / tan(elevation)`` away from the sun, where only skylight remains.
3. Camera space: radiance -> camera RGB through the inverse of the dataset's white balance
   and colour matrix (so the static model renders natural colours), scaled by the exposure.
4. Optics: diffraction-limited Airy PSF whose first dark ring has the measured 12.5 um
   diameter on 2.4 um pixels; pixel-area integration.
5. Sensor (:mod:`rawdrift.sensor`): RGGB sampling, Poisson shot noise, read noise, gain
   8.448 DN/e- on the 16-bit scale, black level 0.0625, 12-bit ADC left-justified.

The car mask is the visible part of the cars' footprints (not under a roof or canopy) at
output resolution (coverage >= 0.5); every tile holds at least one car, as the published
tiles do. A tile always covers the original field
(256 px x 6 cm = 15.36 m); a smaller ``tile`` samples it with larger pixels (like flying
higher with the same camera), with the PSF scaled in proportion.
"""

from __future__ import annotations

import numpy as np

from rawdrift.camera import DRONE_CAMERA, RAW_SCALE
from rawdrift.optics import airy_kernel, bin_pixels, blur, mosaic_rggb
from rawdrift.sources import shapes as S

FIELD_M: float = 256 * 0.06
NATIVE_GSD_M: float = 0.06
PIXEL_UM: float = 2.4
PSF_DIAMETER_UM: float = 12.5
#: Linear output value of a white (albedo 1) surface in full sun; 1.0 fills the 12-bit range.
EXPOSURE: float = 0.95
SKY_FRACTION: float = 0.22
SKY_COLOUR = np.array([0.80, 0.95, 1.30])

#: Linear albedos (R, G, B).
GRASS = np.array([0.045, 0.085, 0.028])
DRY_GRASS = np.array([0.11, 0.10, 0.05])
SOIL = np.array([0.16, 0.12, 0.085])
ASPHALT = np.array([0.065, 0.066, 0.070])
CONCRETE = np.array([0.32, 0.31, 0.29])
PAINT = np.array([0.62, 0.62, 0.58])
TREE = np.array([0.030, 0.060, 0.020])
ROOFS = [np.array(v) for v in ([0.24, 0.07, 0.045], [0.16, 0.16, 0.16], [0.12, 0.075, 0.05],
                               [0.45, 0.44, 0.40], [0.07, 0.08, 0.09])]
#: Car paints with their shares (white, black, grey, silver, blue, red, other).
CAR_PAINTS = [(np.array(v), p) for v, p in (
    ([0.70, 0.70, 0.68], 0.25), ([0.025, 0.025, 0.028], 0.20), ([0.16, 0.16, 0.17], 0.18),
    ([0.42, 0.43, 0.44], 0.15), ([0.03, 0.07, 0.25], 0.08), ([0.45, 0.03, 0.03], 0.08),
    ([0.30, 0.22, 0.06], 0.03), ([0.05, 0.20, 0.08], 0.03))]
GLASS = np.array([0.035, 0.04, 0.045])


def electrons_per_linear_unit() -> np.ndarray:
    """Photo-electrons per unit of linear output colour, per camera channel: applied after
    the inverse colour transform (raw is on the [0, 1] scale above black)."""
    from rawdrift.sensor import DRONE_SENSOR
    return RAW_SCALE / DRONE_SENSOR.gain


def _paint(rng):
    colours, p = zip(*CAR_PAINTS)
    c = colours[rng.choice(len(colours), p=np.array(p) / sum(p))]
    return c * rng.uniform(0.85, 1.15, 3)


def scene(rng: np.random.Generator, n: int):
    """Radiance (3, n, n) in linear output units, visible car coverage (n, n) and the car count."""
    y, x = S.grid(n, FIELD_M)
    pitch = FIELD_M / n
    edge = 0.35 * pitch
    f = FIELD_M / 2
    # sun
    elev = np.deg2rad(rng.uniform(30, 65))
    azim = rng.uniform(0, 2 * np.pi)
    sdir = np.array([np.sin(azim), np.cos(azim)]) / np.tan(elev)   # shadow offset per metre of height

    # ground cover from a low-frequency field
    field = S.smooth_noise(rng, (n, n), 3.0 / pitch)
    wet = np.clip(0.5 + 0.5 * S.smooth_noise(rng, (n, n), 1.2 / pitch), 0, 1)
    base = np.where(field[None] > rng.uniform(0.3, 1.2), SOIL[:, None, None],
                    (GRASS[:, None, None] * wet + DRY_GRASS[:, None, None] * (1 - wet)))
    albedo = base * (1 + 0.18 * S.smooth_noise(rng, (n, n), 0.15 / pitch))
    height_objects = []   # (sdf function of (y, x), height)

    def lay(mask, colour, texture=0.06):
        nonlocal albedo
        tex = 1 + texture * S.smooth_noise(rng, (n, n), 0.1 / pitch)
        albedo = albedo * (1 - mask) + colour.reshape(3, 1, 1) * tex * mask

    car_slots = []   # candidate (cy, cx, angle)
    layout = rng.choice(["road", "parking", "both"], p=[0.45, 0.25, 0.30])
    if layout in ("road", "both"):
        ang = rng.uniform(0, np.pi)
        oy, ox = rng.uniform(-f * 0.5, f * 0.5, 2)
        half = rng.uniform(3.0, 4.2)
        u, v = S.rotate(y, x, oy, ox, ang)
        lay(S.coverage(np.abs(v) - half - 1.8, edge), CONCRETE, 0.08)       # sidewalks
        lay(S.coverage(np.abs(v) - half, edge), ASPHALT, 0.1)
        dash = (np.mod(u + rng.uniform(0, 9), 9.0) < 3.0)
        lay(S.coverage(np.abs(v) - 0.075, 0.5 * edge) * dash, PAINT, 0.05)
        lay(S.coverage(np.abs(np.abs(v) - half + 0.3) - 0.07, 0.5 * edge), PAINT, 0.05)
        for lane in (-1, 1):
            for t in np.arange(-f * 1.5, f * 1.5, 7.0):
                t = t + rng.uniform(-1.5, 1.5)
                off = lane * half / 2 + rng.normal(0, 0.15)
                car_slots.append((oy + t * np.sin(ang) + off * np.cos(ang),
                                  ox + t * np.cos(ang) - off * np.sin(ang), ang + rng.normal(0, 0.04)))
    if layout in ("parking", "both"):
        ang = rng.uniform(0, np.pi)
        py, px = rng.uniform(-f * 0.6, f * 0.6, 2)
        plen, pwid = rng.uniform(10, 16), rng.uniform(10, 14)
        lay(S.coverage(S.sdf_box(y, x, py, px, plen, pwid, ang), edge), ASPHALT * rng.uniform(0.9, 1.5), 0.1)
        u, v = S.rotate(y, x, py, px, ang)
        inside = S.coverage(S.sdf_box(y, x, py, px, plen, pwid, ang), edge)
        stripes = S.coverage(np.abs(np.mod(u, 2.6) - 1.3) - 0.06, 0.5 * edge) * (np.abs(v) > 0.3) * inside
        lay(stripes, PAINT, 0.05)
        for row in (-1, 1):
            for t in np.arange(-plen / 2 + 1.3, plen / 2, 2.6):
                off = row * pwid / 4 + rng.normal(0, 0.2)
                car_slots.append((py + t * np.sin(ang) + off * np.cos(ang),
                                  px + t * np.cos(ang) - off * np.sin(ang), ang + np.pi / 2 + rng.normal(0, 0.05)))
    # buildings with gable roofs
    roofs = []
    for _ in range(rng.integers(0, 3)):
        by, bx = rng.uniform(-f, f, 2)
        bl, bw, ba, bh = rng.uniform(7, 14), rng.uniform(6, 10), rng.uniform(0, np.pi), rng.uniform(4, 9)
        roofs.append((by, bx, bl, bw, ba, bh, ROOFS[rng.integers(len(ROOFS))] * rng.uniform(0.85, 1.15, 3)))
        height_objects.append((lambda yy, xx, b=(by, bx, bl, bw, ba): S.sdf_box(yy, xx, *b), bh))
    trees = []
    for _ in range(rng.integers(0, 6)):
        ty, tx, tr, th = *rng.uniform(-f, f, 2), rng.uniform(1.4, 3.0), rng.uniform(5, 11)
        harm = [(k, rng.uniform(0, 0.12), rng.uniform(0, 6.3)) for k in (3, 5, 7)]
        trees.append((ty, tx, tr, harm))
        height_objects.append((lambda yy, xx, t=(ty, tx, tr, harm): S.sdf_blob(yy, xx, t[0], t[1], t[2], t[3]), th))

    # cars in free slots, not under roofs or trees
    occupied = np.zeros((n, n))
    for by, bx, bl, bw, ba, bh, _ in roofs:
        occupied = np.maximum(occupied, S.coverage(S.sdf_box(y, x, by, bx, bl, bw, ba), edge))
    for ty, tx, tr, harm in trees:
        occupied = np.maximum(occupied, S.coverage(S.sdf_blob(y, x, ty, tx, tr, harm), edge))
    rng.shuffle(car_slots)
    cars = []
    want = rng.integers(1, 7)
    for cy, cx, ca in car_slots:
        if len(cars) >= want:
            break
        if abs(cy) > f + 1 or abs(cx) > f + 1:
            continue
        iy = int(np.clip((cy + f) / pitch, 0, n - 1))
        ix = int(np.clip((cx + f) / pitch, 0, n - 1))
        if occupied[iy, ix] > 0.1 or any(np.hypot(cy - c[0], cx - c[1]) < 5.0 for c in cars):
            continue
        cars.append((cy, cx, ca))
    if not cars:   # a tile always holds a car: place one freely
        cars.append((*rng.uniform(-f * 0.7, f * 0.7, 2), rng.uniform(0, 2 * np.pi)))
    car_cov = np.zeros((n, n))
    car_albedo = np.zeros((3, n, n))
    for cy, cx, ca in cars:
        if rng.random() < 0.5:
            ca += np.pi
        length, width = rng.uniform(3.8, 5.0), rng.uniform(1.65, 1.95)
        body = S.coverage(S.sdf_box(y, x, cy, cx, length, width, ca, 0.45), edge)
        u, v = S.rotate(y, x, cy, cx, ca)
        paint = _paint(rng)
        col = np.broadcast_to(paint.reshape(3, 1, 1), (3, n, n)).copy()
        wind = S.coverage(np.maximum(np.abs(u - 0.16 * length) - 0.11 * length, np.abs(v) - 0.4 * width), edge)
        rear = S.coverage(np.maximum(np.abs(u + 0.30 * length) - 0.06 * length, np.abs(v) - 0.38 * width), edge)
        glass = np.maximum(wind, rear)
        col = col * (1 - glass) + GLASS.reshape(3, 1, 1) * glass
        col = col * (1 + 0.25 * np.exp(-(v / (0.18 * width)) ** 2) * (np.abs(u) < 0.3 * length))  # roof highlight
        car_albedo = car_albedo * (1 - body) + col * body
        car_cov = np.maximum(car_cov, body)
        height_objects.append((lambda yy, xx, c=(cy, cx, length, width, ca): S.sdf_box(yy, xx, *c, 0.45), 1.5))

    # shadows: each object's footprint displaced away from the sun by h / tan(elevation)
    shadow = np.zeros((n, n))
    for sdf_fn, h in height_objects:
        dy, dx = sdir * h
        shadow = np.maximum(shadow, S.coverage(sdf_fn(y - dy, x - dx), 2 * edge))
    sun_ground = 1 - shadow
    # composite: ground, cars, roofs and canopies on top (self-shading by facet for roofs)
    albedo = albedo * (1 - car_cov) + car_albedo
    visible = np.ones((n, n))   # roofs and canopies hide what lies under them, cars included
    for by, bx, bl, bw, ba, bh, colour in roofs:
        m = S.coverage(S.sdf_box(y, x, by, bx, bl, bw, ba), edge)
        u, v = S.rotate(y, x, by, bx, ba)
        facing = np.sign(v) * np.sign(np.sin(azim - ba) + 1e-9)
        facet = 1 + 0.25 * facing
        ridge = S.coverage(np.abs(v) - 0.12, 0.5 * edge)
        rcol = colour.reshape(3, 1, 1) * facet * (1 - 0.4 * ridge) * (1 + 0.05 * S.smooth_noise(rng, (n, n), 0.2 / pitch))
        albedo = albedo * (1 - m) + rcol * m
        visible *= 1 - m
        sun_ground = np.maximum(sun_ground, m)   # roofs are above every shadow here
    for ty, tx, tr, harm in trees:
        m = S.coverage(S.sdf_blob(y, x, ty, tx, tr, harm), edge)
        leaves = 1 + 0.45 * S.smooth_noise(rng, (n, n), 0.25 / pitch)
        albedo = albedo * (1 - m) + TREE.reshape(3, 1, 1) * np.clip(leaves, 0.2, None) * m
        visible *= 1 - m
        sun_ground = np.maximum(sun_ground, m * 0.85)
    irradiance = (1 - SKY_FRACTION) * np.sin(elev) / np.sin(np.deg2rad(50)) * sun_ground[None] \
        + SKY_FRACTION * SKY_COLOUR.reshape(3, 1, 1)
    radiance = np.clip(albedo, 0, 1) * irradiance * EXPOSURE
    return radiance, car_cov * visible, len(cars)


def render_tile(rng: np.random.Generator, tile: int):
    """Mean photo-electrons of one tile's RGGB mosaic (tile, tile) at exposure ratio 1, and
    the uint8 car mask (tile, tile)."""
    pitch_out = FIELD_M / tile
    ss = max(2, int(np.ceil(pitch_out / NATIVE_GSD_M)))
    n = tile * ss
    while True:   # the published tiles all show a car: redraw a scene whose cars are all hidden
        radiance, car_cov, _ = scene(rng, n)
        if (bin_pixels(car_cov, ss) >= 0.5).any():
            break
    camera_rgb = DRONE_CAMERA.camera_from_linear_rgb(radiance.transpose(1, 2, 0)).transpose(2, 0, 1)
    camera_rgb = np.clip(camera_rgb, 0, None) * electrons_per_linear_unit()
    r0_px = (PSF_DIAMETER_UM / 2) / PIXEL_UM * (NATIVE_GSD_M / (FIELD_M / n))
    k = airy_kernel(r0_px)
    blurred = np.stack([blur(c, k) for c in camera_rgb])
    mask = (bin_pixels(car_cov, ss) >= 0.5).astype(np.uint8)
    return mosaic_rggb(bin_pixels(blurred, ss)), mask
