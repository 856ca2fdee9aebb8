"""Sequential sampling policies: one contract, ``act(obs) -> actions``.

A policy is given observations only: the batched tensors of
:meth:`ActiveMRIVectorEnv.torch_policy_observation` (the env's observation plus
``action_mask``, ``valid``, ``budget``, ``steps``, ``budget_used`` and ``num_low``, all
following from acquired data) and, when episodes start, their
:class:`~activemri.envs.source.PolicyEpisode` facts (file name, slice, line counts). It
returns one long column index per episode on the observations' device. Nothing it is given
leads to the fully sampled k-space or the target. The greedy oracle is the exception by
design, and says so in its constructor: it takes a scoring handle
(:meth:`ActiveMRIVectorEnv.torch_score_candidates`) that scores lines against the ground
truth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from activemri._dist import gather_strided, world
from activemri.envs.source import PolicyEpisode
from activemri.masks import MASK_TYPES, make_mask, volume_seed
from activemri.masks2d import MASK_TYPES_2D, make_mask_2d

__all__ = [
    "FixedMaskPolicy",
    "FixedOrderPolicy",
    "GreedyOraclePolicy",
    "LowToHighPolicy",
    "Policy",
    "RandomPolicy",
    "UncertaintyPolicy",
    "center_out_order",
    "free_lines",
]

Obs = Mapping[str, torch.Tensor]
Scorer = Callable[[torch.Tensor, "str | None"], torch.Tensor]
"""``scorer(lines (B, K), metric) -> (B, K)`` scores after acquiring each candidate line."""


def free_lines(obs: Obs) -> torch.Tensor:
    """Bool ``(B, A)``: measured lines (or points) not yet acquired (the valid actions)."""
    return obs["action_mask"].bool()


def _center_rank(obs: Obs, num_actions: int) -> np.ndarray:
    """Each action's center-out rank: the geometry's (``center_rank``), else the lines'."""
    if "center_rank" in obs:
        rank: np.ndarray = obs["center_rank"].cpu().numpy()
        return rank
    order = center_out_order(num_actions)
    out = np.empty(num_actions, dtype=np.float32)
    out[order] = np.arange(num_actions, dtype=np.float32)
    return out


def center_out_order(width: int) -> list[int]:
    """Columns from the center outwards, alternating sides, left first on ties.

    The center is column ``W // 2``, where fastMRI's central block of one line sits.
    """
    center = width // 2
    return sorted(range(width), key=lambda c: (abs(c - center), c))


def _pick_lowest(free: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Per row, the free column of lowest ``rank`` (``(W,)`` / ``(B, W)``); any if none free."""
    scores = torch.where(free, rank, torch.full_like(free, float("inf"), dtype=rank.dtype))
    return scores.argmin(dim=1)


class Policy(ABC):
    """Chooses the next line of every episode.

    Attributes:
        name: Short name used in reports.
        budget_aware: True if the choices depend on the episode's budget (a fixed mask drawn
            for it, an agent trained for it). The evaluation harness runs such a policy once
            per budget; any other policy once, at the largest budget, reading the smaller
            budgets off its trajectory (a greedy choice does not look ahead to the budget).
    """

    name: str = "policy"
    budget_aware: bool = False

    def begin(  # noqa: B027 (a hook: most policies need nothing at episode start)
        self, rows: Sequence[int], episodes: Sequence[PolicyEpisode], obs: Obs
    ) -> None:
        """Called after episodes start in ``rows`` (by reset or autoreset); default: nothing.

        Args:
            rows: Batch rows that just started an episode.
            episodes: Their facts (file name, slice, ...), in the order of ``rows``.
            obs: The batch's policy observation (rows ``rows`` hold the new episodes).
        """

    @abstractmethod
    def act(self, obs: Obs) -> torch.Tensor:
        """Actions for all B episodes.

        Args:
            obs: Policy observation tensors (``reconstruction``, ``mask``, ``action_mask``,
                ``uncertainty``, ...; see the module docstring).

        Returns:
            Long ``(B,)`` column indices; a measured, unacquired line wherever one is left.
        """


class RandomPolicy(Policy):
    """A uniformly random measured, unacquired line.

    Args:
        seed: Seed of the policy's own generator (no global random state is used).
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def act(self, obs: Obs) -> torch.Tensor:
        """See :meth:`Policy.act`."""
        free = free_lines(obs)
        device = free.device
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        weights = free.float() + (~free.any(dim=1, keepdim=True)).float()  # full rows: any
        return torch.multinomial(weights, 1, generator=self._generators[device]).squeeze(1)


