"""Is a trained reconstructor any good on this data? The domain check (DESIGN section 6).

A network trained on one simulator can be worse than zero-filled on real anatomy, and then
every reward, ranking and learned mask computed through it is wrong. :func:`check_domain`
reconstructs a seeded sample of slices at 4x and 8x (random masks, fastMRI's ACS fractions,
volume maximum as data range) and compares the per-image SSIM with zero-filled on the same
masks. ``activemri recon check`` prints it; the environment runs it (cached per model and
data folder, :func:`guarded_domain_check`) the first time a trained reconstructor meets a
folder it was not trained on, and warns loudly when the model does not help there.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activemri._io import atomic_write_text
from activemri.data import SliceDataset
from activemri.kspace import zero_filled
from activemri.metrics import ssim
from activemri.recon_models.base import Reconstructor
from activemri.recon_models.evaluate import MaskedSlices, fixed_mask_rule, iterate_batches

__all__ = [
    "DomainCheck",
    "DomainWarning",
    "check_domain",
    "guarded_domain_check",
    "in_training_domain",
    "model_fingerprint",
]

CHECK_VERSION = 1


class DomainWarning(UserWarning):
    """A trained reconstructor is not better than zero-filled on the data it is used with."""


@dataclass(frozen=True)
class DomainCheck:
    """The outcome of a domain check.

    Attributes:
        data: The data folder checked.
        num_slices: Slices reconstructed (per acceleration).
        accelerations: Accelerations checked.
        ssim: Mean per-image SSIM of the model, per acceleration (``"4x"``: value).
        ssim_zero_filled: Same for zero-filled on the same masks.
        wins: Fraction of slices where the model beats zero-filled, per acceleration.
        helps: True when the model beats zero-filled on the mean at every acceleration.
        seed: Seed of the slice sample and the masks.
        model: Fingerprint of the model checked.
    """

    data: str
    num_slices: int
    accelerations: list[float]
    ssim: dict[str, float]
    ssim_zero_filled: dict[str, float]
    wins: dict[str, float]
    helps: bool
    seed: int
    model: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``results.json`` and the cache)."""
        return asdict(self)

    def summary(self) -> str:
        """One line per acceleration and the verdict."""
        rows = [
            f"  {key}: SSIM {self.ssim[key]:.4f} vs zero-filled {self.ssim_zero_filled[key]:.4f} "
            f"({self.ssim[key] - self.ssim_zero_filled[key]:+.4f}; better on "
            f"{100 * self.wins[key]:.0f}% of slices)"
            for key in self.ssim
        ]
        verdict = (
            "the model helps on this data" if self.helps
            else "the model is NOT better than zero-filled on this data: rewards, rankings and "
                 "learned masks computed through it are not meaningful here"
        )  # fmt: skip
        return "\n".join([f"{self.num_slices} slices of {self.data}:", *rows, verdict])


