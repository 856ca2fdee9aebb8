"""Atomic, durable file writes: temporary file in the target folder, fsync, rename.

A reader sees either the old file or the complete new one, never a partial write, and after
the rename returns the data have reached the disk. Files get the permissions an ``open()``
would give them under the process umask (``mkstemp`` alone would make them private).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "read_yaml", "read_yaml_mapping"]


def _umask_mode() -> int:
    """``0o666`` less the process umask (``os.umask`` can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and renamed over ``path``.

    Usage: ``with atomic_path(p) as tmp: write_something(tmp)``. On an exception the
    temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write(path: str | Path, writer: Callable[[Path], object]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def read_yaml(path: str | Path) -> object:
    """Parse a YAML file with ``yaml.safe_load`` (no tags that construct Python objects).

    Raises:
        ValueError: Naming the file and the line, for malformed YAML or a tag such as
            ``!!python/object`` that would construct a Python object.
    """
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}" if mark is None else f"{path}:{mark.line + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(
            f"{where}: not valid YAML for activemri ({' '.join(problem.split())})"
        ) from exc


def read_yaml_mapping(path: str | Path, kind: str) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping (a preset of some ``kind``).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: Naming the file, for malformed YAML or a document that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} {path} does not exist")
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a {kind} must be a YAML mapping, got {type(doc).__name__}")
    return doc
