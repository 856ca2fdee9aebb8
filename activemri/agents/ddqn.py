"""Double DQN with acquired lines masked out, as in Pineda et al. (MICCAI 2020).

SB3's ``DQN`` bootstraps with ``max_a Q_target(s', a)`` over every action and explores with
``action_space.sample()``. For active acquisition both are wrong: an acquired line is not an
action the agent can take. :class:`DoubleDQN` therefore

- selects actions greedily among the unacquired lines (``obs["mask"] == 0``, or
  ``obs["action_mask"] == 1`` when the observation has the adapter's ``action_mask`` entry),
  also when exploring (uniformly among them);
- bootstraps with the double-Q target ``r + gamma (1 - done) Q_target(s', a*)`` where
  ``a* = argmax`` of the *online* network over the lines still unacquired in ``s'``
  (van Hasselt et al. 2016), see :func:`double_q_target`.

Everything else (replay, target updates, schedules, saving) is SB3's ``DQN``.

On zero-padded k-space (fastMRI knee) ``mask`` alone does not say which columns are
padding: ask the SB3 adapter for ``observation_keys=[..., "mask", "action_mask"]`` (as the
knee presets do) so those are excluded too. MaskablePPO reads ``action_masks()`` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import DQN
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.dqn.policies import MultiInputPolicy, QNetwork

from activemri.envs.sb3 import ACTION_MASK

__all__ = ["DoubleDQN", "MaskedMultiInputPolicy", "MaskedQNetwork", "acquired", "double_q_target"]


def acquired(observation: PyTorchObs) -> torch.Tensor:
    """Bool ``(B, W)``: lines the agent may not choose.

    The complement of the observation's ``action_mask`` when it has one (measured lines not
    yet acquired), else its ``mask`` (lines acquired).
    """
    blocked: torch.Tensor = _blocked(observation)
    return blocked


def _blocked(observation: Any) -> Any:
    if not isinstance(observation, dict) or "mask" not in observation:
        raise ValueError("masked DQN needs Dict observations with a 'mask' entry")
    if ACTION_MASK in observation:
        return observation[ACTION_MASK] < 0.5
    return observation["mask"] > 0.5


def double_q_target(
    q_online_next: torch.Tensor,
    q_target_next: torch.Tensor,
    acquired_next: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """The masked double-Q bootstrap target ``(B, 1)``.

    Args:
        q_online_next: Online network's Q-values at the next states ``(B, W)``.
        q_target_next: Target network's Q-values there ``(B, W)``.
        acquired_next: Bool ``(B, W)``: lines acquired at the next states (never chosen).
        rewards: ``(B, 1)``.
        dones: ``(B, 1)``, 1 where the episode ended (no bootstrap).
        gamma: Discount.
    """
    choice = q_online_next.masked_fill(acquired_next, float("-inf")).argmax(dim=1, keepdim=True)
    return rewards + (1 - dones) * gamma * q_target_next.gather(1, choice)


class MaskedQNetwork(QNetwork):
    """A Q-network whose greedy action is the best *unacquired* line."""

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> torch.Tensor:
        q_values: torch.Tensor = self(observation)
        return q_values.masked_fill(acquired(observation), float("-inf")).argmax(dim=1)


class MaskedMultiInputPolicy(MultiInputPolicy):
    """SB3's Dict-observation DQN policy with :class:`MaskedQNetwork`."""

    def make_q_net(self) -> MaskedQNetwork:
        """A fresh masked Q-network (separate feature extractor, as SB3 does)."""
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return MaskedQNetwork(**net_args).to(self.device)


class DoubleDQN(DQN):
    """Double DQN over unacquired lines (see the module docstring); SB3 ``DQN``'s arguments.

    ``"MultiInputPolicy"`` resolves to :class:`MaskedMultiInputPolicy`.
    """

    policy_aliases = {**DQN.policy_aliases, "MultiInputPolicy": MaskedMultiInputPolicy}  # noqa: RUF012

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """``gradient_steps`` updates on replayed batches with the masked double-Q target."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            with torch.no_grad():
                target = double_q_target(
                    self.q_net(batch.next_observations),
                    self.q_net_target(batch.next_observations),
                    acquired(batch.next_observations),
                    batch.rewards,
                    batch.dones,
                    self.gamma,
                )
            current = self.q_net(batch.observations).gather(1, batch.actions.long())
            loss: torch.Tensor = F.smooth_l1_loss(current, target)
            losses.append(float(loss.item()))
            self.policy.optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Greedy unacquired line, or (with probability epsilon) a uniform unacquired one."""
        # SB3 explores with NumPy's global generator (seeded by set_random_seed); so do we.
        if deterministic or np.random.rand() >= self.exploration_rate:  # noqa: NPY002
            return self.policy.predict(observation, state, episode_start, deterministic)
        blocked = np.asarray(_blocked(observation))
        actions = _uniform_unacquired(blocked.reshape(-1, blocked.shape[-1]))
        return (actions if blocked.ndim == 2 else actions.reshape(())), state

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Warm-up steps draw uniform *unacquired* lines (SB3 samples the whole space)."""
        if self.num_timesteps < learning_starts:
            actions = _uniform_unacquired(np.asarray(_blocked(self._last_obs)))
        else:
            actions, _ = self.predict(self._last_obs, deterministic=False)  # type: ignore[arg-type]
        return actions, actions


def _uniform_unacquired(blocked: np.ndarray) -> np.ndarray:
    """One uniformly drawn allowed line per row of bool ``(B, W)`` (0 if none is left)."""
    # The allowed line with the largest uniform score is a uniform draw among them.
    scores = np.random.random_sample(blocked.shape)  # noqa: NPY002
    return np.asarray(np.where(blocked, -1.0, scores).argmax(axis=-1))
