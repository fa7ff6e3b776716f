"""An operator's publish of a held move waits until every live proxy applied a view with the partition frozen, and
reads the source's log end (the seal check) only after (docs/DESIGN.md §4.1, §3.3 "Lost commits"; docs/OPERATIONS.md
"A held move"). The refusal when they did not is tests/controller/test_review_rvmove_held_acks.py."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from controller.test_held_publish_timeout import _hold_at_its_freeze
from fedkafka.controller.errors import Conflict, Invalid
from fedkafka.controller.held import HeldMoves
from fedkafka.controller.models import ChainRow, MoveRow, ProxyRow
from fedkafka.controller.moves import Mover
from fedkafka.fencing import FENCE_GRACE_S
from fedkafka.view.rebalance import Move


@pytest.fixture
def setup(t_on_c1_c2):
    return t_on_c1_c2


def _proxy(api, instance: str = "p1") -> int:
    """A registered pproxy that applied the current view (it writes t/0 on c1 from it)."""
    node = api.post("/v1/proxies", json={"instance_id": instance, "host": "h", "port": 9, "role": "pproxy"}).json()
    _ack(api, node["node_id"], api.controller.view.version)
    return node["node_id"]


def _ack(api, node_id: int, version: int) -> None:
    api.post(f"/v1/proxies/{node_id}/heartbeat", json={"applied_version": version}).raise_for_status()


def _held_at_its_freeze(api, kafka) -> tuple[Mover, int]:
    """Move t/0 c1 -> c2/t/1 held at its freeze (its target grew since the plan): the run never waited for acks."""
    mover, move_id = _hold_at_its_freeze(api, kafka)
    assert api.controller.view.chain("t", 0).frozen
    return mover, move_id


def _segments(ctl) -> list[tuple]:
    return [(g.cluster, g.partition, g.phys_start, g.phys_end, g.logical_base)
            for g in ctl.view.chain("t", 0).segments]


def _state(ctl, move_id: int) -> str:
    with ctl.session() as s:
        return s.get_one(MoveRow, move_id).state


def test_a_held_move_whose_frozen_view_every_live_proxy_applied_publishes(setup):
    """Refused while p1 is on its older view (retriable, nothing changed); p1 applies the frozen view, having acked
    8 more records on c1/t/0 before it did: the seal 42 the operator passed is now refused (the source's end is read
    after the acks), and the publish at 50 goes through: those records keep logical 42..49."""
    api, kafka = setup
    ctl = api.controller
    node_id = _proxy(api)
    mover, move_id = _held_at_its_freeze(api, kafka)
    held = HeldMoves(ctl, mover)
    with pytest.raises(Conflict, match=r"not published, nothing was changed \(it stays held\).*did not apply view"):
        held.publish(move_id, seal=42, target_start=0)
    assert _state(ctl, move_id) == "held" and _segments(ctl) == [("c1", 0, 0, None, 0)]
    kafka.ends[("c1", "t", 0)] = 50  # p1, still on its older view, acked 8 more records on c1/t/0
    _ack(api, node_id, ctl.view.version)  # then applied the frozen view
    with pytest.raises(Invalid, match="the log end of the source c1/t/0 is 50, not the seal 42"):
        held.publish(move_id, seal=42, target_start=0)
    answer = held.publish(move_id, seal=50, target_start=0)
    assert answer["state"] == "sealed" and any("every live proxy applied view" in c for c in answer["checks"])
    assert mover.sweep() == [move_id]
    assert _segments(ctl) == [("c1", 0, 0, 50, 0), ("c2", 1, 0, None, 50)]
    assert not ctl.view.chain("t", 0).frozen


def _fence_ran_out(ctl, node_id: int, seconds_ago: float) -> None:
    """Proxy `node_id` went silent: its lease and its fence ran out `seconds_ago`."""
    with ctl._hb_lock:
        ctl._leases.pop(node_id, None)
        ctl._pending.pop(node_id, None)
    with ctl.session() as s:
        row = s.get_one(ProxyRow, node_id)
        row.lease_expires = row.fence_expires = time.time() - seconds_ago
        s.commit()


def test_a_proxy_whose_fence_ran_out_is_not_waited_for(setup):
    """As in a move's ack wait: a silent proxy counts until its fence and the grace ran out (it may still write
    until its fence, cut off from the controller only), then it refuses produce on its own and is not waited for."""
    api, kafka = setup
    ctl = api.controller
    node_id = _proxy(api)
    mover, move_id = _held_at_its_freeze(api, kafka)
    held = HeldMoves(ctl, mover)
    _fence_ran_out(ctl, node_id, seconds_ago=1)  # its last upstream write may not be over yet
    with pytest.raises(Conflict, match="did not apply view"):
        held.publish(move_id, seal=42, target_start=0)
    _fence_ran_out(ctl, node_id, seconds_ago=FENCE_GRACE_S + 1)
    assert held.publish(move_id, seal=42, target_start=0)["state"] == "sealed"
    assert mover.sweep() == [move_id]
    assert _segments(ctl) == [("c1", 0, 0, 42, 0), ("c2", 1, 0, None, 42)]


def test_the_publish_composes_the_frozen_view_it_waits_for(setup):
    """A move held by a rollback while planned freezes its chain in the database; should the view carrying that not
    be composed (the compose after it failed), the publish composes it and waits for its acks: the proxy's ack of
    the last view, unfrozen, does not count."""
    api, kafka = setup
    ctl = api.controller
    node_id = _proxy(api)
    kafka.ends.update({("c1", "t", 0): 42, ("c2", "t", 1): 0})
    mover = Mover(ctl, ack_timeout=1)
    [move_id] = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    with ctl.session() as s:  # what `Mover._hold` commits for a planned move whose target grew, without the compose
        s.execute(update(MoveRow).where(MoveRow.id == move_id)
                  .values(state="held", held_for="target_grew", target_end=0, error="held by hand"))
        s.get_one(ChainRow, ("t", 0)).frozen = True
        s.commit()
    unfrozen = ctl.view.version
    assert not ctl.view.chain("t", 0).frozen
    _ack(api, node_id, unfrozen)
    held = HeldMoves(ctl, mover)
    with pytest.raises(Conflict, match="did not apply view"):
        held.publish(move_id, seal=42, target_start=0)
    assert ctl.view.version > unfrozen and ctl.view.chain("t", 0).frozen
    _ack(api, node_id, ctl.view.version)
    assert held.publish(move_id, seal=42, target_start=0)["state"] == "sealed"


def _write_above_the_high_watermark(kafka, replicated: bool) -> list[int]:
    """p1, on its older view, forwarded a write to c1/t/0 before it applied the frozen view: the leader appended it at
    42 (log end 43) but its acks=all answer was an error (a follower too slow: REQUEST_TIMED_OUT), so the high
    watermark stays at 42 and the client will retry it. The followers then fetch it (`replicated`: the high watermark
    reaches 43) or a leader change truncates it (the log end goes back to 42) after the second log-end read. Returns
    the log-end reads (their count)."""
    reads: list[int] = []

    def log_end_offsets(cluster, bootstrap, partitions):
        reads.append(1)
        if len(reads) >= 2:
            kafka.ends[("c1", "t", 0)] = 43 if replicated else 42
        end = kafka.ends.get(("c1", "t", 0), 0) if len(reads) >= 2 else 43
        return {(t, p): end if (cluster, t, p) == ("c1", "t", 0) else kafka.ends.get((cluster, t, p), 0)
                for t, p in partitions}

    kafka.log_end_offsets = log_end_offsets
    return reads


def test_a_held_publish_reads_the_seal_once_no_write_sits_above_the_high_watermark(setup):
    """The write at 42 above the high watermark (appended, answered with an error, not acked): the publish used to
    read the high watermark once (42), take the seal 42 and seal there; the followers then fetched it, so c1/t/0 held
    a record at 42 above the seal, served by no one, while the leader's producer state counts it: the client's retry
    through the new segment is answered DUPLICATE_SEQUENCE_NUMBER (the floor read from c1, docs/DESIGN.md §5.3 rule 4)
    and counted as written: lost. Now the seal is checked once the high watermark reached the log end, as a move's
    own seal (docs/DESIGN.md §4.1 step 3): 43, not the seal 42, refused; published at 43 the record is read at 42."""
    api, kafka = setup
    ctl = api.controller
    node_id = _proxy(api)
    mover, move_id = _held_at_its_freeze(api, kafka)
    _ack(api, node_id, ctl.view.version)  # p1 applied the frozen view: its write at 42 was answered (an error)
    reads = _write_above_the_high_watermark(kafka, replicated=True)
    held = HeldMoves(ctl, mover)
    with pytest.raises(Invalid, match="the log end of the source c1/t/0 is 43, not the seal 42"):
        held.publish(move_id, seal=42, target_start=0)
    assert _state(ctl, move_id) == "held" and len(reads) >= 2
    assert held.publish(move_id, seal=43, target_start=0)["state"] == "sealed"
    assert mover.sweep() == [move_id]
    assert _segments(ctl) == [("c1", 0, 0, 43, 0), ("c2", 1, 0, None, 43)]


def test_a_held_publish_seals_below_a_write_a_leader_change_truncated(setup):
    """The same write, truncated by a leader change (the new leader, from the in-sync replicas, holds every acked
    record and not this one): the log end goes back to the high watermark 42 and the seal 42 goes through; the
    client's retry is written on the new segment (c1's producer state no longer counts it)."""
    api, kafka = setup
    ctl = api.controller
    node_id = _proxy(api)
    mover, move_id = _held_at_its_freeze(api, kafka)
    _ack(api, node_id, ctl.view.version)
    reads = _write_above_the_high_watermark(kafka, replicated=False)
    answer = HeldMoves(ctl, mover).publish(move_id, seal=42, target_start=0)
    assert answer["state"] == "sealed" and len(reads) >= 2
    assert "source c1/t/0 log end 42" in answer["checks"]
    assert mover.sweep() == [move_id]
    assert _segments(ctl) == [("c1", 0, 0, 42, 0), ("c2", 1, 0, None, 42)]


@pytest.mark.parametrize("log_ends", [{("t", 0): 43}, {}], ids=["above", "unread"])
def test_a_held_publish_whose_source_does_not_settle_is_refused_unless_forced(setup, monkeypatch, log_ends):
    """The write at 42 never replicates (a follower stuck but still in the ISR), or the leader's log end cannot be
    read (proves nothing): refused, retriable, nothing changed; forced, it is published and the answer says what it
    overrode."""
    api, kafka = setup
    ctl = api.controller
    monkeypatch.setattr("fedkafka.controller.held.PUBLISH_SETTLE_WAIT_S", 0.3)
    node_id = _proxy(api)
    mover, move_id = _held_at_its_freeze(api, kafka)
    _ack(api, node_id, ctl.view.version)
    kafka.log_end_offsets = lambda cluster, bootstrap, parts: log_ends if cluster == "c1" else {}
    held = HeldMoves(ctl, mover)
    with pytest.raises(Conflict, match=r"not published, nothing was changed \(it stays held\): the source c1/t/0 "
                                       r"is not settled: writes above the high watermark not replicated"):
        held.publish(move_id, seal=42, target_start=0)
    assert _state(ctl, move_id) == "held" and _segments(ctl) == [("c1", 0, 0, None, 0)]
    answer = held.publish(move_id, seal=42, target_start=0, force=True)
    assert answer["state"] == "sealed"
    assert any(c.startswith("forced: the source c1/t/0 is not settled") for c in answer["checks"]), answer["checks"]


def test_a_held_publish_reads_the_source_only_after_the_acks_of_the_frozen_view(setup):
    """Pins the order that makes the publish safe: p1's last write under its older view is answered, acked at 42..49
    (c1/t/0's end 50, below its high watermark: acks=all), and only then does p1 apply the frozen view, while the
    publish waits for it. Read before that wait, the source's end was 42, the seal 42 passed its check, and the 8
    acked records lay above the seal (lost, logical 42..49 handed out again by the new segment). Read after it,
    the end is 50: the seal 42 is refused."""
    api, kafka = setup
    ctl = api.controller
    node_id = _proxy(api)
    mover, move_id = _held_at_its_freeze(api, kafka)
    real_wait = mover.await_version
    source_reads_before_the_acks = []

    def acked_during_the_wait(needed, progress, **kwargs):
        source_reads_before_the_acks.append(kafka.ends[("c1", "t", 0)])
        kafka.ends[("c1", "t", 0)] = 50  # p1's produce under its older view answered: 8 records acked
        _ack(api, node_id, needed)  # then it applies the frozen view
        return real_wait(needed, progress, **kwargs)

    mover.await_version = acked_during_the_wait
    held = HeldMoves(ctl, mover)
    with pytest.raises(Invalid, match="the log end of the source c1/t/0 is 50, not the seal 42"):
        held.publish(move_id, seal=42, target_start=0)
    assert source_reads_before_the_acks == [42] and _state(ctl, move_id) == "held"
    assert held.publish(move_id, seal=50, target_start=0)["state"] == "sealed"
    assert mover.sweep() == [move_id]
    assert _segments(ctl) == [("c1", 0, 0, 50, 0), ("c2", 1, 0, None, 50)]
