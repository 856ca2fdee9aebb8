"""Reconstructor training: supervised and self-supervised (SSDU), resumable, multi-process.

``activemri recon train`` calls :func:`train`. One epoch is a pass over the train split;
after each epoch the model is validated (SSIM/PSNR/NMSE at 4x and 8x random masks on the val
split) and two files are written atomically in the output folder:

- ``checkpoint.pt``: model, optimizer, scheduler, epoch and history (for ``--resume``);
- ``model.pt``: the model alone, the best so far by validation SSIM (what users load).

Validity outside the simulator: ``train.augment`` changes every training slice (flips, small
rotations, gamma, bias field, scale, noise; :mod:`activemri.recon_models.augment`),
``train.anatomies`` restricts training to some anatomies, and ``train.val_data`` names
held-out data (ideally an anatomy left out of training) on which the best epoch is selected.
Models with an uncertainty head get their ``sigma_scale`` fitted on the val split when
``model.pt`` is written (temperature scaling, :mod:`activemri.recon_models.calibration`).
``model.pt`` also records the training domain (``extra["domain"]``: anatomies, protocols,
sizes, coils, accelerations, noise), which ``activemri recon check`` and the env's domain
guard read.

Reproducibility: every random stream of epoch ``e`` is seeded from ``(seed, e)``: the
shuffle, each sample's mask (also from its index), the SSDU splits (one stream per epoch and
rank, consumed batch by batch) and dropout (the global torch seed). Resumption happens at
epoch boundaries, so a resumed run continues exactly as an uninterrupted one would on the
same machine (CUDA kernels may add their own non-determinism).

Masks (supervised): each sample draws a pattern (random, equispaced, low-to-high) and a line
count uniform between the ACS block and ``max_fraction`` of the measured width, so the model
is good at every step of an active episode. SSDU: each training slice has one fixed
acquisition Ω (the file's own ``mask`` for undersampled data, else a random
``ssdu_acceleration`` mask), split each step into Θ (input) and Λ (loss);
fully sampled targets are never read (the training split is opened without targets).

Multi-process: launched with ``torchrun`` (``WORLD_SIZE > 1``), training uses
``torch.distributed`` (gloo on CPU, nccl on CUDA), shards each epoch's samples by rank, and
only rank 0 validates and writes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from activemri import _config
from activemri._io import atomic_write_text
from activemri.data import SliceDataset, SliceSample, ensure_builtin
from activemri.kspace import acs_mask, apply_mask
from activemri.masks import MASK_TYPES, make_mask
from activemri.masks2d import MASK_TYPES_2D, make_mask_2d
from activemri.recon_models.augment import AugmentConfig, augment_batch
from activemri.recon_models.base import Reconstructor, bf16_autocast
from activemri.recon_models.calibration import fit_sigma_scale
from activemri.recon_models.checkpoint import CheckpointError, load_state_strict, read_checkpoint
from activemri.recon_models.evaluate import (
    MaskedBatch,
    MaskedSlices,
    default_acs_lines,
    default_calibration_side,
    evaluate_reconstructor,
    iterate_batches,
    point_mask_rule_parts,
)
from activemri.recon_models.losses import ssdu_kspace_loss, supervised_loss
from activemri.recon_models.registry import ReconPreset, load_preset
from activemri.recon_models.resolve import resolve
from activemri.recon_models.ssdu import ssdu_split

__all__ = [
    "BUILTIN_DATA_PREFIX",
    "TrainConfig",
    "bf16_autocast",
    "resolve_data",
    "train",
    "training_domain",
]

BUILTIN_DATA_PREFIX = "builtin:"


@dataclass
class TrainConfig:
    """A training recipe (the ``train:`` section of a reconstructor preset).

    Attributes:
        data: Folder of fastMRI h5 files, or ``builtin:PRESET`` (generated and cached).
        mode: ``supervised`` or ``ssdu``.
        loss: Supervised image loss, ``l1`` or ``ssim``.
        nll_weight: Weight of the uncertainty NLL (supervised, models with uncertainty).
        epochs: Epochs.
        batch_size: Slices per step (per process).
        lr: Adam learning rate.
        lr_step: Epochs between learning-rate decays.
        lr_gamma: Decay factor.
        weight_decay: Adam weight decay.
        patterns: Mask patterns drawn per sample (supervised): line patterns of
            :data:`~activemri.masks.MASK_TYPES` for slices, point patterns of
            :data:`~activemri.masks2d.MASK_TYPES_2D` for the ky-kz planes of 3-D volumes (each
            kind of data draws from the patterns of its kind; ``random`` if none).
        max_fraction: Largest fraction of measured lines in a training mask (0.5 = 2x).
        acs_accelerations: Accelerations whose fastMRI ACS fractions give the ACS block sizes
            drawn per sample (supervised), so the model sees every ACS size it is evaluated at.
        ssdu_acceleration: Acceleration of the fixed SSDU training acquisitions.
        ssdu_rho: ``|Λ| / |Ω|``.
        ssdu_selection: ``uniform`` or ``gaussian``.
        max_train_slices: Use only the first N training slices (None = all).
        max_val_slices: Validate on the first N validation slices (None = all).
        val_accelerations: Accelerations validated each epoch (random masks).
        seed: Seed of everything random.
        bf16: bf16 autocast (on CUDA, and on CPUs with native bf16 support; elsewhere
            ignored with a note in the history).
        num_workers: DataLoader workers.
        augment: Training augmentation (supervised): ``false``, ``true`` (defaults) or a
            mapping of :class:`~activemri.recon_models.augment.AugmentConfig` ranges.
        anatomies: Train only on volumes of these anatomies (None = all).
        val_data: Held-out data for model selection: a folder or ``builtin:PRESET``, ideally
            of an anatomy left out of training (cross-anatomy validation). Its ``val_split``
            is validated each epoch and the best epoch by its mean SSIM is ``model.pt``;
            ``None`` selects on the training data's val split.
        val_split: Split of ``val_data`` used for selection (``val``, ``test`` or ``all``).
    """

    data: str = "builtin:default"
    mode: str = "supervised"
    loss: str = "l1"
    nll_weight: float = 0.1
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    lr_step: int = 40
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    patterns: list[str] = field(default_factory=lambda: ["random", "equispaced", "low_to_high"])
    max_fraction: float = 0.5
    acs_accelerations: list[float] = field(default_factory=lambda: [4.0, 8.0])
    ssdu_acceleration: float = 4.0
    ssdu_rho: float = 0.4
    ssdu_selection: str = "uniform"
    max_train_slices: int | None = None
    max_val_slices: int | None = None
    val_accelerations: list[float] = field(default_factory=lambda: [4.0, 8.0])
    seed: int = 0
    bf16: bool = False
    num_workers: int = 0
    augment: Any = None
    anatomies: list[str] | None = None
    val_data: str | None = None
    val_split: str = "val"

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], source: str | Path | None = None
    ) -> TrainConfig:
        """Build from a preset's ``train:`` mapping, rejecting unknown keys and wrong types.

        Args:
            values: The settings.
            source: The preset file they come from (named in errors).

        Raises:
            ValueError: For an unknown key, a value of the wrong type or inconsistent
                settings, naming the file and the key (``train.epochs``).
        """
        config = _config.from_mapping(cls, values, source=source, section="train")
        try:
            config.validate()
        except ValueError as exc:
            if source is None:
                raise
            raise ValueError(f"{source}: {exc}") from exc
        return config

    def validate(self) -> None:
        """Raise ``ValueError`` on inconsistent settings."""
        if self.mode not in ("supervised", "ssdu"):
            raise ValueError(f"mode must be 'supervised' or 'ssdu', got {self.mode!r}")
        if self.loss not in ("l1", "ssim"):
            raise ValueError(f"loss must be 'l1' or 'ssim', got {self.loss!r}")
        unknown = set(self.patterns) - set(MASK_TYPES) - set(MASK_TYPES_2D)
        if not self.patterns or unknown:
            raise ValueError(
                f"patterns must be among {list(MASK_TYPES)} (lines) or {list(MASK_TYPES_2D)} "
                f"(points of 3-D volumes), got {self.patterns}"
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0.0 < self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")
        if self.lr <= 0 or self.lr_step < 1 or not 0 < self.lr_gamma <= 1:
            raise ValueError("need lr > 0, lr_step >= 1 and 0 < lr_gamma <= 1")
        if not self.val_accelerations or not self.acs_accelerations:
            raise ValueError("val_accelerations and acs_accelerations must not be empty")
        if min(*self.val_accelerations, *self.acs_accelerations, self.ssdu_acceleration) < 1:
            raise ValueError("accelerations must be >= 1")
        if not 0.0 < self.ssdu_rho < 1.0:
            raise ValueError(f"ssdu_rho must be in (0, 1), got {self.ssdu_rho}")
        AugmentConfig.from_mapping(self.augment)
        if self.val_split not in ("train", "val", "test", "all"):
            raise ValueError(f"val_split must be train, val, test or all, got {self.val_split!r}")
        if self.ssdu_selection not in ("uniform", "gaussian"):
            raise ValueError(
                f"ssdu_selection must be uniform or gaussian, not {self.ssdu_selection!r}"
            )


def resolve_data(data: str) -> Path:
    """A data folder from a path or ``builtin:PRESET`` (generated and cached on first use)."""
    if data.startswith(BUILTIN_DATA_PREFIX):
        return ensure_builtin(data[len(BUILTIN_DATA_PREFIX) :])
    path = Path(data).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data folder {path} does not exist")
    return path


def training_domain(dataset: SliceDataset, config: TrainConfig) -> dict[str, Any]:
    """What a model was trained on, for its checkpoint (DESIGN section 6).

    Args:
        dataset: The training slices.
        config: The recipe.

    Returns:
        JSON-ready: anatomies and acquisitions (volume counts), k-space and target sizes, coil
        counts, the acceleration range of the training masks, the noise augmentation, the data
        spec and the volume count.
    """
    from collections import Counter

    vols = dataset.volumes
    widths = [int(v.geometry.padding_right - v.geometry.padding_left) for v in vols]
    augment = AugmentConfig.from_mapping(config.augment) if config.mode == "supervised" else None
    return {
        "data": config.data,
        "num_volumes": len(vols),
        "anatomies": dict(Counter(v.anatomy or "unknown" for v in vols)),
        "acquisitions": dict(Counter(v.acquisition or "unknown" for v in vols)),
        "kspace_shapes": sorted({f"{v.kspace_shape[0]}x{v.kspace_shape[1]}" for v in vols}),
        "recon_sizes": sorted(
            {f"{v.geometry.recon_size[0]}x{v.geometry.recon_size[1]}" for v in vols}
        ),
        "num_coils": sorted({v.num_coils for v in vols}),
        "measured_widths": [min(widths), max(widths)],
        "mode": config.mode,
        "accelerations": (
            [config.ssdu_acceleration]
            if config.mode == "ssdu"
            else [1.0 / config.max_fraction, max(config.acs_accelerations) / 0.32]
        ),
        "noise_augmentation": None if augment is None else augment.noise,
        "augment": None if augment is None else asdict(augment),
    }


def _training_mask_rule(config: TrainConfig) -> Callable[[SliceSample, np.random.Generator], Any]:
    def point_rule(sample: SliceSample, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Point masks of a 3-D volume's ky-kz plane, over the same range of counts."""
        if config.mode == "ssdu":
            raise ValueError(
                f"{sample.meta.file.name} is a 3-D volume: SSDU training is for line masks of "
                "2-D slices"
            )
        shape, plane = point_mask_rule_parts(sample)
        side = default_calibration_side(shape)
        fewest = min(side, shape[0]) * min(side, shape[1])
        most = max(fewest, round(config.max_fraction * int(plane.sum())))
        count = int(rng.integers(fewest, most + 1))
        patterns = [p for p in config.patterns if p in MASK_TYPES_2D] or ["random"]
        pattern = patterns[int(rng.integers(len(patterns)))]
        return make_mask_2d(pattern, shape, count, side, rng, plane)

    def rule(sample: SliceSample, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        if sample.meta.encoding == "3d":
            return point_rule(sample, rng)
        valid = sample.meta.valid_columns(sample.kspace.shape[-1]).numpy()
        n_valid = int(valid.sum())
        if config.mode == "ssdu":
            if sample.mask is not None:  # truly undersampled data: Ω is what was measured
                acs = sample.meta.num_low_frequency
                if acs is None:
                    acs = default_acs_lines(n_valid, config.ssdu_acceleration)
                return sample.mask.numpy() & valid, acs
            acs = default_acs_lines(n_valid, config.ssdu_acceleration)
            lines = max(acs, round(n_valid / config.ssdu_acceleration))
            return make_mask("random", len(valid), lines, acs, rng, valid)
        accel = config.acs_accelerations[int(rng.integers(len(config.acs_accelerations)))]
        acs = default_acs_lines(n_valid, accel)
        most = max(acs, round(config.max_fraction * n_valid))
        lines = int(rng.integers(acs, most + 1))
        line_patterns = [p for p in config.patterns if p in MASK_TYPES] or ["random"]
        pattern = line_patterns[int(rng.integers(len(line_patterns)))]
        return make_mask(pattern, len(valid), lines, acs, rng, valid)

    return rule


def _unused_parameters(loss_module: nn.Module, batch: MaskedBatch, config: TrainConfig) -> bool:
    """Whether one loss evaluation leaves some parameter without a gradient.

    DistributedDataParallel needs ``find_unused_parameters`` exactly then (e.g. an uncertainty
    head under SSDU); set without need it costs a graph traversal per step and warns.
    """
    lam_mask = None
    if config.mode == "ssdu":
        protected = acs_mask(batch.num_low, batch.mask.shape[-1])
        rng = np.random.default_rng(0)
        _, lam_mask = ssdu_split(batch.mask, protected, config.ssdu_rho, rng, config.ssdu_selection)
    with torch.random.fork_rng(devices=[]):
        loss_module(batch, lam_mask).backward()
    params = [p for p in loss_module.parameters() if p.requires_grad]
    unused = any(p.grad is None for p in params)
    for p in params:
        p.grad = None
    return unused


class _LossModule(nn.Module):
    """Computes the training loss inside ``forward`` so DistributedDataParallel can wrap it."""

    def __init__(self, model: Reconstructor, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, batch: MaskedBatch, lam_mask: torch.Tensor | None) -> torch.Tensor:
        cfg = self.config
        if cfg.mode == "ssdu":
            assert lam_mask is not None
            # Only Ω exists for self-supervision: drop everything else before any use.
            measured = apply_mask(batch.kspace, batch.mask)
            theta = batch.mask & ~lam_mask
            predicted = self.model.forward_kspace(
                measured, theta, num_low_frequencies=batch.num_low
            )
            return ssdu_kspace_loss(predicted, measured, lam_mask)
        assert batch.target is not None
        out = self.model(batch.kspace, batch.mask, num_low_frequencies=batch.num_low)
        return supervised_loss(
            out.image, out.uncertainty, batch.target, batch.data_range, cfg.loss, cfg.nll_weight
        )


def _distributed_context(device: torch.device) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # Rank 0 validates alone while the others wait: allow long validations.
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2)
        )
    return dist.get_rank(), world, device


