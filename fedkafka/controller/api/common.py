"""What every router shares: the bearer-token dependency and the database's number and string bounds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from pydantic import AfterValidator, Field
from sqlalchemy.orm import InstrumentedAttribute

from fedkafka.controller.errors import ControllerError
from fedkafka.controller.guard import scope_refusal
from fedkafka.controller.scopes import Tokens, route_allows

# Numbers the config database stores as BIGINT: a larger one is refused (422) before it reaches a query, where
# it raised OverflowError (a 500), or worse, sat in a batch of lease renewals and failed the whole batch's write.
BIGINT_MAX = 2**63 - 1
Version = Annotated[int, Field(ge=-1, le=BIGINT_MAX)]
RowId = Annotated[int, Path(ge=0, le=BIGINT_MAX)]
After = Annotated[int, Query(ge=-1, le=BIGINT_MAX)]


def _nul_free(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# A string the config database can store: PostgreSQL refuses NUL in any text (a 500 from the write), SQLite
# keeps it. Every string a body carries to a column is one; its length is the column's (`stored_length`).
NulFree = Annotated[str, AfterValidator(_nul_free)]


def stored_length(column: InstrumentedAttribute[Any]) -> int:
    """The most characters a String column of `models` keeps (`ProxyRow.pool`): a body field's max_length
    is read from the model, so the API's bound and the column's cannot drift apart (PostgreSQL refuses a
    longer value with a 500; SQLite keeps it)."""
    length = column.property.columns[0].type.length
    if not isinstance(length, int):
        raise TypeError(f"{column} is not a String column of bounded length")
    return length


def token_dependency(tokens: Tokens) -> Any:
    """The `Depends` a protected router carries: the request's bearer token must be one of `tokens`, and the
    service or routing token only on a route whose scope allows it (guard.RequestGuard checked both already, before any
    body was read, on the raw path; this second check reads the matched route's own scope and also marks the
    routes in the OpenAPI)."""

    async def auth(request: Request, authorization: str | None = Header(default=None)) -> None:  # async: no hop
        role = tokens.role(authorization)
        if role is None:
            raise ControllerError("missing or wrong bearer token", status=401)
        route = getattr(request.scope.get("route"), "path", "")
        if not route_allows(role, request.method, route):
            raise ControllerError(scope_refusal(role, request.method, request.url.path), status=403)

    return Depends(auth)
