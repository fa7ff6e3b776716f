"""Build a kio entity of any version from a plain dict tree, so one handler serves many versions.

Keys that this version's schema lacks but another version of the same message has are dropped (a handler
passes `log_start_offset` to every Produce version; v3 has none); a key that no version has is a mistake and
raises TypeError. Missing fields get their default or zero value.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import types
import typing
from functools import cache
from typing import Any

from fedkafka.protocol.errors import zero_value

# kio's generated modules: kio.schema.<message>.v<N>.<request|response|data|header>
_VERSIONED = re.compile(r"(kio\.schema\.\w+)\.v\d+\.(\w+)")

Path = tuple[str, ...]  # field names from the message's top-level entity down to a nested one


@cache
def _fields(tp: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type hint, has default) of each field."""
    hints = typing.get_type_hints(tp)
    return tuple((f.name, hints[f.name], f.default is not dataclasses.MISSING
                  or f.default_factory is not dataclasses.MISSING) for f in dataclasses.fields(tp))


def build(tp: type, data: dict[str, Any]) -> Any:
    return _build(tp, data, tp, ())


def _build(tp: type, data: dict[str, Any], message: type, path: Path) -> Any:
    known = _known_names(message, path)
    if not known.issuperset(data):
        unknown = data.keys() - known
        where = ".".join((message.__name__, *path))
        raise TypeError(f"{where} has no field {', '.join(map(repr, sorted(unknown)))} in any version")
    kwargs: dict[str, Any] = {}
    for name, hint, has_default in _fields(tp):
        if name in data:
            kwargs[name] = _convert(hint, data[name], message, (*path, name))
        elif not has_default:
            kwargs[name] = _zero(hint)
    return tp(**kwargs)


def _convert(hint: Any, value: Any, message: type, path: Path) -> Any:
    if value is None:
        return None
    entity, is_tuple, items = _shape(hint)
    if isinstance(value, dict):
        if entity is None:
            raise TypeError(f"{hint!r} is not an entity type")
        return _build(entity, value, message, path)
    if is_tuple and isinstance(value, list | tuple):
        if items is not None:
            return tuple(_build(items, v, message, path) if isinstance(v, dict) else v for v in value)
        return tuple(value)
    return value


@cache
def _shape(hint: Any) -> tuple[type | None, bool, type | None]:
    """What a field of this type hint makes of a value, worked out once per hint (typing's introspection is
    slow and every Produce and Fetch answer is built here): (the entity a dict builds, whether a list becomes a
    tuple, the entity each dict item of that list builds)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    entity = _entity_in(hint)
    if typing.get_origin(hint) is not tuple:
        return entity, False, None
    (item,) = typing.get_args(hint)[:1]
    return entity, True, item if isinstance(item, type) and dataclasses.is_dataclass(item) else None


@cache
def _zero(hint: Any) -> Any:
    """A missing field's value; cached, since every zero value is immutable (ints, strings, tuples, frozen
    entities)."""
    return zero_value(hint)


def _entity_in(hint: Any) -> type | None:
    """The entity type a field holds: itself, or inside `X | None`, `tuple[X, ...]` or `tuple[X, ...] | None`."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if (entity := _entity_in(arg)) is not None:
            return entity
    return None


@cache
def _known_names(message: type, path: Path) -> frozenset[str]:
    """The field names the entity at `path` inside `message` has in any version of the message."""
    names: set[str] = set()
    for version in _versions_of(message):
        entity = _follow(version, path)
        if entity is not None:
            names.update(f.name for f in dataclasses.fields(entity))
    return frozenset(names)


def _follow(tp: type, path: Path) -> type | None:
    for name in path:
        entity = _entity_in(typing.get_type_hints(tp).get(name))
        if entity is None:
            return None
        tp = entity
    return tp


@cache
def _versions_of(message: type) -> tuple[type, ...]:
    """`message`'s class in every version kio has of it (just `message` outside kio's versioned schemas)."""
    match = _VERSIONED.fullmatch(message.__module__)
    if match is None:
        return (message,)
    package, leaf = match.groups()
    found = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not re.fullmatch(r"v\d+", info.name):
            continue
        try:
            module = importlib.import_module(f"{package}.{info.name}.{leaf}")
        except ImportError:
            continue
        other = getattr(module, message.__qualname__, None)
        if isinstance(other, type) and dataclasses.is_dataclass(other):
            found.append(other)
    return tuple(found) or (message,)
