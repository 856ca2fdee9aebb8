"""Joint sampler-reconstructor training: fine-tune the env's reconstructor on the policy's masks.

A policy trained against a frozen reconstructor meets, at test time, a reconstructor that
was trained on other masks than the ones the policy produces. L2SR (Yang & Dong, Inverse
Problems 2024) removes that mismatch by alternating sampler and reconstructor training.
:func:`activemri.agents.training.train_agent` does so when the agent preset has a ``joint``
section (:class:`~activemri.agents.preset.JointTraining`):

- **Replay.** :class:`MaskRecorder` sits between SB3 and the training env and records, for
  every env step, the acquired set each episode reached (the env's own mask: the state after
  the step, or the terminal observation of an episode that just ended), the training slice it
  belongs to (dataset index) and its ACS size, into a :class:`MaskReplay` ring buffer of the
  latest ``replay`` steps. Only masks the policy produced are recorded: initial masks are not.
- **Round.** Every ``every`` env steps, at the next rollout boundary (so an on-policy rollout
  never mixes two reconstructors), :meth:`JointTrainer.run_round` draws ``recon_steps``
  batches of ``batch_size`` replayed masks (seeded by the round), pairs each with its slice's
  fully sampled k-space and target from the env's training data, and takes Adam steps on the
  supervised loss of reconstructor training (:func:`supervised_loss`: the image loss and, for
  an uncertainty head, the Gaussian NLL). The Adam state carries over between rounds. The
  model trained is the env's reconstructor itself (``venv.reconstructor``), updated in place
  and put back in eval mode, so the next env step already uses the new weights.
- **Check.** After each round :meth:`JointTrainer.check` runs the model on a seeded sample of
  the env's held-out split with fixed masks (:class:`~activemri.agents.preset.JointCheck`:
  random and equispaced at 4x and 8x by default). It must beat zero-filled on each (mean
  per-image SSIM); otherwise, or when the training loss was not finite, the weights and the
  Adam state are restored to what they were before the round, and the round is recorded as
  reverted. Every round (and the initial check, round 0) is a row of ``joint.csv``.

What stays inconsistent, by design: episodes in flight when a round ends keep the
reconstruction (and score) their last step computed with the old weights, so their next
reward is the new reconstructor's score minus the old one's (one step per episode and round).
Double DQN's replay memory keeps observations made with earlier reconstructors (as any
off-policy memory holds those of earlier policies).

Files (written by :mod:`activemri.agents.training`): ``reconstructor-HASH.pt`` (a
:meth:`~activemri.recon_models.base.Reconstructor.save` checkpoint named by a hash of its
weights, so every agent file can name the weights it played with) and ``joint-STEP.pt``
(Adam state, replay, round counters; tensors and plain data only, read back with
``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from activemri.agents.preset import JointCheck, JointTraining
from activemri.data import SliceDataset, SliceSample
from activemri.envs.config import build_dataset
from activemri.envs.vector import ActiveMRIVectorEnv
from activemri.kspace import zero_filled
from activemri.metrics import ssim
from activemri.recon_models import losses
from activemri.recon_models.base import Reconstructor, bf16_autocast
from activemri.recon_models.checkpoint import load_state_strict, read_checkpoint, weights_digest
from activemri.recon_models.evaluate import (
    MaskedBatch,
    MaskedSlices,
    collate_masked,
    fixed_mask_rule,
    iterate_batches,
)

__all__ = [
    "JOINT_STATE_SCHEMA",
    "RECONSTRUCTOR_PREFIX",
    "JointTrainer",
    "MaskRecorder",
    "MaskReplay",
    "active_env",
    "check_slices",
    "file_digest",
    "joint_state_name",
    "save_reconstructor_file",
    "supervised_loss",
]

JOINT_STATE_SCHEMA = "activemri.joint/1"
RECONSTRUCTOR_PREFIX = "reconstructor-"
_SAMPLE_CACHE = 256  # training slices kept in memory between gradient steps


def joint_state_name(steps: int) -> str:
    """File name of the joint training state saved with the checkpoint at ``steps``."""
    return f"joint-{steps}.pt"


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_reconstructor_file(
    model: Reconstructor, folder: Path, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Save ``model`` as ``folder/reconstructor-HASH.pt`` (atomic; kept if already there).

    The name holds a hash of the weights, so different weights never share a file and the
    same weights (a reverted round, an agent file saved at the same step as a checkpoint)
    share one.

    Returns:
        ``{"file", "sha256", "bytes"}``: the file name and its bytes' hash and size, which an
        agent file stores to name (and verify) the reconstructor it plays with.
    """
    path = folder / f"{RECONSTRUCTOR_PREFIX}{weights_digest(model)[:16]}.pt"
    if not path.is_file():
        stored = dict(extra or {})
        if model.training_domain is not None:  # the env's domain guard reads it
            stored.setdefault("domain", json.dumps(model.training_domain))
        model.save(path, extra=stored)
    return {"file": path.name, "sha256": file_digest(path), "bytes": path.stat().st_size}


