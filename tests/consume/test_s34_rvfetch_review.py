"""Review s34-rvfetch of the consume path (Fetch over segment chains and clusters): each strict xfail shows a defect
on the code it was written against (a consumer that misses records, reads one twice, or is stuck)."""

from __future__ import annotations

import asyncio
import uuid

from kio.schema.errors import ErrorCode

from consume.test_abandoned_polls_unit import _batch, _Broker, _close, _setup, _until
from consume.test_fetch_fairness_unit import BUSY_PARTITION, SLOW, SLOW_PARTITION, fetch_plan, fetch_through
from consume.test_handlers_unit import (
    GAP,
    Physical,
    fetch_request,
    gap_ctx,
    list_answers,
    list_request,
    partitions,
)
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_type
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.handlers import fetch, list_offsets
from fedkafka.proxy.plan import UNANSWERED, Context, Plan
from fedkafka.security.session import Session
from fedkafka.view.model import Cluster, ClusterState, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

FETCHES = 10


def _has_records(result) -> bool:
    return result is not UNANSWERED and any(p.records for t in result.responses for p in t.partitions)


def test_a_slower_cluster_s_records_reach_the_client_while_a_faster_cluster_always_has_records():
    """A consumer reads p1 (cluster "busy": a steady trickle, so its broker answers every Fetch at once with a record)
    and p2 (cluster "quiet" here only by name: it has a backlog, and answers every Fetch with records too, just later
    than busy: a farther or more loaded cluster). Kafka's broker answers every partition with data up to max_bytes;
    a Java client talking to two brokers keeps one Fetch in flight at each. The proxy finished each Fetch at busy's
    answer and dropped p2's (UNANSWERED: no records, `fetch._translate`); the next Fetch asked again, busy answered
    first again, and so on: p2's records never reached the client (0 of 10 Fetches), its lag growing for as long as
    p1 is written to (DESIGN §3.1 says the abandoned poll's data "reaches the client with its next Fetch after that
    poll ended": not when a faster cluster answers that Fetch first). Consequence: a stuck consumer for every
    partition of the slower cluster. Now a dropped answer with records makes the next Fetch wait for its broker too
    (`fetch._fair_plan`): p2 gets records at every other Fetch, p1 at every one."""

    async def main():
        busy, slow = _Broker(auto=_batch(0)), _Broker()
        d, pool, slow_port = await _setup(busy, slow, quiet_cluster=SLOW.cluster)
        busy_port = busy.server.sockets[0].getsockname()[1]
        session = Session()  # one client connection's
        delivered = dry = longest_dry = 0  # Fetches with p2's records; in a row without them, the most of those
        heard: list[int] = []  # the dropped calls whose answer the proxy read
        for n in range(FETCHES):
            fetching = asyncio.ensure_future(fetch_through(d, fetch_plan(session, heard)))
            await _until(lambda asked=n + 1: len(slow.requests) == asked == len(busy.requests) and busy.out == 0)
            # busy's answer (records, at once) is read by the proxy: then slow answers what it was asked, records too
            await _until(lambda f=fetching: f.done() or pool.dedicated_in_use("127.0.0.1", busy_port) == 0)
            slow.answer(n, _batch(8))
            out = partitions(await fetching)
            assert out[BUSY_PARTITION].records
            delivered += bool(out[SLOW_PARTITION].records)
            dry = 0 if out[SLOW_PARTITION].records else dry + 1
            longest_dry = max(longest_dry, dry)
            # slow's answer was read: given to this Fetch or, dropped, heard of (the next Fetch comes after it)
            await _until(lambda dropped=n + 1 - delivered: len(heard) == dropped and not d._poll_tasks
                         and pool.dedicated_in_use("127.0.0.1", slow_port) == 0)
        asked = len(slow.requests)
        await _close(pool, busy, slow)
        assert asked == FETCHES  # every Fetch asked the slow cluster, and it answered each with records
        assert delivered >= FETCHES // 2 and longest_dry <= 1, (
            f"p2 got records in {delivered} of {FETCHES} Fetches ({longest_dry} in a row without); its cluster "
            f"answered all {asked} with data")

    asyncio.run(main())