def model_fingerprint(model: Reconstructor) -> str:
    """SHA-256 (16 hex digits) of a model's class, config and weights."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    digest.update(json.dumps(model.config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def _folder_fingerprint(dataset: SliceDataset) -> str:
    digest = hashlib.sha256()
    for info in dataset.volumes:
        stat = info.path.stat()
        digest.update(f"{info.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def check_domain(
    model: Reconstructor,
    dataset: SliceDataset,
    *,
    indices: Sequence[int] | None = None,
    num_slices: int = 32,
    accelerations: Sequence[float] = (4.0, 8.0),
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
) -> DomainCheck:
    """Compare ``model`` with zero-filled on a seeded sample of ``dataset``'s slices.

    Args:
        model: The reconstructor.
        dataset: Slices with targets.
        indices: Slices to sample from (default: all of ``dataset``).
        num_slices: Sample size (all slices if fewer).
        accelerations: Random-mask accelerations.
        seed: Seed of the sample and of the masks.
        device: Where to run.
        batch_size: Slices per forward pass.

    Returns:
        The :class:`DomainCheck`.
    """
    pool = list(range(len(dataset))) if indices is None else list(indices)
    if not pool:
        raise ValueError("no slice to check the reconstructor on")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.permutation(pool)[: min(num_slices, len(pool))].tolist())
    model = model.to(torch.device(device)).eval()
    ours, zfs, wins = {}, {}, {}
    for acceleration in accelerations:
        key = f"{acceleration:g}x"
        masked = MaskedSlices(dataset, fixed_mask_rule("random", acceleration), seed,
                              per_volume=True)  # fmt: skip
        model_ssim: list[float] = []
        zf_ssim: list[float] = []
        for batch in iterate_batches(masked, batch_size, picked):
            batch = batch.to(torch.device(device))
            if batch.target is None:
                raise ValueError("the domain check needs fully sampled targets")
            out = model(batch.kspace, batch.mask, num_low_frequencies=batch.num_low)
            zf = zero_filled(batch.kspace, batch.mask, model.recon_size).float()
            model_ssim += ssim(out.image.float(), batch.target, batch.data_range).tolist()
            zf_ssim += ssim(zf, batch.target, batch.data_range).tolist()
        ours[key] = float(np.mean(model_ssim))
        zfs[key] = float(np.mean(zf_ssim))
        wins[key] = float(np.mean(np.asarray(model_ssim) > np.asarray(zf_ssim)))
    helps = all(ours[k] > zfs[k] for k in ours)
    return DomainCheck(
        data=str(dataset.root), num_slices=len(picked), accelerations=[float(a) for a in
        accelerations], ssim=ours, ssim_zero_filled=zfs, wins=wins, helps=helps, seed=seed,
        model=model_fingerprint(model),
    )  # fmt: skip


def in_training_domain(model: Reconstructor, data: str | None, folder: Path) -> bool | None:
    """Whether ``folder`` is the data ``model`` was trained on.

    Args:
        model: A reconstructor; its :attr:`~Reconstructor.training_domain` is read.
        data: The data spec the caller used (``builtin:NAME`` or a path), if any.
        folder: The resolved folder.

    Returns:
        ``True`` / ``False``, or ``None`` when the model records no training data.
    """
    domain = model.training_domain
    if not domain or not domain.get("data"):
        return None
    trained = str(domain["data"])
    if trained.startswith("builtin:"):
        return data == trained
    try:
        return Path(trained).expanduser().resolve() == folder.resolve()
    except OSError:
        return False


def _cache_root(cache_dir: str | Path | None) -> Path:
    from activemri.data.builtin import default_cache_dir

    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "domain_checks"


def guarded_domain_check(
    model: Reconstructor,
    dataset: SliceDataset,
    *,
    data: str | None,
    indices: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    num_slices: int = 16,
) -> dict[str, Any] | None:
    """Run (or reuse) the domain check when a trained model meets data outside its domain.

    Nothing is checked for models without parameters (zero-filled, TV) or for the data the
    model was trained on. Otherwise the check runs once per (model, folder contents) and is
    cached under ``CACHE/domain_checks``; a :class:`DomainWarning` is emitted (and printed)
    every time the model is used where it does not beat zero-filled.

    Args:
        model: The reconstructor.
        dataset: The data it will be used on.
        data: The data spec given by the caller (``builtin:NAME`` or a path).
        indices: Slices of ``dataset`` in use (default: all).
        device: Where to run the check.
        cache_dir: Cache root (default: activemri's cache).
        num_slices: Sample size.

    Returns:
        The check as a dict (with ``"cached"``), or ``None`` when no check was needed.
    """
    if not any(True for _ in model.parameters()):
        return None
    if in_training_domain(model, data, Path(dataset.root)):
        return None
    if any(v.target_key is None for v in dataset.volumes):
        warnings.warn(
            f"{dataset.root} has files without fully sampled targets: the reconstructor "
            f"({type(model).__name__}) cannot be checked against zero-filled there, and "
            "nothing says it helps on this data",
            DomainWarning,
            stacklevel=3,
        )
        return {"data": str(dataset.root), "skipped": "no fully sampled targets"}
    key = hashlib.sha256(
        f"{CHECK_VERSION}:{model_fingerprint(model)}:{_folder_fingerprint(dataset)}:"
        f"{num_slices}:{list(indices) if indices is not None else None}".encode()
    ).hexdigest()[:24]
    path = _cache_root(cache_dir) / f"{key}.json"
    result: dict[str, Any] | None = None
    if path.is_file():
        try:
            result = json.loads(path.read_text())
            result["cached"] = True
        except (OSError, ValueError):
            result = None
    if result is None:
        check = check_domain(model, dataset, indices=indices, num_slices=num_slices,
                             device=device)  # fmt: skip
        result = check.to_dict()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(result, indent=2))
        except OSError:
            pass  # a read-only cache costs a re-check next time, nothing else
        result["cached"] = False
    if not result["helps"]:
        rows = ", ".join(
            f"{k}: {result['ssim'][k]:.3f} vs zero-filled {result['ssim_zero_filled'][k]:.3f}"
            for k in result["ssim"]
        )
        warnings.warn(
            f"the reconstructor ({type(model).__name__}) is NOT better than zero-filled on "
            f"{dataset.root} ({rows}; {result['num_slices']} slices): it was trained on "
            f"{(model.training_domain or {}).get('data', 'unknown data')}. Rewards and "
            "rankings computed through it are not meaningful here; train one on this data "
            "(activemri recon train --data DIR) or use reconstructor=zero_filled.",
            DomainWarning,
            stacklevel=3,
        )
    return result
