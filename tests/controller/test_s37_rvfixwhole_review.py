"""Review s37-rvfixwhole2 of s37-fixwhole (a3de656f, 06706dfc): `Mover.read_settled_ends` on `read_until` through
`settled_ends`, which "again tells an unread log end (not readable) from an unsettled one, as before". Before, each
round re-read every partition by `read_ends`, which waited for a partition that stopped answering and then failed
"not readable"; now a partition read once (its write above the high watermark) and not readable since counts as
unsettled. Fixed in s37-fixwhole2: `settled_ends`' `read` holds each partition's latest read."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controller.test_failover import setup  # noqa: F401 (the failover tests' fixture)
from controller.test_move_back_onto_its_chain import T0_ON_C1, _c1_back_with_its_tail
from fedkafka.controller.models import ClusterRow
from fedkafka.controller.moves import MoveFailed, Mover


def test_a_sealing_partition_that_stops_answering_is_told_not_readable(setup):  # noqa: F811
    api, _kafka, _now_on = _c1_back_with_its_tail(setup, lambda _read: None)
    mover = Mover(api.controller, seal_timeout=0.5)
    with api.controller.session() as s:
        bootstrap = {c.id: c.bootstrap for c in s.scalars(select(ClusterRow))}
    reads = {"n": 0}

    def read_once(targets, _bootstrap):  # the high watermark read once, then its cluster answers no more
        reads["n"] += 1
        return {T0_ON_C1: 5} if reads["n"] == 1 else {}
    mover._read_once = read_once  # type: ignore[method-assign]
    mover._leader_log_ends = lambda parts, _b, _why: {p: 9 for p in parts}  # type: ignore[method-assign]
    with pytest.raises(MoveFailed) as failed:
        mover.read_settled_ends({"c1": {T0_ON_C1[1:]}}, bootstrap, {T0_ON_C1})
    assert reads["n"] > 1
    assert "not readable" in str(failed.value), failed.value
