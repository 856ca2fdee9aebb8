"""A procedural coronal knee phantom: magnitude images of plausible anatomy.

Each volume draws its own anatomy (joint height, bone widths, fat thickness, tilt, vessels,
contrast) and each slice is a smooth function of its position ``z`` through the knee, so
neighbouring slices change gradually, as in a real coronal stack. Tissues have soft
(sub-pixel) boundaries and structures at several scales: femur and tibia with cortex and
trabecular marrow, growth-plate scars, articular cartilage, joint fluid, menisci, cruciate and
collateral ligaments, vessels, muscle with fascial septa, subcutaneous fat with septa, skin.
Textures come from 3-D correlated noise fields, so they too vary smoothly across slices.

Coordinates are normalized so that the reconstruction crop spans ``[-1, 1]`` in both
directions: ``u`` runs along the readout (rows, superior to inferior), ``v`` along the
phase-encode direction (columns). All geometry is vectorized over slices.

It is used by :mod:`activemri.data.builtin`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["CONTRASTS", "knee_volume", "noise_field"]

Array = NDArray[np.floating]
Value = Array | float  # a per-slice parameter array or a constant

# Relative signal of each tissue for the two fastMRI knee protocols: proton density (PD) and
# PD with fat suppression (PDFS), where fat and fatty marrow go dark and fluid stays bright.
CONTRASTS: dict[str, dict[str, float]] = {
    "CORPD_FBK": {
        "fat": 1.0, "skin": 0.55, "muscle": 0.36, "marrow": 0.88, "cortex": 0.03,
        "cartilage": 0.62, "fluid": 0.72, "ligament": 0.06, "vessel": 0.78,
    },
    "CORPDFS_FBK": {
        "fat": 0.16, "skin": 0.42, "muscle": 0.34, "marrow": 0.14, "cortex": 0.02,
        "cartilage": 0.58, "fluid": 1.0, "ligament": 0.05, "vessel": 0.85,
    },
}  # fmt: skip


def _soft(sd: Array, width: float) -> Array:
    """Membership in [0, 1] of a region with signed distance ``sd`` (negative inside).

    A cubic smoothstep over ``|sd| < 3 width`` (same central slope as a logistic edge of scale
    ``width``, several times cheaper than ``tanh``).
    """
    t = np.clip(0.5 - sd / (6.0 * width), 0.0, 1.0)
    out: Array = t * t * (3.0 - 2.0 * t)
    return out


def _smooth_min(a: Array, b: Array, k: float) -> Array:
    """Union of two signed-distance fields with a rounded seam of size ``k``."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    out: Array = b + (a - b) * h - k * h * (1.0 - h)
    return out


def _ellipse(u: Array, v: Array, cu: Value, cv: Value, au: Value, av: Value) -> Array:
    """Approximate signed distance to an axis-aligned ellipse."""
    r = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2)
    out: Array = (r - 1.0) * np.minimum(au, av).astype(r.dtype)
    return out


