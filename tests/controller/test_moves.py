"""The move state machine against the config database (no cluster: log ends come from a recording stand-in).
Real brokers and proxies are in tests/workflows."""

from __future__ import annotations

import threading
import time

import pytest

from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.view.offsets import resolve_fetch
from fedkafka.view.rebalance import Move


@pytest.fixture
def setup(t_on_c1_c2):
    return t_on_c1_c2


def test_a_restarted_controller_publishes_the_recorded_seal(setup):
    api, kafka = setup
    ctl = api.controller
    kafka.ends.update({("c1", "t", 0): 42, ("c2", "t", 1): 7})
    first = Mover(ctl, ack_timeout=1)
    ids = first.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    assert first.plan(None, [Move("t", 0, "c1", "c2", "t", 1)]) == []  # one unfinished move per partition
    first._freeze(ids)
    assert ctl.view.chain("t", 0).frozen
    first._await_acks(ids, lambda *_: None)
    first._seal(ids, lambda *_: None)
    # the controller dies here; the physical log end moves on (it must not matter: the seal is recorded)
    kafka.ends[("c1", "t", 0)] = 99
    restarted = Mover(ctl, ack_timeout=1)
    assert restarted.unfinished() == ids
    assert restarted.run(restarted.unfinished()) == {"done": 1}
    chain = ctl.view.chain("t", 0)
    assert not chain.frozen and chain.leader_epoch == 1
    old, new = chain.segments
    assert (old.cluster, old.phys_start, old.phys_end) == ("c1", 0, 42)
    assert (new.cluster, new.partition, new.phys_start, new.logical_base, new.phys_end) == ("c2", 1, 7, 42, None)
    assert restarted.unfinished() == []


@pytest.mark.parametrize("role", ["pproxy", "cproxy"])
def test_a_live_proxy_that_never_acks_rolls_the_move_back(setup, role):
    """A cproxy too: it serves Fetch from its view, and one that skipped a move maps the offsets above the seal
    into the old segment's physical partition, which a move back later reuses (wrong records served at those
    offsets); after one move its consumers stall at the seal with no error. The old code waited for
    produce-capable proxies only and sealed past a cproxy."""
    api, _ = setup
    ctl = api.controller
    api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": role}).raise_for_status()
    mover = Mover(ctl, ack_timeout=0.3)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    with pytest.raises(MoveFailed, match="did not apply view"):
        mover.run(ids)
    chain = ctl.view.chain("t", 1)
    assert not chain.frozen and len(chain.segments) == 1 and chain.active.cluster == "c2"
    assert mover.counts(ids) == {"rolled_back": 1}


def test_a_consume_only_proxy_that_acks_lets_the_move_finish(setup):
    """The cproxy applies the frozen view and acks: the move seals and publishes."""

    api, _ = setup
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "c1", "host": "h", "port": 9, "role": "cproxy"}).json()
    mover = Mover(ctl, ack_timeout=30)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acking_the_frozen_view(api, node["node_id"])
    assert mover.run(ids) == {"done": 1}
    helper.join()


def _acking_the_frozen_view(api, node_id: int):
    """A started thread that acks, for proxy `node_id`, the first view the API serves with t/1 frozen."""
    import threading

    def frozen_view() -> int | None:
        view = api.get("/v1/view").json()
        topic = next(t for t in view["topics"] if t["name"] == "t")
        return view["version"] if topic["partitions"][1]["frozen"] else None

    def ack() -> None:
        while (version := frozen_view()) is None:
            time.sleep(0.02)
        hb = api.post(f"/v1/proxies/{node_id}/heartbeat", json={"applied_version": version})
        assert hb.status_code == 200, hb.text

    helper = threading.Thread(target=ack)
    helper.start()
    return helper


class _ListOffsetsAnswers:
    """An AdminClient stand-in that answers ListOffsets from a script: per call, per spec, an offset or an
    error code (what librdkafka's futures carry); every call is recorded."""

    def __init__(self, ends: list):
        self.ends = ends  # one entry per end read: an int offset or a KafkaError code
        self.reads = 0

    def list_offsets(self, specs, request_timeout=None):
        from concurrent.futures import Future

        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import OffsetSpec

        out = {}
        for tp, spec in specs.items():
            fut = Future()
            if spec == OffsetSpec.earliest():
                answer = 0
            else:
                answer = self.ends[min(self.reads, len(self.ends) - 1)]
                self.reads += 1
            if isinstance(answer, tuple):
                fut.set_exception(KafkaException(KafkaError(answer[0])))
            else:
                fut.set_result(type("Info", (), {"offset": answer})())
            out[tp] = fut
        return out


