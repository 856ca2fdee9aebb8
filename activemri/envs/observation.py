"""Observations: which entries an env shows, their spaces, and the pure function computing them.

An observation is a function of the batch state alone (:func:`observe`), and every entry
follows from acquired data only: the images are divided by the episode's *observation
scale* (the maximum of its initial zero-filled image), the mask and the action mask are what
was acquired and measured, the budget entries are counts. The entries an env shows are
selected by ``EnvConfig.observation`` (:func:`resolve_keys`); a policy is given those plus
:data:`POLICY_KEYS` (:func:`policy_observation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from gymnasium import spaces

if TYPE_CHECKING:  # the core computes observations with this module
    from activemri.envs.core import EnvState

__all__ = [
    "ENV_KEYS",
    "OBS_BOUND",
    "POLICY_KEYS",
    "observation_space",
    "observe",
    "policy_observation",
    "resolve_keys",
]

OBS_BOUND = 1.0e4
"""Observations are clipped to ``[-OBS_BOUND, OBS_BOUND]`` (in units of the observation
scale, so only a broken reconstructor reaches it); finite bounds keep Gymnasium's checker and
observation-normalizing wrappers well defined."""

ENV_KEYS = (
    "reconstruction",
    "uncertainty",
    "mask",
    "kspace",
    "action_mask",
    "budget_used",
    "budget_left",
)
"""Entries an env observation can hold (``EnvConfig.observation``):

- ``reconstruction``: ``Box(-1e4, 1e4, (1, h, w), float32)``, the reconstruction over the
  observation scale;
- ``uncertainty``: ``Box(0, 1e4, (1, h, w), float32)``, the per-pixel standard deviation
  over the same scale (reconstructors with an uncertainty head only);
- ``mask``: ``MultiBinary(A)``, acquired actions (``A = W`` lines; for points, the flat
  ``H * W`` ky-kz plane, row-major);
- ``kspace``: ``Box(-1e4, 1e4, (2C, H, W), float32)``, the acquired k-space over the same
  scale, channels ``[re_0, im_0, re_1, im_1, ...]``, exactly ``+0.0`` where not acquired;
- ``action_mask``: ``MultiBinary(A)``, measured actions not yet acquired (the valid ones);
- ``budget_used``: ``Box(0, 1, (1,), float32)``, steps taken / steps allowed;
- ``budget_left``: ``Box(0, 1, (1,), float32)``, steps left / measured lines: how many lines
  the episode may still add, as a fraction of the slice's lines, so that a policy trained on
  budgets drawn from a range (``Scenario.budget_range`` / ``acceleration_range``) can tell
  the budgets apart (``budget_used`` cannot).
