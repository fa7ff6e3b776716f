"""Build a kio entity of any version from a plain dict tree, so one handler serves many versions.

Keys that the version's schema lacks are dropped, missing fields get their default or zero value.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any

from fedkafka.protocol.errors import zero_value


@cache
def _fields(tp: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type hint, has default) of each field."""
    hints = typing.get_type_hints(tp)
    return tuple((f.name, hints[f.name], f.default is not dataclasses.MISSING
                  or f.default_factory is not dataclasses.MISSING) for f in dataclasses.fields(tp))


def build(tp: type, data: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for name, hint, has_default in _fields(tp):
        if name in data:
            kwargs[name] = _convert(hint, data[name])
        elif not has_default:
            kwargs[name] = zero_value(hint)
    return tp(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return build(_entity_of(hint), value)
    if isinstance(value, list | tuple) and typing.get_origin(hint) is tuple:
        (item,) = typing.get_args(hint)[:1]
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            return tuple(build(item, v) if isinstance(v, dict) else v for v in value)
        return tuple(value)
    return value


def _entity_of(hint: Any) -> type:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if isinstance(arg, type) and dataclasses.is_dataclass(arg):
            return arg
    raise TypeError(f"{hint!r} is not an entity type")
