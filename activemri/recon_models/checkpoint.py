"""Reconstructor checkpoints: atomic writes and loading that never runs code from the file.

A checkpoint is a ``torch.save`` of a plain dictionary: format tag, class path, constructor
config, ``state_dict`` and the activemri version (plus optional ``extra`` entries such as
training state). Loading uses ``torch.load(..., weights_only=True)``, which refuses pickled
objects, and imports the stored class path only for built-in classes, for the class the
caller names, or when the caller passes ``trust_class_path=True``: that rule lives in
:func:`checkpoint_class` and nowhere else.

This module does not import :mod:`activemri.recon_models.base` (the contract's
:meth:`~activemri.recon_models.base.Reconstructor.save` / ``load`` call it), so the classes
it handles are passed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from activemri._io import atomic_path
from activemri._version import __version__
from activemri.recon_models.classes import (
    class_path_of,
    import_class,
    is_reconstructor_class,
    needs_trust,
)

if TYPE_CHECKING:
    from activemri.recon_models.base import Reconstructor

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "atomic_torch_save",
    "checkpoint_class",
    "class_path_of",
    "load_reconstructor",
    "load_state_strict",
    "read_checkpoint",
    "save_reconstructor",
    "weights_digest",
]

CHECKPOINT_FORMAT = "activemri.reconstructor/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, untrusted or does not fit the model."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the target folder, fsync, then rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_reconstructor(
    model: Reconstructor, path: str | Path, extra: Mapping[str, Any] | None = None
) -> None:
    """Write ``model`` (class path, config, weights, version) to ``path`` atomically.

    Args:
        model: The reconstructor.
        path: Destination file.
        extra: More entries to store (tensors, numbers, strings, lists, dicts only).
    """
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "class_path": class_path_of(type(model)),
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "activemri_version": __version__,
    }
    if extra:
        payload["extra"] = dict(extra)
    atomic_torch_save(payload, path)


def read_checkpoint(
    path: str | Path, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint's dictionary safely (``weights_only=True``) and check its format.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointError: If the file is not a readable activemri checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for foreign objects, RuntimeError for junk
        raise CheckpointError(
            f"{path} is not a loadable activemri checkpoint (only tensors and plain data are "
            f"accepted; nothing in the file was executed): {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an activemri reconstructor checkpoint")
    for key in ("class_path", "config", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path} lacks {key!r}")
    return payload


def load_reconstructor(
    path: str | Path,
    map_location: str | torch.device | None = "cpu",
    cls: type[Reconstructor] | None = None,
    trust_class_path: bool = False,
) -> Reconstructor:
    """Rebuild a reconstructor from a checkpoint.

    Args:
        path: Checkpoint file.
        map_location: Where to put the tensors.
        cls: The expected class; the checkpoint must have been saved from it.
        trust_class_path: Import the stored class path even if it is not built in. Only for
            files you trust: importing a module runs its code.

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: Untrusted or mismatched class, missing/unexpected/mis-shaped weights.
    """
    payload = read_checkpoint(path, map_location)
    stored = str(payload["class_path"])
    model_cls = checkpoint_class(stored, cls=cls, trust_class_path=trust_class_path, where=path)
    try:
        model = model_cls(**payload["config"])
    except TypeError as exc:
        raise CheckpointError(f"{path}: config does not fit {stored}: {exc}") from exc
    load_state_strict(model, payload["state_dict"], str(path))
    domain = payload.get("extra", {}).get("domain")
    if isinstance(domain, str):
        try:
            model.training_domain = json.loads(domain)
        except ValueError:
            model.training_domain = None
    model.eval()
    return model


def checkpoint_class(
    stored: str,
    cls: type[Reconstructor] | None = None,
    trust_class_path: bool = False,
    where: str | Path = "checkpoint",
) -> type[Reconstructor]:
    """The class to rebuild a checkpoint's model with: the trust rule for stored class paths.

    A class path read from a file is imported only if it is built into activemri or the
    caller trusts the file (``trust_class_path=True``): importing a module runs its code.
    With ``cls`` given nothing is imported; the file must have been saved from ``cls``.

    Args:
        stored: The class path stored in the checkpoint.
        cls: The class the caller expects, if any.
        trust_class_path: Import ``stored`` even if it is not built in.
        where: The file, for messages.

    Raises:
        CheckpointError: Untrusted, mismatched or non-reconstructor class.
    """
    if cls is not None:
        if class_path_of(cls) != stored:
            raise CheckpointError(f"{where} holds a {stored} model, not {class_path_of(cls)}")
        return cls
    if needs_trust(stored) and not trust_class_path:
        raise CheckpointError(
            f"{where} names the class {stored!r}, which is not built into activemri; importing "
            "it would run its module's code. Pass cls=YourClass (or trust_class_path=True for "
            "a file you trust)."
        )
    try:
        imported = import_class(stored)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    if not is_reconstructor_class(imported):
        raise CheckpointError(f"{stored} in {where} is not a Reconstructor")
    cls_: type[Reconstructor] = imported
    return cls_


def load_state_strict(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str
) -> None:
    """Load ``state`` into ``model``, naming every missing, unexpected or mis-shaped key.

    Raises:
        CheckpointError: If the keys or shapes do not match exactly.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:3]}")
        raise CheckpointError(f"{where} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of every parameter and buffer of ``model``: names, dtypes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
