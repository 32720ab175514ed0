"""Building the stages' frozen config dataclasses from plain data (TOML tables, flags, JSON).

The stage configs (``VadConfig``, ``SmoothingConfig``, ``AlertRule``, ...) are the only
definitions of their settings: their field annotations give the types, their defaults the
defaults, and their ``__post_init__`` checks the values, raising
:class:`~emostream.errors.InvalidSettingError` with the key. :func:`build` checks keys and
types against the annotations first, so that every problem comes out as one
:class:`~emostream.errors.ConfigError` naming where, section and key:

* unknown keys are refused with the list of known ones;
* a TOML integer is accepted for a float setting (``2`` for ``2.0``); NaN and infinities
  are refused for every float setting (TOML ``nan``/``inf``, ``--min-dwell nan``);
* a list is accepted for a ``tuple[X, ...]`` setting (each item checked), and so is a
  single item (``emotions = "angry"``);
* ``Literal[...]`` settings take one of their values.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from emostream.errors import ConfigError, InvalidSettingError

T = TypeVar("T")
_NO = object()


def field_types(cls: type[Any]) -> dict[str, Any]:
    """Field name -> resolved annotation of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def convert(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` wants it, or the sentinel ``_NO`` when it does not fit."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        # exact scalar matches first, so that "a" for `str | tuple[str, ...]` stays a string
        for arg in sorted(args, key=lambda a: get_origin(a) is not None):
            converted = convert(value, arg)
            if converted is not _NO:
                return converted
        return _NO
    if origin is Literal:
        return value if value in get_args(annotation) else _NO
    if origin is tuple:
        item_type = get_args(annotation)[0]
        items = value if isinstance(value, list | tuple) else [value]
        converted_items = [convert(v, item_type) for v in items]
        return _NO if any(c is _NO for c in converted_items) else tuple(converted_items)
    if origin is not None:  # list[...], dict[...]: the container only
        return value if isinstance(value, origin) else _NO
    if annotation is type(None):
        return None if value is None else _NO
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else _NO
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    return value if isinstance(value, annotation) else _NO


def type_name(annotation: Any) -> str:
    """How a person would name the type a setting wants."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(annotation) if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if origin is tuple:
        item = type_name(get_args(annotation)[0])
        return f"a list of {item.removeprefix('an ').removeprefix('a ')}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def refuse_unknown_keys(cls: type[Any], data: dict[str, Any], what: str) -> None:
    """ConfigError when ``data`` (model metadata) has keys ``cls`` does not know: a newer emostream made it."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{what} has unknown keys {unknown}; this runtime knows {sorted(known)}. "
            "The model was made by a newer emostream: upgrade emostream or use another model"
        )


def check_values(cls: type[Any], data: Any, where: str) -> dict[str, Any]:
    """``data`` (a table) with its keys checked against ``cls``'s fields and its values converted."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table of settings, got {type(data).__name__}")
    fields = field_types(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where} {key} is not a known key; known keys: {', '.join(sorted(fields))}")
        converted = convert(value, fields[key])
        if converted is _NO:
            expected = type_name(fields[key])
            if isinstance(value, float) and not math.isfinite(value):
                expected = f"a finite value ({expected})"
            raise ConfigError(f"{where} {key} is {value!r} ({type(value).__name__}); expected {expected}")
        values[key] = converted
    return values


def build(cls: type[T], data: Any, where: str) -> T:
    """An instance of dataclass ``cls`` from a table; ConfigError names ``where`` (e.g. ``f.toml: [vad]``) and key."""
    values = check_values(cls, data, where)
    try:
        return cls(**values)
    except InvalidSettingError as exc:
        raise ConfigError(f"{where} {exc.key} {exc.detail}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{where} {exc}") from exc


def replace(obj: T, changes: dict[str, Any], where: str) -> T:
    """``obj`` with ``changes`` applied (None values ignored), checked as :func:`build` checks."""
    given = {k: v for k, v in changes.items() if v is not None}
    if not given:
        return obj
    values = check_values(type(obj), given, where)
    try:
        return dataclasses.replace(obj, **values)  # type: ignore[type-var]
    except InvalidSettingError as exc:
        raise ConfigError(f"{where} {exc.key} {exc.detail}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{where} {exc}") from exc


def to_plain(obj: Any) -> Any:
    """JSON-ready form of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj
