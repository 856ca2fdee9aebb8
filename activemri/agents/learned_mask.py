"""Learned fixed mask: a greedy, LBCS-style ordering of phase-encode lines.

Starting from the scenario's initial (ACS) lines, the line that maximizes the mean score
(SSIM by default) over a sample of training slices is added, one at a time, until
``max_lines`` lines are acquired (Gözcü et al. 2018; Bakker et al. 2022 found such masks on
par with adaptive policies). The sample plays in a batched env with autoreset disabled, one
sub-env per slice; every candidate of every step is scored with the env's oracle handle
:meth:`~activemri.envs.vector.ActiveMRIVectorEnv.torch_score_candidates`, so one step costs
one reconstructor forward per sample slice per free line, and the chosen line is then
acquired in every sub-env with an ordinary step.

Launched with ``torchrun`` (after :func:`activemri._dist.init_from_env`), each process
scores every ``world_size``-th candidate line of the same sample and the scores are
gathered, so every process picks the same line; rank 0 writes the file (which must be on a
file system every rank sees, to resume).

The result is an *ordering*: the mask for any smaller budget is a prefix of it, and it plays
inside the env as a :class:`~activemri.agents.policies.FixedOrderPolicy`. It is saved as
JSON with its provenance; learning writes the file after every line and resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from activemri._dist import gather_strided, world
from activemri._io import atomic_write_text
from activemri._version import __version__
from activemri.agents.policies import FixedOrderPolicy, Obs
from activemri.envs.config import EnvConfig, describe_reconstructor, load_env_config
from activemri.envs.source import PolicyEpisode
from activemri.envs.vector import ActiveMRIVectorEnv
from activemri.metrics import SIGNS
from activemri.recon_models.base import Reconstructor
from activemri.recon_models.domain import model_fingerprint

__all__ = [
    "FORMAT",
    "SHIPPED_ORDERING",
    "LearnedOrdering",
    "OrderingPolicy",
    "OrderingWarning",
    "check_ordering_context",
    "learn_ordering",
    "load_ordering",
]

FORMAT = "activemri.learned_ordering/1"
SHIPPED_ORDERING = Path(__file__).with_name("orderings") / "builtin_default_unet.json"
"""Ordering learned for ``builtin-v0`` with the shipped default U-Net (see its provenance)."""


@dataclass
class LearnedOrdering:
    """A learned ordering of phase-encode lines (or ky-kz points) and how it was made.

    Made greedily by :func:`learn_ordering`, or as a LOUPE mask by
    :func:`activemri.agents.loupe.learn_loupe` (``settings["method"] == "loupe"``: ``order``
    is the learned mask's actions by descending probability and ``scores`` are held-out
    scores of the reconstructor learned with it).

    Attributes:
        width: Number of phase-encode lines ``W`` of the data it was learned on.
        initial: The initial (ACS) lines it starts from.
        order: Lines added after ``initial``, best first.
        scores: Mean score on the sample after ``0 .. len(order)`` added lines.
        metric: The score maximized (``ssim``, ``psnr``, ``nmse`` or ``mse``; the latter two
            negated so higher is better).
        settings: What defines the result (env, data, reconstructor, sample, seed, budget);
            a resumed run must match them.
        provenance: Where and when it was made, and the sample's slices.
        complete: False while learning is under way (a resumable partial result).
    """

    width: int
    initial: list[int]
    order: list[int]
    scores: list[float]
    metric: str
    settings: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    complete: bool = True

    @property
    def max_lines(self) -> int:
        """Lines acquired at the end of the ordering."""
        return len(self.initial) + len(self.order)

    def mask(self, num_lines: int) -> np.ndarray:
        """Bool ``(W,)`` mask of the first ``num_lines`` lines (initial lines included)."""
        if not len(self.initial) <= num_lines <= self.max_lines:
            raise ValueError(
                f"num_lines must be in [{len(self.initial)}, {self.max_lines}], got {num_lines}"
            )
        mask = np.zeros(self.width, dtype=bool)
        mask[self.initial] = True
        mask[self.order[: num_lines - len(self.initial)]] = True
        return mask

    def policy(self, name: str = "learned_fixed") -> OrderingPolicy:
        """A policy that plays this ordering step by step (then center-out if run past it)."""
        return OrderingPolicy(self, name=name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (see :func:`load_ordering`)."""
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str | Path) -> None:
        """Write the ordering as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")


class OrderingPolicy(FixedOrderPolicy):
    """Plays a :class:`LearnedOrdering`; refuses episodes that start from other lines.

    Args:
        ordering: The ordering.
        name: Report name.
    """

    def __init__(self, ordering: LearnedOrdering, name: str = "learned_fixed") -> None:
        super().__init__(ordering.order, name=name)
        self.ordering = ordering

    def begin(self, rows: Sequence[int], episodes: Sequence[PolicyEpisode], obs: Obs) -> None:
        """Check that the new episodes start from the ordering's initial lines and width."""
        expected = set(self.ordering.initial)
        mask = obs["mask"].bool()
        width = int(mask.shape[1])
        masks = (
            mask[torch.as_tensor(list(rows), dtype=torch.long, device=mask.device)].cpu().numpy()
        )
        for mask, episode in zip(masks, episodes, strict=True):
            start = set(np.flatnonzero(mask).tolist())
            if width != self.ordering.width or start != expected:
                raise ValueError(
                    f"{episode.file}: the ordering was learned from "
                    f"{len(expected)} initial lines of {self.ordering.width}; this episode "
                    f"starts from {len(start)} of {width}"
                )