def test_the_seal_read_retries_a_new_leader_without_a_high_watermark_yet():
    """Issue #12, hole 1: while a new leader's high watermark is behind the start of its epoch, Kafka answers
    ListOffsets with OFFSET_NOT_AVAILABLE; an answer without an offset (-1) is no seal either. Both are read
    again until a real log end comes back, never recorded as the seal."""
    from types import SimpleNamespace

    from confluent_kafka import KafkaError

    from fedkafka.controller.kafka_admin import KafkaAdmin

    admin = KafkaAdmin(timeout=1)
    answers = _ListOffsetsAnswers([(KafkaError.OFFSET_NOT_AVAILABLE,), -1, 42])
    admin._clients[("c1", "c1:9092")] = answers
    mover = Mover(SimpleNamespace(settings=SimpleNamespace(lease_ms=10_000), kafka=admin,
                                  wait_stopping=threading.Event().wait), ack_timeout=1)
    assert mover.read_ends({"c1": {("t", 0)}}, {"c1": "c1:9092"}) == {("c1", "t", 0): 42}
    assert answers.reads == 3


def _lease_ran_out(ctl, node_id: int, seconds_ago: float, fence_in: float | None = None) -> None:
    """The proxy went silent: its lease ran out `seconds_ago`, its fence then too, or only in `fence_in` s."""
    import time

    from fedkafka.controller.models import ProxyRow

    with ctl._hb_lock:
        ctl._leases.pop(node_id, None)
        ctl._pending.pop(node_id, None)
    with ctl.session() as s:
        row = s.get(ProxyRow, node_id)
        row.lease_expires = time.time() - seconds_ago
        row.fence_expires = row.lease_expires if fence_in is None else time.time() + fence_in
        s.commit()


def test_a_proxy_is_fenced_only_once_its_last_upstream_write_is_over(setup):
    """Issue #12, hole 2: a proxy whose lease ran out a moment ago may still have a write out upstream (the
    proxy waits up to UPSTREAM_REQUEST_TIMEOUT_S for an answer). Old code sealed as soon as the lease ran out."""
    from fedkafka.fencing import FENCE_GRACE_S, UPSTREAM_REQUEST_TIMEOUT_S

    api, _ = setup
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": "pproxy"}).json()
    _lease_ran_out(ctl, node["node_id"], seconds_ago=1)
    mover = Mover(ctl, ack_timeout=0.3)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    with pytest.raises(MoveFailed, match="did not apply view"):
        mover.run(ids)
    assert mover.counts(ids) == {"rolled_back": 1}
    _lease_ran_out(ctl, node["node_id"], seconds_ago=FENCE_GRACE_S + 1)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    assert mover.run(ids) == {"done": 1}
    assert FENCE_GRACE_S >= UPSTREAM_REQUEST_TIMEOUT_S


def test_the_ack_wait_outlasts_a_live_proxys_drain_and_a_silent_ones_fencing(setup):
    from fedkafka.fencing import DRAIN_PATIENCE_S, FENCE_GRACE_S

    ctl = setup[0].controller
    lease, fence = ctl.settings.lease_ms / 1000, ctl.settings.fence_ms / 1000
    mover = Mover(ctl)
    assert mover.live_ack_timeout > DRAIN_PATIENCE_S + lease / 3  # the drain, then the heartbeat that carries the ack
    assert mover.ack_timeout > fence + FENCE_GRACE_S  # a silent proxy may produce until its fence (§4.9)
    assert fence >= 600  # minutes without a controller before traffic stops