def active_env(env: VecEnv) -> ActiveMRIVectorEnv:
    """The :class:`ActiveMRIVectorEnv` under SB3 wrappers and the SB3 adapter.

    Raises:
        TypeError: If there is none.
    """
    inner: Any = env
    for _ in range(16):
        if isinstance(inner, ActiveMRIVectorEnv):
            return inner
        inner = getattr(inner, "venv", None)
        if inner is None:
            break
    raise TypeError(f"{type(env).__name__} does not wrap an activemri ActiveMRIVectorEnv")


def supervised_loss(
    model: Reconstructor, batch: MaskedBatch, loss: str = "l1", nll_weight: float = 0.1
) -> torch.Tensor:
    """The supervised loss of reconstructor training on one masked batch.

    :func:`~activemri.recon_models.losses.supervised_loss` of the model's output, as
    ``activemri recon train`` (supervised mode) computes it.
    """
    if batch.target is None:
        raise ValueError("supervised fine-tuning needs targets")
    out = model(batch.kspace, batch.mask, num_low_frequencies=batch.num_low)
    sigma = None if out.uncertainty is None else out.uncertainty.float()
    return losses.supervised_loss(
        out.image.float(), sigma, batch.target, batch.data_range, loss, nll_weight
    )


def check_slices(venv: ActiveMRIVectorEnv, check: JointCheck) -> tuple[SliceDataset, list[int]]:
    """The held-out slices of the check: a seeded sample of the env's data in ``check.split``.

    Raises:
        ValueError: If that split holds no slice of the env's shape.
    """
    config = replace(venv.config, split=check.split, max_slices=check.slices,
                     subset_seed=check.seed)  # fmt: skip
    try:
        dataset, indices = build_dataset(config)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"joint.check: the env's {check.split} split is unusable: {exc}") from exc
    shape = (venv.kspace_shape, venv.recon_size)
    indices = [
        i for i in indices if (dataset.slice_shape(i), dataset.slice_meta(i).recon_size) == shape
    ]
    if not indices:
        raise ValueError(
            f"joint.check: the env's {check.split} split has no slice of the training data's "
            f"shape (k-space {venv.kspace_shape}, targets {venv.recon_size})"
        )
    return dataset, indices