class OrderingWarning(UserWarning):
    """A learned ordering is played with a reconstructor or data it was not learned with."""


def check_ordering_context(
    ordering: LearnedOrdering, reconstructor: Reconstructor, data: str | None
) -> list[str]:
    """Say (and warn) where an ordering is played outside what it was learned with.

    Args:
        ordering: The ordering.
        reconstructor: The reconstructor of the env it is played in.
        data: That env's data spec.

    Returns:
        The mismatches found (empty when the ordering was learned with this reconstructor and
        data); each is also emitted as an :class:`OrderingWarning`.
    """
    learned = ordering.settings
    problems = []
    fingerprint = learned.get("reconstructor_fingerprint")
    if fingerprint is None:
        problems.append("it records no reconstructor fingerprint (learned by an older version)")
    elif fingerprint != model_fingerprint(reconstructor):
        problems.append(
            f"it was learned with another reconstructor ({learned.get('reconstructor')}, "
            f"{fingerprint}) than this env's ({type(reconstructor).__name__}, "
            f"{model_fingerprint(reconstructor)})"
        )
    if learned.get("data") != data:
        problems.append(f"it was learned on {learned.get('data')}, not on {data}")
    hint = (
        "a greedy ordering is only as good as the reconstructor and data it was learned with "
        "(relearn it: activemri mask learn)"
    )
    if learned.get("method") == "loupe":
        hint = (
            "a LOUPE mask was learned jointly with its reconstructor (play it with "
            f"reconstructor={learned.get('reconstructor_checkpoint')}, next to the mask file)"
        )
    for problem in problems:
        warnings.warn(f"learned ordering: {problem}; {hint}", OrderingWarning, stacklevel=2)
    return problems


