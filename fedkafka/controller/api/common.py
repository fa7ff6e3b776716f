"""What every router shares: the bearer-token dependency and the database's number bounds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query
from pydantic import Field

from fedkafka.controller.errors import ControllerError
from fedkafka.controller.guard import token_ok

# Numbers the config database stores as BIGINT: a larger one is refused (422) before it reaches a query, where
# it raised OverflowError (a 500), or worse, sat in a batch of lease renewals and failed the whole batch's write.
BIGINT_MAX = 2**63 - 1
Version = Annotated[int, Field(ge=-1, le=BIGINT_MAX)]
RowId = Annotated[int, Path(ge=0, le=BIGINT_MAX)]
After = Annotated[int, Query(ge=-1, le=BIGINT_MAX)]


def token_dependency(token: str) -> Any:
    """The `Depends` a protected router carries: the request's bearer token must be `token` (guard.RequestGuard
    checked it already, before any body was read; this second check also marks the routes in the OpenAPI)."""

    async def auth(authorization: str | None = Header(default=None)) -> None:  # async: no threadpool hop
        if not token_ok(authorization, token):
            raise ControllerError("missing or wrong bearer token", status=401)

    return Depends(auth)
