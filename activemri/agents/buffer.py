"""A replay buffer for Dict observations that fits 100k built-in transitions in under 2 GB.

SB3's ``DictReplayBuffer`` keeps every observation *and* next observation as float32: a
built-in transition (128x128 reconstruction + uncertainty + mask) costs 262 KB, so 100k
transitions would need 26 GB. :class:`CompactReplayBuffer` stores the same transitions in

- **one copy per observation**: the next observation of a transition is the observation of
  the same env's next transition, so it is written once, in the following row (SB3's
  ``optimize_memory_usage`` idea, here for Dict spaces). The last observation of an episode
  is not kept: activemri episodes *terminate* at the budget, so no target bootstraps from it
  (a truncated transition is refused, see :meth:`CompactReplayBuffer.add`);
- **uint8 images**: each image map (``Box`` of rank 3, e.g. ``reconstruction``,
  ``uncertainty``) is quantized per image and channel to 256 levels between its own minimum
  and maximum (error at most half a level: 0.2% of the image's range), plus two float32;
- **bit-packed masks**: ``MultiBinary`` entries take one bit per line.

Bytes per transition (:meth:`CompactReplayBuffer.bytes_per_transition`): per image map
``C*H*W + 8*C``, per mask ``ceil(W/8)``, plus 16 for action, reward and done. At the
built-in size that is 16,424 bytes for ``reconstruction`` + ``mask`` (1.64 GB for 100k
transitions; the observation of the Double DQN presets) and 32,816 bytes with
``uncertainty`` too (3.28 GB). Other ``Box`` entries (``kspace``) are kept as float16.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

__all__ = ["STATE_FORMAT", "CompactReplayBuffer"]

_LEVELS = 255
STATE_FORMAT = "activemri.replay/1"


class CompactReplayBuffer(ReplayBuffer):
    """Replay memory with uint8 images, packed masks and one copy of each observation.

    Drop-in for SB3 off-policy algorithms on Dict observations:
    ``DQN(..., replay_buffer_class=CompactReplayBuffer)``. Its constructor takes SB3's
    replay buffer arguments.

    Args:
        buffer_size: Transitions kept (over all envs); the oldest are overwritten.
        observation_space: A ``spaces.Dict`` of ``Box`` and ``MultiBinary`` entries.
        action_space: The action space.
        device: Where sampled batches go.
        n_envs: Envs stepped together (one row per step).
        optimize_memory_usage: Must be False (the buffer always shares observations).
        handle_timeout_termination: Accepted for SB3's signature; truncated transitions are
            refused either way.

    Raises:
        TypeError: For a non-Dict observation space or an unsupported entry.
        ValueError: If ``optimize_memory_usage`` is set or the buffer holds under 2 rows.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise TypeError("CompactReplayBuffer needs a Dict observation space")
        if optimize_memory_usage:
            raise ValueError(
                "CompactReplayBuffer always shares observations; leave optimize_memory_usage off"
            )
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)  # rows of n_envs transitions
        if self.buffer_size < 2:
            raise ValueError(f"buffer_size must hold at least 2 steps of {n_envs} envs")
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        rows, envs = self.buffer_size, self.n_envs
        self.images: dict[str, np.ndarray] = {}
        self.ranges: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        self.others: dict[str, np.ndarray] = {}
        self.mask_width: dict[str, int] = {}
        for key, space in observation_space.spaces.items():
            shape = tuple(space.shape or ())
            if isinstance(space, spaces.MultiBinary) and len(shape) == 1:
                self.mask_width[key] = shape[0]
                self.masks[key] = np.zeros((rows, envs, math.ceil(shape[0] / 8)), np.uint8)
            elif isinstance(space, spaces.Box) and len(shape) == 3:
                self.images[key] = np.zeros((rows, envs, *shape), np.uint8)
                self.ranges[key] = np.zeros((rows, envs, shape[0], 2), np.float32)
            elif isinstance(space, spaces.Box):
                self.others[key] = np.zeros((rows, envs, *shape), np.float16)
            else:
                raise TypeError(f"unsupported observation entry {key!r}: {space}")
        self.actions = np.zeros((rows, envs, self.action_dim), np.int64)
        self.rewards = np.zeros((rows, envs), np.float32)
        self.dones = np.zeros((rows, envs), np.float32)

    # ------------------------------------------------------------------------ sizes
    def nbytes(self) -> int:
        """Bytes held by the storage arrays."""
        arrays = [*self.images.values(), *self.ranges.values(), *self.masks.values()]
        arrays += [*self.others.values(), self.actions, self.rewards, self.dones]
        return int(sum(a.nbytes for a in arrays))

    def bytes_per_transition(self) -> float:
        """:meth:`nbytes` per stored transition (at capacity)."""
        return self.nbytes() / (self.buffer_size * self.n_envs)

    # ------------------------------------------------------------------------ saving
    def _arrays(self) -> dict[str, np.ndarray]:
        """Every storage array by a stable name (``images/KEY``, ..., ``actions``)."""
        out: dict[str, np.ndarray] = {}
        for name in ("images", "ranges", "masks", "others"):
            out.update({f"{name}/{key}": v for key, v in getattr(self, name).items()})
        return {**out, "actions": self.actions, "rewards": self.rewards, "dones": self.dones}

    def state_dict(self) -> dict[str, Any]:
        """The stored rows as tensors plus the write position: for ``torch.save``.

        Only the rows written so far are kept, so checkpoints of a filling buffer stay small;
        the result loads with ``torch.load(..., weights_only=True)`` (no pickled objects).
        """
        rows = self.buffer_size if self.full else min(self.pos + 1, self.buffer_size)
        arrays = {
            k: torch.from_numpy(np.ascontiguousarray(v[:rows])) for k, v in self._arrays().items()
        }
        return {
            "format": STATE_FORMAT,
            "pos": int(self.pos),
            "full": bool(self.full),
            "rows": int(self.buffer_size),
            "n_envs": int(self.n_envs),
            "arrays": arrays,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned into this (empty) buffer.

        Raises:
            ValueError: If ``state`` is not a replay state of a buffer of this layout
                (capacity, envs, observation entries, shapes and dtypes).
        """
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an activemri replay memory ({STATE_FORMAT})")
        if (state.get("rows"), state.get("n_envs")) != (self.buffer_size, self.n_envs):
            raise ValueError(
                f"replay memory of {state.get('rows')} rows x {state.get('n_envs')} envs does "
                f"not fit a buffer of {self.buffer_size} x {self.n_envs}"
            )
        mine = self._arrays()
        stored = state.get("arrays")
        if not isinstance(stored, Mapping) or set(stored) != set(mine):
            keys = sorted(stored) if isinstance(stored, Mapping) else stored
            raise ValueError(f"replay memory holds {keys}, the buffer {sorted(mine)}")
        pos, full = state.get("pos"), state.get("full")
        if (
            not isinstance(pos, int)
            or not isinstance(full, bool)
            or not 0 <= pos < self.buffer_size
        ):
            raise ValueError(f"replay memory has an invalid write position {pos!r}")
        for name, target in mine.items():
            value = stored[name]
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"replay memory entry {name!r} is not a tensor")
            array = value.numpy()
            rows = array.shape[0]
            if (
                array.dtype != target.dtype
                or array.shape[1:] != target.shape[1:]
                or not (0 < rows <= self.buffer_size)
            ):
                raise ValueError(
                    f"replay memory entry {name!r} is {array.dtype}{tuple(array.shape)}, the "
                    f"buffer's {target.dtype}{tuple(target.shape)}"
                )
            target[:rows] = array
            target[rows:] = 0
        self.pos, self.full = pos, full

    # ------------------------------------------------------------------------ writing
    def _write(self, row: int, obs: dict[str, np.ndarray], envs: np.ndarray) -> None:
        for key, store in self.images.items():
            x = np.asarray(obs[key], dtype=np.float32)[envs]
            lo = x.min(axis=(2, 3))
            hi = x.max(axis=(2, 3))
            step = np.where(hi > lo, (hi - lo) / _LEVELS, 1.0).astype(np.float32)
            q = np.rint((x - lo[..., None, None]) / step[..., None, None])
            store[row, envs] = np.clip(q, 0, _LEVELS).astype(np.uint8)
            self.ranges[key][row, envs] = np.stack([lo, step], axis=-1)
        for key, store in self.masks.items():
            store[row, envs] = np.packbits(np.asarray(obs[key])[envs] > 0.5, axis=-1)
        for key, store in self.others.items():
            store[row, envs] = np.asarray(obs[key])[envs]

    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one step of every env.

        Raises:
            ValueError: For a truncated transition (``TimeLimit.truncated``): its target
                would bootstrap from a last observation this buffer does not keep.
        """
        if any(info.get("TimeLimit.truncated", False) for info in infos):
            raise ValueError(
                "CompactReplayBuffer does not keep the last observation of an episode, so it "
                "cannot bootstrap truncated episodes; activemri episodes terminate at the budget"
            )
        every = np.arange(self.n_envs)
        self._write(self.pos, obs, every)
        nxt = (self.pos + 1) % self.buffer_size
        # The next row is overwritten with the same observation by the next add() (or, after
        # a terminal step, with the new episode's first one, which no target reads).
        self._write(nxt, next_obs, every)
        self.actions[self.pos] = np.asarray(action).reshape(self.n_envs, self.action_dim)
        self.rewards[self.pos] = np.asarray(reward)
        self.dones[self.pos] = np.asarray(done)
        self.pos = nxt
        if self.pos == 0:
            self.full = True

    # ------------------------------------------------------------------------ reading
    def sample(  # type: ignore[override]
        self, batch_size: int, env: VecNormalize | None = None
    ) -> DictReplayBufferSamples:
        """A uniform batch of stored transitions (never the row being written)."""
        if not self.full and self.pos == 0:
            raise ValueError("the replay buffer is empty")
        if self.full:
            # Row `pos` holds only the next observation of row pos - 1 (its own is gone).
            rows = np.random.randint(1, self.buffer_size, size=batch_size) + self.pos  # noqa: NPY002
            rows %= self.buffer_size
        else:
            rows = np.random.randint(0, self.pos, size=batch_size)  # noqa: NPY002
        return self._get_samples(rows, env)

    def _read(self, rows: np.ndarray, envs: np.ndarray) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, store in self.images.items():
            q = torch.as_tensor(store[rows, envs]).to(self.device).float()
            lo_step = torch.as_tensor(self.ranges[key][rows, envs]).to(self.device)
            out[key] = lo_step[..., 0, None, None] + q * lo_step[..., 1, None, None]
        for key, store in self.masks.items():
            bits = np.unpackbits(store[rows, envs], axis=-1, count=self.mask_width[key])
            out[key] = torch.as_tensor(bits.astype(np.float32)).to(self.device)
        for key, store in self.others.items():
            out[key] = torch.as_tensor(store[rows, envs].astype(np.float32)).to(self.device)
        return out

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> DictReplayBufferSamples:
        if env is not None:
            raise ValueError("CompactReplayBuffer does not support VecNormalize")
        envs = np.random.randint(0, self.n_envs, size=len(batch_inds))  # noqa: NPY002
        return DictReplayBufferSamples(
            observations=self._read(batch_inds, envs),
            actions=self.to_torch(self.actions[batch_inds, envs]),
            next_observations=self._read((batch_inds + 1) % self.buffer_size, envs),
            dones=self.to_torch(self.dones[batch_inds, envs]).reshape(-1, 1),
            rewards=self.to_torch(self.rewards[batch_inds, envs]).reshape(-1, 1),
        )
