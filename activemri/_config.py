"""Typed construction of configuration dataclasses from parsed YAML (or any mapping).

Every preset parser (env, scenario, reconstructor, training, agent) builds its dataclass with
:func:`from_mapping`, so an unknown key or a value of the wrong type is one
``ValueError`` naming the file and the key::

    envs/my-env.yaml: unknown key(s) ['budgett'] in env config; allowed: [...]
    recon_models/unet.yaml: train.epochs must be int, got 'two' (str)

Values are checked against the dataclass's annotations (``typing.get_type_hints``) and
converted only where the conversion is lossless and expected: a list given for a ``tuple``
field becomes a tuple (and a tuple for a ``list`` field a list), a string given for a
``Path`` field becomes a path, and a mapping given for a nested dataclass field is built
with :func:`from_mapping` itself.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import numbers
import types
from collections.abc import Collection, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = ["from_mapping"]

T = TypeVar("T")

_SEQUENCES = (
    tuple,
    list,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
)
_MAPPINGS = (
    dict,
    collections.abc.Mapping,
    collections.abc.MutableMapping,
)


class _Mismatch(Exception):
    """A value does not fit an annotation (turned into one ``ValueError`` per field)."""


def from_mapping(
    cls: type[T],
    values: Mapping[str, Any],
    *,
    source: str | Path | None = None,
    section: str | None = None,
    exclude: Collection[str] = (),
) -> T:
    """Build the dataclass ``cls`` from ``values``, checking keys and types first.

    Supported annotations: ``bool`` (not an int), ``int`` (any integral number but not a
    bool), ``float`` (any real number but not a bool; ints are accepted), ``str``, ``Path``
    (a string is accepted and converted), ``None`` and unions with it (``X | None``),
    ``tuple[X, ...]`` / ``tuple[X, Y]`` / ``list[X]`` / ``Sequence[X]`` (a list or a tuple
    is accepted and converted to the annotated container), ``Mapping[K, V]`` / ``dict[K, V]``,
    ``Literal[...]``, nested dataclasses (an instance, or a mapping built recursively with
    the section ``section.key``) and other classes (``isinstance``). ``Any`` and other
    annotations accept every value.

    Args:
        cls: A dataclass type.
        values: Field values, e.g. a parsed YAML mapping. Fields left out keep their
            defaults.
        source: The file the values come from; it starts every error message.
        section: Where the values sit in that file (``"train"``, ``"scenario"``); names the
            keys in error messages (``train.epochs``). ``None``: the class name is used for
            unknown keys and keys are named alone.
        exclude: Fields that may not be given (set by the caller, e.g. ``source``).

    Returns:
        ``cls(**converted_values)``.

    Raises:
        ValueError: For unknown or missing keys, a value of the wrong type, or a
            ``ValueError`` / ``TypeError`` raised by ``cls`` itself (``__post_init__``),
            prefixed with ``source``.
        TypeError: If ``cls`` is not a dataclass or ``values`` is not a mapping.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_mapping needs a dataclass type, got {cls!r}")
    prefix = "" if source is None else f"{source}: "
    where = section or cls.__name__
    if not isinstance(values, Mapping):
        raise ValueError(
            f"{prefix}{where} must be a mapping, got {values!r} ({type(values).__name__})"
        )
    init_fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in exclude]
    allowed = {f.name for f in init_fields}
    unknown = [key for key in values if key not in allowed]
    if unknown:
        raise ValueError(
            f"{prefix}unknown key(s) {sorted(unknown, key=str)} in {where}; "
            f"allowed: {sorted(allowed)}"
        )
    missing = [
        f.name
        for f in init_fields
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{prefix}{where} needs key(s) {missing}")
    hints = _hints(cls)
    converted: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{section}.{key}" if section else key
        hint = hints.get(key, Any)
        try:
            converted[key] = _convert(hint, value, source=source, path=path)
        except _Mismatch:
            raise ValueError(
                f"{prefix}{path} must be {_describe(hint)}, got {value!r} ({type(value).__name__})"
            ) from None
    try:
        return cls(**converted)
    except (ValueError, TypeError) as exc:
        if not prefix or str(exc).startswith(prefix):
            raise
        raise _prefixed(exc, prefix) from exc


@functools.cache
def _hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved annotations of ``cls`` (``from __future__ import annotations`` aware)."""
    try:
        return get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be evaluated: accept anything
        return {}


def _prefixed(exc: Exception, prefix: str) -> Exception:
    """``exc`` with ``prefix`` before its message, of the same type where possible."""
    message = f"{prefix}{exc}"
    try:
        new = type(exc)(message)
    except Exception:  # an exception type with another constructor
        new = ValueError(message) if isinstance(exc, ValueError) else TypeError(message)
    if str(new) != message:
        new = ValueError(message) if isinstance(exc, ValueError) else TypeError(message)
    return new


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def _convert(hint: Any, value: Any, *, source: str | Path | None, path: str) -> Any:
    """``value`` checked against ``hint`` (and converted); raises :class:`_Mismatch`."""
    if hint is Any or hint is object:
        return value
    if hint is None or hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    origin = get_origin(hint)
    args = get_args(hint)
    if _is_union(origin):
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, source=source, path=path)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(hint, type) and issubclass(hint, PurePath):
        if isinstance(value, PurePath):
            return value
        if isinstance(value, str):
            return hint(value)
        raise _Mismatch
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return from_mapping(hint, value, source=source, section=path)
        raise _Mismatch
    container = origin if origin is not None else hint
    if container in _SEQUENCES:
        return _convert_sequence(container, args, value, source=source, path=path)
    if container in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise _Mismatch
        if len(args) != 2 or all(a is Any for a in args):
            return value
        return {
            _convert(args[0], k, source=source, path=path): _convert(
                args[1], v, source=source, path=f"{path}.{k}"
            )
            for k, v in value.items()
        }
    if isinstance(hint, type) and origin is None:
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value  # TypeVar, Callable, ...: not checked


def _convert_sequence(
    container: Any, args: tuple[Any, ...], value: Any, *, source: str | Path | None, path: str
) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _Mismatch
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if args == ((),):  # tuple[()]
            args = ()
        if len(value) != len(args):
            raise _Mismatch
        return tuple(
            _convert(a, v, source=source, path=f"{path}[{i}]")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    item = args[0] if args else Any
    items = [_convert(item, v, source=source, path=f"{path}[{i}]") for i, v in enumerate(value)]
    if container is tuple:
        return tuple(items)
    if container is list:
        return items
    return type(value)(items)


def _describe(hint: Any) -> str:
    """``hint`` in words, for error messages (``int or None``, ``a list of str``)."""
    if hint is None or hint is type(None):
        return "None"
    if hint is Any or hint is object:
        return "anything"
    origin = get_origin(hint)
    args = get_args(hint)
    if _is_union(origin):
        named = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            named.append("None")
        return " or ".join(named)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint in (bool, int, float, str):
        return str(hint.__name__)
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return "a path"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} fields"
    container = origin if origin is not None else hint
    if container in _SEQUENCES:
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
        item = args[0] if args else Any
        return "a list" if item is Any else f"a list of {_describe(item)}"
    if container in _MAPPINGS:
        return "a mapping"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint)