@pytest.mark.parametrize("role", ["pproxy", "cproxy"])
def test_a_proxy_cut_off_from_the_controller_is_waited_for_until_its_fence(setup, role):
    """docs/DESIGN.md §4.9, case 2: a proxy whose lease ran out long ago may still serve clients (only the
    controller is cut off) and produces until its fence: the move must not seal meanwhile. The old code sealed
    once the lease was FENCE_GRACE_S old (it then fenced produce at its lease; now it goes on until the fence).
    A cproxy serves Fetch from its view until its fence (then refuses it, as produce): waited for the same way."""
    from fedkafka.fencing import FENCE_GRACE_S

    api, _ = setup
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": role}).json()
    _lease_ran_out(ctl, node["node_id"], seconds_ago=FENCE_GRACE_S + 1, fence_in=60)
    mover = Mover(ctl, ack_timeout=0.5)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    with pytest.raises(MoveFailed, match="did not apply view"):
        mover.run(ids)
    assert mover.counts(ids) == {"rolled_back": 1}
    _lease_ran_out(ctl, node["node_id"], seconds_ago=FENCE_GRACE_S + 1, fence_in=-(FENCE_GRACE_S + 1))
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    assert mover.run(ids) == {"done": 1}


def test_a_cut_off_proxy_that_comes_back_and_acks_lets_the_move_finish(setup):
    """docs/DESIGN.md §4.9, case 3: the link comes back within the fence; the proxy renews without registering
    again (it was counted all along), applies the frozen view, acks; the move goes on."""

    api, _ = setup
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": "pproxy"}).json()
    _lease_ran_out(ctl, node["node_id"], seconds_ago=5, fence_in=60)
    mover = Mover(ctl, ack_timeout=30)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acking_the_frozen_view(api, node["node_id"])  # back online
    assert mover.run(ids) == {"done": 1}
    helper.join()


def test_a_proxy_that_renews_but_never_acks_fails_the_move_after_its_drain(setup):
    """A long fence must not make a live but stuck proxy hold a move for minutes: one that keeps renewing
    its lease and does not ack within its drain and a heartbeat rolls the move back, as before."""
    import threading

    api, _ = setup
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": "pproxy"}).json()
    mover = Mover(ctl)
    mover.live_ack_timeout = 0.5
    stop = threading.Event()

    def renewing() -> None:
        while not stop.wait(0.1):
            api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": 0})

    helper = threading.Thread(target=renewing)
    helper.start()
    started = time.monotonic()
    try:
        ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
        with pytest.raises(MoveFailed, match="while renewing their leases"):
            mover.run(ids)
    finally:
        stop.set()
        helper.join()
    assert time.monotonic() - started < 30 and mover.counts(ids) == {"rolled_back": 1}


class _DatabaseGone(RuntimeError):
    pass


@pytest.mark.parametrize("phase", ["planned", "frozen", "sealed"])
def test_an_error_at_any_phase_leaves_no_partition_frozen(setup, monkeypatch, phase):
    """Issue #12, hole 4: only MoveFailed rolled a move back. Any other error (a database error, a bug) left
    it frozen (or planned, which blocks the partition for later moves) and its partition refused produce for
    good. Now a move not sealed yet is rolled back, a sealed one is finished."""
    from fedkafka.controller import moves

    api, kafka = setup
    ctl = api.controller
    kafka.ends.update({("c1", "t", 0): 42, ("c2", "t", 1): 7})
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    if phase == "planned":  # the freeze's transaction fails
        monkeypatch.setattr(Mover, "_freeze", lambda self, ids: (_ for _ in ()).throw(_DatabaseGone("commit")))
    else:
        def fault(state):
            if state == phase:
                raise _DatabaseGone(f"after {state}")
        monkeypatch.setattr(moves, "_fault_point", fault)
    with pytest.raises(_DatabaseGone):
        mover.run(ids)
    chain = ctl.view.chain("t", 0)
    assert not chain.frozen
    if phase == "sealed":  # the seal is recorded: finishing is as safe as rolling back, and makes progress
        assert mover.counts(ids) == {"done": 1}
        assert [(g.cluster, g.phys_end) for g in chain.segments] == [("c1", 42), ("c2", None)]
    else:
        assert mover.counts(ids) == {"rolled_back": 1}
        assert [(g.cluster, g.phys_end) for g in chain.segments] == [("c1", None)]
        assert mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)]) != []  # the partition can move again


def test_a_starting_controller_settles_moves_no_running_workflow_owns(setup):
    """A run failed and could not settle its moves (the database was down too), or a controller died in a
    direct move: the sweeper at start rolls back the unsealed ones and finishes the sealed ones; a move of a
    run still 'running' is left to that run (it is resumed)."""
    import json
    import time

    from fedkafka.controller.models import WorkflowRow
    from fedkafka.controller.workflows import WorkflowEngine

    api, kafka = setup
    ctl = api.controller
    api.put("/v1/topics/u", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    kafka.ends.update({("c1", "t", 0): 42, ("c2", "t", 1): 7})
    runs = {}
    with ctl.session() as s:
        for state in ("failed", "running"):
            row = WorkflowRow(kind="scale_up", cluster="c2", state=state, step="acks", params_json="{}",
                              created_at=time.time(), record_json=json.dumps({"state": state}))
            s.add(row)
            s.commit()
            runs[state] = row.id
    mover = Mover(ctl, ack_timeout=1)
    frozen = mover.plan(runs["failed"], [Move("t", 0, "c1", "c2", "t", 1)])
    sealed = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    owned = mover.plan(runs["running"], [Move("u", 0, "c1", "c2", "u", 1)])
    mover._freeze(frozen + sealed + owned)
    mover._await_acks(sealed, lambda *_: None)
    mover._seal(sealed, lambda *_: None)

    WorkflowEngine(ctl).mover.sweep()  # what resume() does first at start

    assert mover.counts(frozen) == {"rolled_back": 1} and not ctl.view.chain("t", 0).frozen
    assert mover.counts(sealed) == {"done": 1} and len(ctl.view.chain("t", 1).segments) == 2
    assert mover.counts(owned) == {"frozen": 1} and ctl.view.chain("u", 0).frozen


def test_the_seal_waits_until_no_write_sits_above_the_high_watermark(setup):
    """A write the leader appended but its followers do not hold yet (its acks=all answer was an error, or the
    proxy gave up on it) lies above the high watermark. Sealed there, it is served by no one while the
    leader's producer state counts it, so a retry would be answered as a duplicate: a loss. The seal is read
    once the followers caught up: the high watermark reached the log end. A log end that could not be read (the
    leader too loaded to answer, or no leader) proves nothing and is read again: the old code sealed at 40."""
    api, kafka = setup
    ctl = api.controller
    kafka.ends.update({("c1", "t", 0): 40, ("c2", "t", 1): 7})
    log_end_reads = []

    def log_end_offsets(cluster, bootstrap, partitions):
        log_end_reads.append(partitions)
        if len(log_end_reads) == 1:
            raise OSError("timed out")
        if len(log_end_reads) == 2:
            return {}  # left out: no leader known
        if len(log_end_reads) == 4:
            kafka.ends[("c1", "t", 0)] = 42  # the followers fetched the last two records
        return {(t, p): 42 for t, p in partitions if (cluster, t, p) == ("c1", "t", 0)}

    kafka.log_end_offsets = log_end_offsets
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    assert mover.run(ids) == {"done": 1}
    old, new = ctl.view.chain("t", 0).segments
    assert old.phys_end == 42 and new.logical_base == 42
    assert log_end_reads[0] == [("t", 0)] and len(log_end_reads) == 5  # only the partitions being sealed


@pytest.mark.parametrize("log_ends", [{("t", 0): 42}, {}], ids=["above", "unread"])
def test_a_seal_whose_writes_never_replicate_is_rolled_back(setup, log_ends):
    api, kafka = setup
    ctl = api.controller
    kafka.ends.update({("c1", "t", 0): 40, ("c2", "t", 1): 7})
    kafka.log_end_offsets = lambda cluster, bootstrap, parts: log_ends
    mover = Mover(ctl, ack_timeout=1, seal_timeout=0.3)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    with pytest.raises(MoveFailed, match="above the high watermark"):
        mover.run(ids)
    assert mover.counts(ids) == {"rolled_back": 1} and not ctl.view.chain("t", 0).frozen


# -- a move back onto a physical partition of its chain (A -> B -> A, docs/DESIGN.md §4.5) ------------------------

def _physical(chain, logical: int) -> tuple:
    """The physical record (cluster, topic, partition, offset) logical offset `logical` of `chain` names."""
    target = resolve_fetch(chain, logical)
    seg = target.segment
    return seg.cluster, seg.topic, seg.partition, target.physical_offset


def _there_and_back(api, kafka, back_end: int) -> tuple[Mover, list[int]]:
    """t/0 (100 records on c1/t/0) moved to c2/t/1 (30 records), then planned back onto c1/t/0, whose log end is
    `back_end` by then."""
    mover = Mover(api.controller, ack_timeout=1)
    kafka.ends[("c1", "t", 0)] = 100
    mover.run(mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)]))
    kafka.ends.update({("c2", "t", 1): 30, ("c1", "t", 0): back_end})
    return mover, mover.plan(None, [Move("t", 0, "c2", "c1", "t", 0)])