def _segment(u: Array, v: Array, p0: tuple[Value, Value], p1: tuple[Value, Value]) -> Array:
    """Distance to the segment ``p0``-``p1``."""
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((u - p0[0]) * du + (v - p0[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    out: Array = np.sqrt((u - p0[0] - t * du) ** 2 + (v - p0[1] - t * dv) ** 2)
    return out


def noise_field(
    rng: np.random.Generator, shape: tuple[int, int, int], sigma: tuple[float, float, float]
) -> Array:
    """Gaussian-correlated noise of unit standard deviation.

    Args:
        rng: Random generator.
        shape: ``(S, H, W)``.
        sigma: Correlation lengths in samples along each axis.

    Returns:
        Float32 array of ``shape``.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    spectrum = np.fft.rfftn(white)
    freqs = np.meshgrid(
        np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), np.fft.rfftfreq(shape[2]),
        indexing="ij",
    )  # fmt: skip
    exponent = sum((s * f) ** 2 for s, f in zip(sigma, freqs, strict=True))
    field = np.fft.irfftn(spectrum * np.exp(-2.0 * np.pi**2 * exponent), s=shape, axes=(0, 1, 2))
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


@dataclass(frozen=True)
class _Anatomy:
    """Per-volume anatomical parameters (all in normalized crop units)."""

    joint: float
    tilt: float
    shift: float
    leg_radius: float
    fat: float
    fat_asym: float
    condyle_radius: float
    condyle_sep: float
    shaft: float
    plateau: float
    tibia_shaft: float
    cortex: float
    cartilage: float
    gap: float
    fibula_side: float
    z_offset: float
    z_extent: float


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    u = rng.uniform
    return _Anatomy(
        joint=u(-0.12, 0.12),
        tilt=u(-0.08, 0.08),
        shift=u(-0.06, 0.06),
        leg_radius=u(0.72, 0.9),
        fat=u(0.06, 0.16),
        fat_asym=u(-0.3, 0.3),
        condyle_radius=u(0.17, 0.23),
        condyle_sep=u(0.2, 0.26),
        shaft=u(0.2, 0.27),
        plateau=u(0.45, 0.55),
        tibia_shaft=u(0.2, 0.26),
        cortex=u(0.018, 0.03),
        cartilage=u(0.022, 0.035),
        gap=u(0.012, 0.025),
        fibula_side=float(rng.choice([-1.0, 1.0])),
        z_offset=u(-0.15, 0.15),
        z_extent=u(0.5, 0.75),
    )


def knee_volume(
    rng: np.random.Generator,
    num_slices: int,
    image_shape: tuple[int, int],
    crop_shape: tuple[int, int],
    acquisition: str,
) -> Array:
    """Magnitude images of one coronal knee volume.

    Args:
        rng: Random generator; the volume is a deterministic function of its state.
        num_slices: Number of slices ``S``.
        image_shape: ``(H, W)`` of the full field of view (the k-space size).
        crop_shape: ``(h, w)`` of the reconstruction crop; the anatomy is scaled to it.
        acquisition: A key of :data:`CONTRASTS`.

    Returns:
        Float32 array ``(S, H, W)``, non-negative, roughly in ``[0, 1.2]``.
    """
    if acquisition not in CONTRASTS:
        raise ValueError(f"unknown acquisition {acquisition!r}; choose from {list(CONTRASTS)}")
    contrast = CONTRASTS[acquisition]
    a = _draw_anatomy(rng)
    big_h, big_w = image_shape
    h, w = crop_shape
    px = 2.0 / min(h, w)  # one pixel in normalized units
    edge = 0.6 * px
    shape3 = (num_slices, big_h, big_w)

    # float32 halves the cost of the ~200 array operations below; ample for 8-bit-like content.
    u = ((np.arange(big_h) - big_h // 2) / (h / 2.0)).astype(np.float32)[None, :, None]
    v = ((np.arange(big_w) - big_w // 2) / (w / 2.0)).astype(np.float32)[None, None, :]
    z = (np.linspace(-a.z_extent, a.z_extent, num_slices) + a.z_offset).astype(np.float32)
    z = z[:, None, None]
    depth = np.sqrt(np.clip(1.0 - (z / 1.1) ** 2, 0.05, 1.0))  # bones shrink off-center

    # Texture fields, correlated over ~1.5 slices so slices change smoothly.
    def field(scale: float, anisotropy: float = 1.0) -> Array:
        s = scale / px
        return noise_field(rng, shape3, (1.5, s * anisotropy, s))

    coarse = field(0.25)
    fine = field(0.012)
    trabecular = field(0.01)
    septa = field(0.05, anisotropy=4.0)
    fat_septa = field(0.04)

    joint = a.joint + 0.03 * z
    center = a.shift + a.tilt * u
    vc = v - center

    # Leg outline with a knee bulge; fat thickness differs between the two sides.
    bulge = 1.0 + 0.1 * np.exp(-(((u - joint) / 0.5) ** 2))
    leg_r = a.leg_radius * bulge * (1.0 - 0.08 * z**2) * (1.0 + 0.02 * coarse)
    sd_leg = np.abs(vc) - leg_r
    fat_t = a.fat * (1.0 + a.fat_asym * np.sign(vc)) * (1.0 + 0.25 * coarse)
    img = _soft(sd_leg, edge) * contrast["fat"] * (1.0 - 0.45 * np.exp(-((fat_septa / 0.15) ** 2)))
    skin = _soft(np.abs(sd_leg + 0.012) - 0.008, edge)
    img = img * (1 - skin) + skin * contrast["skin"]
    muscle = _soft(sd_leg + fat_t, edge)
    muscle_val = contrast["muscle"] * (1.0 - 0.55 * np.exp(-((septa / 0.12) ** 2)))
    img = img * (1 - muscle) + muscle * muscle_val

    # Vessels: small bright tubes crossing the slices at slowly drifting positions.
    for _ in range(int(rng.integers(3, 7))):
        pu, pv = rng.uniform(-0.9, 0.9), rng.uniform(-0.85, 0.85)
        radius = rng.uniform(0.008, 0.022)
        drift = [float(d) for d in rng.uniform(-0.05, 0.05, size=2)]
        vessel = _soft(_ellipse(u, vc, pu + drift[0] * z, pv + drift[1] * z, radius, radius), edge)
        vessel = vessel * muscle
        img = img * (1 - vessel) + vessel * contrast["vessel"]

    # Femur: shaft plus two condyles, rounded together; the notch deepens posteriorly.
    rc = a.condyle_radius * depth
    sep = a.condyle_sep * (1.0 + 0.25 * np.clip(z, 0.0, None))
    cond_u = joint - a.gap / 2 - a.cartilage - rc
    sd_cond = np.minimum(
        _ellipse(u, vc, cond_u, -sep, rc, rc * 1.1), _ellipse(u, vc, cond_u, sep, rc, rc * 1.1)
    )
    shaft_w = a.shaft * (0.75 + 0.25 * depth) + 0.35 * np.clip(u - joint + 0.55, 0.0, None) ** 2
    sd_shaft = np.maximum(np.abs(vc) - shaft_w, u - cond_u)
    sd_femur = _smooth_min(sd_shaft, sd_cond, 0.08)

    # Tibia: a wide plateau narrowing to the shaft, with the intercondylar spines.
    top = joint + a.gap / 2 + a.cartilage
    below = np.clip(u - top, 0.0, None)
    tib_w = a.tibia_shaft + (a.plateau * depth - a.tibia_shaft) * np.exp(-((below / 0.28) ** 2))
    sd_tibia = np.maximum(np.abs(vc) - tib_w, top - u)
    sd_tibia = _smooth_min(sd_tibia, _ellipse(u, vc, top, 0.0, 0.035, 0.08), 0.02)
    fib_r = 0.08 * np.clip(z + 0.3, 0.0, None) + 1e-3  # sub-pixel, i.e. absent, anteriorly
    sd_fibula = _ellipse(u, vc, top + 0.32, a.fibula_side * (a.plateau * 0.95), fib_r, fib_r)

    # Joint fluid between the articular surfaces and in the recesses beside them.
    fluid = _soft(np.abs(u - joint) - (a.gap / 2 + a.cartilage + 0.03), 2 * edge)
    fluid = fluid * _soft(np.abs(vc) - a.plateau * depth * 1.05, 2 * edge) * muscle
    img = img * (1 - fluid) + fluid * contrast["fluid"]

    # Cartilage: a layer on the articular surfaces only (near the joint line).
    near_joint = _soft(np.abs(u - joint) - 0.2, 0.03)
    cart = (
        np.maximum(_soft(sd_femur - a.cartilage, edge), _soft(sd_tibia - a.cartilage, edge))
        * near_joint
    )
    cart_val = contrast["cartilage"] * (1.0 + 0.08 * fine)
    img = img * (1 - cart) + cart * cart_val

    # Menisci: dark wedges at the lateral ends of the joint space, thinning inwards.
    for side in (-1.0, 1.0):
        inner, outer = 0.45 * a.plateau * depth, 1.02 * a.plateau * depth
        t = np.clip((side * vc - inner) / (outer - inner), 0.0, 1.0)
        wedge = _soft(np.abs(u - joint) - (a.gap / 2 + a.cartilage) * 1.3 * t, edge)
        wedge = wedge * _soft(inner - side * vc, edge) * _soft(side * vc - outer, edge)
        img = img * (1 - wedge) + wedge * contrast["ligament"]

    # Bones: cortex shell, marrow with trabecular texture and a growth-plate scar.
    for sd_bone in (sd_femur, sd_tibia, sd_fibula):
        bone = _soft(sd_bone, edge)
        img = img * (1 - bone) + bone * contrast["cortex"]
        cortex = a.cortex * (1.0 + 1.5 * np.clip(np.abs(u - joint) - 0.4, 0.0, None))
        marrow = _soft(sd_bone + cortex, edge)
        trab = 1.0 - 0.45 * _soft(np.abs(trabecular) - 0.35, 0.15) * (1.0 + 0.1 * fine)
        img = img * (1 - marrow) + marrow * contrast["marrow"] * trab
    scar_offset = 0.33 + 0.03 * np.sin(6.0 * v)
    scars = _soft(np.abs(np.abs(u - joint) - scar_offset) - 0.006, edge)
    scars = scars * np.maximum(_soft(sd_femur + 0.05, edge), _soft(sd_tibia + 0.05, edge))
    img = img * (1 - 0.7 * scars)

    # Ligaments: the cruciates cross in the notch; collaterals run along the joint's sides.
    mid = np.exp(-((z / 0.45) ** 2))
    for sign in (-1.0, 1.0):
        seg = _segment(u, vc, (joint - 0.18, 0.05 * sign), (joint + 0.05, -0.06 * sign))
        lig = _soft(seg - 0.022, edge) * mid
        img = img * (1 - lig) + lig * contrast["ligament"]
        side = sign * (a.plateau * depth + 0.03)
        seg = _segment(u, vc, (joint - 0.3, side), (joint + 0.3, side))
        lig = _soft(seg - 0.012, edge) * muscle
        img = img * (1 - lig) + lig * contrast["ligament"]

    # Smooth intensity inhomogeneity (receive-coil shading) and mild tissue texture.
    img = img * (1.0 + 0.12 * coarse) * (1.0 + 0.03 * fine)
    # The coil covers the crop; signal fades in the oversampled readout margins.
    coverage = _soft(np.abs(u) - 1.25, 0.08)
    out: Array = np.clip(img * coverage, 0.0, None)
    return out