def load_ordering(path: str | Path | None = None) -> LearnedOrdering:
    """Read an ordering written by :meth:`LearnedOrdering.save`.

    Args:
        path: The JSON file; ``None`` reads :data:`SHIPPED_ORDERING`.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a valid ordering document.
    """
    path = Path(path) if path is not None else SHIPPED_ORDERING
    if not path.is_file():
        raise FileNotFoundError(f"no learned ordering at {path} (make one: activemri mask learn)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON document ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a learned ordering (expected format {FORMAT!r})")
    try:
        ordering = LearnedOrdering(
            width=int(doc["width"]),
            initial=[int(c) for c in doc["initial"]],
            order=[int(c) for c in doc["order"]],
            scores=[float(v) for v in doc["scores"]],
            metric=str(doc["metric"]),
            settings=dict(doc["settings"]),
            provenance=dict(doc.get("provenance", {})),
            complete=bool(doc.get("complete", True)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed learned ordering ({exc!r})") from exc
    lines = ordering.initial + ordering.order
    if len(set(lines)) != len(lines) or any(not 0 <= c < ordering.width for c in lines):
        raise ValueError(f"{path}: lines must be distinct columns in [0, {ordering.width})")
    if len(ordering.scores) != len(ordering.order) + 1:
        raise ValueError(f"{path}: expected {len(ordering.order) + 1} scores")
    return ordering


def learn_ordering(
    preset: str | Path | Mapping[str, Any] | EnvConfig = "builtin-v0",
    *,
    sample_size: int = 16,
    max_lines: int | None = None,
    metric: str = "ssim",
    seed: int = 0,
    out: str | Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    **overrides: Any,
) -> LearnedOrdering:
    """Learn a greedy ordering on a seeded sample of training slices.

    Args:
        preset: Env preset (name, YAML path, mapping or config) giving data, reconstructor
            and initial lines.
        sample_size: Number of training slices whose mean score is maximized.
        max_lines: Lines acquired at the end (default: where the scenario's episodes end).
        metric: Score to maximize.
        seed: Seed of the slice sample.
        out: JSON file written after every added line; if it holds a partial (or complete)
            result with the same settings, learning resumes from (or returns) it.
        progress: Called as ``progress(lines_done, lines_total, mean_score)`` after each line.
        **overrides: Env config overrides (``split`` defaults to ``"train"``; ``device``...).

    Returns:
        The complete ordering (also written to ``out``).

    Raises:
        ValueError: If the sample is too small, its slices differ in width or measured
            lines, the scenario adds random initial lines, or ``out`` holds a result made
            with other settings.
    """
    if sample_size < 1:
        raise ValueError(f"sample_size must be >= 1, got {sample_size}")
    if metric not in SIGNS:
        raise ValueError(f"metric must be one of {sorted(SIGNS)}, got {metric!r}")
    venv = _sample_env(preset, sample_size, seed, max_lines is not None, overrides)
    config = venv.config
    obs, info = venv.torch_reset(seed=[seed] * sample_size)
    seen = venv.torch_policy_observation(obs)
    mask, valid = seen["mask"].bool(), seen["valid"]
    if not (torch.equal(mask, mask[:1].expand_as(mask))
            and torch.equal(valid, valid[:1].expand_as(valid))):  # fmt: skip
        raise ValueError("the sample's slices differ in measured or initial lines; choose data "
                         "of one k-space width (kspace_width=...)")  # fmt: skip
    valid = valid[0]
    initial = torch.nonzero(mask[0]).flatten().tolist()
    if max_lines is None:
        max_lines = len(initial) + int(seen["budget"].max())
    if not len(initial) < max_lines <= int(valid.sum()):
        raise ValueError(
            f"max_lines must be in ({len(initial)}, {int(valid.sum())}] (initial lines, "
            f"measured lines), got {max_lines}"
        )
    settings = {
        "env": str(preset) if isinstance(preset, (str, Path)) else config.id,
        "data": config.data,
        "split": config.split,
        "split_seed": config.split_seed,
        "reconstructor": describe_reconstructor(config.reconstructor),
        "reconstructor_fingerprint": model_fingerprint(venv.reconstructor),
        "sample_size": sample_size,
        "seed": seed,
        "metric": metric,
        "max_lines": max_lines,
        "initial_lines": len(initial),
    }
    episodes = venv.episodes
    provenance = {
        "activemri_version": __version__,
        "device": str(venv.device),
        "slices": [[e.meta.file.name, e.meta.slice_index] for e in episodes],
    }
    ordering = LearnedOrdering(
        width=int(valid.numel()),
        initial=initial,
        order=[],
        scores=[float((SIGNS[metric] * info[metric]).mean())],
        metric=metric,
        settings=settings,
        provenance=provenance,
        complete=False,
    )
    if out is not None and Path(out).exists():
        previous = load_ordering(out)
        if previous.settings != settings:
            raise ValueError(
                f"{out} was learned with other settings ({previous.settings}); remove it or "
                f"choose another file (this run: {settings})"
            )
        if previous.complete:
            return previous
        for line in previous.order:  # replay the partial result, then go on
            obs = _acquire(venv, line)
        ordering.order, ordering.scores = list(previous.order), list(previous.scores)
        ordering.provenance["elapsed_s"] = previous.provenance.get("elapsed_s", 0.0)
    rank, world_size = world()
    ordering.provenance["processes"] = world_size
    start = time.perf_counter() - float(ordering.provenance.get("elapsed_s", 0.0))
    total = max_lines - len(initial)
    while len(ordering.order) < total:
        free = torch.nonzero(valid & (obs["mask"][0] == 0)).flatten()
        mine = free[rank::world_size]  # a sharded job scores every world_size-th candidate
        part = venv.torch_score_candidates(mine.expand(sample_size, -1), metric).mean(dim=0)
        mean = gather_strided(part, free.numel())
        best = int(mean.argmax())  # ties: the lowest column
        line = int(free[best])
        obs = _acquire(venv, line)
        ordering.order.append(line)
        ordering.scores.append(float(mean[best]))
        ordering.provenance["elapsed_s"] = round(time.perf_counter() - start, 1)
        ordering.complete = len(ordering.order) == total
        if ordering.complete:
            ordering.provenance["created"] = datetime.now(timezone.utc).isoformat(
                timespec="seconds"
            )
        if out is not None and rank == 0:
            ordering.save(out)
        if progress is not None:
            progress(len(ordering.order), total, ordering.scores[-1])
    return ordering


def _sample_env(
    preset: str | Path | Mapping[str, Any] | EnvConfig,
    sample_size: int,
    seed: int,
    own_end: bool,
    overrides: Mapping[str, Any],
) -> ActiveMRIVectorEnv:
    """The batched env of the sample: one sub-env per slice, autoreset disabled.

    With ``own_end`` the scenario's budget is dropped (the learner ends at ``max_lines``).
    """
    settings_env: dict[str, Any] = {
        "split": "train",
        **overrides,
        "order": "sequential",
        "max_slices": sample_size,
        "subset_seed": seed,
    }
    config = load_env_config(preset, **settings_env)
    if config.scenario.extra_random_lines:
        raise ValueError("a learned ordering needs a deterministic initial mask: the scenario "
                         "adds random lines (set extra_random_lines=0)")  # fmt: skip
    if own_end:
        scenario = dataclasses.replace(config.scenario, budget=None, acceleration=None)
        config = dataclasses.replace(config, scenario=scenario)
    venv = ActiveMRIVectorEnv(sample_size, config, autoreset_mode=AutoresetMode.DISABLED)
    if len(venv.slice_indices) < sample_size:
        raise ValueError(
            f"the {config.split!r} split has only {len(venv.slice_indices)} slices; "
            f"sample_size is {sample_size}"
        )
    return venv


def _acquire(venv: ActiveMRIVectorEnv, line: int) -> dict[str, torch.Tensor]:
    """Acquire ``line`` in every sub-env; the new observation."""
    actions = torch.full((venv.num_envs,), line, dtype=torch.long, device=venv.device)
    return venv.torch_step(actions, check=False)[0]