def test_a_move_back_onto_its_intact_old_physical_partition_starts_at_its_log_end(setup):
    api, kafka = setup
    mover, ids = _there_and_back(api, kafka, back_end=100)
    assert mover.run(ids) == {"done": 1}
    chain = api.controller.view.chain("t", 0)
    assert [(g.cluster, g.partition, g.phys_start, g.phys_end, g.logical_base) for g in chain.segments] == \
        [("c1", 0, 0, 100, 0), ("c2", 1, 0, 30, 100), ("c1", 0, 100, None, 130)]
    assert _physical(chain, 50) == ("c1", "t", 0, 50) and _physical(chain, 180) == ("c1", "t", 0, 150)


def test_a_move_back_onto_an_old_physical_partition_whose_log_end_went_back_is_rolled_back(setup):
    """c1 lost its data (a lost disk; the physical topic was created again, empty) while t/0 lived on c2. The old
    code started the new segment at c1/t/0's log end, 0, inside the older segment's 0..100 there: logical 50, acked
    before, and logical 180 both named c1/t/0 offset 50, a record written after the move. Now the seal refuses it,
    and the partition goes on writing on c2."""
    api, kafka = setup
    mover, ids = _there_and_back(api, kafka, back_end=0)
    with pytest.raises(MoveFailed, match=r"log end 0 of c1/t/0 is below the seal 100 of an older segment"):
        mover.run(ids)
    assert mover.counts(ids) == {"rolled_back": 1}
    chain = api.controller.view.chain("t", 0)
    assert not chain.frozen and chain.leader_epoch == 1
    assert [(g.cluster, g.partition, g.phys_end) for g in chain.segments] == [("c1", 0, 100), ("c2", 1, None)]
    assert _physical(chain, 50) == ("c1", "t", 0, 50) and _physical(chain, 110) == ("c2", "t", 1, 10)


# -- a move seals only the segment it froze (docs/DESIGN.md §4.1, "A move seals only the segment it froze") ------

def _move_states(ctl) -> list[tuple[str, str | None]]:
    from sqlalchemy import select

    from fedkafka.controller.models import MoveRow

    with ctl.session() as s:
        return [(m.state, m.error) for m in s.scalars(select(MoveRow).order_by(MoveRow.id))]


def _created_again_and_written(api, kafka) -> None:
    """The topic created again under its name: its partition 0 is c1/t/0 again, not frozen, and written to."""
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    chain = api.controller.view.chain("t", 0)
    assert not chain.frozen and chain.active.cluster == "c1" and chain.active.partition == 0
    kafka.ends[("c1", "t", 0)] = 7  # producers write to it meanwhile


def _untouched(chain) -> bool:
    return (not chain.frozen and chain.leader_epoch == 0
            and [(g.cluster, g.partition, g.phys_end) for g in chain.segments] == [("c1", 0, None)])


@pytest.mark.parametrize("route", ["/v1/topics/t", "/v1/admin/topics/t"], ids=["api", "kafka-delete-topics"])
def test_deleting_a_topic_rolls_its_moves_back_so_its_successor_is_not_sealed(setup, route):
    """A move of t/0 was frozen, waiting for a proxy's ack (up to fence + 45 s for a silent one), when an operator
    deleted t (`fedkafka topic delete`, or a Kafka client's DeleteTopics through a proxy) and created it again.
    The old code carried the move on into the new topic: it read the new, unfrozen partition's end while it was
    written, sealed it there and appended a segment on a target the new topic never claimed, so writes acked
    after the seal read were lost or served at wrong offsets. Now the deletion rolls the move back in its own
    transaction, as Kafka deletes a topic under reassignment, and the run finds nothing left to do."""
    api, kafka = setup
    ctl = api.controller
    kafka.ends.update({("c1", "t", 0): 5, ("c2", "t", 1): 3})
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    mover._freeze(ids)
    assert api.delete(route).status_code in (200, 204)
    assert _move_states(ctl) == [("rolled_back", "topic deleted during the move")]
    _created_again_and_written(api, kafka)
    assert mover.run(ids) == {"rolled_back": 1}  # the run goes on where it was: acks, seal, publish
    assert _untouched(ctl.view.chain("t", 0))
    assert mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)]) != []  # the new topic's partition can move