def train(
    preset: str | Path | Mapping[str, Any] | ReconPreset,
    out_dir: str | Path,
    *,
    data: str | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the reconstructor a preset describes.

    Args:
        preset: Reconstructor preset (YAML path, mapping or parsed).
        out_dir: Output folder for ``checkpoint.pt``, ``model.pt`` and ``history.json``.
        data: Overrides the preset's ``train.data``.
        device: ``cpu`` or ``cuda``.
        resume: Continue from ``out_dir/checkpoint.pt``.
        overwrite: Start afresh in a folder that holds a run (its ``checkpoint.pt``,
            ``model.pt`` and ``history.json`` are deleted first).
        overrides: Overrides of individual train settings (e.g. ``{"epochs": 3}``).
        progress: Show tqdm progress bars (rank 0).

    Returns:
        The history: per epoch, train loss (mean over every process) and validation metrics.

    Raises:
        FileExistsError: If ``out_dir`` holds a run and neither ``resume`` nor ``overwrite``
            is set (a rerun would silently replace a finished model).
        ValueError: For invalid settings or unusable data.
    """
    spec = preset if isinstance(preset, ReconPreset) else load_preset(preset)
    settings = {**spec.train, **(overrides or {})}
    if data is not None:
        settings["data"] = data
    config = TrainConfig.from_mapping(settings, source=spec.source)
    rank, world, dev = _distributed_context(torch.device(device))
    out = Path(out_dir)
    run_files = [out / name for name in ("checkpoint.pt", "model.pt", "history.json")]
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    existing = [p for p in run_files if p.exists()]
    if existing and not (resume or overwrite):
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(p.name for p in existing)}): pass "
            "resume=True (--resume) to continue it or overwrite=True (--overwrite) to replace it"
        )
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for path in existing:
                path.unlink()

    folder, error = None, None
    if rank == 0:
        try:
            folder = resolve_data(config.data)
        except (FileNotFoundError, ValueError) as exc:
            error = str(exc)
    if world > 1:  # share the folder, or the error, so no rank waits forever
        shared = [None if folder is None else str(folder), error]
        dist.broadcast_object_list(shared, src=0)
        folder = None if shared[0] is None else Path(shared[0])
        error = shared[1]
    if error is not None or folder is None:
        raise FileNotFoundError(error or "no data folder")
    # SSDU never opens the training targets: only undersampled k-space exists for it.
    train_set = SliceDataset(
        folder, split="train", target_key=None if config.mode == "ssdu" else "auto",
        anatomies=config.anatomies,
    )  # fmt: skip
    val_set = SliceDataset(folder, split="val", warn=False, anatomies=config.anatomies)
    held_out = None
    if config.val_data is not None:
        held_folder = resolve_data(config.val_data)
        held_out = SliceDataset(
            held_folder, split=None if config.val_split == "all" else config.val_split, warn=False
        )
        if any(v.target_key is None for v in held_out.volumes):
            raise ValueError(f"validation needs targets; {config.val_data} lacks some")
    if config.mode == "supervised" and any(v.target_key is None for v in train_set.volumes):
        raise ValueError(f"supervised training needs targets; {folder} has volumes without any")
    if any(v.target_key is None for v in val_set.volumes):
        raise ValueError(f"validation needs targets; the val split of {folder} lacks some")

    torch.manual_seed(config.seed)
    model = resolve(spec.model, config=spec.config, allow_untrained=True).to(dev)
    if config.mode == "ssdu" and not model.predicts_kspace:
        raise ValueError(
            f"SSDU trains in k-space; {type(model).__name__} does not predict k-space "
            "(use a VarNet preset)"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma)
    history: list[dict[str, Any]] = []
    best = -math.inf
    start_epoch = 0
    ckpt_path = out / "checkpoint.pt"
    if resume:
        state = read_checkpoint(ckpt_path, map_location=dev)
        extra = state.get("extra", {})
        if not {"optimizer", "scheduler", "epoch", "history", "best", "train"} <= set(extra):
            raise CheckpointError(f"{ckpt_path} holds no training state to resume from")
        if state["config"] != model.config:
            raise CheckpointError(
                f"{ckpt_path} was trained with {state['config']}, not {model.config}"
            )
        previous = {k: v for k, v in json.loads(extra["train"]).items() if k != "epochs"}
        current = {k: v for k, v in json.loads(json.dumps(asdict(config))).items() if k != "epochs"}
        if previous != current:
            changed = sorted(k for k in current if previous.get(k) != current[k])
            raise CheckpointError(
                f"cannot resume {ckpt_path}: training settings changed ({', '.join(changed)}); "
                "only 'epochs' may change on resume"
            )
        load_state_strict(model, state["state_dict"], str(ckpt_path))
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        start_epoch = int(extra["epoch"]) + 1
        history = json.loads(extra["history"])
        best = float(extra["best"])

    loss_module: nn.Module = _LossModule(model, config)
    masked = MaskedSlices(train_set, _training_mask_rule(config), config.seed)
    if world > 1:
        probe = next(iter(iterate_batches(masked, min(2, len(masked)), [0, 1][: len(masked)], 0)))
        find_unused = _unused_parameters(loss_module, probe.to(dev), config)
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, find_unused_parameters=find_unused
        )
    n_train = (
        len(masked)
        if config.max_train_slices is None
        else min(config.max_train_slices, len(masked))
    )
    autocast = bf16_autocast(dev) if config.bf16 else nullcontext()
    augment = AugmentConfig.from_mapping(config.augment) if config.mode == "supervised" else None
    domain = training_domain(train_set, config)

    for epoch in range(start_epoch, config.epochs):
        masked.epoch = epoch
        torch.manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(
            n_train, generator=torch.Generator().manual_seed(config.seed + epoch)
        )
        per_rank = len(order) // world
        indices = order[rank * per_rank : (rank + 1) * per_rank].tolist()
        model.train()
        split_rng = np.random.default_rng([config.seed, epoch, rank])
        aug_gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 7919 + rank)
        losses: list[float] = []  # averaged over the processes
        local_losses: list[float] = []
        batches = iterate_batches(masked, config.batch_size, indices, config.num_workers)
        bar = tqdm(batches, total=math.ceil(len(indices) / config.batch_size),
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress or rank != 0,
                   leave=False)  # fmt: skip
        for batch in bar:
            batch = batch.to(dev)
            if augment is not None:
                kspace, target, data_range = augment_batch(
                    batch.kspace, batch.valid, model.recon_size, augment, aug_gen
                )
                batch = replace(batch, kspace=kspace, target=target, data_range=data_range)
            lam_mask = None
            if config.mode == "ssdu":
                protected = acs_mask(batch.num_low, batch.mask.shape[-1])
                _, lam_mask = ssdu_split(batch.mask, protected, config.ssdu_rho, split_rng,
                                         config.ssdu_selection)  # fmt: skip
            with autocast:
                loss = loss_module(batch, lam_mask)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch + 1}; lower the learning rate or "
                    "check the data (activemri data check)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            local_losses.append(float(loss.detach()))
            reported = loss.detach().float()
            if world > 1:  # the loss of the whole global batch, not rank 0's share
                dist.all_reduce(reported)
                reported = reported / world
            losses.append(float(reported))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        scheduler.step()
        rank_means = [float(np.mean(local_losses))]
        if world > 1:
            local = torch.tensor(rank_means, device=dev)
            gathered = [torch.zeros_like(local) for _ in range(world)]
            dist.all_gather(gathered, local)
            rank_means = [float(t) for t in gathered]

        if rank == 0:
            record: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(losses))}
            if world > 1:
                record["train_loss_per_rank"] = rank_means
            sets = [("val", val_set)] + ([("heldout", held_out)] if held_out is not None else [])
            for prefix, dataset in sets:
                for acc in config.val_accelerations:
                    res = evaluate_reconstructor(model, dataset, "random", acc, seed=config.seed,
                                                 device=dev, batch_size=config.batch_size,
                                                 max_slices=config.max_val_slices)  # fmt: skip
                    for metric in ("ssim", "psnr", "nmse"):
                        record[f"{prefix}_{metric}_{acc:g}x"] = res["model"][metric]["mean"]
                    record[f"{prefix}_zf_ssim_{acc:g}x"] = res["zero_filled"]["ssim"]["mean"]
            select = sets[-1][0]
            score = float(
                np.mean([record[f"{select}_ssim_{a:g}x"] for a in config.val_accelerations])
            )
            record["selection"] = select
            history.append(record)
            if score > best:
                best = score
                if model.has_uncertainty:
                    # Temperature scaling on the in-domain val split, for model.pt only: the
                    # model being trained keeps sigma_scale 1 (its NLL and resume need that).
                    scale = fit_sigma_scale(model, val_set, tuple(config.val_accelerations),
                                            seed=config.seed, device=dev,
                                            batch_size=config.batch_size,
                                            max_slices=config.max_val_slices)  # fmt: skip
                    record["sigma_scale"] = scale
                    model.set_sigma_scale(scale)
                model.save(out / "model.pt", extra={"train": json.dumps(asdict(config)),
                                                    "epoch": epoch, "val_ssim": score,
                                                    "domain": json.dumps(domain)})  # fmt: skip
                model.set_sigma_scale(1.0)
                model.train()
            model.save(
                ckpt_path,
                extra={
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "epoch": epoch, "history": json.dumps(history), "best": best,
                    "train": json.dumps(asdict(config)),
                },
            )  # fmt: skip
            atomic_write_text(out / "history.json", json.dumps(history, indent=2))
            if progress:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float))
                tqdm.write(f"epoch {epoch + 1}: {shown}")
        if world > 1:
            dist.barrier()
    return {"history": history, "best_val_ssim": best}
