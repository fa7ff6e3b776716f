"""Segment moves, and an operator's repair of a held one (controller.held, docs/OPERATIONS.md "A held move"):
`GET /v1/moves[?state=held]`, `GET /v1/moves/{id}`, `POST /v1/moves/{id}/publish`, `POST /v1/moves/{id}/roll-back`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fedkafka.controller.api.common import BIGINT_MAX, RowId
from fedkafka.controller.held import HeldMoves

Offset = Annotated[int, Field(ge=0, le=BIGINT_MAX)]


class PublishBody(BaseModel):
    seal: Offset  # the source's log end: where the lost publish sealed the source segment
    target_start: Offset  # where the new segment starts on the target: the move's target_end
    force: bool = False  # publish though a check that Kafka or the move's row can answer disagrees


class RollBackBody(BaseModel):
    nothing_was_published: bool = False  # no proxy's view.json has a segment of it on its target


def router(held: HeldMoves, api: Any) -> APIRouter:
    router = APIRouter(dependencies=[api])

    @router.get("/v1/moves")
    def moves(state: str | None = None):
        """`?state=held`: the moves an operator repairs; without it, every unfinished move."""
        return held.listed(state)

    @router.get("/v1/moves/{move_id}")
    def move(move_id: RowId):
        return held.get(move_id)

    @router.post("/v1/moves/{move_id}/publish")
    def publish(move_id: RowId, body: PublishBody):
        return held.publish(move_id, body.seal, body.target_start, body.force)

    @router.post("/v1/moves/{move_id}/roll-back")
    def roll_back(move_id: RowId, body: RollBackBody | None = None):
        return held.roll_back(move_id, body.nothing_was_published if body is not None else False)

    return router