def _kafka_out_of_range(topic: str, partition: int):
    """Kafka's Fetch answer for a position below the log start or past the log end alike (ReplicaManager.readFromLog:
    `createLogReadResult(e)`): OFFSET_OUT_OF_RANGE, high watermark and log start unknown (-1), no records."""
    return build(response_type(1, 12), {"responses": [{"topic": topic, "partitions": [
        {"partition_index": partition, "error_code": ErrorCode.offset_out_of_range, "high_watermark": -1,
         "last_stable_offset": -1, "log_start_offset": -1, "aborted_transactions": None,
         "preferred_read_replica": -1, "records": b""}]}]})


def _bounds_asked(answer, values: dict):
    """The Fetch's answer once any round asking log bounds (ListOffsets) is answered from `values`
    ((cluster, partition, timestamp) -> (offset, timestamp))."""
    while isinstance(answer, Plan):
        answer = answer.finish(list_answers(answer.calls, values))
    return answer


def _landing(p) -> int | None:
    """Where a client's position lands after a partition answer with batches (None: no batch, it stays)."""
    heads = list(rec.iter_batches(p.records)) if p.records else []
    return heads[-1].base_offset + heads[-1].last_offset_delta + 1 if heads else None


def test_a_position_in_the_gap_below_the_tail_s_log_start_is_not_moved_past_the_rest_of_the_tail():
    """c1 died with its segment active (FAILED: sealed at 30, the next segment at 30 + GAP) and came back with a tail
    of physical 30..36 (high watermark 37). DeleteRecords through the proxy to logical 33, which falls in the tail
    (`delete_records.plan_deletion`), moved c1's log start to 33. A group had committed 31 before c1 died (inside the
    gap now: the seal is the last scanned end). Its consumer fetches 31: c1 answers OFFSET_OUT_OF_RANGE (31 is below
    its log start) exactly as it would past its log end. The proxy takes it for a tail that ended below 31 and moves
    the reader over the whole gap (30 + GAP), though ListOffsets EARLIEST says 33 and records 33..36 are there:
    Kafka's broker would answer OFFSET_OUT_OF_RANGE and the consumer reset to earliest, 33. Consequence: records
    33..36 (acked, not deleted) are never read by that consumer; its commit moves past them. Fixed: the proxy asks
    c1's log start and high watermark (ListOffsets) and answers OFFSET_OUT_OF_RANGE below the log start."""
    tail_log_start, tail_end = 33, 37
    plan = list_offsets.handle(gap_ctx(Physical()), None, list_request((0, -2)))
    values = {("c1", 0, -2): (tail_log_start, -1), ("c1", 0, -1): (tail_end, -1), ("c2", 0, -2): (4, -1)}
    (earliest,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
    assert earliest.offset == tail_log_start  # the proxy itself says records from 33 on are readable

    plan = fetch.handle(gap_ctx(Physical()), None, fetch_request(("log", 0, 31)))
    (call,) = plan.calls
    assert call.target.cluster == "c1" and call.request.topics[0].partitions[0].fetch_offset == 31
    answer = _bounds_asked(plan.finish([_kafka_out_of_range("t", 0)]), values)
    p = partitions(answer)[("log", 0)]
    landing = _landing(p)
    assert p.error_code == ErrorCode.offset_out_of_range or (landing is not None and landing <= tail_log_start), (
        f"the reader at 31 is moved to {landing} (error {p.error_code}), past records {tail_log_start}.."
        f"{tail_end - 1} still in the tail")


# c1 died with its segment active (sealed at 30, its tail in the gap), c2 took the writes, c1 came back and the
# partition moved back onto c1's partition from its log end then, 40: the tail is physical 30..39, known to the chain
# (`PartitionChain.readable_end` = 40), and c1 is an active cluster holding the active segment again
BACK = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 4, 10, 30 + GAP),
                                Segment("c1", "t", 0, 40, None, 36 + GAP)), leader_epoch=2)
BACK_VIEW = View(version=5, clusters={c: Cluster(c, f"{c}:9092") for c in ("c1", "c2")},
                 topics={"log": LogicalTopic("log", uuid.uuid4().hex, (BACK,))}, coordination_cluster="c2",
                 proxies=(ProxyInfo(1, "p1", 9092, ProxyRole.BOTH),))


