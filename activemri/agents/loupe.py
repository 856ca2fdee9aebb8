"""LOUPE: a fixed sampling mask learned jointly with a reconstructor (Bahadir et al. 2019/2020).

Every action (a phase-encode line, or a ky-kz point of the ``points`` geometry) has a logit
``theta``; its probability is ``p = sigmoid(slope * theta)``. The env's initial (ACS) actions
are always acquired and unmeasured (padding, shutter) actions never; over the ``F`` free
measured actions ``p`` is renormalized as in LOUPE to mean ``k / F``, where ``k`` is the
number of actions the budget adds (:func:`rescale_probabilities`). Each training slice draws
``u ~ U(0, 1)`` per free action and

- the *hard* mask acquires the initial actions and the ``k`` free actions of largest
  ``p - u`` (a draw of exactly ``k`` actions, more likely where ``p`` is high), so every
  training mask has exactly the budget;
- the *soft* mask is the relaxed Bernoulli sample ``sigmoid(sample_slope * (p - u))``.

The straight-through weights ``hard + (soft - soft.detach())`` equal ``hard`` in value and
carry the gradient of ``soft``. Two things are computed from them each step:

- **The reconstructor's loss** on the real acquisition: the k-space masked by ``hard``
  (unacquired entries exactly ``+0.0``) and the bool ``hard`` mask, as the
  :class:`~activemri.recon_models.base.Reconstructor` contract requires; its gradient trains
  the reconstructor.
- **The mask's loss** on ``kspace * weights`` (the same values) under the *measured* mask.
  A contract-abiding model zeroes what its mask leaves out (``apply_mask``), so under the
  ``hard`` mask no gradient could reach an action it did not get, and at an acquired action
  the derivative only says whether a rescaled line would make up for missing ones. Under
  the measured mask the model reads the zeros of the unacquired actions, and the gradient
  there is what acquiring them would bring, which is what LOUPE learns from. Its gradient
  trains the logits only.

Where the model's output depends on its mask only through the k-space it zeroes (checked on
the first batch: identical outputs under both masks, as for U-Nets and zero-filled), the two
losses are one forward pass; otherwise (e.g. a VarNet, whose data consistency reads the
mask) the mask's loss is a second forward pass. The reconstructor (the env preset's,
fine-tuned; or a fresh model of its class) is trained with the loss of supervised
reconstructor training (:func:`~activemri.recon_models.losses.image_loss` plus, for models
with an uncertainty head, the Gaussian NLL), optionally on augmented slices.

At the end the mask is the initial actions plus the top ``k`` free actions by ``p``
(exactly the budget). It is saved as a :class:`~activemri.agents.learned_mask.LearnedOrdering`
whose ``order`` holds those ``k`` actions by descending probability, so ``learned:PATH``
plays exactly that mask at the trained budget (and, at a smaller budget, its most probable
actions). ``scores`` are the mean metric of the jointly trained reconstructor on a seeded
held-out sample (the ``val`` split) after each prefix of ``order``. The reconstructor is
saved next to the JSON (``OUT.recon.pt``, with its training domain), and ``settings`` name
it: play the mask with ``reconstructor=OUT.recon.pt``.

Resumable: the state (logits, reconstructor, optimizer, step, history) is written
atomically to ``OUT.loupe.pt`` every ``checkpoint_every`` steps. Every random draw of step
``t`` (the slices, ``u``, the augmentation, dropout) is seeded from ``(seed, t)``, so a
resumed run continues exactly as an uninterrupted one would on the same machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from activemri._version import __version__
from activemri.agents.learned_mask import LearnedOrdering, load_ordering
from activemri.data import CorruptSliceError, DataWarning, SliceSample
from activemri.envs.config import (
    EnvConfig,
    build_dataset,
    build_reconstructor_for_env,
    describe_reconstructor,
    load_env_config,
    resolve_device,
)
from activemri.envs.scenario import Scenario
from activemri.envs.source import EpisodeSource
from activemri.geometry import Geometry
from activemri.kspace import apply_mask
from activemri.metrics import SIGNS, metric_targets, metrics_against
from activemri.recon_models.augment import AugmentConfig, augment_batch
from activemri.recon_models.base import ReconOutput, Reconstructor
from activemri.recon_models.checkpoint import CheckpointError, load_state_strict, read_checkpoint
from activemri.recon_models.domain import model_fingerprint
from activemri.recon_models.evaluate import MaskedBatch, MaskedSlices, collate_masked
from activemri.recon_models.losses import supervised_loss
from activemri.recon_models.registry import load_preset
from activemri.recon_models.training import TrainConfig, training_domain

__all__ = [
    "LoupeConfig",
    "LoupeMask",
    "LoupeResult",
    "learn_loupe",
    "loupe_paths",
    "rescale_probabilities",
    "weighted_kspace",
]

STATE_FORMAT = "activemri.loupe_state/1"
_RESULT_KEYS = (
    "reconstructor",
    "reconstructor_checkpoint",
    "reconstructor_fingerprint",
    "probabilities",
    "actual_acceleration",
)
"""Settings entries that are results of a run, not what defines it."""
_MAY_CHANGE = ("steps",)
"""Settings a resumed run may change (it continues to the new step count)."""


@dataclass(frozen=True)
class LoupeConfig:
    """What a LOUPE run learns and how.

    Attributes:
        acceleration: The budget as an acceleration: the mask ends at the env's line count
            for it, ``round(measured / acceleration)`` (as a scenario's ``acceleration``).
        max_lines: The budget as the actions acquired at the end (initial ones included).
            At most one of ``acceleration`` / ``max_lines``; neither: the env scenario's
            fixed end.
        steps: Optimizer steps.
        batch_size: Training slices per step (each draws its own mask).
        lr: Adam learning rate of the reconstructor (``None``: 1e-4 when fine-tuning the
            env's model, 1e-3 from scratch).
        mask_lr: Adam learning rate of the logits.
        slope: Slope of the probability sigmoid, ``p = sigmoid(slope * theta)``.
        sample_slope: Slope of the relaxed Bernoulli sample, ``sigmoid(sample_slope *
            (p - u))``; larger is closer to the hard mask, with sparser gradients.
        from_scratch: Train a fresh model of the env reconstructor's class (same config)
            instead of fine-tuning the env's.
        loss: Image loss, ``l1`` or ``ssim`` (``None``: the reconstructor preset's
            ``train.loss``, else ``l1``).
        nll_weight: Weight of the uncertainty NLL (``None``: the preset's, else 0.1).
        augment: Augment training slices (:mod:`activemri.recon_models.augment`; ``None``:
            the reconstructor preset's ``train.augment`` ranges, else off; ``True`` without
            preset ranges: the default ranges).
        val_size: Slices of the held-out sample that ``scores`` and the history are
            computed on.
        val_split: Split of the env's data the held-out sample comes from.
        metric: Metric of ``scores`` (``ssim``, ``psnr``, ``nmse``, ``mse``; the last two
            negated so higher is better).
        checkpoint_every: Steps between state files (and history records).
        seed: Seed of every random draw (and of a fresh model's initialization).
    """

    acceleration: float | None = None
    max_lines: int | None = None
    steps: int = 2000
    batch_size: int = 8
    lr: float | None = None
    mask_lr: float = 0.01
    slope: float = 5.0
    sample_slope: float = 12.0
    from_scratch: bool = False
    loss: str | None = None
    nll_weight: float | None = None
    augment: bool | None = None
    val_size: int = 32
    val_split: str | None = "val"
    metric: str = "ssim"
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.acceleration is not None and self.max_lines is not None:
            raise ValueError("give the budget as acceleration or as max_lines, not both")
        if self.acceleration is not None and not self.acceleration >= 1.0:  # also NaN
            raise ValueError(f"acceleration must be >= 1, got {self.acceleration}")
        if self.max_lines is not None and self.max_lines < 1:
            raise ValueError(f"max_lines must be >= 1, got {self.max_lines}")
        for name in ("steps", "batch_size", "val_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "mask_lr", "slope", "sample_slope"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.loss is not None and self.loss not in ("l1", "ssim"):
            raise ValueError(f"loss must be 'l1' or 'ssim', got {self.loss!r}")
        if self.nll_weight is not None and not self.nll_weight >= 0:
            raise ValueError(f"nll_weight must be >= 0, got {self.nll_weight}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.metric not in SIGNS:
            raise ValueError(f"metric must be one of {sorted(SIGNS)}, got {self.metric!r}")


def rescale_probabilities(p: torch.Tensor, fraction: float) -> torch.Tensor:
    """LOUPE's renormalization of probabilities to a mean of ``fraction``, inside ``[0, 1]``.

    If the mean ``m`` of ``p`` is at least ``fraction``, ``p * fraction / m``; otherwise
    ``1 - (1 - p) * (1 - fraction) / (1 - m)``. Both keep the order of ``p``.

    Args:
        p: Probabilities ``(F,)`` in ``[0, 1]``.
        fraction: Target mean in ``(0, 1]``.

    Returns:
        ``(F,)``, differentiable in ``p``.
    """
    mean = p.mean()
    if float(mean.detach()) >= fraction:
        return p * (fraction / mean)
    return 1.0 - (1.0 - p) * ((1.0 - fraction) / (1.0 - mean))


def weighted_kspace(
    kspace: torch.Tensor, weights: torch.Tensor, geometry: Geometry
) -> torch.Tensor:
    """``kspace`` times per-action weights, broadcast over what each action acquires.

    Where a weight is exactly 0 the entry is exactly ``+0.0`` (real and imaginary parts), so
    a straight-through weight ``hard + (soft - soft.detach())`` gives exactly the k-space
    masked by ``hard`` while staying differentiable in ``soft``.

    Args:
        kspace: Complex ``(B, C, H, W)``, finite.
        weights: Float ``(B, A)``: ``A = W`` lines or ``H * W`` points.
        geometry: The acquisition geometry.

    Returns:
        Complex ``(B, C, H, W)``.
    """
    height, width = kspace.shape[-2:]
    w = geometry.broadcast(weights, height, width).to(kspace.real.dtype)
    # + 0.0 turns the -0.0 of a negative value times 0 into +0.0: a sign would leak unseen data
    return torch.complex(kspace.real * w + 0.0, kspace.imag * w + 0.0)


class LoupeMask(nn.Module):
    """Learned sampling probabilities of the free actions of one acquisition.

    Args:
        measured: Bool ``(A,)`` measured actions.
        initial: Bool ``(A,)`` initial (ACS) actions, a subset of ``measured``; always
            acquired.
        end_count: Actions acquired at the end (initial ones included).
        slope: Slope of the probability sigmoid.
        sample_slope: Slope of the relaxed Bernoulli sample.

    Raises:
        ValueError: If ``initial`` is not inside ``measured`` or the budget adds no action or
            more than the free measured ones.
    """

    measured: torch.Tensor
    initial: torch.Tensor
    free_index: torch.Tensor

    def __init__(
        self,
        measured: torch.Tensor,
        initial: torch.Tensor,
        end_count: int,
        slope: float = 5.0,
        sample_slope: float = 12.0,
    ) -> None:
        super().__init__()
        measured, initial = measured.bool().flatten(), initial.bool().flatten()
        if measured.shape != initial.shape:
            raise ValueError(f"measured {tuple(measured.shape)} and initial differ in shape")
        if (initial & ~measured).any():
            raise ValueError("the initial actions must be measured ones")
        free = torch.nonzero(measured & ~initial).flatten()
        n_initial = int(initial.sum())
        if not n_initial < end_count <= n_initial + free.numel():
            raise ValueError(
                f"end_count must be in ({n_initial}, {n_initial + free.numel()}] (initial, "
                f"measured actions), got {end_count}"
            )
        self.register_buffer("measured", measured)
        self.register_buffer("initial", initial)
        self.register_buffer("free_index", free)
        self.budget = end_count - n_initial
        self.slope = float(slope)
        self.sample_slope = float(sample_slope)
        self.logits = nn.Parameter(torch.zeros(measured.numel()))

    @property
    def num_actions(self) -> int:
        """``A``."""
        return int(self.measured.numel())

    @property
    def end_count(self) -> int:
        """Actions acquired by every mask (initial + budget)."""
        return int(self.initial.sum()) + self.budget

    @property
    def fraction(self) -> float:
        """Budget over free measured actions: the mean renormalized probability."""
        return self.budget / int(self.free_index.numel())

    def probabilities(self) -> torch.Tensor:
        """Renormalized probabilities ``(F,)`` of the free actions (:attr:`free_index`)."""
        p = torch.sigmoid(self.slope * self.logits[self.free_index])
        return rescale_probabilities(p, self.fraction)

    def action_probabilities(self) -> torch.Tensor:
        """Detached ``(A,)``: 1 for initial actions, 0 for unmeasured ones, else as learned."""
        out = self.initial.float()
        return out.index_copy(0, self.free_index, self.probabilities().detach().float())

    def sample(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch`` training masks.

        Args:
            batch: Number of masks.
            generator: CPU generator of the uniform draws.

        Returns:
            ``(hard, weights)``: bool ``(B, A)`` masks of exactly :attr:`end_count` actions
            (the initial ones and ``budget`` free ones), and float ``(B, A)`` straight-through
            weights, equal to ``hard`` in value and differentiable in the logits.
        """
        device = self.logits.device
        p = self.probabilities()
        free = int(self.free_index.numel())
        u = torch.rand(batch, free, generator=generator).to(device)
        margin = p[None, :] - u
        soft = torch.sigmoid(self.sample_slope * margin)
        chosen = torch.topk(margin.detach(), self.budget, dim=1).indices
        hard_free = torch.zeros_like(soft).scatter_(1, chosen, 1.0)
        weights_free = hard_free + (soft - soft.detach())
        base = self.initial.float().expand(batch, -1)
        weights = base.index_add(1, self.free_index, weights_free)
        hard = self.initial.expand(batch, -1).clone()
        hard[:, self.free_index] = hard_free.bool()
        return hard, weights

    def ranking(self) -> list[int]:
        """Free actions by descending probability (ties: the lowest action first)."""
        logits = self.logits.detach()[self.free_index].cpu().numpy()
        order = np.argsort(-logits, kind="stable")
        free = self.free_index.cpu().numpy()  # one transfer, not one device sync per action
        ranked: list[int] = free[order].tolist()
        return ranked

    def mask(self) -> torch.Tensor:
        """Bool ``(A,)`` test-time mask: the initial actions and the top ``budget`` by ``p``."""
        out = self.initial.clone()
        out[self.ranking()[: self.budget]] = True
        return out


@dataclass
class LoupeResult:
    """What :func:`learn_loupe` returns.

    Attributes:
        ordering: The mask as a learned ordering (also written to ``out``).
        reconstructor: The jointly trained reconstructor (eval mode).
        history: Per record: ``step``, ``train_loss`` (mean since the previous record) and
            the held-out score at the budget (``val_METRIC``); the first record (step 0)
            holds ``val_random``, the initial reconstructor on random masks of the budget.
    """

    ordering: LearnedOrdering
    reconstructor: Reconstructor
    history: list[dict[str, Any]] = field(default_factory=list)


def loupe_paths(out: str | Path) -> tuple[Path, Path]:
    """``(reconstructor checkpoint, training state)`` files of the output JSON ``out``.

    ``OUT.json`` gives ``OUT.recon.pt`` and ``OUT.loupe.pt`` in the same folder.
    """
    out = Path(out)
    return out.with_suffix(".recon.pt"), out.with_suffix(".loupe.pt")


@dataclass
class _Problem:
    """The data, masks and reconstructor of one run (built once)."""

    config: EnvConfig
    train: MaskedSlices
    train_indices: list[int]
    val: MaskedBatch
    val_slices: list[list[Any]]
    geometry: Geometry
    measured: torch.Tensor
    initial: torch.Tensor
    num_low: int
    end_count: int
    shape: tuple[int, int, int]
    device: torch.device
    model: Reconstructor
    train_spec: dict[str, Any]
    cache: dict[int, dict[str, Any]] | None = None
    shared_pass: bool = False


def learn_loupe(
    preset: str | Path | Mapping[str, Any] | EnvConfig = "builtin-v0",
    loupe: LoupeConfig | None = None,
    *,
    out: str | Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    **overrides: Any,
) -> LoupeResult:
    """Learn a LOUPE mask and its reconstructor on the env's training split.

    Args:
        preset: Env preset (name, YAML path, mapping or config) giving data, reconstructor,
            initial (ACS) actions and, unless ``loupe`` sets one, the budget.
        loupe: What to learn and how (default :class:`LoupeConfig`).
        out: Output JSON. ``OUT.recon.pt`` (reconstructor) and ``OUT.loupe.pt`` (state,
            every ``checkpoint_every`` steps) go next to it. A rerun with the same settings
            resumes from the state (or returns a complete result); ``steps`` may grow.
        progress: Called as ``progress(step, steps, loss)`` after each step.
        **overrides: Env config overrides (``split`` defaults to ``"train"``; ``device``...).

    Returns:
        The :class:`LoupeResult`.

    Raises:
        ValueError: For a budget the initial actions leave no room for (or beyond the
            measured ones), a scenario with random initial actions or a drawn length, data
            whose slices differ in measured actions, data without targets, an empty
            held-out split, or an ``out`` (or state) made with other settings.
    """
    loupe = loupe or LoupeConfig()
    problem = _build_problem(preset, loupe, overrides)
    model, device = problem.model, problem.device
    initial_fingerprint = model_fingerprint(model)
    if loupe.from_scratch:
        model = problem.model = _fresh_copy(model, loupe.seed).to(device)
    if model.has_uncertainty:
        model.set_sigma_scale(1.0)  # the NLL trains the raw head, as recon training does
    loss_kind = loupe.loss or str(problem.train_spec.get("loss", "l1"))
    nll_weight = loupe.nll_weight
    if nll_weight is None:
        nll_weight = float(problem.train_spec.get("nll_weight", TrainConfig.nll_weight))
    aug = None
    if loupe.augment is not False:  # the preset's ranges, else the defaults when asked for
        aug = AugmentConfig.from_mapping(problem.train_spec.get("augment"))
        if aug is None and loupe.augment:
            aug = AugmentConfig()
    lr = loupe.lr if loupe.lr is not None else (1e-3 if loupe.from_scratch else 1e-4)
    config = problem.config
    n_initial = int(problem.initial.sum())
    settings: dict[str, Any] = {
        "method": "loupe",
        "env": str(preset) if isinstance(preset, (str, Path)) else config.id,
        "data": config.data,
        "split": config.split,
        "split_seed": config.split_seed,
        "val_split": loupe.val_split,
        "val_size": len(problem.val_slices),
        "geometry": problem.geometry.to_dict(),
        "initial_reconstructor": describe_reconstructor(config.reconstructor),
        "initial_reconstructor_fingerprint": initial_fingerprint,
        "from_scratch": loupe.from_scratch,
        "acceleration": loupe.acceleration,
        "max_lines": problem.end_count,
        "initial_lines": n_initial,
        "steps": loupe.steps,
        "batch_size": loupe.batch_size,
        "lr": lr,
        "mask_lr": loupe.mask_lr,
        "slope": loupe.slope,
        "sample_slope": loupe.sample_slope,
        "loss": loss_kind,
        "nll_weight": nll_weight,
        "augment": _augment_setting(aug),
        "metric": loupe.metric,
        "seed": loupe.seed,
    }
    recon_path, state_path = loupe_paths(out) if out is not None else (None, None)
    if out is not None and Path(out).exists():
        done = _previous_result(Path(out), settings, state_path, type(model), device)
        if done is not None:
            return done

    mask = LoupeMask(problem.measured, problem.initial, problem.end_count, loupe.slope,
                     loupe.sample_slope).to(device)  # fmt: skip
    groups: list[dict[str, Any]] = [{"params": [mask.logits], "lr": loupe.mask_lr}]
    params = [p for p in model.parameters() if p.requires_grad]
    if params:
        groups.append({"params": params, "lr": lr})
    optimizer = torch.optim.Adam(groups)
    history: list[dict[str, Any]] = []
    step, elapsed = 0, 0.0
    if state_path is not None and state_path.exists():
        step, history, elapsed = _load_state(state_path, settings, model, mask, optimizer, device)
    else:
        history = [
            {"step": 0, f"val_random_{loupe.metric}": _random_mask_score(problem, mask, loupe)}
        ]
    problem.shared_pass = _mask_invariant(problem, mask, loupe)
    start = time.perf_counter() - elapsed
    losses: list[float] = []
    model.train()
    while step < loupe.steps:
        loss = _train_step(problem, mask, optimizer, loupe, step, loss_kind, nll_weight, aug)
        losses.append(loss)
        step += 1
        if progress is not None:
            progress(step, loupe.steps, loss)
        if step % loupe.checkpoint_every == 0 or step == loupe.steps:
            model.eval()
            history.append({
                "step": step, "train_loss": float(np.mean(losses)),
                f"val_{loupe.metric}": _prefix_scores(problem, mask.mask()[None], loupe.metric)[0],
            })  # fmt: skip
            model.train()
            losses = []
            if state_path is not None:
                _save_state(state_path, settings, model, mask, optimizer, step, history,
                            time.perf_counter() - start)  # fmt: skip
    model.eval()
    return _finish(problem, mask, settings, history, out, recon_path, time.perf_counter() - start)


def _build_problem(
    preset: str | Path | Mapping[str, Any] | EnvConfig,
    loupe: LoupeConfig,
    overrides: Mapping[str, Any],
) -> _Problem:
    settings_env: dict[str, Any] = {"split": "train", **overrides}
    config = load_env_config(preset, **settings_env)
    scenario = config.scenario
    if scenario.extra_random_lines:
        raise ValueError("a LOUPE mask needs a deterministic initial mask: the scenario adds "
                         "random lines (set extra_random_lines=0)")  # fmt: skip
    # The source checks the scenario on every slice and draws the env's initial mask; with
    # the length removed it only refuses an initial mask that leaves nothing to choose.
    open_end = dataclasses.replace(scenario, budget=None, acceleration=None, budget_range=None,
                                   acceleration_range=None)  # fmt: skip
    source = EpisodeSource(dataclasses.replace(config, scenario=open_end), 1)
    first = source.next_episode(0)
    valid, initial = first.valid, first.mask
    for index in source.indices:
        if not np.array_equal(source.measured(source.dataset.slice_meta(index)), valid):
            raise ValueError(
                f"{source.dataset.slice_meta(index).file.name}: the slices differ in measured "
                "lines; a fixed mask needs data of one acquisition (kspace_width=...)"
            )
    n_valid, n_initial = int(valid.sum()), int(initial.sum())
    end = _end_count(scenario, loupe, n_valid, n_initial)
    geometry = source.geometry
    shape = source.kspace_shape
    device = resolve_device(config.device)
    grid = geometry.grid(shape[1], shape[2])
    rule_mask = initial.reshape(grid) if grid[0] > 1 else initial

    def rule(sample: SliceSample, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return rule_mask.copy(), first.num_low

    train = MaskedSlices(source.dataset, rule, loupe.seed)
    if any(v.target_key is None for v in source.dataset.volumes):
        raise ValueError(f"LOUPE trains on targets; {config.data} has volumes without any")
    val_config = dataclasses.replace(config, split=loupe.val_split, max_slices=loupe.val_size,
                                     subset_seed=loupe.seed)  # fmt: skip
    if loupe.val_split == config.split:
        warnings.warn(
            f"the held-out sample is drawn from the training split ({config.split!r}): its "
            "scores are not held out (set val_split to another split)",
            UserWarning,
            stacklevel=3,
        )
    try:
        val_set, val_indices = build_dataset(val_config)
    except ValueError as exc:
        raise ValueError(f"no held-out sample in split {loupe.val_split!r}: {exc}") from exc
    val_items = []
    val_masked = MaskedSlices(val_set, rule, loupe.seed)
    for index in val_indices:
        meta = val_set.slice_meta(index)
        if val_set.slice_shape(index) != shape or not np.array_equal(source.measured(meta), valid):
            raise ValueError(
                f"{meta.file.name}: the held-out slices differ from the training ones in shape "
                "or measured lines"
            )
        val_items.append(val_masked[index])
    val = collate_masked(val_items)
    if val.target is None:
        raise ValueError(f"the held-out slices of {config.data} need targets")
    model = build_reconstructor_for_env(config, source.recon_size, device, shape).to(device)
    spec = config.reconstructor
    train_spec: dict[str, Any] = {}
    if isinstance(spec, str) and spec.endswith((".yaml", ".yml")):
        train_spec = dict(load_preset(spec).train)
    return _Problem(
        config=config, train=train, train_indices=list(source.indices), val=val,
        val_slices=[[val_set.slice_meta(i).file.name, val_set.slice_meta(i).slice_index]
                    for i in val_indices],
        geometry=geometry, measured=torch.from_numpy(valid.copy()),
        initial=torch.from_numpy(initial.copy()), num_low=first.num_low, end_count=end,
        shape=shape, device=device, model=model, train_spec=train_spec,
        cache={} if config.cache_slices else None,
    )  # fmt: skip


def _augment_setting(aug: AugmentConfig | None) -> bool | dict[str, float]:
    """``False`` (none), ``True`` (the default ranges) or the ranges."""
    if aug is None:
        return False
    return True if aug == AugmentConfig() else dataclasses.asdict(aug)


def _end_count(scenario: Scenario, loupe: LoupeConfig, n_valid: int, n_initial: int) -> int:
    """Actions acquired at the end: the env's rule for the budget asked for."""
    if loupe.max_lines is not None:
        if not n_initial < loupe.max_lines <= n_valid:
            raise ValueError(
                f"max_lines must be in ({n_initial}, {n_valid}] (initial, measured actions), "
                f"got {loupe.max_lines}"
            )
        return loupe.max_lines
    if loupe.acceleration is not None:
        fixed = dataclasses.replace(scenario, budget=None, acceleration=loupe.acceleration,
                                    budget_range=None, acceleration_range=None)  # fmt: skip
        return fixed.end_lines(n_valid, n_initial)
    if scenario.variable:
        raise ValueError("the scenario draws each episode's length; give the LOUPE budget as "
                         "an acceleration or max_lines")  # fmt: skip
    return scenario.end_lines(n_valid, n_initial)


def _fresh_copy(model: Reconstructor, seed: int) -> Reconstructor:
    """An untrained model of ``model``'s class and config, initialized from ``seed``."""
    kwargs = {k: v for k, v in model.config.items() if k != "sigma_scale"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(**kwargs)
    return fresh


def _step_seed(seed: int, step: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1)[0])


def _batch(problem: _Problem, loupe: LoupeConfig, step: int) -> MaskedBatch | None:
    """The training slices of ``step`` (unreadable ones left out, with a warning)."""
    rng = np.random.default_rng([loupe.seed, step])
    pool = problem.train_indices
    picked = rng.choice(len(pool), size=min(loupe.batch_size, len(pool)), replace=False)
    items = []
    for i in sorted(picked.tolist()):
        index = pool[i]
        item = problem.cache.get(index) if problem.cache is not None else None
        if item is None:
            try:
                item = problem.train[index]
            except CorruptSliceError as exc:
                warnings.warn(f"skipping slice: {exc}", DataWarning, stacklevel=3)
                continue
            if problem.cache is not None:
                problem.cache[index] = item
        items.append(item)
    return collate_masked(items).to(problem.device) if items else None


def _loss(
    out: ReconOutput, target: torch.Tensor, data_range: torch.Tensor, kind: str, nll: float
) -> torch.Tensor:
    """The loss of supervised reconstructor training."""
    return supervised_loss(out.image, out.uncertainty, target, data_range, kind, nll)


def _train_step(
    problem: _Problem,
    mask: LoupeMask,
    optimizer: torch.optim.Optimizer,
    loupe: LoupeConfig,
    step: int,
    loss_kind: str,
    nll_weight: float,
    aug: AugmentConfig | None,
) -> float:
    batch = _batch(problem, loupe, step)
    if batch is None:
        raise ValueError("every slice of a training batch is unreadable; run activemri data check")
    torch.manual_seed(_step_seed(loupe.seed, step, 0))  # dropout of this step
    kspace, target, data_range = batch.kspace, batch.target, batch.data_range
    if aug is not None:
        gen = torch.Generator().manual_seed(_step_seed(loupe.seed, step, 1))
        kspace, target, data_range = augment_batch(kspace, batch.valid, problem.model.recon_size,
                                                   aug, gen)  # fmt: skip
    if target is None:
        raise ValueError("LOUPE trains on targets; a training slice has none")
    gen = torch.Generator().manual_seed(_step_seed(loupe.seed, step, 2))
    hard, weights = mask.sample(kspace.shape[0], gen)
    height, width = kspace.shape[-2:]
    model, geometry = problem.model, problem.geometry
    measured = geometry.recon_mask(mask.measured.expand_as(hard), height, width)
    # Mask pass: the weighted k-space is the hard acquisition in value, but under the
    # measured mask the model reads (zeros at) the unacquired entries too, so the gradient
    # reaches the weights of the actions it did not get.
    surrogate = model(weighted_kspace(kspace, weights, geometry), measured,
                      num_low_frequencies=batch.num_low)  # fmt: skip
    mask_loss = _loss(surrogate, target, data_range, loss_kind, nll_weight)
    if problem.shared_pass:
        loss = mask_loss
    else:
        recon_mask = geometry.recon_mask(hard, height, width)
        out = model(apply_mask(kspace, recon_mask), recon_mask, num_low_frequencies=batch.num_low)
        loss = _loss(out, target, data_range, loss_kind, nll_weight)
    if not (torch.isfinite(loss) and torch.isfinite(mask_loss)):
        raise FloatingPointError(
            f"non-finite training loss at step {step + 1}; lower the learning rates or check "
            "the data (activemri data check)"
        )
    optimizer.zero_grad(set_to_none=True)
    if problem.shared_pass:
        loss.backward()  # type: ignore[no-untyped-call]
    else:
        (mask.logits.grad,) = torch.autograd.grad(mask_loss, [mask.logits])
        if loss.requires_grad:  # a model with parameters
            loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def _mask_invariant(problem: _Problem, mask: LoupeMask, loupe: LoupeConfig) -> bool:
    """Whether the model's output depends on the mask only through the k-space it zeroes.

    Checked on the first training batch with two random budget masks: the output for the
    masked k-space under its own mask and under the measured mask must be identical.
    """
    batch = _batch(problem, loupe, 0)
    if batch is None:
        return False
    model, geometry = problem.model, problem.geometry
    height, width = batch.kspace.shape[-2:]
    was_training = model.training
    model.eval()
    try:
        for draw in range(2):
            gen = torch.Generator().manual_seed(_step_seed(loupe.seed, draw, 4))
            hard, _ = mask.sample(batch.kspace.shape[0], gen)
            recon_mask = geometry.recon_mask(hard, height, width)
            masked = apply_mask(batch.kspace, recon_mask)
            measured = geometry.recon_mask(mask.measured.expand_as(hard), height, width)
            own = model(masked, recon_mask, num_low_frequencies=batch.num_low)
            wide = model(masked, measured, num_low_frequencies=batch.num_low)
            for a, b in zip(own, wide, strict=True):
                if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
                    return False
    finally:
        model.train(was_training)
    return True


@torch.no_grad()
def _scores(problem: _Problem, masks: torch.Tensor, metric: str) -> torch.Tensor:
    """Score of each held-out slice: float ``(N,)``.

    ``masks`` is bool ``(A,)`` (every slice) or ``(N, A)`` (slice ``i`` with mask ``i``).
    """
    val, geometry, device = problem.val, problem.geometry, problem.device
    assert val.target is not None
    height, width = problem.shape[1:]
    n = val.kspace.shape[0]
    masks = masks.expand(n, -1) if masks.ndim == 1 else masks
    values = []
    for start in range(0, n, 16):
        rows = slice(start, start + 16)
        kspace = val.kspace[rows].to(device)
        recon_mask = geometry.recon_mask(masks[rows].to(device), height, width)
        out = problem.model(apply_mask(kspace, recon_mask), recon_mask,
                            num_low_frequencies=val.num_low[rows].to(device))  # fmt: skip
        targets = metric_targets(
            val.target[rows].to(device).float(), val.data_range[rows].to(device)
        )
        got = metrics_against(out.image.float(), targets, names=(metric,))[metric]
        values.append(SIGNS[metric] * got.double().cpu())
    return torch.cat(values)


def _prefix_scores(problem: _Problem, masks: torch.Tensor, metric: str) -> list[float]:
    """Mean held-out score of each bool ``(M, A)`` mask."""
    return [float(_scores(problem, m, metric).mean()) for m in masks]


def _random_mask_score(problem: _Problem, mask: LoupeMask, loupe: LoupeConfig) -> float:
    """Mean held-out score of the initial model on uniformly random masks of the budget."""
    gen = torch.Generator().manual_seed(_step_seed(loupe.seed, 0, 3))
    with torch.no_grad():
        draws, _ = mask.sample(len(problem.val_slices), gen)  # theta = 0: uniform draws
    problem.model.eval()
    score = float(_scores(problem, draws, loupe.metric).mean())
    problem.model.train()
    return score


def _defining(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in _RESULT_KEYS + _MAY_CHANGE}


def _mismatch(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    prev, cur = _defining(previous), _defining(current)
    return sorted(k for k in set(prev) | set(cur) if prev.get(k) != cur.get(k))


def _previous_result(
    out: Path,
    settings: dict[str, Any],
    state_path: Path | None,
    cls: type[Reconstructor],
    device: torch.device,
) -> LoupeResult | None:
    """A complete result of the same run at ``out``, or None to (re)train; refuses others."""
    try:
        previous = load_ordering(out)
    except ValueError as exc:
        raise ValueError(f"{out} exists and is not a learned mask ({exc}); remove it") from exc
    changed = _mismatch(previous.settings, settings)
    if previous.settings.get("method") != "loupe" or changed:
        raise ValueError(
            f"{out} was learned with other settings (differing: {', '.join(changed) or 'method'});"
            " remove it or choose another file"
        )
    if previous.settings.get("steps") == settings["steps"]:
        recon_path, _ = loupe_paths(out)
        model = cls.load(recon_path, map_location=device)  # the env's class: nothing imported
        history = list(previous.provenance.get("history", []))
        return LoupeResult(previous, model, history)
    if state_path is None or not state_path.exists():
        raise ValueError(
            f"{out} was learned for {previous.settings.get('steps')} steps and its state "
            f"{state_path} is gone: remove {out} to learn {settings['steps']} steps afresh"
        )
    return None


def _save_state(
    path: Path,
    settings: Mapping[str, Any],
    model: Reconstructor,
    mask: LoupeMask,
    optimizer: torch.optim.Optimizer,
    step: int,
    history: list[dict[str, Any]],
    elapsed: float,
) -> None:
    model.save(path, extra={
        "format": STATE_FORMAT, "settings": json.dumps(settings), "step": step,
        "logits": mask.logits.detach().cpu(), "optimizer": optimizer.state_dict(),
        "history": json.dumps(history), "elapsed_s": float(elapsed),
    })  # fmt: skip


def _load_state(
    path: Path,
    settings: Mapping[str, Any],
    model: Reconstructor,
    mask: LoupeMask,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> tuple[int, list[dict[str, Any]], float]:
    state = read_checkpoint(path, map_location=device)
    extra = state.get("extra", {})
    if extra.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a LOUPE training state")
    previous = json.loads(extra["settings"])
    changed = _mismatch(previous, settings)
    if changed:
        raise ValueError(
            f"cannot resume {path}: it was learned with other settings ({', '.join(changed)}: "
            f"{ {k: previous.get(k) for k in changed} } now "
            f"{ {k: settings.get(k) for k in changed} }); only 'steps' may change; remove it "
            "or choose another output"
        )
    step = int(extra["step"])
    if step > int(settings["steps"]):
        raise ValueError(
            f"cannot resume {path}: it is at step {step}, past steps={settings['steps']}"
        )
    if state["config"] != model.config:
        raise CheckpointError(f"{path} holds a {state['config']} model, not {model.config}")
    load_state_strict(model, state["state_dict"], str(path))
    with torch.no_grad():
        mask.logits.copy_(extra["logits"].to(device))
    optimizer.load_state_dict(extra["optimizer"])
    return step, json.loads(extra["history"]), float(extra["elapsed_s"])


def _finish(
    problem: _Problem,
    mask: LoupeMask,
    settings: dict[str, Any],
    history: list[dict[str, Any]],
    out: str | Path | None,
    recon_path: Path | None,
    elapsed: float,
) -> LoupeResult:
    model, config = problem.model, problem.config
    ranking = mask.ranking()[: mask.budget]
    initial = torch.nonzero(mask.initial).flatten().tolist()
    prefixes = mask.initial.expand(mask.budget + 1, -1).clone()
    for j, action in enumerate(ranking):
        prefixes[j + 1 :, action] = True
    scores = _prefix_scores(problem, prefixes, str(settings["metric"]))
    n_valid = int(mask.measured.sum())
    fingerprint = model_fingerprint(model)
    name = None
    if recon_path is not None:
        recipe = TrainConfig(data=str(config.data), augment=settings["augment"])
        domain = training_domain(problem.train.dataset, recipe)
        domain.update(mode="loupe", accelerations=[n_valid / mask.end_count],
                      mask=f"learned fixed (LOUPE), {mask.end_count} of {n_valid}")  # fmt: skip
        model.save(recon_path, extra={"domain": json.dumps(domain),
                                      "loupe": json.dumps(_defining(settings))})  # fmt: skip
        name = recon_path.name
    settings = {
        **settings,
        "reconstructor": name or type(model).__name__,
        "reconstructor_checkpoint": name,
        "reconstructor_fingerprint": fingerprint,
        "actual_acceleration": n_valid / mask.end_count,
        "probabilities": [round(float(v), 6) for v in mask.action_probabilities().cpu()],
    }
    provenance = {
        "activemri_version": __version__,
        "device": str(problem.device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "scores": f"mean {settings['metric']} of the jointly trained reconstructor on the "
        f"held-out sample after each prefix of order",
        "val_slices": problem.val_slices,
        "uncertainty": "uncalibrated (sigma_scale 1)" if model.has_uncertainty else None,
        "mask_pass": "shared" if problem.shared_pass else "separate",
        "history": history,
    }
    ordering = LearnedOrdering(
        width=mask.num_actions, initial=initial, order=ranking, scores=scores,
        metric=str(settings["metric"]), settings=settings, provenance=provenance, complete=True,
    )  # fmt: skip
    if out is not None:
        ordering.save(out)
    return LoupeResult(ordering, model, history)