class MaskReplay:
    """Ring buffer of the acquired sets episodes reached, with their slice and ACS size.

    Args:
        capacity: Entries kept (the latest ones).
        num_actions: Length ``A`` of a mask (lines ``W``, or the flat points of a plane).
    """

    def __init__(self, capacity: int, num_actions: int) -> None:
        self.capacity = int(capacity)
        self.index = torch.zeros(self.capacity, dtype=torch.long)
        self.num_low = torch.zeros(self.capacity, dtype=torch.long)
        self.mask = torch.zeros(self.capacity, int(num_actions), dtype=torch.bool)
        self.pos = 0
        self.size = 0
        self.added = 0

    def __len__(self) -> int:
        return self.size

    def add(self, index: torch.Tensor, mask: torch.Tensor, num_low: torch.Tensor) -> None:
        """Append ``(N,)`` dataset indices, ``(N, A)`` bool masks and ``(N,)`` ACS sizes."""
        index, mask, num_low = index.cpu().long(), mask.cpu().bool(), num_low.cpu().long()
        n = int(index.shape[0])
        self.added += n
        if n > self.capacity:
            keep = slice(n - self.capacity, n)
            index, mask, num_low, n = index[keep], mask[keep], num_low[keep], self.capacity
        slots = (self.pos + torch.arange(n)) % self.capacity
        self.index[slots], self.mask[slots], self.num_low[slots] = index, mask, num_low
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def sample(
        self, n: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` entries drawn uniformly (with replacement): indices, masks, ACS sizes."""
        if self.size == 0:
            raise ValueError("the mask replay is empty")
        picks = torch.from_numpy(rng.integers(0, self.size, size=n)).long()
        return self.index[picks], self.mask[picks], self.num_low[picks]

    def state_dict(self) -> dict[str, Any]:
        """Tensors and counters (what ``joint-STEP.pt`` stores)."""
        return {"index": self.index.clone(), "num_low": self.num_low.clone(),
                "mask": self.mask.clone(), "pos": self.pos, "size": self.size,
                "added": self.added}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: If the shapes differ from this replay's.
        """
        mask = state.get("mask")
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(self.mask.shape):
            found = None if not isinstance(mask, torch.Tensor) else tuple(mask.shape)
            raise ValueError(f"mask replay of shape {found}, expected {tuple(self.mask.shape)}")
        self.index = state["index"].long().clone()
        self.num_low = state["num_low"].long().clone()
        self.mask = mask.bool().clone()
        self.pos, self.size, self.added = int(state["pos"]), int(state["size"]), int(state["added"])


class MaskRecorder(VecEnvWrapper):
    """Records the acquired set of every episode after every env step into a :class:`MaskReplay`.

    The mask recorded is the env's: its state after the step, or, for an episode that the
    step ended (and SB3's autoreset replaced), the ``mask`` of its terminal observation. The
    slice and ACS size are those of the episode the step was taken in.

    Args:
        venv: The SB3 env (the adapter, or a wrapper of it, with ``mask`` observations).
        env: The batched env under it (:func:`active_env`).
        replay: Where the masks go.
    """

    def __init__(self, venv: VecEnv, env: ActiveMRIVectorEnv, replay: MaskReplay) -> None:
        super().__init__(venv)
        self.env = env
        self.replay = replay
        self._before: tuple[torch.Tensor, torch.Tensor] | None = None

    def reset(self) -> Any:
        """Reset the wrapped env (nothing is recorded: initial masks are not the policy's)."""
        self._before = None
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        """Note which slice each episode plays, then pass the actions on."""
        index = torch.tensor([e.dataset_index for e in self.env.episodes], dtype=torch.long)
        self._before = (index, self.env.state.num_low.detach().cpu().clone())
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step the wrapped env and record the masks its episodes reached."""
        obs, reward, done, infos = self.venv.step_wait()
        if self._before is None:  # pragma: no cover - SB3 always calls step_async first
            raise RuntimeError("step_async() must be called before step_wait()")
        index, num_low = self._before
        self._before = None
        mask = self.env.state.mask.detach().cpu().clone()
        for row in np.flatnonzero(done).tolist():
            terminal = infos[row].get("terminal_observation")
            if terminal is None or "mask" not in terminal:
                raise ValueError("joint training needs 'mask' in the agent's observation")
            mask[row] = torch.from_numpy(np.asarray(terminal["mask"]).reshape(-1) != 0)
        self.replay.add(index, mask, num_low)
        return obs, reward, done, infos


class JointTrainer:
    """Fine-tuning rounds of an env's reconstructor on the policy's masks, and the check.

    Args:
        config: The preset's ``joint`` section.
        venv: The training env; its reconstructor is the model fine-tuned (in place).
        seed: Seed of the rounds (batch draws and dropout, per round).

    Raises:
        ValueError: If the reconstructor has no trainable parameters, or the check's split
            has no usable slice.
    """

    def __init__(self, config: JointTraining, venv: ActiveMRIVectorEnv, seed: int) -> None:
        self.config = config
        self.venv = venv
        self.model: Reconstructor = venv.reconstructor
        self.seed = int(seed)
        self.device = venv.device
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                f"joint training fine-tunes the env's reconstructor, but "
                f"{type(self.model).__name__} has no trainable parameters; use a network "
                "(e.g. --set reconstructor=PATH/model.pt)"
            )
        missing = [v.path.name for v in venv.dataset.volumes if v.target_key is None]
        if missing:
            raise ValueError(
                f"joint training fine-tunes the reconstructor on fully sampled targets, and "
                f"{len(missing)} training volume(s) have none (e.g. {missing[0]}); with "
                "undersampled-only data train the agent alone (reward=self_supervised)"
            )
        self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.replay = MaskReplay(config.replay, venv.num_actions)
        self.check_data = check_slices(venv, config.check)
        self._check_rules()
        self.rounds = 0
        self.accepted = 0
        self.reverted = 0
        self.next_round = config.every
        self.reference: dict[str, float] = {}  # check SSIMs of the current weights
        self._zero_filled: dict[str, float] | None = None
        self._samples: OrderedDict[int, SliceSample] = OrderedDict()

    # ------------------------------------------------------------------ the check
    def _check_rules(self) -> None:
        """Raise ``ValueError`` now for a check mask that does not fit the data."""
        dataset, indices = self.check_data
        sample = dataset[indices[0]]
        for mask_type in self.config.check.masks:
            for acceleration in self.config.check.accelerations:
                try:
                    fixed_mask_rule(mask_type, acceleration)(sample, np.random.default_rng(0))
                except ValueError as exc:
                    raise ValueError(f"joint.check.masks: {exc}") from exc

    @property
    def check_keys(self) -> list[str]:
        """``MASK_ACCx`` of every fixed mask the check runs."""
        check = self.config.check
        return [f"{m}_{a:g}x" for m in check.masks for a in check.accelerations]

    def _check_batches(self) -> Any:
        check = self.config.check
        dataset, indices = self.check_data
        for mask_type in check.masks:
            for acceleration in check.accelerations:
                rule = fixed_mask_rule(mask_type, acceleration)
                masked = MaskedSlices(dataset, rule, check.seed, per_volume=True)
                for batch in iterate_batches(masked, check.batch_size, indices):
                    yield f"{mask_type}_{acceleration:g}x", batch.to(self.device)

    @torch.no_grad()
    def check(self) -> dict[str, float]:
        """Mean per-image SSIM of the model, and of zero-filled, on every fixed mask.

        Returns:
            ``{"ssim_KEY": ..., "zf_ssim_KEY": ...}`` for every key of :attr:`check_keys`.
        """
        model = self.model.eval()
        scores: dict[str, list[float]] = {k: [] for k in self.check_keys}
        zf_scores: dict[str, list[float]] = {k: [] for k in self.check_keys}
        for key, batch in self._check_batches():
            assert batch.target is not None
            out = model(batch.kspace, batch.mask, num_low_frequencies=batch.num_low)
            scores[key] += ssim(out.image.float(), batch.target, batch.data_range).tolist()
            if self._zero_filled is None:
                zf = zero_filled(batch.kspace, batch.mask, model.recon_size).float()
                zf_scores[key] += ssim(zf, batch.target, batch.data_range).tolist()
        if self._zero_filled is None:  # the masks are fixed: zero-filled never changes
            self._zero_filled = {k: float(np.mean(v)) for k, v in zf_scores.items()}
        out_scores: dict[str, float] = {}
        for key in self.check_keys:
            out_scores[f"ssim_{key}"] = float(np.mean(scores[key]))
            out_scores[f"zf_ssim_{key}"] = self._zero_filled[key]
        return out_scores

    def passes(self, scores: Mapping[str, float]) -> str | None:
        """``None`` if ``scores`` pass the check, else why not."""
        margin = self.config.check.margin
        failed = [
            k for k in self.check_keys
            if not scores[f"ssim_{k}"] > scores[f"zf_ssim_{k}"] + margin
        ]  # fmt: skip
        if failed:
            shown = ", ".join(
                f"{k} {scores[f'ssim_{k}']:.4f} vs {scores[f'zf_ssim_{k}']:.4f}" for k in failed
            )
            return f"does not beat zero-filled on {shown}"
        limit = self.config.check.max_drop
        if limit is not None and self.reference:
            before, after = _mean_ssim(self.reference), _mean_ssim(scores)
            if after < before - limit:
                return f"mean check SSIM fell from {before:.4f} to {after:.4f}"
        return None

    def _row(self, step: int, status: str, reason: str, loss: float | None,
             scores: Mapping[str, float]) -> dict[str, Any]:  # fmt: skip
        return {
            "round": self.rounds,
            "step": int(step),
            "status": status,
            "reason": reason,
            "train_loss": "" if loss is None else loss,
            "replay_masks": len(self.replay),
            "check_ssim": _mean_ssim(scores),
            "check_zf_ssim": float(np.mean([scores[f"zf_ssim_{k}"] for k in self.check_keys])),
            **scores,
        }

    def start(self) -> dict[str, Any]:
        """The check of the starting weights: round 0's row of ``joint.csv``."""
        scores = self.check()
        self.reference = dict(scores)
        reason = self.passes(scores) or ""
        return self._row(0, "initial", reason, None, scores)

    @property
    def fields(self) -> list[str]:
        """Column names of ``joint.csv``."""
        keys = [f"{p}{k}" for k in self.check_keys for p in ("ssim_", "zf_ssim_")]
        return ["round", "step", "wall_seconds", "status", "reason", "train_loss",
                "replay_masks", "check_ssim", "check_zf_ssim", *keys]  # fmt: skip

    # ------------------------------------------------------------------ the round
    def _sample(self, index: int) -> SliceSample:
        sample = self._samples.get(index)
        if sample is None:
            sample = self.venv.dataset[index]
            self._samples[index] = sample
            if len(self._samples) > _SAMPLE_CACHE:
                self._samples.popitem(last=False)
        else:
            self._samples.move_to_end(index)
        return sample

    def batch(self, rng: np.random.Generator) -> MaskedBatch:
        """A training batch: replayed masks on their slices' k-space and targets."""
        indices, masks, num_low = self.replay.sample(self.config.batch_size, rng)
        _, height, width = self.venv.kspace_shape
        recon_masks = self.venv.geometry.recon_mask(masks, height, width)
        items = []
        for i, index in enumerate(indices.tolist()):
            sample = self._sample(index)
            meta = sample.meta
            if sample.target is None:
                raise ValueError(f"{meta.file} slice {meta.slice_index} has no target")
            data_range = meta.max_value
            if data_range is None:  # as the env does
                data_range = float(sample.target.max())
            items.append({
                "kspace": sample.kspace, "target": sample.target, "mask": recon_masks[i],
                "num_low": int(num_low[i]), "valid": meta.valid_columns(width),
                "data_range": data_range, "index": index,
            })  # fmt: skip
        return collate_masked(items).to(self.device)

    def _train(self, rng: np.random.Generator) -> tuple[float, bool]:
        """``recon_steps`` gradient steps; the mean loss and whether every loss was finite."""
        config = self.config
        model = self.model
        autocast = bf16_autocast(self.device) if config.bf16 else contextlib.nullcontext()
        losses: list[float] = []
        model.train()
        try:
            for _ in range(config.recon_steps):
                batch = self.batch(rng)
                with autocast:
                    loss = supervised_loss(model, batch, config.loss, config.nll_weight)
                if not torch.isfinite(loss):
                    return float("nan"), False
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                self.optimizer.step()
                losses.append(float(loss.detach()))
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            model.eval()
        return float(np.mean(losses)), True

    def due(self, steps: int) -> bool:
        """Whether a round is due at ``steps``."""
        return steps >= self.next_round

    def run_round(self, steps: int) -> dict[str, Any]:
        """Fine-tune, check, and keep or revert the weights; returns the round's row.

        A round is skipped (and recorded so) while the replay holds fewer masks than a
        batch.
        """
        config = self.config
        if not self.reference:
            self.reference = self.check()
        self.next_round = (steps // config.every + 1) * config.every
        self.rounds += 1
        if len(self.replay) < config.batch_size:
            return self._row(steps, "skipped", f"{len(self.replay)} masks in the replay",
                             None, self.reference)  # fmt: skip
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        adam = copy.deepcopy(self.optimizer.state_dict())
        rng = np.random.default_rng([self.seed, self.rounds])
        devices = [torch.cuda.current_device()] if self.device.type == "cuda" else []
        # Dropout draws its own seeded stream, leaving the agent's random numbers as they were.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + self.rounds)
            loss, finite = self._train(rng)
        scores = self.check() if finite else dict(self.reference)
        reason = self.passes(scores) if finite else "non-finite training loss"
        if reason is None:
            self.accepted += 1
            self.reference = dict(scores)
            return self._row(steps, "accepted", "", loss, scores)
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(adam)
        self.model.eval()
        self.reverted += 1
        return self._row(steps, "reverted", reason, loss, scores)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Adam state, replay and counters (``joint-STEP.pt``; no model weights)."""
        return {
            "schema": JOINT_STATE_SCHEMA,
            "optimizer": self.optimizer.state_dict(),
            "replay": self.replay.state_dict(),
            "rounds": self.rounds,
            "accepted": self.accepted,
            "reverted": self.reverted,
            "next_round": self.next_round,
            "reference": dict(self.reference),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: If it is not a joint training state of this configuration.
        """
        if state.get("schema") != JOINT_STATE_SCHEMA:
            raise ValueError(f"not a joint training state ({JOINT_STATE_SCHEMA})")
        self.replay.load_state_dict(state["replay"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"the joint optimizer state does not fit: {exc}") from exc
        self.rounds, self.accepted = int(state["rounds"]), int(state["accepted"])
        self.reverted, self.next_round = int(state["reverted"]), int(state["next_round"])
        self.reference = {str(k): float(v) for k, v in dict(state["reference"]).items()}

    def load_weights(self, path: Path) -> None:
        """Load a reconstructor file (:func:`save_reconstructor_file`) into the env's model.

        Raises:
            ValueError: If the file holds another model (class, config or weights' shapes).
        """
        payload = read_checkpoint(path, map_location=self.device)
        if payload["config"] != self.model.config:
            raise ValueError(
                f"{path} holds a reconstructor with config {payload['config']}, the env's is "
                f"{self.model.config}"
            )
        load_state_strict(self.model, payload["state_dict"], str(path))
        self.model.eval()

    def summary(self) -> dict[str, Any]:
        """Round counters (for the agent files and ``training.json``)."""
        return {"rounds": self.rounds, "accepted": self.accepted, "reverted": self.reverted}


def _mean_ssim(scores: Mapping[str, float]) -> float:
    values = [v for k, v in scores.items() if k.startswith("ssim_")]
    return float(np.mean(values)) if values else math.nan
