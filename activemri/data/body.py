"""A procedural axial abdomen: a third anatomy, unlike both the knee and the brain.

It exists to hold models to an anatomy they were not trained on (cross-anatomy validation,
DESIGN section 6): a round body outline instead of a leg or a head, large soft organs (liver,
spleen, kidneys with cortex and medulla), a vertebra with its canal, great vessels, bowel loops
with fluid and air, subcutaneous and visceral fat, and muscle. Each volume draws its own body
shape, fat, organ sizes and positions; slices change smoothly through the slab (organs grow
and shrink with ``z``). Two contrasts, T1- and T2-weighted.

Coordinates follow :mod:`activemri.data.phantom`: the crop spans ``[-1, 1]`` along rows
(readout, anterior at the top) and columns (phase encode, the patient's right on the left).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from activemri.data.phantom import _ellipse, _soft, noise_field

__all__ = ["BODY_CONTRASTS", "BODY_PROTOCOLS", "body_volume"]

Array = NDArray[np.floating]

#: Relative signal per tissue for the two weightings.
BODY_CONTRASTS: dict[str, dict[str, float]] = {
    "T1": {
        "fat": 1.0, "muscle": 0.32, "liver": 0.55, "spleen": 0.42, "cortex": 0.5,
        "medulla": 0.32, "vessel": 0.12, "bone": 0.04, "marrow": 0.7, "csf": 0.1,
        "bowel": 0.25, "air": 0.0, "skin": 0.5,
    },
    "T2": {
        "fat": 0.7, "muscle": 0.22, "liver": 0.3, "spleen": 0.55, "cortex": 0.55,
        "medulla": 0.75, "vessel": 0.08, "bone": 0.04, "marrow": 0.45, "csf": 1.0,
        "bowel": 0.85, "air": 0.0, "skin": 0.4,
    },
}  # fmt: skip
#: Acquisition names written to the ``acquisition`` attribute.
BODY_PROTOCOLS: tuple[str, ...] = ("AXT1_ABD", "AXT2_ABD")


def body_volume(
    rng: np.random.Generator,
    num_slices: int,
    image_shape: tuple[int, int],
    crop_shape: tuple[int, int],
    acquisition: str,
) -> Array:
    """Magnitude images of one axial abdomen volume.

    Args:
        rng: Random generator; the volume is a deterministic function of its state.
        num_slices: Number of slices ``S``.
        image_shape: ``(H, W)`` of the full field of view (the k-space size).
        crop_shape: ``(h, w)`` of the reconstruction crop; the body fills most of it.
        acquisition: One of :data:`BODY_PROTOCOLS`.

    Returns:
        Float32 array ``(S, H, W)``, non-negative, roughly in ``[0, 1.2]``.
    """
    if acquisition not in BODY_PROTOCOLS:
        raise ValueError(f"unknown body acquisition {acquisition!r}; choose from {BODY_PROTOCOLS}")
    c = {k: v * rng.uniform(0.9, 1.1) for k, v in BODY_CONTRASTS[acquisition[2:4]].items()}
    big_h, big_w = image_shape
    h, w = crop_shape
    px = 2.0 / min(h, w)
    edge = 0.6 * px
    shape3 = (num_slices, big_h, big_w)
    u = ((np.arange(big_h) - big_h // 2) / (h / 2.0)).astype(np.float32)[None, :, None]
    v = ((np.arange(big_w) - big_w // 2) / (w / 2.0)).astype(np.float32)[None, None, :]
    z0 = rng.uniform(-0.4, 0.4)
    z = (z0 + np.linspace(-0.25, 0.25, num_slices)).astype(np.float32)[:, None, None]

    def field(scale: float) -> Array:
        return noise_field(rng, shape3, (1.5, scale / px, scale / px))

    coarse, medium, fine = field(0.3), field(0.06), field(0.012)
    uu = u - rng.uniform(-0.05, 0.05)
    vv = v - rng.uniform(-0.05, 0.05)

    # Outline: an ellipse, flatter at the back, with lumpy soft tissue.
    au, av = rng.uniform(0.55, 0.75), rng.uniform(0.8, 0.95)
    sd_body = _ellipse(uu, vv, 0.0, 0.0, au * (1 - 0.08 * (uu > 0)), av) + 0.015 * coarse
    fat_t = rng.uniform(0.04, 0.14) * (1.0 + 0.3 * coarse)
    body = _soft(sd_body, edge)
    img = body * c["fat"] * (1.0 - 0.3 * np.exp(-((medium / 0.12) ** 2)))
    skin = _soft(np.abs(sd_body + 0.01) - 0.006, edge)
    img = img * (1 - skin) + skin * c["skin"]
    wall = _soft(np.abs(sd_body + fat_t + 0.025) - 0.022, edge)
    img = img * (1 - wall) + wall * c["muscle"] * (1.0 + 0.05 * fine)
    inside = _soft(sd_body + fat_t + 0.05, edge)

    def organ(sd: Array, value: Array | float) -> None:
        nonlocal img
        m = _soft(sd, edge) * inside
        img = img * (1 - m) + m * value

    # Bowel loops in front: walls, fluid or air contents, visceral fat between them.
    for _ in range(int(rng.integers(6, 14))):
        cu, cv = rng.uniform(-0.55, 0.0) * au / 0.65, rng.uniform(-0.6, 0.6)
        r = rng.uniform(0.05, 0.11)
        drift = rng.uniform(-0.3, 0.3, size=2)
        sd = _ellipse(uu, vv, cu + drift[0] * z, cv + drift[1] * z, r, r * rng.uniform(0.7, 1.3))
        organ(sd, c["muscle"])
        organ(sd + 0.015, c["air"] if rng.uniform() < 0.3 else c["bowel"] * (1 + 0.1 * fine))

    # Liver (patient's right, image left) and spleen; both shrink towards the slab's bottom.
    grow = np.clip(1.0 - 0.8 * z, 0.3, 1.3)
    liver = _ellipse(uu, vv, rng.uniform(-0.15, 0.05), -rng.uniform(0.3, 0.45),
                     0.42 * grow, 0.4 * grow) + 0.02 * coarse  # fmt: skip
    organ(liver, c["liver"] * (1.0 + 0.05 * fine + 0.04 * medium))
    organ(_ellipse(uu, vv, 0.15, rng.uniform(0.5, 0.62), 0.2 * grow, 0.12 * grow),
          c["spleen"] * (1.0 + 0.05 * fine))  # fmt: skip
    # Kidneys: cortex around medulla, present in the middle of the slab range.
    kz = np.clip(1.0 - ((z - rng.uniform(-0.2, 0.2)) / 0.45) ** 2, 0.02, 1.0)
    for side in (-1.0, 1.0):
        ku, kv = rng.uniform(0.22, 0.32), side * rng.uniform(0.3, 0.4)
        organ(_ellipse(uu, vv, ku, kv, 0.13 * kz, 0.08 * kz), c["cortex"])
        organ(_ellipse(uu, vv, ku, kv + 0.015 * side, 0.08 * kz, 0.045 * kz), c["medulla"])
    # Great vessels, then the vertebra (cortex, marrow), its canal and the paraspinal muscles.
    organ(_ellipse(uu, vv, 0.2, 0.06, 0.04, 0.04), c["vessel"])
    organ(_ellipse(uu, vv, 0.18, -0.1, 0.045, 0.035), c["vessel"])
    sp_u = au * 0.55
    for side in (-1.0, 1.0):
        organ(
            _ellipse(uu, vv, sp_u + 0.12, side * 0.14, 0.12, 0.1), c["muscle"] * (1 + 0.05 * fine)
        )
    organ(_ellipse(uu, vv, sp_u - 0.02, 0.0, 0.1, 0.11), c["bone"])
    organ(_ellipse(uu, vv, sp_u - 0.02, 0.0, 0.085, 0.095), c["marrow"] * (1 + 0.1 * fine))
    organ(_ellipse(uu, vv, sp_u + 0.13, 0.0, 0.035, 0.035), c["csf"])

    img = np.clip(img, 0.0, None) * np.exp(0.15 * coarse)
    coverage = _soft(np.abs(u) - 1.25, 0.08)
    out: Array = (img * coverage).astype(np.float32)
    return out
