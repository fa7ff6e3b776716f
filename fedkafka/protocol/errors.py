"""Error responses built generically from kio's response types.

`error_response(resp_t, code)` fills every `error_code` field (top level and nested entities present
in the response) with `code`, every other field with its zero value; callers that know the request
fill the per-partition lists themselves (see proxy handlers).
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
import uuid
from typing import Any

from kio.schema.errors import ErrorCode

UNSUPPORTED_VERSION = ErrorCode.unsupported_version
NOT_LEADER_OR_FOLLOWER = ErrorCode.not_leader_or_follower
UNKNOWN_TOPIC_OR_PARTITION = ErrorCode.unknown_topic_or_partition
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = ErrorCode.transactional_id_authorization_failed


def error_response(resp_t: type, code: ErrorCode, **overrides: Any) -> Any:
    """An instance of `resp_t` carrying `code` in its error_code fields and empty lists elsewhere."""
    hints = typing.get_type_hints(resp_t)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(resp_t):
        if f.name in overrides:
            kwargs[f.name] = overrides[f.name]
        elif f.name == "error_code":  # even where kio gives it a default (OffsetFetch v2+: none)
            kwargs[f.name] = code
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        else:
            kwargs[f.name] = zero_value(hints[f.name], code)
    return resp_t(**kwargs)


def zero_value(tp: Any, code: ErrorCode = ErrorCode.none) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return ()
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return None
    if tp is ErrorCode:
        return code
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return error_response(tp, code)
    if isinstance(tp, type):
        if issubclass(tp, bool):
            return False
        if issubclass(tp, int):
            return tp(0)
        if issubclass(tp, str):
            return ""
        if issubclass(tp, bytes):
            return b""
        if issubclass(tp, datetime.timedelta):
            return datetime.timedelta(0)
        if issubclass(tp, datetime.datetime):  # kio's TZAware timestamps (delegation token expiries)
            return datetime.datetime.fromtimestamp(0, datetime.UTC)
        if issubclass(tp, uuid.UUID):
            return uuid.UUID(int=0)
    # NewType wrappers (i16, i32, TopicName...) are callables over their base type
    supertype = getattr(tp, "__supertype__", None)
    if supertype is not None:
        return tp(zero_value(supertype, code))
    raise TypeError(f"no zero value for {tp!r}")