@pytest.mark.parametrize("created_again_when", ["frozen", "sealed"])
def test_a_move_seals_and_publishes_only_the_topic_incarnation_it_froze(setup, monkeypatch, created_again_when):
    """The seal and the publish check on their own that the partition is as the move froze it: the topic it was
    planned for (its topic id), the chain frozen, the active segment on the move's from_cluster. Here the deletion
    leaves the move unfinished (as a controller before this check did); the move is rolled back, not carried into
    the topic created again, whether that happened before its seal was read or before it was published."""
    api, kafka = setup
    ctl = api.controller
    monkeypatch.setattr(ctl, "_roll_back_moves", lambda s, name: None, raising=False)
    kafka.ends.update({("c1", "t", 0): 5, ("c2", "t", 1): 3})
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    mover._freeze(ids)
    mover._await_acks(ids, lambda *_: None)
    if created_again_when == "sealed":
        mover._seal(ids, lambda *_: None)
    api.delete("/v1/topics/t").raise_for_status()
    assert _move_states(ctl)[0][0] == created_again_when
    _created_again_and_written(api, kafka)
    assert mover.run(ids) == {"rolled_back": 1}
    assert "topic deleted and created again during the move" in _move_states(ctl)[0][1]
    assert _untouched(ctl.view.chain("t", 0))


def test_the_database_refuses_a_second_unfinished_move_of_a_partition(setup):
    """Whatever plans them (two controllers, a failover beside a scale-up run), one logical partition has at most
    one unfinished move: the unique index over unfinished moves (revision 0011). Finished ones do not count."""
    import time

    from sqlalchemy.exc import IntegrityError

    from fedkafka.controller.models import MoveRow

    api, _ = setup
    ctl = api.controller

    def move(state: str, to_cluster: str = "c2") -> MoveRow:
        return MoveRow(topic="t", partition=0, from_cluster="c1", to_cluster=to_cluster, to_topic="t",
                       to_partition=1, state=state, updated_at=time.time())

    with ctl.session() as s:
        s.add_all([move("done"), move("rolled_back"), move("rolled_back"), move("frozen")])
        s.commit()
        for state in ("planned", "frozen", "sealed"):
            s.add(move(state, to_cluster="c3"))
            with pytest.raises(IntegrityError):
                s.commit()
            s.rollback()


def test_two_controllers_planning_one_partition_at_once_record_one_move(make_api, recording_kafka_class):
    """Two plans of one partition (a failover's and a scale-up's, another target each), the second read
    `busy` while the first's transaction was still open: the old code recorded both, and the first to roll back
    unfroze the chain the other froze, or one move's seal was published on the other's segment. Two controllers
    on one database, so no lock of a process orders them: the database's index refuses the second, which plans
    again without that partition."""
    import threading

    from sqlalchemy import event

    first, second = make_api(), make_api()
    for cid in ("c1", "c2", "c3"):
        first.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    first.put("/v1/topics/t", json={"partitions": 3, "placement": "blocks"}).raise_for_status()
    second_writes, first_inside = threading.Event(), threading.Event()

    def slow_commit(s):  # the first plan's transaction stays open until the second one writes
        if threading.current_thread().name == "first":
            first_inside.set()
            second_writes.wait(30)

    def writing(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT"):
            second_writes.set()

    first.controller.check_leader = slow_commit
    event.listen(second.controller.engine, "before_cursor_execute", writing)
    planned = {}
    t = threading.Thread(name="first", target=lambda: planned.update(
        first=Mover(first.controller).plan(1, [Move("t", 0, "c1", "c2", "t", 7)])))
    t.start()
    assert first_inside.wait(30)  # a thread started late on a loaded machine must not let the second plan go first
    planned["second"] = Mover(second.controller).plan(2, [Move("t", 0, "c1", "c3", "t", 7, gap=1 << 40)])
    t.join()
    assert len(planned["first"]) == 1 and planned["second"] == []
    assert _move_states(first.controller) == [("planned", None)]
