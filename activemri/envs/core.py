"""The functional acquisition core: pure batched functions over an explicit state.

In the spirit of Gymnasium's functional env (and brax's ``State``): everything about B
episodes lives in one :class:`EnvState` of device tensors, and :class:`AcquisitionCore`
holds only the fixed parts (the reconstructor, the reward metric, the observation entries,
the device). Its functions are

- :meth:`~AcquisitionCore.initial`: the state of B new episodes from their data;
- :meth:`~AcquisitionCore.transition`: the next state after one action per episode (add
  the line, reconstruct, score);
- :meth:`~AcquisitionCore.observation` / :meth:`~AcquisitionCore.policy_observation`: what
  the agent sees (entries selected by config, :mod:`activemri.envs.observation`);
- :meth:`~AcquisitionCore.reward`, :meth:`~AcquisitionCore.terminal`,
  :meth:`~AcquisitionCore.info`: of a transition or a state;
- :meth:`~AcquisitionCore.score_candidates`: the score after each of many candidate lines,
  the state untouched (the scoring handle of oracle policies).

Stepping and candidate scoring add lines through the one rule of
:meth:`~AcquisitionCore.acquire`. ``transition`` leaves its input state intact unless told
to *donate* it (``donate=True``, as JAX donates buffers): then the new state reuses the old
one's acquisition buffers in place, which is what the envs do to avoid copying k-space every
step. Pure torch, one device, no host transfers. The episode source
(:mod:`activemri.envs.source`) supplies the data; the Gymnasium envs
(:mod:`activemri.envs.vector`, :mod:`activemri.envs.env`) are source + core.

The reconstructor only ever sees the *observed* k-space: a copy holding the acquired columns
and exactly ``+0.0`` elsewhere, updated column by column, so nothing downstream can depend on
unacquired data whatever the reconstructor does.

With a reconstructor that declares ``linear_in_columns`` (the parameter-free
:class:`~activemri.recon_models.zero_filled.ZeroFilled`, or a user's class) the core never runs
a 2-D FFT after ``initial``: the zero-filled coil images are linear in the acquired columns, so
adding column ``j`` adds the rank-one image ``u_j e_jᵀ`` (``u_j`` the readout inverse FFT of
the column, cropped to the reconstruction height; ``e_j`` the centered inverse DFT basis row
``j``, cropped to the reconstruction width), and the image is
``reconstructor.from_coil_images(coil_images)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from activemri import metrics
from activemri._threads import intra_op_threads
from activemri.envs import observation as observations
from activemri.envs.self_supervised import DEFAULT_HOLDOUT_FRACTION, self_supervised_score
from activemri.geometry import Geometry, Lines, Points, geometry_from_spec
from activemri.kspace import center_crop, zero_filled
from activemri.recon_models.base import Reconstructor, bf16_autocast, native_bf16

__all__ = ["AcquisitionCore", "EnvState", "centered_idft_rows"]

_SIGN = metrics.SIGNS
SELF_SUPERVISED = "self_supervised"
"""The reward that never reads the target (:mod:`activemri.envs.self_supervised`)."""


@dataclass
class EnvState:
    """State of B episodes (every tensor on the core's device, batch first).

    Attributes:
        kspace: Fully sampled complex k-space ``(B, C, H, W)``; never shown to anyone.
        observed: The acquired part of ``kspace``, exactly ``+0.0`` elsewhere.
        target: Ground-truth images ``(B, h, w)``.
        data_range: SSIM/PSNR data range ``(B,)``.
        targets: The targets' metric statistics (SSIM window moments, energy), computed once
            per episode so that scoring a reconstruction is one fused pass.
        mask: Acquired actions, bool ``(B, A)``: lines ``(B, W)``, or the flat points of ky-kz
            planes ``(B, H*W)`` (see :mod:`activemri.geometry`).
        valid: Measured (non-padding) actions, bool ``(B, A)``; ``mask`` is a subset.
        num_low: Size of the initial central (ACS) block ``(B,)``, passed to reconstructors.
        steps: Steps taken ``(B,)``.
        budget: Steps allowed ``(B,)``.
        end_lines: Lines acquired when the budget is spent ``(B,)`` (for the actual
            acceleration in :meth:`AcquisitionCore.info`).
        repeated: Bool ``(B,)``: the last transition added no line (False at the start).
        recon: Current reconstruction ``(B, h, w)``.
        uncertainty: Current per-pixel standard deviation ``(B, h, w)`` or ``None``.
        metrics: ``ssim``, ``psnr``, ``nmse``, ``mse`` of ``recon`` against ``target``, ``(B,)``
            (with ``reward_timing="terminal"``: of the episode's last scored state).
        score: The reward metric, signed so that higher is better, ``(B,)``.
        scale: Observation scale ``(B,)``: the maximum of the episode's initial zero-filled
            image (depends on acquired data only).
        line_images: Linear fast path only: readout inverse FFT of every column,
            cropped, ``(B, C, h, W)``.
        coil_images: Linear fast path only: current complex coil images ``(B, C, h, w)``.
        split_seed: ``reward="self_supervised"`` only: long ``(B,)`` seeds of the per-step
            input / held-out splits (:mod:`activemri.envs.self_supervised`).
    """

    kspace: torch.Tensor
    observed: torch.Tensor
    target: torch.Tensor
    data_range: torch.Tensor
    targets: metrics.MetricTargets
    mask: torch.Tensor
    valid: torch.Tensor
    num_low: torch.Tensor
    steps: torch.Tensor
    budget: torch.Tensor
    end_lines: torch.Tensor
    repeated: torch.Tensor
    recon: torch.Tensor
    uncertainty: torch.Tensor | None
    metrics: dict[str, torch.Tensor]
    score: torch.Tensor
    scale: torch.Tensor
    line_images: torch.Tensor | None = None
    coil_images: torch.Tensor | None = None
    split_seed: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of episodes B."""
        return int(self.mask.shape[0])

    def free_lines(self) -> torch.Tensor:
        """Bool ``(B, A)``: measured lines (or points) not yet acquired (the valid actions)."""
        return self.valid & ~self.mask

    def done(self) -> torch.Tensor:
        """Bool ``(B,)``: budget spent or every measured line acquired."""
        return (self.steps >= self.budget) | ~self.free_lines().any(dim=1)

    def select(self, rows: torch.Tensor | slice) -> EnvState:
        """A new state of episodes ``rows`` only (copies; long ``(R,)`` or a slice)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "metrics":
                values[f.name] = {key: v[rows].clone() for key, v in value.items()}
            elif f.name == "targets":
                index = rows if isinstance(rows, torch.Tensor) else _arange(rows, self.batch_size)
                values[f.name] = value.rows(index.to(self.mask.device))  # gathers: copies
            else:
                values[f.name] = None if value is None else value[rows].clone()
        return EnvState(**values)

    def replace_rows(self, rows: torch.Tensor, new: EnvState) -> None:
        """Overwrite episodes ``rows`` (long ``(R,)``) with the ``R`` episodes of ``new``."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(new, f.name)
            if f.name == "metrics":
                for key in mine:
                    mine[key][rows] = theirs[key]
            elif f.name == "targets":
                for a, b in zip(mine.leaves(), theirs.leaves(), strict=True):
                    a[rows] = b
            elif mine is not None:
                if theirs is None:
                    raise ValueError(f"cannot merge states: {f.name} is missing in the new rows")
                mine[rows] = theirs


def _arange(rows: slice, n: int) -> torch.Tensor:
    return torch.arange(n)[rows]


def centered_idft_rows(width: int, out_width: int, device: torch.device) -> torch.Tensor:
    """Rows ``e_j`` of the centered orthonormal inverse DFT, center-cropped to ``out_width``.

    ``ifft2c`` along the last axis maps a signal ``k`` to ``sum_j k[j] e_j``.

    Returns:
        Complex64 ``(width, out_width)``.
    """
    eye = torch.eye(width, dtype=torch.complex64, device=device)
    rows = torch.fft.fftshift(
        torch.fft.ifft(torch.fft.ifftshift(eye, dim=-1), dim=-1, norm="ortho"), dim=-1
    )
    return center_crop(rows, (width, out_width)).contiguous()


def _readout_idft(kspace: torch.Tensor, height: int) -> torch.Tensor:
    lines = torch.fft.fftshift(
        torch.fft.ifft(torch.fft.ifftshift(kspace, dim=-2), dim=-2, norm="ortho"), dim=-2
    )
    return center_crop(lines, (height, kspace.shape[-1])).contiguous()


Timer = Callable[[str], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _no_timer(section: str) -> Iterator[None]:
    yield


class AcquisitionCore:
    """The fixed parts of a batched env and the functions over its :class:`EnvState`.

    Args:
        reconstructor: The model (moved to ``device`` and put in eval mode).
        reward: Reward score: one of :data:`~activemri.envs.scenario.REWARD_METRICS`, or
            ``"self_supervised"``: minus the normalized error of held-out acquired data
            predicted from the rest (:mod:`activemri.envs.self_supervised`), which never
            reads the target; the states' ``metrics`` (info only) still compare with it.
        repeat_penalty: Subtracted from the reward of steps that add no line.
        device: Where every tensor lives.
        bf16: Run the reconstructor under bfloat16 autocast where the device runs bf16
            natively (CUDA; CPUs with AVX512-BF16 or AMX); ignored elsewhere.
        channels_last: Keep the reconstructor's weights in channels-last memory format
            (faster convolutions on CPU with oneDNN); the images are the same to float
            rounding.
        candidate_chunk: Most images per forward in :meth:`score_candidates`.
        geometry: What an action acquires: ``"lines"`` (columns of 2-D slices, the default),
            ``"points"`` (points of ky-kz planes) or a :class:`~activemri.geometry.Geometry`.
        observation: Entries of :meth:`observation`, a subset of
            :data:`~activemri.envs.observation.ENV_KEYS` (``None``: the default of
            :func:`~activemri.envs.observation.resolve_keys`).
        metric_threads: Intra-op threads of the metric pass on CPU (``None``: as set); see
            ``EnvConfig.metric_threads``.
        reward_timing: ``"dense"`` (score every state) or ``"terminal"``: a transition
            scores only the episodes it ends, and reconstructs only those unless the
            observation shows a reconstruction or uncertainty map. The other episodes keep
            the score, metrics (and then reconstruction) of their last scored state, the
            initial one, so :meth:`reward` is 0 until the last step and then final -
            initial score: the same return as dense rewards.
        holdout_fraction: ``reward="self_supervised"``: the held-out fraction rho of the
            acquired actions outside the calibration block.
        holdout_splits: ``reward="self_supervised"``: independent splits averaged per score
            (each costs one more reconstructor forward per scored image).
    """

    def __init__(
        self,
        reconstructor: Reconstructor,
        reward: str = "ssim",
        repeat_penalty: float = 0.0,
        device: torch.device | str = "cpu",
        bf16: bool = False,
        candidate_chunk: int = 64,
        observation: Sequence[str] | None = None,
        metric_threads: int | None = None,
        channels_last: bool = False,
        reward_timing: str = "dense",
        geometry: str | Geometry = "lines",
        holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
        holdout_splits: int = 1,
    ) -> None:
        if reward not in _SIGN and reward != SELF_SUPERVISED:
            raise ValueError(
                f"reward must be one of {sorted(_SIGN)} or {SELF_SUPERVISED!r}, got {reward!r}"
            )
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        self.holdout_fraction = float(holdout_fraction)
        if holdout_splits < 1:
            raise ValueError(f"holdout_splits must be >= 1, got {holdout_splits}")
        self.holdout_splits = int(holdout_splits)
        if reward_timing not in ("dense", "terminal"):
            raise ValueError(f"reward_timing must be 'dense' or 'terminal', got {reward_timing!r}")
        self.reward_timing = reward_timing
        self.geometry = geometry_from_spec(geometry)
        if candidate_chunk < 1:
            raise ValueError(f"candidate_chunk must be >= 1, got {candidate_chunk}")
        self.device = torch.device(device)
        self.reconstructor = reconstructor.to(self.device).eval()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            for param in self.reconstructor.parameters():
                if param.ndim == 4:  # convolution weights
                    param.data = param.data.contiguous(memory_format=torch.channels_last)
        self.reward_metric = reward
        self.repeat_penalty = float(repeat_penalty)
        self.bf16 = bool(bf16) and native_bf16(self.device)
        self.candidate_chunk = int(candidate_chunk)
        self.metric_threads = None if self.device.type != "cpu" else metric_threads
        self.observation_keys = observations.resolve_keys(
            observation, has_uncertainty=self.has_uncertainty
        )
        self._shows_images = bool({"reconstruction", "uncertainty"} & set(self.observation_keys))
        # A model with an uncertainty head needs its forward: no fast path for it.
        self.fast_linear = bool(reconstructor.linear_in_columns) and not (
            reconstructor.has_uncertainty
        )
        self.recon_size = reconstructor.recon_size
        self._idft_rows: dict[tuple[int, int], torch.Tensor] = {}
        self._grid_facts: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def self_supervised(self) -> bool:
        """Whether the reward is the self-supervised score (it never reads the target)."""
        return self.reward_metric == SELF_SUPERVISED

    @property
    def has_uncertainty(self) -> bool:
        """Whether states carry an uncertainty map."""
        return bool(self.reconstructor.has_uncertainty)

    # --------------------------------------------------------------------------- initial
    def initial(
        self,
        kspace: torch.Tensor,
        target: torch.Tensor,
        data_range: torch.Tensor,
        valid: torch.Tensor,
        mask: torch.Tensor,
        num_low: torch.Tensor,
        budget: torch.Tensor,
        end_lines: torch.Tensor | None = None,
        timer: Timer = _no_timer,
        split_seed: torch.Tensor | None = None,
    ) -> EnvState:
        """The state of B new episodes (initial reconstruction and score included).

        Args:
            kspace: Complex ``(B, C, H, W)``.
            target: Float ``(B, h, w)`` at the reconstructor's size.
            data_range: ``(B,)`` positive.
            valid: Bool ``(B, A)`` measured actions (lines, or flat points).
            mask: Bool ``(B, A)`` initial mask, a subset of ``valid``.
            num_low: Long ``(B,)`` central-block sizes.
            budget: Long ``(B,)`` steps allowed.
            end_lines: Long ``(B,)`` lines at the end of the budget (default: initial lines
                + budget).
            timer: Context-manager factory ``timer(section)`` for profiling.
            split_seed: Long ``(B,)`` seeds of the held-out splits (``reward=
                "self_supervised"``; default 0 for every episode).

        Returns:
            The new state.
        """
        self._check_initial(kspace, target, data_range, valid, mask, num_low, budget)
        height, width = kspace.shape[-2:]
        with timer("mask_fft"):
            where = self.geometry.broadcast(mask, height, width)
            observed = torch.where(where, kspace, torch.zeros_like(kspace))
            line_images = coil_images = None
            if self.fast_linear:
                rows = self._rows(width, self.recon_size[1])
                if isinstance(self.geometry, Lines):
                    line_images = _readout_idft(kspace, self.recon_size[0])
                    # where, not multiply: inf * 0 would be NaN if unseen data were not finite
                    coil_images = torch.where(where, line_images, 0) @ rows
                else:
                    coil_images = _readout_idft(observed, self.recon_size[0]) @ rows
                first = self.reconstructor.from_coil_images(coil_images)
            else:
                recon_mask = self.geometry.recon_mask(mask, height, width)
                first = zero_filled(observed, recon_mask, self.recon_size)
            scale = first.flatten(1).amax(dim=1).float()
            # An overflowed (inf) scale would turn every observation into inf / inf = NaN.
            usable = torch.isfinite(scale) & (scale > 0)
            scale = torch.where(usable, scale, torch.ones_like(scale))
        budget = budget.long()
        if end_lines is None:
            end_lines = mask.sum(dim=1) + budget
        with timer("metric"):
            targets = metrics.metric_targets(target.float(), data_range.float())
        state = EnvState(
            kspace=kspace,
            observed=observed,
            target=targets.target,
            data_range=targets.data_range,
            targets=targets,
            mask=mask.clone(),
            valid=valid,
            num_low=num_low.long(),
            steps=torch.zeros_like(budget),
            budget=budget,
            end_lines=end_lines.to(self.device, torch.long),
            repeated=torch.zeros_like(valid[:, 0]),
            recon=first.float(),
            uncertainty=None,
            metrics={},
            score=torch.zeros_like(scale),
            scale=scale,
            line_images=line_images,
            coil_images=coil_images,
        )
        if self.self_supervised:
            seeds = torch.zeros_like(budget) if split_seed is None else split_seed
            state.split_seed = seeds.to(self.device, torch.long)
        self._reconstruct(state, timer)
        self._score(state, timer)
        return state

    def _check_initial(
        self,
        kspace: torch.Tensor,
        target: torch.Tensor,
        data_range: torch.Tensor,
        valid: torch.Tensor,
        mask: torch.Tensor,
        num_low: torch.Tensor,
        budget: torch.Tensor,
    ) -> None:
        if kspace.ndim != 4 or not kspace.is_complex():
            raise ValueError(
                f"kspace must be complex (B, C, H, W), got {tuple(kspace.shape)} {kspace.dtype}"
            )
        b, _, h, w = kspace.shape
        a = self.geometry.num_actions(h, w)
        if tuple(target.shape) != (b, *self.recon_size):
            raise ValueError(
                f"target must be ({b}, {self.recon_size[0]}, {self.recon_size[1]}) to match the "
                f"reconstructor, got {tuple(target.shape)}"
            )
        for name, t in (("valid", valid), ("mask", mask)):
            if t.dtype != torch.bool or tuple(t.shape) != (b, a):
                raise ValueError(
                    f"{name} must be bool ({b}, {a}) ({self.geometry.name} of {h}x{w} k-space), "
                    f"got {tuple(t.shape)} {t.dtype}"
                )
        for name, t in (("data_range", data_range), ("num_low", num_low), ("budget", budget)):
            if tuple(t.shape) != (b,):
                raise ValueError(f"{name} must have shape ({b},), got {tuple(t.shape)}")
        for t in (kspace, target, valid, mask, data_range, num_low, budget):
            if t.device != self.device:
                raise ValueError(f"every input must be on {self.device}, got one on {t.device}")

    def _rows(self, size: int, out: int) -> torch.Tensor:
        if (size, out) not in self._idft_rows:
            self._idft_rows[size, out] = centered_idft_rows(size, out, self.device)
        return self._idft_rows[size, out]

    # ------------------------------------------------------------------------ transition
    def transition(
        self,
        state: EnvState,
        actions: torch.Tensor,
        *,
        donate: bool = False,
        timer: Timer = _no_timer,
    ) -> EnvState:
        """The state after action ``actions[i]`` in episode ``i``, reconstructed and scored.

        An action on a line (or point) already acquired, or a non-measured one, adds nothing
        and still takes the step (``repeated`` is True; see :meth:`reward`). With
        ``reward_timing="terminal"`` only the episodes this step ends are scored (see the
        class docstring).

        Args:
            state: The episodes (all of them step).
            actions: Long ``(B,)`` action indices in ``[0, A)`` on the core's device (checked
                by the env layers, which see them on the host).
            donate: Reuse ``state``'s acquisition buffers (``mask``, ``observed``,
                ``coil_images``) in place instead of copying them; afterwards read only the
                old state's ``score``, ``metrics``, ``recon`` and ``steps``.
            timer: Context-manager factory ``timer(section)`` for profiling.

        Returns:
            The next state (a new object; with ``donate`` it shares those buffers).
        """
        with timer("mask_fft"):
            rows = torch.arange(state.batch_size, device=self.device)
            actions = actions.to(self.device, torch.long)
            # before the mask is (possibly) donated: episodes that had ended already
            ended = state.done() if self.reward_timing == "terminal" else None
            mask, observed, coils = state.mask, state.observed, state.coil_images
            if not donate:
                mask, observed = mask.clone(), observed.clone()
                coils = None if coils is None else coils.clone()
            new_line, term = self.acquire(state, rows, actions, into=(mask, observed))
            if term is not None and coils is not None:
                coils += term
            nxt = dataclasses.replace(
                state,
                mask=mask,
                observed=observed,
                coil_images=coils,
                steps=state.steps + 1,
                repeated=~new_line,
                metrics={},
            )
        if self.reward_timing == "dense":
            self._reconstruct(nxt, timer)
            self._score(nxt, timer)
            return nxt
        # Terminal reward: only the episodes that end are scored (one host sync for which).
        nxt.metrics = {key: value.clone() for key, value in state.metrics.items()}
        nxt.score = state.score.clone()
        if self._shows_images:
            self._reconstruct(nxt, timer)
        assert ended is not None
        ending = torch.nonzero(nxt.done() & ~ended).flatten()
        if ending.numel():
            self._reconstruct_and_score_rows(nxt, ending, reconstruct=not self._shows_images)
        return nxt

    def _reconstruct_and_score_rows(
        self, state: EnvState, rows: torch.Tensor, reconstruct: bool
    ) -> None:
        """Reconstruct (if asked) and score episodes ``rows`` of ``state`` in place."""
        if reconstruct:
            if state.coil_images is not None:
                image = self.reconstructor.from_coil_images(state.coil_images[rows]).float()
                uncertainty = None
            else:
                image, uncertainty = self._forward(
                    state.observed[rows], state.mask[rows], state.num_low[rows]
                )
            state.recon = state.recon.clone()
            state.recon[rows] = image
            if uncertainty is not None:
                state.uncertainty = (
                    torch.zeros_like(state.recon) if state.uncertainty is None
                    else state.uncertainty.clone()
                )  # fmt: skip
                state.uncertainty[rows] = uncertainty
        with torch.no_grad(), intra_op_threads(self.metric_threads):
            scored = metrics.metrics_against(state.recon[rows], state.targets, rows)
        for key, value in scored.items():
            state.metrics[key][rows] = value
        if self.self_supervised:
            state.score[rows] = self._heldout_score(
                state.observed[rows], state.mask[rows], state, rows
            )
        else:
            state.score[rows] = _SIGN[self.reward_metric] * scored[self.reward_metric]

    def reward(self, state: EnvState, next_state: EnvState) -> torch.Tensor:
        """Float32 ``(B,)`` reward of the transition ``state -> next_state``.

        The score gain, minus ``repeat_penalty`` where the step added no line; rewards
        telescope to final - initial score (less the penalties).
        """
        penalty = self.repeat_penalty * next_state.repeated.float()
        return next_state.score - state.score - penalty

    @staticmethod
    def terminal(state: EnvState) -> torch.Tensor:
        """Bool ``(B,)``: the budget is spent or every measured line is acquired."""
        return state.done()

    def observation(self, state: EnvState) -> dict[str, torch.Tensor]:
        """The env observation of ``state``: the entries :attr:`observation_keys`.

        See :func:`activemri.envs.observation.observe`.
        """
        return observations.observe(state, self.observation_keys)

    def policy_observation(
        self, state: EnvState, obs: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """What a (non-oracle) policy is given: the observation and the ``POLICY_KEYS``.

        Args:
            state: The episodes.
            obs: Their env observation, if already computed.
        """
        height, width = state.kspace.shape[-2:]
        key = (int(height), int(width))
        if key not in self._grid_facts:
            rank = self.geometry.center_rank(*key)
            grid = self.geometry.grid(*key)
            self._grid_facts[key] = (
                torch.as_tensor(rank, device=self.device),
                # on the host: policies read its two ints every step without a device sync
                torch.tensor(grid, dtype=torch.long),
            )
        center_rank, action_grid = self._grid_facts[key]
        return observations.policy_observation(
            state, self.observation(state) if obs is None else dict(obs), center_rank, action_grid
        )

    @staticmethod
    def info(state: EnvState) -> dict[str, torch.Tensor]:
        """Per-episode ``(B,)`` facts of ``state`` (fresh tensors, safe to keep).

        Keys: ``ssim``, ``psnr``, ``nmse``, ``mse``, ``score`` (the signed reward metric),
        ``data_range``, ``lines_acquired``, ``acceleration`` (measured / acquired lines),
        ``actual_acceleration`` (measured lines / lines at the end of the budget),
        ``steps``, ``budget`` and ``repeated`` (the last step added no line).
        """
        lines = state.mask.sum(dim=1)
        measured = state.valid.sum(dim=1)
        info = {key: value.clone() for key, value in state.metrics.items()}
        info["score"] = state.score.clone()
        info["data_range"] = state.data_range.clone()
        info["lines_acquired"] = lines
        info["acceleration"] = measured / lines.clamp_min(1)
        info["actual_acceleration"] = measured / state.end_lines.clamp_min(1)
        info["steps"] = state.steps.clone()
        info["budget"] = state.budget.clone()
        info["repeated"] = state.repeated.clone()
        return info

    def signed_metric(self, state: EnvState, metric: str | None = None) -> torch.Tensor:
        """The current ``metric`` of every episode, ``(B,)``, signed so that higher is better.

        Args:
            state: The episodes.
            metric: As in :meth:`score_candidates` (default: the reward metric).
        """
        metric = metric or self.reward_metric
        if metric == SELF_SUPERVISED and self.self_supervised:
            return state.score.clone()
        if metric not in _SIGN:
            raise ValueError(f"metric must be one of {sorted(_SIGN)}, got {metric!r}")
        return _SIGN[metric] * state.metrics[metric]

    # ----------------------------------------------------------------------- candidates
    @torch.no_grad()
    def score_candidates(
        self, state: EnvState, lines: torch.Tensor, metric: str | None = None
    ) -> torch.Tensor:
        """Score of every episode after acquiring each candidate line; ``state`` is untouched.

        Candidates already acquired (or not measured) score the current value. Work is done
        in chunks of at most ``candidate_chunk`` images per forward.

        Args:
            state: The episodes.
            lines: Long ``(B, K)`` candidate actions per episode, in ``[0, A)`` (checked by
                the env layers).
            metric: Metric to report (default: the reward metric), signed so higher is better.

        Returns:
            Float ``(B, K)``.
        """
        metric = metric or self.reward_metric
        heldout = metric == SELF_SUPERVISED
        if heldout and not self.self_supervised:
            raise ValueError(
                "metric='self_supervised' needs a core built with reward='self_supervised' "
                "(its states carry the split seeds)"
            )
        if metric not in _SIGN and not heldout:
            raise ValueError(f"metric must be one of {sorted(_SIGN)}, got {metric!r}")
        b, k = lines.shape
        if b != state.batch_size:
            raise ValueError(f"lines must be ({state.batch_size}, K), got {tuple(lines.shape)}")
        lines = lines.to(self.device, torch.long)
        flat_rows = torch.arange(b, device=self.device).repeat_interleave(k)
        flat_lines = lines.reshape(-1)
        out = torch.empty(b * k, device=self.device)
        for start in range(0, b * k, self.candidate_chunk):
            rows = flat_rows[start : start + self.candidate_chunk]
            cols = flat_lines[start : start + self.candidate_chunk]
            # On CPU a chunk of one episode's candidates broadcasts that episode's tensors
            # instead of gathering a copy per candidate (a free check there, a sync on GPU).
            one: int | None = None
            if self.device.type == "cpu" and bool(rows[0] == rows[-1]):
                one = int(rows[0])
            pick: torch.Tensor | slice = rows if one is None else slice(one, one + 1)
            if heldout:
                mask, observed = state.mask[rows], state.observed[rows]  # copies
                self.acquire(state, rows, cols, into=(mask, observed))
                out[start : start + rows.numel()] = self._heldout_score(observed, mask, state, rows)
                continue
            if state.coil_images is not None:
                _, term = self.acquire(state, rows, cols)
                assert term is not None
                image = self.reconstructor.from_coil_images(state.coil_images[pick] + term).float()
            else:
                mask, observed = state.mask[rows], state.observed[rows]  # copies
                self.acquire(state, rows, cols, into=(mask, observed))
                image = self._forward(observed, mask, state.num_low[rows])[0]
            which = rows if one is None else one
            with intra_op_threads(self.metric_threads):
                scored = metrics.metrics_against(image, state.targets, which, names=(metric,))
            value = scored[metric]
            out[start : start + rows.numel()] = _SIGN[metric] * value
        return out.view(b, k)

    # ------------------------------------------------------------------------ acquire
    def acquire(
        self,
        state: EnvState,
        rows: torch.Tensor,
        cols: torch.Tensor,
        into: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add line ``cols[i]`` to episode ``rows[i]``: the one add-a-line rule.

        :meth:`transition` writes into the next state's buffers, :meth:`score_candidates` into
        copies of its rows (or only takes the rank-one term), so both follow the same rule: a line
        already acquired or not measured adds nothing.

        Args:
            state: The episodes the lines come from.
            rows: Long ``(N,)`` episode of each line (may repeat).
            cols: Long ``(N,)`` columns.
            into: ``(mask, observed)`` with ``N`` rows to update in place (row ``i`` gets
                line ``i``): buffers like ``state.mask`` / ``state.observed`` when ``rows`` is
                every episode once, else copies of ``state.mask[rows]`` /
                ``state.observed[rows]``.

        Returns:
            ``new_line`` (bool ``(N,)``: the line was measured and not yet acquired) and, on
            the linear fast path, the rank-one coil-image term ``(N, C, h, w)`` to add to the
            episodes' coil images (else ``None``).
        """
        new_line = state.valid[rows, cols] & ~state.mask[rows, cols]
        geometry = self.geometry
        if into is not None:
            mask, observed = into
            n = torch.arange(rows.numel(), device=rows.device)
            mask[n, cols] |= new_line
            keep = geometry.take(observed, n, cols)
            new = geometry.take(state.kspace, rows, cols)
            shape = (-1,) + (1,) * (new.ndim - 1)
            geometry.put(observed, cols, torch.where(new_line.view(shape), new, keep))
        term = None
        if self.fast_linear:
            height, width = state.kspace.shape[-2:]
            h, w = self.recon_size
            # where, not multiply: inf * 0 would be NaN if unseen data were not finite
            if isinstance(geometry, Points):
                value = torch.where(new_line[:, None], geometry.take(state.kspace, rows, cols), 0)
                ky, kz = cols // width, cols % width
                outer = self._rows(height, h)[ky][:, :, None] * self._rows(width, w)[kz][:, None]
                term = value[:, :, None, None] * outer[:, None]
            elif state.line_images is not None:
                column = torch.where(
                    new_line[:, None, None], state.line_images[rows, :, :, cols], 0
                )
                term = column[..., None] * self._rows(width, w)[cols][:, None, None, :]
        return new_line, term

    # ------------------------------------------------------------------------- helpers
    @torch.no_grad()
    def _forward(
        self, observed: torch.Tensor, mask: torch.Tensor, num_low: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        recon_mask = self.geometry.recon_mask(mask, *observed.shape[-2:])
        with bf16_autocast(self.device) if self.bf16 else contextlib.nullcontext():
            out = self.reconstructor(observed, recon_mask, num_low_frequencies=num_low)
        uncertainty = None if out.uncertainty is None else out.uncertainty.float()
        return out.image.float(), uncertainty

    def _reconstruct(self, state: EnvState, timer: Timer) -> None:
        with timer("forward"):
            if state.coil_images is not None:
                state.recon = self.reconstructor.from_coil_images(state.coil_images).float()
            else:
                state.recon, state.uncertainty = self._forward(
                    state.observed, state.mask, state.num_low
                )

    def _score(self, state: EnvState, timer: Timer) -> None:
        with timer("metric"), torch.no_grad():
            with intra_op_threads(self.metric_threads):
                state.metrics = metrics.metrics_against(state.recon, state.targets)
            if not self.self_supervised:
                state.score = _SIGN[self.reward_metric] * state.metrics[self.reward_metric]
        if self.self_supervised:
            with timer("forward"):
                rows = torch.arange(state.batch_size, device=self.device)
                state.score = self._heldout_score(state.observed, state.mask, state, rows)

    @torch.no_grad()
    def _heldout_score(
        self,
        observed: torch.Tensor,
        mask: torch.Tensor,
        state: EnvState,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """The self-supervised score of acquisitions ``(observed, mask)`` of episodes ``rows``.

        Reads the episodes' calibration sizes and split seeds from ``state``; never the
        target. The split is drawn for the number of acquired actions, not the step count:
        a step that adds nothing keeps the split and the score (its reward is exactly
        ``-repeat_penalty``), and a candidate scores what the state acquiring it would.
        """
        if state.split_seed is None:
            raise ValueError("the state has no split seeds: it was not built for this reward")
        num_low, seed = state.num_low[rows], state.split_seed[rows]
        height, width = observed.shape[-2:]
        predict = None
        model = self.reconstructor
        if model.predicts_kspace:

            def predict(
                inputs: torch.Tensor, theta: torch.Tensor, low: torch.Tensor
            ) -> torch.Tensor:
                recon_mask = self.geometry.recon_mask(theta, height, width)
                with bf16_autocast(self.device) if self.bf16 else contextlib.nullcontext():
                    out = model.forward_kspace(inputs, recon_mask, num_low_frequencies=low)
                return out.to(inputs.dtype)

        return self_supervised_score(
            self._forward,
            observed,
            mask,
            num_low,
            seed,
            mask.sum(dim=1),
            self.geometry,
            self.recon_size,
            self.holdout_fraction,
            predict,
            self.holdout_splits,
        )

    def to_dict(self) -> dict[str, Any]:
        """Settings of this core (for ``repr`` and reports)."""
        return {
            "reconstructor": type(self.reconstructor).__name__,
            "reward": self.reward_metric,
            "repeat_penalty": self.repeat_penalty,
            "device": str(self.device),
            "bf16": self.bf16,
            "channels_last": self.channels_last,
            "fast_linear": self.fast_linear,
            "metric_threads": self.metric_threads,
            "reward_timing": self.reward_timing,
            "geometry": self.geometry.to_dict(),
            **(
                {"holdout_fraction": self.holdout_fraction, "holdout_splits": self.holdout_splits}
                if self.self_supervised
                else {}
            ),
        }
