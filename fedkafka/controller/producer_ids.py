"""Blocks of logical producer ids for the proxies (docs/DESIGN.md §5.3): one counter row in the config database,
bumped by compare-and-set, so no two proxies (nor two controllers on one database) ever share an id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedkafka.controller.models import CounterRow

BLOCK_SIZE = 1000
COUNTER = "producer_id"


@dataclass(frozen=True, slots=True)
class ProducerIdBlock:
    start: int
    size: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class ProducerIdBlocks:
    def __init__(self, session: Callable[[], Session], block_size: int = BLOCK_SIZE):
        self.session = session
        self.block_size = block_size

    def seed(self) -> None:
        """The counter row exists exactly once, even when two controllers start together. Ids start at one block
        (0 .. block_size - 1 are never handed out)."""
        with self.session() as s:
            if s.get(CounterRow, COUNTER) is None:
                s.add(CounterRow(name=COUNTER, value=self.block_size))
                try:
                    s.commit()
                except IntegrityError:  # the other controller's row won
                    s.rollback()

    def allocate(self) -> ProducerIdBlock:
        """A fresh block; a caller that loses the compare-and-set to another reads the counter again."""
        while True:
            with self.session() as s:
                start = s.scalars(select(CounterRow.value).where(CounterRow.name == COUNTER)).one()
                res = cast(CursorResult[Any], s.execute(  # an UPDATE's result: it has a rowcount
                    update(CounterRow).where(CounterRow.name == COUNTER, CounterRow.value == start)
                    .values(value=start + self.block_size)))
                if res.rowcount == 1:
                    s.commit()
                    return ProducerIdBlock(start, self.block_size)
                s.rollback()
