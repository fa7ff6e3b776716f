"""Producer-id blocks: two controllers on one database, each seeding the counter and allocating from many
threads at once, never hand out the same id (the compare-and-set on the counter row)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fedkafka.controller import db
from fedkafka.controller.producer_ids import BLOCK_SIZE, ProducerIdBlocks


def _blocks(db_url: str) -> ProducerIdBlocks:
    engine = db.make_engine(db_url)
    db.migrate(engine)
    return ProducerIdBlocks(db.session_factory(engine))


def test_two_controllers_allocating_at_once_never_share_an_id(db_url):
    first, second = _blocks(db_url), _blocks(db_url)
    first.seed()
    second.seed()  # the row exists: seeding again changes nothing
    with ThreadPoolExecutor(8) as pool:
        blocks = list(pool.map(lambda i: (first, second)[i % 2].allocate(), range(40)))
    starts = sorted(b.start for b in blocks)
    assert starts == [BLOCK_SIZE * (i + 1) for i in range(40)]  # contiguous, none twice, 0.. never handed out
    assert {b.size for b in blocks} == {BLOCK_SIZE}
    assert first.allocate().to_dict() == {"start": BLOCK_SIZE * 41, "size": BLOCK_SIZE}
