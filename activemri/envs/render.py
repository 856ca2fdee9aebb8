"""Frames for ``render_mode="rgb_array"`` / ``"human"``: target, recon, error, uncertainty, mask."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from activemri.envs.core import EnvState

__all__ = ["MASK_STRIP_HEIGHT", "compose_frame", "render_state", "show_frame"]

MASK_STRIP_HEIGHT = 12
_GAP = 2


def _gray(image: np.ndarray, vmax: float) -> np.ndarray:
    scaled = np.clip(image / vmax if vmax > 0 else image * 0.0, 0.0, 1.0)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=-1)


def compose_frame(
    target: np.ndarray,
    recon: np.ndarray,
    uncertainty: np.ndarray | None,
    mask: np.ndarray,
    valid: np.ndarray,
    data_range: float,
    grid: tuple[int, int] | None = None,
) -> np.ndarray:
    """One RGB frame: panels side by side above a strip showing the mask.

    Panels, each ``h x w``: the target and the reconstruction (gray, ``[0, data_range]``),
    the absolute error (gray, ``[0, data_range / 4]``), and the uncertainty (gray, up to its
    maximum; left out when ``None``). The strip below spans the frame width: acquired lines
    white, measured lines not yet acquired dark gray, non-measured (padding) lines dark red.

    Args:
        target: ``(h, w)`` float.
        recon: ``(h, w)`` float.
        uncertainty: ``(h, w)`` float or ``None``.
        mask: ``(W,)`` bool, acquired lines (or the flat ``(H*W,)`` points of a ky-kz plane).
        valid: ``(W,)`` bool, measured lines (or points).
        data_range: Intensity of full white.
        grid: ``(H, W)`` for a point mask: it is drawn as a last panel (same colors, scaled
            to ``h x w``) and the strip is left black.

    Returns:
        ``(h + 2 + 12, panels * (w + 2) - 2, 3)`` uint8.
    """
    panels = [
        _gray(target, data_range),
        _gray(recon, data_range),
        _gray(np.abs(recon - target), data_range / 4),
    ]
    if uncertainty is not None:
        panels.append(_gray(uncertainty, float(uncertainty.max())))
    colors = np.where(
        mask[:, None], [255, 255, 255], np.where(valid[:, None], [60, 60, 60], [110, 0, 0])
    ).astype(np.uint8)
    if grid is not None:
        plane = colors.reshape(*grid, 3)
        rows = (np.arange(target.shape[0]) * grid[0]) // target.shape[0]
        cols = (np.arange(target.shape[1]) * grid[1]) // target.shape[1]
        panels.append(plane[rows][:, cols])
    h = panels[0].shape[0]
    gap = np.zeros((h, _GAP, 3), dtype=np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    columns = (np.arange(row.shape[1]) * mask.shape[0]) // row.shape[1]
    strip = np.broadcast_to(colors[columns], (MASK_STRIP_HEIGHT, row.shape[1], 3))
    if grid is not None:
        strip = np.zeros_like(strip)
    spacer = np.zeros((_GAP, row.shape[1], 3), dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate([row, spacer, strip], axis=0))


def show_frame(frame: np.ndarray, state: dict[str, Any], title: str) -> None:
    """Draw ``frame`` in a matplotlib window kept in ``state`` (``render_mode="human"``)."""
    import matplotlib.pyplot as plt

    if "figure" not in state or not plt.fignum_exists(state["figure"].number):
        plt.ion()
        figure, axis = plt.subplots(figsize=(2.5 * frame.shape[1] / frame.shape[0], 3))
        axis.set_axis_off()
        state["figure"], state["image"] = figure, axis.imshow(frame)
    state["image"].set_data(frame)
    state["figure"].suptitle(title)
    state["figure"].canvas.draw_idle()
    plt.pause(0.001)


def render_state(state: EnvState, row: int) -> np.ndarray:
    """The :func:`compose_frame` of episode ``row`` of a batch state."""
    unc = state.uncertainty
    height, width = state.kspace.shape[-2:]
    data_range = float(state.data_range[row].item())
    if not math.isfinite(data_range):  # a file without a target or a `max`
        data_range = float(state.recon[row].max().item())
    return compose_frame(
        target=state.target[row].cpu().numpy(),
        recon=state.recon[row].cpu().numpy(),
        uncertainty=None if unc is None else unc[row].cpu().numpy(),
        mask=state.mask[row].cpu().numpy(),
        valid=state.valid[row].cpu().numpy(),
        data_range=data_range,
        grid=None if state.mask.shape[1] == width else (int(height), int(width)),
    )