class FixedOrderPolicy(Policy):
    """Plays a fixed ordering of lines: the first line of ``order`` not yet acquired.

    This is how a fixed mask (or a learned ordering) is evaluated step by step inside the
    environment. Lines not in ``order`` come after it, center-out (for points: by the
    geometry's ``center_rank``, the normalized k-space radius).

    Args:
        order: Columns in acquisition order.
        name: Report name.
    """

    def __init__(self, order: Sequence[int], name: str = "fixed_order") -> None:
        if len(set(order)) != len(order):
            raise ValueError("order must not repeat a column")
        self.order = [int(c) for c in order]
        self.name = name
        self._ranks: dict[tuple[int, tuple[int, ...], torch.device], torch.Tensor] = {}

    @classmethod
    def from_mask(
        cls, mask: Sequence[bool] | np.ndarray, name: str = "fixed_mask"
    ) -> FixedOrderPolicy:
        """The lines of a fixed mask, center-out (so every budget up to its size plays it)."""
        chosen = set(np.flatnonzero(np.asarray(mask, dtype=bool)).tolist())
        return cls([c for c in center_out_order(len(mask)) if c in chosen], name=name)

    def _rank(self, obs: Obs, width: int, device: torch.device) -> torch.Tensor:
        grid = tuple(obs["action_grid"].tolist()) if "action_grid" in obs else (1, width)
        key = (width, grid, device)
        if key not in self._ranks:
            if any(c >= width or c < 0 for c in self.order):
                raise ValueError(f"order has actions outside [0, {width})")
            rank = np.full(width, np.inf)
            rank[self.order] = np.arange(len(self.order))
            center = _center_rank(obs, width)
            rest = [int(c) for c in np.argsort(center, kind="stable") if not np.isfinite(rank[c])]
            rank[rest] = len(self.order) + np.arange(len(rest))
            self._ranks[key] = torch.as_tensor(rank, dtype=torch.float32, device=device)
        return self._ranks[key]

    def act(self, obs: Obs) -> torch.Tensor:
        """See :meth:`Policy.act`."""
        free = free_lines(obs)
        return _pick_lowest(free, self._rank(obs, free.shape[1], free.device))


class FixedMaskPolicy(Policy):
    """A fixed mask, drawn per volume and budget.

    When an episode starts, a mask of ``initial lines + budget`` lines is drawn for it with
    the episode's central block as ACS lines and its measured columns only, seeded by the
    file name (:func:`~activemri.masks.volume_seed` ``+ seed``: every slice of a volume gets
    the same mask, as in fastMRI); its lines are then played center-out. On ky-kz planes
    (the points geometry) the mask is a 2-D point mask of
    :data:`~activemri.masks2d.MASK_TYPES_2D` (``poisson``, ``equispaced`` with a CAIPI
    shift, ...), its points played by increasing k-space radius.

    Args:
        mask_type: A key of :data:`~activemri.masks.MASK_TYPES` (lines) or
            :data:`~activemri.masks2d.MASK_TYPES_2D` (points).
        seed: Added to the per-volume seed.
        name: Report name (default: the mask type).
    """

    budget_aware = True

    def __init__(self, mask_type: str, seed: int = 0, name: str | None = None) -> None:
        if mask_type not in MASK_TYPES and mask_type not in MASK_TYPES_2D:
            raise ValueError(
                f"unknown mask type {mask_type!r}; choose from {sorted(MASK_TYPES)} (lines) or "
                f"{sorted(MASK_TYPES_2D)} (points)"
            )
        self.mask_type = mask_type
        self.seed = seed
        self.name = name or mask_type
        self._rank: torch.Tensor | None = None

    def begin(self, rows: Sequence[int], episodes: Sequence[PolicyEpisode], obs: Obs) -> None:
        """Draw the masks of the new episodes (see the class docstring)."""
        mask = obs["mask"].bool()
        width = mask.shape[1]
        if self._rank is None or self._rank.shape != mask.shape:
            self._rank = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        grid = (1, width) if "action_grid" not in obs else tuple(obs["action_grid"].tolist())
        points = grid[0] > 1
        table = MASK_TYPES_2D if points else MASK_TYPES
        if self.mask_type not in table:
            raise ValueError(
                f"mask type {self.mask_type!r} is for {'lines' if points else 'points'}; this "
                f"env acquires {'points' if points else 'lines'}: choose from {sorted(table)}"
            )
        center_out = np.argsort(_center_rank(obs, width), kind="stable")
        index = torch.as_tensor(list(rows), dtype=torch.long, device=mask.device)
        # One device-to-host copy for all new episodes; masks are drawn with NumPy.
        valid, initial = obs["valid"][index].cpu().numpy(), mask[index].cpu().numpy()
        budget, num_low = obs["budget"][index].tolist(), obs["num_low"][index].tolist()
        ranks = np.empty((len(index), width), dtype=np.float32)
        for i, episode in enumerate(episodes):
            count = int(initial[i].sum() + budget[i])
            rng = np.random.default_rng(volume_seed(episode.file) + self.seed)
            if points:
                plane, _ = make_mask_2d(self.mask_type, grid, count, int(num_low[i]), rng,
                                        valid=valid[i].reshape(grid))  # fmt: skip
                drawn = plane.reshape(-1)
            else:
                drawn, _ = make_mask(self.mask_type, width, count, int(num_low[i]), rng,
                                     valid=valid[i])  # fmt: skip
            ranks[i, center_out] = np.arange(width) + np.where(drawn[center_out], 0, width)
        self._rank[index] = torch.from_numpy(ranks).to(self._rank.device)

    def act(self, obs: Obs) -> torch.Tensor:
        """See :meth:`Policy.act`."""
        free = free_lines(obs)
        if self._rank is None or self._rank.shape != free.shape:
            raise RuntimeError("FixedMaskPolicy.begin() must see every episode start")
        return _pick_lowest(free, self._rank)


