"""Review s37-rvwhole of the session's whole change to main (0d15e1a8..16782f99), across its parts.

s37-fixlost2 made `moves.read_until` "the one retry of every Kafka read", cut short once the controller stops (its
stop() joins its threads for kafka_timeout + 5 s only), and moved `read_ends` and `settled_ends` onto it. Its sibling
`Mover.read_settled_ends` (the seal's wait for replication, and a held move's publish) kept its own loop: a
`time.sleep(0.2)` that no stop cuts short, around `read_ends`, which retries for the same `timeout` again inside (up
to twice `timeout` in all)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controller.test_failover import setup  # noqa: F401 (the failover tests' fixture)
from controller.test_move_back_onto_its_chain import T0_ON_C1, _c1_back_with_its_tail
from fedkafka.controller.models import ClusterRow
from fedkafka.controller.moves import MoveFailed, Mover


def test_a_stopping_controllers_seal_wait_reads_once(setup):  # noqa: F811
    """c1/t/0's leader never answers its log end (an unread log end is waited for like a write above the high
    watermark). The controller is stopping: one read, then MoveFailed, as `read_until` does (it read every 0.2 s until
    the timeout)."""
    reads = {"n": 0}

    def leader_log_end(_read):
        reads["n"] += 1
        return None

    api, _kafka, _now_on = _c1_back_with_its_tail(setup, leader_log_end)
    mover = Mover(api.controller, seal_timeout=2.0)
    with api.controller.session() as s:
        bootstrap = {c.id: c.bootstrap for c in s.scalars(select(ClusterRow))}
    reads["n"] = 0
    api.controller._stop.set()
    try:
        with pytest.raises(MoveFailed):
            mover.read_settled_ends({"c1": {T0_ON_C1[1:]}}, bootstrap, {T0_ON_C1})
    finally:
        api.controller._stop.clear()
    assert reads["n"] == 1, reads