"""

POLICY_KEYS = (
    "action_mask",
    "valid",
    "budget",
    "steps",
    "budget_used",
    "budget_left",
    "num_low",
    "center_rank",
    "action_grid",
)
"""Entries a policy's observation always has besides the env's (:func:`policy_observation`):
``action_mask`` bool ``(B, A)``; ``valid`` bool ``(B, A)`` measured actions; ``budget`` /
``steps`` long ``(B,)`` steps allowed and taken; ``budget_used`` / ``budget_left`` float32
``(B, 1)``; ``num_low`` long ``(B,)`` size of the initial central block; and two facts of
the acquisition geometry shared by the batch: ``center_rank`` float32 ``(A,)``, each
action's place in the center-out (low-to-high) order, and ``action_grid`` long ``(2,)``, the
action grid's shape (``(1, W)`` lines, ``(H, W)`` points; actions are its flat indices), a
host tensor so that policies read it every step without a device sync."""


def resolve_keys(
    keys: Sequence[str] | None, *, has_uncertainty: bool, observe_kspace: bool = False
) -> tuple[str, ...]:
    """The entries an env shows.

    Args:
        keys: Entries asked for (a subset of :data:`ENV_KEYS`, in any order), or ``None``
            for the default: ``reconstruction``, ``mask`` and, with an uncertainty head,
            ``uncertainty``.
        has_uncertainty: Whether the reconstructor has an uncertainty head.
        observe_kspace: Add ``kspace`` (the older switch for it).

    Returns:
        The entries, in :data:`ENV_KEYS` order.

    Raises:
        ValueError: For an unknown or repeated entry, an empty selection, or ``uncertainty``
            without an uncertainty head.
    """
    if keys is None:
        chosen = {"reconstruction", "mask"} | ({"uncertainty"} if has_uncertainty else set())
    else:
        if isinstance(keys, str):
            raise ValueError(f"observation must be a list of entries, got the string {keys!r}")
        listed = list(keys)
        unknown = sorted(set(listed) - set(ENV_KEYS))
        if unknown:
            raise ValueError(f"unknown observation entries {unknown}; choose from {ENV_KEYS}")
        if len(set(listed)) != len(listed) or not listed:
            raise ValueError(f"observation must list distinct entries of {ENV_KEYS}, got {listed}")
        chosen = set(listed)
        if "uncertainty" in chosen and not has_uncertainty:
            raise ValueError(
                "observation asks for 'uncertainty' but the reconstructor has no uncertainty head"
            )
    if observe_kspace:
        chosen.add("kspace")
    return tuple(key for key in ENV_KEYS if key in chosen)


def observation_space(
    keys: Sequence[str],
    kspace_shape: tuple[int, int, int],
    recon_size: tuple[int, int],
    num_actions: int | None = None,
) -> spaces.Dict:
    """The single-episode ``Dict`` space of the entries ``keys`` (see :data:`ENV_KEYS`).

    ``num_actions`` is the length of ``mask`` and ``action_mask`` (default: the k-space
    width ``W``, one action per line; ``H * W`` for points).
    """
    h, w = recon_size
    coils, height, width = kspace_shape
    actions = width if num_actions is None else int(num_actions)
    image = spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(1, h, w), dtype=np.float32)
    every: dict[str, spaces.Space[np.ndarray]] = {
        "reconstruction": image,
        "uncertainty": spaces.Box(0.0, OBS_BOUND, shape=(1, h, w), dtype=np.float32),
        "mask": spaces.MultiBinary(actions),
        "kspace": spaces.Box(
            -OBS_BOUND, OBS_BOUND, shape=(2 * coils, height, width), dtype=np.float32
        ),
        "action_mask": spaces.MultiBinary(actions),
        "budget_used": spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
        "budget_left": spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
    }
    return spaces.Dict({key: every[key] for key in keys})


def _budget_used(state: EnvState) -> torch.Tensor:
    used = state.steps.float() / state.budget.clamp_min(1).float()
    return used.clamp(0.0, 1.0).unsqueeze(1)


def _budget_left(state: EnvState) -> torch.Tensor:
    left = (state.budget - state.steps).float() / state.valid.sum(dim=1).clamp_min(1).float()
    return left.clamp(0.0, 1.0).unsqueeze(1)


def observe(state: EnvState, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """The batched observation entries ``keys`` of ``state``, on its device.

    Args:
        state: The episodes.
        keys: Entries of :data:`ENV_KEYS`.

    Returns:
        ``(B, ...)`` tensors: images float32, masks int8, ``budget_used`` float32 ``(B, 1)``.
    """
    scale = state.scale[:, None, None]
    obs: dict[str, torch.Tensor] = {}
    for key in keys:
        if key == "reconstruction":
            obs[key] = (state.recon / scale).clamp(-OBS_BOUND, OBS_BOUND).unsqueeze(1)
        elif key == "uncertainty":
            if state.uncertainty is None:
                raise ValueError("this state has no uncertainty map")
            obs[key] = (state.uncertainty / scale).clamp(0.0, OBS_BOUND).unsqueeze(1)
        elif key == "mask":
            obs[key] = state.mask.to(torch.int8)
        elif key == "kspace":
            parts = torch.view_as_real(state.observed / scale[..., None])  # (B, C, H, W, 2)
            b, c, h, w, _ = parts.shape
            kspace = parts.permute(0, 1, 4, 2, 3).reshape(b, 2 * c, h, w)
            obs[key] = kspace.clamp(-OBS_BOUND, OBS_BOUND)
        elif key == "action_mask":
            obs[key] = state.free_lines().to(torch.int8)
        elif key == "budget_used":
            obs[key] = _budget_used(state)
        elif key == "budget_left":
            obs[key] = _budget_left(state)
        else:
            raise ValueError(f"unknown observation entry {key!r}; choose from {ENV_KEYS}")
    return obs


def policy_observation(
    state: EnvState,
    obs: dict[str, torch.Tensor],
    center_rank: torch.Tensor,
    action_grid: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """``obs`` (an env observation of ``state``) and the :data:`POLICY_KEYS` entries.

    Nothing here depends on unacquired data; ``action_mask`` is bool here (int8 in an env
    observation, where spaces ask for integers). ``center_rank`` and ``action_grid`` come
    from the acquisition geometry (:meth:`activemri.envs.core.AcquisitionCore.policy_observation`).
    """
    return {
        "center_rank": center_rank,
        "action_grid": action_grid,
        **obs,
        "action_mask": state.free_lines(),
        "valid": state.valid,
        "budget": state.budget,
        "steps": state.steps,
        "budget_used": _budget_used(state),
        "budget_left": _budget_left(state),
        "num_low": state.num_low,
    }