def test_a_known_tail_on_a_cluster_that_is_active_again_is_waited_for_through_a_blip_not_skipped():
    """The tail 30..39 was written (acks=all) before c1 died, and the chain knows it is there: the move back onto c1
    started at c1's log end, 40. A reader of the gap at 30 (a group that had committed 30 before c1 died) fetches
    during a moment c1 does not answer (a broker restart, a network blip: the proxy marks it unreachable and retries
    every second). The proxy answers a gap skip to 30 + GAP, as for a dead cluster whose tail may not exist: the
    reader never reads 30..39. Below the seal the same blip is answered NOT_LEADER_OR_FOLLOWER ("acked records:
    never skipped", DESIGN §9.2); here the records are as acked and as known. Consequence: records 30..39 lost to
    that consumer (readable only by seeking back)."""
    assert BACK.readable_end(BACK.segments[0]) == 40
    blip = Context(view=BACK_VIEW, me=BACK_VIEW.proxies[0], advertised={}, physical=Physical(down={"c1"}),
                   producer_ids=None)
    answer = fetch.handle(blip, None, fetch_request(("log", 0, 30)))
    p = partitions(answer.finish([]) if isinstance(answer, Plan) else answer)[("log", 0)]
    landing = _landing(p)
    assert landing is None or landing <= 40, f"the reader at 30 is moved to {landing}, past the tail 30..39"


def test_list_offsets_by_timestamp_waits_for_the_active_segment_of_a_cluster_failed_over_from_before():
    """BACK: the active segment is on c1 again. c1 blips unreachable; a consumer asks the first offset at or after T
    (offsetsForTimes, a by-duration reset). Only c1's active segment has records that late; c2's sealed segment
    answers none. The proxy leaves c1's segments out, as for a dead cluster of a failover, and answers 'no record
    that late' (offset -1, no error) instead of the retriable NOT_LEADER_OR_FOLLOWER it answers for any other
    unreachable segment: the client takes the partition for having nothing at or after T (Java's offsetsForTimes
    answers null; a by-duration reset then goes to the log end), skipping the active segment's records."""
    blip = Context(view=BACK_VIEW, me=BACK_VIEW.proxies[0], advertised={}, physical=Physical(down={"c1"}),
                   producer_ids=None)
    plan = list_offsets.handle(blip, None, list_request((0, 1500)))
    values = {("c2", 0, 1500): (-1, -1)}  # c2 holds no record at or after 1500; c1 is not asked (unreachable)
    (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
    assert p.error_code == ErrorCode.not_leader_or_follower, (
        f"answered offset {p.offset} (error {p.error_code}) while the active segment's cluster could not be asked")


def test_a_sealed_segment_is_not_skipped_as_lost_before_its_cluster_s_first_metadata_refresh():
    """c1 is being decommissioned (DRAINING): readers still read its sealed segment, logical 0..29. An operator
    changes c1's bootstrap (PUT /v1/clusters/c1, say a broker replaced); the new view reaches the proxy, whose
    `PhysicalClusters.set_clusters` starts c1 over: reachable (optimistic until a refresh fails), no leader, no
    topic id, until the refresh it asks for answers (50 ms at best, seconds when a listed broker is down). A Fetch at
    10 in that window finds no leader, and `lost_for_good` sees a reachable cluster, not active, without the physical
    topic: 'lost for good'. The reader is moved to the next segment (30): records 10..29, on c1 all along, are never
    read by that consumer, whose next commit passes them. Expected: NOT_LEADER_OR_FOLLOWER (retriable), as for a
    cluster whose leader is not known."""
    chain = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 4, None, 30)),
                           leader_epoch=1)
    view = View(version=7, clusters={"c1": Cluster("c1", "c1b:9092", ClusterState.DRAINING),
                                     "c2": Cluster("c2", "c2:9092")},
                topics={"log": LogicalTopic("log", uuid.uuid4().hex, (chain,))}, coordination_cluster="c2",
                proxies=(ProxyInfo(1, "p1", 9092, ProxyRole.BOTH),))
    physical = PhysicalClusters()
    physical.set_clusters({c.id: c.bootstrap for c in view.clusters.values()})  # the bootstrap changed: c1 anew
    context = Context(view=view, me=view.proxies[0], advertised={}, physical=physical, producer_ids=None)
    answer = fetch.handle(context, None, fetch_request(("log", 0, 10)))
    p = partitions(answer.finish([]) if isinstance(answer, Plan) else answer)[("log", 0)]
    landing = _landing(p)
    assert landing is None and p.error_code == ErrorCode.not_leader_or_follower, (
        f"the reader at 10 is moved to {landing} (error {p.error_code}): c1's records 10..29 skipped as lost")