class LowToHighPolicy(FixedOrderPolicy):
    """The unacquired line nearest the center, alternating sides (low frequencies first)."""

    def __init__(self) -> None:
        super().__init__([], name="low_to_high")


class GreedyOraclePolicy(Policy):
    """One-step lookahead with the ground truth: the line whose acquisition scores best.

    Every measured, unacquired line of every episode is scored with the env's batched
    :meth:`~activemri.envs.vector.ActiveMRIVectorEnv.torch_score_candidates` (one forward
    per candidate, in chunks; rank-one updates with a linear reconstructor). An upper
    reference for one-step policies, not a deployable one: its scorer reads the target.
    Under ``torchrun`` (:func:`activemri._dist.init_from_env`) every process plays the same
    episodes and scores a share of the candidates; the scores are gathered, so all choose
    the same line.

    Args:
        scorer: The env's scoring handle, ``venv.torch_score_candidates`` (the one way a
            policy reaches the ground truth, so it is explicit here).
        metric: Score to maximize (default: the reward metric).
    """

    name = "greedy_oracle"

    def __init__(self, scorer: Scorer, metric: str | None = None) -> None:
        if not callable(scorer):
            raise TypeError("scorer must be a callable such as venv.torch_score_candidates")
        self.scorer = scorer
        self.metric = metric

    def act(self, obs: Obs) -> torch.Tensor:
        """See :meth:`Policy.act`."""
        free = free_lines(obs)
        counts = free.sum(dim=1)
        k = max(1, int(counts.max().item()))
        # Free columns first in each row; rows with fewer repeat their first candidate.
        order = torch.argsort((~free).to(torch.int8), dim=1, stable=True)[:, :k]
        position = torch.arange(k, device=free.device).expand_as(order)
        padded = torch.where(position < counts[:, None].clamp_min(1), order, order[:, :1])
        rank, size = world()
        # Sharded (torchrun): each process scores every size-th candidate; all gather them.
        part = self.scorer(padded[:, rank::size], self.metric)
        scores = gather_strided(part.T.contiguous(), k).T
        scores = torch.where(position < counts[:, None], scores, float("-inf"))
        best = padded.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)
        return torch.where(counts > 0, best, order[:, 0])


class UncertaintyPolicy(Policy):
    """The unacquired line where the predicted error has the most energy in k-space.

    Rule: the uncertainty map ``sigma`` (per-pixel standard deviation of the reconstruction)
    is read as the magnitude of the error the reconstruction is expected to make. Its 1-D
    centered Fourier transform along the phase-encode axis, summed as power over the
    readout axis, gives for each phase-encode line ``j`` the energy of that expected error
    at frequency ``j`` (the image crop is zero-padded back to the k-space width first).
    Acquiring line ``j`` replaces the network's guess at that frequency by measured data, so
    the line whose frequency carries the most expected error is the one whose content is
    most uncertain. On ky-kz planes (points) the transform is 2-D and each point's energy is
    its own. Needs a reconstructor with an uncertainty head.
    """

    name = "uncertainty"

    def act(self, obs: Obs) -> torch.Tensor:
        """See :meth:`Policy.act`."""
        if "uncertainty" not in obs:
            raise ValueError("UncertaintyPolicy needs a reconstructor with an uncertainty head")
        # The observation divides sigma by a positive per-episode scale: the argmax is the same.
        sigma = obs["uncertainty"][:, 0]
        free = free_lines(obs)
        grid = (
            (1, free.shape[1]) if "action_grid" not in obs else tuple(obs["action_grid"].tolist())
        )
        if grid[0] > 1:  # points: the 2-D spectrum of the expected error, point by point
            pad_h, pad_w = grid[0] - sigma.shape[-2], grid[1] - sigma.shape[-1]
            padded = torch.nn.functional.pad(
                sigma, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
            )
            shifted = torch.fft.ifftshift(padded, dim=(-2, -1))
            spectrum2 = torch.fft.fftshift(torch.fft.fft2(shifted, norm="ortho"), dim=(-2, -1))
            return _pick_lowest(free, -spectrum2.abs().square().flatten(1))
        width = free.shape[1]
        pad = width - sigma.shape[-1]
        padded = torch.nn.functional.pad(sigma, (pad // 2, pad - pad // 2)) if pad > 0 else sigma
        spectrum = torch.fft.fftshift(
            torch.fft.fft(torch.fft.ifftshift(padded, dim=-1), dim=-1, norm="ortho"), dim=-1
        )
        energy = spectrum.abs().square().sum(dim=-2)  # (B, W)
        return _pick_lowest(free, -energy)
