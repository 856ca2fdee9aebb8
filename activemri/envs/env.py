"""The single-episode Gymnasium environment: the batched env with one sub-env."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from activemri.envs.config import EnvConfig
from activemri.envs.render import render_state, show_frame
from activemri.envs.vector import ActiveMRIVectorEnv, row_info

__all__ = ["ActiveMRIEnv"]

Obs = dict[str, np.ndarray]


class ActiveMRIEnv(gym.Env[Obs, np.int64]):
    """Active acquisition of one 2-D MRI slice, one phase-encode line per step.

    ## Description
    An episode holds one slice of fully sampled k-space ``(C, H, W)`` and its target image.
    It starts from an initial mask of central lines; each step the agent acquires one
    phase-encode line (a k-space column); a reconstructor maps the acquired k-space to an
    image, and the reward is the change of its SSIM to the target. Episodes advance through
    the batched env (:class:`~activemri.envs.vector.ActiveMRIVectorEnv`, here with one
    sub-env and autoreset disabled: :attr:`venv`), so the two run the same code.

    ## Action Space
    ``Discrete(W)``: the column to acquire (with ``geometry="points"``, ``Discrete(H*W)``:
    the ky-kz point ``(a // W, a % W)`` of a 3-D volume's plane; "lines" below then means
    points). :meth:`action_masks` gives the lines that add information (measured and not
    yet acquired), the protocol of sb3-contrib's ``MaskablePPO``. Any other in-range action
    (a *repeat*) changes nothing and costs the step (see Rewards). A value outside the
    action space or a non-integer raises ``ValueError``.

    ## Observation Space
    A ``Dict`` of the entries ``observation=`` selects (default: ``reconstruction``, ``mask``
    and, for a reconstructor with an uncertainty head, ``uncertainty``; all of them in
    :data:`~activemri.envs.observation.ENV_KEYS`):

    - ``reconstruction``: ``Box(-1e4, 1e4, (1, h, w), float32)``, the current reconstruction
      divided by the episode's *observation scale*: the maximum of the zero-filled image of
      the initial mask (acquired data only, so no information about the target leaks). The
      bound (:data:`~activemri.envs.observation.OBS_BOUND`) is a clip only a broken
      reconstructor reaches.
    - ``mask``: ``MultiBinary(W)``, 1 for acquired lines.
    - ``uncertainty``: ``Box(0, 1e4, (1, h, w), float32)``, the reconstructor's per-pixel
      standard deviation over the same scale (only for reconstructors with an uncertainty
      head).
    - ``kspace`` (or ``observe_kspace=True``): ``Box(-1e4, 1e4, (2C, H, W), float32)``,
      the acquired k-space over the same scale, channels ``[re_0, im_0, re_1, im_1, ...]``;
      unacquired columns are exactly ``+0.0``.
    - ``action_mask``: ``MultiBinary(W)``, the lines :meth:`action_masks` allows.
    - ``budget_used``: ``Box(0, 1, (1,), float32)``, steps taken / steps allowed.
    - ``budget_left``: ``Box(0, 1, (1,), float32)``, steps left / measured lines.

    ## Rewards
    ``score_t - score_{t-1}`` where the score is SSIM (default), PSNR, -NMSE or -MSE of the
    reconstruction against the target (fastMRI definitions, data range = volume maximum
    ``max`` of the file, else the target slice's maximum). A step that adds no line scores
    ``-repeat_penalty``. Rewards telescope: their sum is final - initial score (minus
    ``repeat_penalty`` per step that added no line).

    ``repeat_penalty`` is 0 in the ``-v0`` ids, so a repeat costs nothing but the line it
    could have added: fine for agents that mask actions (``MaskablePPO``, the Double DQN of
    :mod:`activemri.agents`), but plain PPO, A2C and DQN learn to repeat lines. For them use
    ``ActiveMRI/BuiltinRepeatPenalty-v0`` (``repeat_penalty=0.01``) or pass ``repeat_penalty=``.
    SB3's plain ``evaluate_policy`` does not apply action masks either: evaluate a
    ``MaskablePPO`` with ``sb3_contrib.common.maskable.evaluation.evaluate_policy``.

    ## Starting State
    A slice from the configured split (shuffled each pass for training, in dataset order
    otherwise) and the scenario's initial mask: the central block (``initial_lines`` or
    ``center_fraction``) plus ``extra_random_lines``, both drawn with a generator seeded as
    the env's ``np_random`` is. Zero-padded edge columns of fastMRI k-space are never acquired.

    ## Episode End
    ``terminated`` is ``True`` once the budget of steps is spent or every measured line is
    acquired; stepping again before :meth:`reset` raises
    :class:`~activemri.envs.vector.ResetNeededError` (Gymnasium's ``ResetNeeded``).
    ``truncated`` is always ``False``. ``info`` holds ``ssim``, ``psnr``, ``nmse``, ``mse``,
    ``score``, ``data_range``, ``lines_acquired``, ``acceleration`` (measured lines /
    acquired lines), ``actual_acceleration`` (measured lines / lines at the end of the
    budget: the acceleration the episode ends at if every step adds a line), ``steps``,
    ``budget``, ``repeated``, ``file``, ``slice`` and ``pass_index`` (how many full passes
    over the data preceded this episode).

    A budget or acceleration that cannot be honoured on some slice (an acceleration whose
    line count is not above the initial mask's, a budget above the measured lines left) is
    a :class:`~activemri.envs.scenario.BudgetError` at construction, naming the files;
    :attr:`actual_acceleration` says what a valid one amounts to on this data.

    ## Arguments
    ``preset``: an env preset name (``envs/NAME.yaml``), YAML path or mapping;
    ``render_mode``: ``"rgb_array"`` or ``"human"``; any other keyword overrides a field of
    :class:`~activemri.envs.config.EnvConfig` (``data_root``, ``split``, ``reconstructor``,
    ``scenario``, ``budget``, ``initial_lines``, ``reward``, ``device``, ...)::

        env = gymnasium.make("ActiveMRI/Builtin-v0", budget=10, device="cpu")

    ## Vectorized environment
    ``gymnasium.make_vec(id, num_envs=B)`` builds
    :class:`~activemri.envs.vector.ActiveMRIVectorEnv`, which steps all B episodes in one
    batched forward (same-step autoreset, or ``autoreset_mode=AutoresetMode.NEXT_STEP`` for
    Gymnasium's vector observation wrappers) and also offers a torch-native API. For SB3 use
    :func:`~activemri.envs.sb3.make_sb3_vec_env`.

    ## Version History
    * v0: Initial version.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array", "human"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        preset: str | Path | Mapping[str, Any] | EnvConfig | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.venv = ActiveMRIVectorEnv(
            1, preset, autoreset_mode=AutoresetMode.DISABLED, **overrides
        )
        self.config = self.venv.config
        self.observation_space = self.venv.single_observation_space
        self.action_space = gym.spaces.Discrete(self.venv.num_actions)
        self._window: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        """Where the env's tensors live."""
        return self.venv.device

    @property
    def reconstructor(self) -> Any:
        """The reconstructor the rewards are computed with (in eval mode, on :attr:`device`)."""
        return self.venv.reconstructor

    @property
    def domain_check(self) -> dict[str, Any] | None:
        """The reconstructor's domain check on this data, if one ran (see ``EnvConfig``)."""
        return self.venv.domain_check

    @property
    def actual_acceleration(self) -> float:
        """Measured lines / lines at the episode end, averaged over the env's slices.

        See :attr:`~activemri.envs.vector.ActiveMRIVectorEnv.actual_acceleration`; per
        episode in ``info["actual_acceleration"]``.
        """
        return self.venv.actual_acceleration

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        """Start an episode on the next slice (see Starting State).

        Args:
            seed: Reseeds ``np_random`` and restarts the slice order; ``None`` continues.
            options: Unused (Gymnasium signature).

        Returns:
            The first observation and the info (metrics of the initial reconstruction).
        """
        super().reset(seed=seed)
        obs, infos = self.venv.reset(seed=seed)
        return _first(obs), row_info(infos, 0)

    def step(self, action: Any) -> tuple[Obs, SupportsFloat, bool, bool, dict[str, Any]]:
        """Acquire line ``action`` (see Rewards and Episode End).

        Args:
            action: An action index in ``[0, A)`` (a column, or a flat ky-kz point).

        Returns:
            ``(observation, reward, terminated, truncated, info)``.

        Raises:
            ResetNeededError: Before the first :meth:`reset` or once the episode has ended.
            ValueError: For an out-of-range or non-integer action.
            FloatingPointError: If the reconstructor produced NaN/inf.
        """
        obs, reward, terminated, _, infos = self.venv.step(np.asarray(action).reshape(1))
        if self.render_mode == "human":
            self.render()
        return _first(obs), float(reward[0]), bool(terminated[0]), False, row_info(infos, 0)

    def action_masks(self) -> np.ndarray:
        """Bool ``(W,)``: lines that are measured and not yet acquired."""
        return np.asarray(self.venv.action_masks()[0])

    def score_candidates(self, lines: Any, metric: str | None = None) -> np.ndarray:
        """Score after acquiring each candidate line, without changing the episode (oracles).

        Args:
            lines: ``(K,)`` column indices.
            metric: ``ssim``, ``psnr``, ``nmse`` or ``mse`` (default: the reward metric);
                signed so that higher is better.

        Returns:
            ``(K,)`` float scores; an acquired or non-measured line scores the current value.
        """
        cols = torch.as_tensor(np.asarray(lines, dtype=np.int64), device=self.device)
        if cols.ndim != 1:
            raise ValueError(
                f"lines must be (K,) indices in [0, {self.venv.num_actions}), got {lines}"
            )
        return self.venv.torch_score_candidates(cols[None], metric)[0].cpu().numpy()

    def render(self) -> np.ndarray | None:
        """An RGB frame (``rgb_array``) or a matplotlib window (``human``)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array'")
            return None
        frame = render_state(self.venv.state, 0)
        if self.render_mode == "human":
            show_frame(frame, self._window, "activemri")
            return None
        return frame

    def close(self) -> None:
        """Close the render window, if any."""
        if "figure" in self._window:
            import matplotlib.pyplot as plt

            plt.close(self._window["figure"])
            self._window.clear()


def _first(obs: Obs) -> Obs:
    return {key: value[0] for key, value in obs.items()}
