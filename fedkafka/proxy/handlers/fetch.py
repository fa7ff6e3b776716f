"""Fetch (consume side): each logical partition is read from the segment holding the requested offset.

Per partition: refuse it past the proxy's fence (its view may be moves behind: docs/DESIGN.md §4.9), check
the client's logical leader epoch (never forwarded), resolve the logical offset to a
segment and physical offset (`view.offsets.resolve_fetch`), ask that segment's cluster, then answer in
logical space: batches beyond a seal dropped, base offsets shifted, watermarks and aborted transactions
translated (`records.fit_to_segment`, `view.offsets`). Sessionless: every answer has session_id 0.
A position inside an unclean gap (docs/DESIGN.md §9) reads the tail its dead cluster may hold and, where
there is none, is answered with empty batches that move the reader to the gap's end.
A fetch finishes without waiting on a long poll as Kafka's broker answers at once (ReplicaManager.fetchMessages):
a partition answered with data or an error (the proxy's own answer, or a broker's) ends it (`_ends_the_wait`,
`_answers_at_once`, `Plan.return_early`), and a quota-throttled broker's empty answer (KIP-219) is no error: its
partitions get no records and the client the largest throttle time (`_throttle_ms`). Each call
runs on a dedicated upstream connection because a long-poll fetch holds its broker connection; the core sends a
client connection's calls to one broker one at a time, so a poll left running by an early finish delays the next
call there rather than piling up beside it (`UpstreamFetch.waiting_at_most`, docs/DESIGN.md §3.1).
The broker's answer is read by records.py (`UpstreamFetch.read_response`), its record sets left in the broker's
frame, and the client's is written by records.py around them (`FetchAnswer`): an unchanged record set (an
identity segment) goes from the broker's frame to the client's socket without a copy, and a moved segment's
large batches too, but for their rewritten first 16 bytes (`records.fit_to_segment_parts`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, ClassVar

from kio.schema.errors import ErrorCode

from fedkafka.protocol import records as rec
from fedkafka.protocol.codec import DecodeError
from fedkafka.proxy.plan import (
    UNANSWERED,
    Broker,
    Call,
    Context,
    Plan,
    UpstreamError,
    as_now,
    authorized,
    lost_for_good,
    readable_chain,
    topic_missing,
)
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import PartitionChain, Segment
from fedkafka.view.offsets import FetchTarget, logical_high_watermark, resolve_fetch

API_KEYS = {1: (4, 12)}
ROLE = "consume"
AUTHORIZES = True

MAX_OFFSET = (1 << 63) - 1
MIN_OFFSET = -(1 << 63)
# The upstream call may run this much longer than the (clamped) max_wait: the broker answers at max_wait,
# plus its own time to read and send up to max_bytes (the old fixed timeout for every call was 40 s).
WAIT_MARGIN_S = 20.0
_REFRESH_ON = (ErrorCode.not_leader_or_follower, ErrorCode.unknown_topic_or_partition,
               ErrorCode.leader_not_available)

log = logging.getLogger(__name__)


@dataclass(slots=True)  # not frozen: one per partition of every Fetch (a frozen __init__ sets each field slowly)
class _Route:
    topic: str
    partition: int
    chain: PartitionChain
    target: FetchTarget
    partition_max_bytes: int
    asked: Any  # the client's partition request, routed again if the view changed before the answer (`_still_routed`)


def handle(ctx: Context, header, request):
    version = type(request).__version__
    if getattr(request, "session_id", 0) != 0:
        # we never hand out a session id, so a client asking for one is confused: make it start over
        return FetchAnswer(version, ErrorCode.fetch_session_id_not_found, ())
    asked = _asked(request)
    answers: dict[tuple[str, int], rec.FetchPartitionData] = {}
    groups: dict[tuple[str, int], list[_Route]] = {}
    may_read: dict[str, bool] = {}
    for (topic, partition), p in asked.items():
        if topic not in may_read:
            may_read[topic] = authorized(ctx, Operation.READ, ResourceType.TOPIC, topic)
        route = _route(ctx, topic, p) if may_read[topic] else _error(ErrorCode.topic_authorization_failed)
        placed = route if isinstance(route, rec.FetchPartitionData) else _placed(ctx, route)
        if isinstance(placed, rec.FetchPartitionData):
            answers[(topic, partition)] = placed
        elif isinstance(route, _Route):
            groups.setdefault(placed, []).append(route)

    routes_per_call = list(groups.values())
    max_wait_ms = min(max(request.max_wait // timedelta(milliseconds=1), 0), ctx.max_fetch_wait_ms)
    if any(_ends_the_wait(a) for a in answers.values()):
        max_wait_ms = 0  # a gap skip (data) or an error answered here: do not hold it back for a long poll
    brokers = [Broker(cluster, node) for cluster, node in groups]
    owed = _owed(ctx)
    calls = [Call(broker, _upstream_request(request, routes, max_wait_ms), dedicated=True,
                  timeout_s=max_wait_ms / 1000 + WAIT_MARGIN_S, client_timeout=True)
             for broker, routes in zip(brokers, routes_per_call, strict=True)]

    def finish(results: list):
        now = as_now(ctx) if results else None  # the view or fence changed while the calls were out
        if owed:  # a poll dropped before ended with records while this Fetch was out, which heard its broker itself
            owed.difference_update(b for b, r in zip(brokers, results, strict=True) if r is not UNANSWERED)
        throttle_ms = 0  # the longest a broker asks the proxy to back off: the client backs off as long (KIP-219)
        for broker, routes, result in zip(brokers, routes_per_call, results, strict=True):
            answers.update(_translate(ctx, routes, result, now, broker))
            throttle_ms = max(throttle_ms, _throttle_ms(result))
        budget = _Budget(request.max_bytes)  # over every answer with records, gap skips too, in the request's order
        return FetchAnswer(version, ErrorCode.none, tuple(
            rec.FetchTopicData(name, tuple(budget.fit(answers[(name, p)], p) for p in parts))
            for name, parts in _in_topics(asked)), throttle_time_ms=throttle_ms)

    if not calls:
        return finish([])
    return _fair_plan(calls, finish, brokers, owed)


def _owed(ctx: Context) -> set[Broker]:
    """The brokers whose answers this client connection's fetches dropped (`Session.fetch_owed`, made on first use)."""
    owed = ctx.session.fetch_owed
    if owed is None:
        owed = ctx.session.fetch_owed = set()
    return owed


def _fair_plan(calls: list[Call], finish, brokers: list[Broker], owed: set[Broker]) -> Plan:
    """The fetch's plan: it finishes at the first answer Kafka's broker would give at once (`_answers_at_once`), but
    not before the brokers whose such answer the connection's fetches dropped since they last heard them (`owed`,
    `_note_dropped`): a faster cluster with records at every Fetch had a slower one's answers dropped every time, its
    partitions starved (DESIGN §3.1). Kafka's broker answers every partition with data; here a partition whose records
    were dropped gets them with the connection's next Fetch after the dropped answer came, which waits for its broker
    (within the client's max_wait; its records are still there, so its broker answers at once). A cluster with
    nothing ends its poll empty and is owed nothing: no Fetch waits for it. `owed` is consumed here (a broker not
    asked now is not waited for later): it holds at most the brokers of the polls this connection left running."""
    awaited = tuple(i for i, b in enumerate(brokers) if b in owed) if owed else ()
    owed.clear()
    late = functools.partial(_note_dropped, owed, brokers) if len(calls) > 1 else None
    return Plan(calls, finish, return_early=_answers_at_once, awaited=awaited, answered_late=late)


def _note_dropped(owed: set[Broker], brokers: list[Broker], index: int, result) -> None:
    """A call its fetch finished without ended: dropped, and owed to the connection's next Fetch when it held what
    Kafka's broker answers at once (records, an error, a throttle); nothing when it timed out empty or failed."""
    if _answers_at_once(result):
        owed.add(brokers[index])


def _asked(request) -> dict[tuple[str, int], Any]:
    """The client's partition requests, each (topic, partition) once, as Kafka's broker reads a Fetch (a
    LinkedHashMap): where the first entry of it was, with the last entry's request. Its answer names each once."""
    asked: dict[tuple[str, int], Any] = {}
    for t in request.topics:
        for p in t.partitions:
            asked[(t.topic, p.partition)] = p  # a dict keeps the first position, as a LinkedHashMap's put
    return asked


def _in_topics(asked: dict[tuple[str, int], Any]) -> list[tuple[str, list[int]]]:
    """The answer's topics: the partitions in request order, consecutive ones of a topic in one entry (as Kafka's
    FetchResponse groups them)."""
    topics: list[tuple[str, list[int]]] = []
    for topic, partition in asked:
        if not topics or topics[-1][0] != topic:
            topics.append((topic, []))
        topics[-1][1].append(partition)
    return topics


def _placed(ctx: Context, route: _Route) -> tuple[str, int] | rec.FetchPartitionData:
    """The (cluster, leader) to ask for a routed partition, or the answer the proxy gives without asking."""
    seg = route.target.segment
    if _nothing_left(route.target):
        return _skip_gap(route)
    node = ctx.physical.leader(seg.cluster, seg.topic, seg.partition)
    if node is None or not ctx.physical.reachable(seg.cluster):
        ctx.physical.request_refresh(seg.cluster)
        if route.target.in_gap and _tail_out_of_reach(ctx, seg):
            return _skip_gap(route)
        if lost_for_good(ctx, route.chain, seg):  # below its seal: to the next segment, nothing will answer here
            nxt = route.chain.next_segment(seg)  # (a sealed segment has one)
            return _skip_gap(route, nxt.logical_base if nxt is not None else seg.to_logical(seg.sealed_phys_end()))
        return _error(ErrorCode.not_leader_or_follower)
    return seg.cluster, node


def _route(ctx: Context, topic: str, p) -> _Route | rec.FetchPartitionData:
    """Where to read a logical partition, or the error answer for it."""
    chain = readable_chain(ctx, topic, p.partition, getattr(p, "current_leader_epoch", -1))
    if not isinstance(chain, PartitionChain):
        return _error(chain)
    target = resolve_fetch(chain, p.fetch_offset)
    if not isinstance(target, FetchTarget) or not 0 <= target.physical_offset <= MAX_OFFSET:
        return _error(ErrorCode.offset_out_of_range)
    return _Route(topic, p.partition, chain, target, p.partition_max_bytes, p)


def _tail_out_of_reach(ctx: Context, seg: Segment) -> bool:
    """Inside a gap, the tail cannot be read now when its cluster is dead, or back without the physical topic: the
    reader skips it (docs/DESIGN.md §9.2). A cluster that answers and knows the topic but names no leader for the
    partition yet (just restarted, its leader election follows), or whose metadata the proxy has not read yet (just
    tracked: `topic_missing`), is waited for: a reader moved past the gap then would pass records readable a moment
    later, and never come back for them."""
    return not ctx.physical.reachable(seg.cluster) or topic_missing(ctx, seg)


def _upstream_request(request, routes: list[_Route], max_wait_ms: int) -> UpstreamFetch:
    by_topic: dict[str, list[rec.FetchPartitionRequest]] = {}
    for r in routes:
        seg = r.target.segment
        by_topic.setdefault(seg.topic, []).append(
            rec.FetchPartitionRequest(seg.partition, r.target.physical_offset, r.partition_max_bytes))
    return UpstreamFetch(int(type(request).__version__), max_wait_ms, request.min_bytes, request.max_bytes,
                         request.isolation_level,
                         tuple(rec.FetchTopicRequest(name, tuple(parts)) for name, parts in by_topic.items()))


@dataclass(frozen=True, slots=True)
class UpstreamFetch:
    """The FetchRequest to one broker, in physical names, sessionless, written by records.py
    (`frame_parts`), whose answer records.py reads (`read_response`) with the record sets left in the broker's
    frame. kio's field names, as the client's request."""

    __api_key__: ClassVar[int] = 1
    version: int
    max_wait_ms: int
    min_bytes: int
    max_bytes: int
    isolation_level: int
    topics: tuple[rec.FetchTopicRequest, ...]

    @property
    def __version__(self) -> int:
        return self.version

    @property
    def max_wait(self) -> timedelta:
        return timedelta(milliseconds=self.max_wait_ms)

    def waiting_at_most(self, max_wait_ms: int) -> UpstreamFetch:
        """This request with a shorter wait: a call the core sent only after an earlier poll of its client
        connection to the same broker ended, given what is left of the client's max_wait (core/dispatch.py)."""
        return replace(self, max_wait_ms=max(0, min(self.max_wait_ms, max_wait_ms)))

    def frame_parts(self, correlation_id: int, client_id: str | None) -> list[bytes]:
        return [rec.fetch_request_frame(self.version, correlation_id, client_id, self.max_wait_ms, self.min_bytes,
                                        self.max_bytes, self.isolation_level, self.topics)]

    def read_response(self, frame: bytes | memoryview) -> rec.FetchResponseFrame:
        """The broker's FetchResponse (after its size prefix); a malformed one fails the call as a kio DecodeError
        does (its partitions are answered NOT_LEADER_OR_FOLLOWER)."""
        try:
            return rec.read_fetch_response(frame, self.__version__)
        except rec.MalformedFrame as e:
            raise DecodeError(f"malformed FetchResponse: {e}") from None


@dataclass(frozen=True, slots=True)
class FetchAnswer:
    """The client's answer, written by records.py around the record sets (`response_frame`: parts, the large record
    sets by reference); `count_errors` feeds the core's metrics. kio's field names, as the broker's answer, but for
    the throttle time, in ms as records.py reads and writes it."""

    __api_key__: ClassVar[int] = 1
    version: int
    error_code: int
    responses: tuple[rec.FetchTopicData, ...]
    session_id: int = 0  # sessionless: every answer has session_id 0
    throttle_time_ms: int = 0  # the largest a broker answered (a quota): the client waits as long before its next

    @property
    def __version__(self) -> int:
        return self.version

    def response_frame(self, correlation_id: int) -> bytes | list[rec.Buffer]:
        parts = rec.fetch_response_parts(self.version, correlation_id, self.error_code, self.session_id,
                                         [(t.topic, t.partitions) for t in self.responses], self.throttle_time_ms)
        return bytes(parts[0]) if len(parts) == 1 else parts

    def count_errors(self, counts: dict) -> None:
        if self.error_code:
            counts[self.error_code] = counts.get(self.error_code, 0) + 1
        for t in self.responses:
            for p in t.partitions:
                if p.error_code:
                    counts[p.error_code] = counts.get(p.error_code, 0) + 1


# Errors the proxy answers itself that do not end a Fetch's wait. Kafka's broker checks the first two before it reads
# (KafkaApis.handleFetchRequest: `erroneous`, merged into the answer after the other partitions' wait). The proxy
# answers NOT_LEADER_OR_FOLLOWER itself for a segment whose cluster it cannot reach (or past its fence): a client's
# metadata refresh changes nothing there, so answered at once it would turn the other partitions' long poll into a
# busy loop of fetches for the whole outage.
_ANSWERED_AFTER_THE_WAIT = frozenset((ErrorCode.topic_authorization_failed, ErrorCode.unknown_topic_or_partition,
                                      ErrorCode.not_leader_or_follower))


def _ends_the_wait(answer: rec.FetchPartitionData) -> bool:
    """A partition the proxy answers itself that Kafka's broker would answer at once: records (a gap skip) or an
    error reading it (ReplicaManager.fetchMessages: `errorReadingData`), FENCED_LEADER_EPOCH, OFFSET_OUT_OF_RANGE."""
    return bool(answer.records) or (answer.error_code != ErrorCode.none
                                    and answer.error_code not in _ANSWERED_AFTER_THE_WAIT)


def _answers_at_once(result) -> bool:
    """A call's result that finishes the fetch without the other clusters' long polls (`Plan.return_early`), as
    Kafka's broker answers at once (ReplicaManager.fetchMessages): a partition with records or an error (an in-gap
    OFFSET_OUT_OF_RANGE becomes a gap skip), an error for the whole answer, or a quota-throttled answer (KIP-219: the
    client is to back off now). Not a failed call: its partitions are answered NOT_LEADER_OR_FOLLOWER, which a
    metadata refresh does not mend while the broker is down (connections fail at once until its leadership moves),
    so the other clusters' long polls pace the client's fetches, as for an unreachable cluster (`_ends_the_wait`)."""
    if result is None or result is UNANSWERED or isinstance(result, UpstreamError):
        return False
    if result.error_code or _throttle_ms(result) > 0:
        return True
    return any(p.records or p.error_code for t in result.responses for p in t.partitions)


def _throttle_ms(result) -> int:
    """A broker's throttle time in ms: records.py's answer (`UpstreamFetch.read_response`) or a kio FetchResponse;
    0 for a failed or unanswered call."""
    if isinstance(result, rec.FetchResponseFrame):
        return result.throttle_time_ms
    throttle = getattr(result, "throttle_time", None)
    return 0 if throttle is None else throttle // timedelta(milliseconds=1)


class _Budget:
    """The client's max_bytes over all the answer's records, in the request's order; the first non-empty partition
    always fits (as in Kafka, so a batch larger than max_bytes still makes progress)."""

    def __init__(self, max_bytes: int):
        self.left = max_bytes
        self.used = False

    def fit(self, answer: rec.FetchPartitionData, partition: int) -> rec.FetchPartitionData:
        """The answer, given its partition's index (`_error`, `_skip_gap`, `_partition_answer` make it without),
        its records dropped when they do not fit (the client fetches them again)."""
        answer.partition_index = partition
        data = answer.records
        if data:
            size = len(data)
            if self.used and size > self.left:
                answer.records = b""
            else:
                self.used = True
                self.left -= size
        return answer


def _translate(ctx: Context, routes: list[_Route], result, now: Context | None = None,
               broker: Broker | None = None) -> dict[tuple[str, int], rec.FetchPartitionData]:
    """The client's answers for one call's partitions; `now`: the proxy's view and fence when the answer arrived, if
    either changed since the routes were made (`_still_routed`); `broker`: the one that answered (named in a log
    line when its offsets do not fit in the logical space)."""
    if result is UNANSWERED:  # another cluster had data first; these partitions are asked again next fetch
        return {(r.topic, r.partition): _error(ErrorCode.none) for r in routes}
    if isinstance(result, UpstreamError):
        ctx.physical.request_refresh(result.cluster)
        return {(r.topic, r.partition): _error(ErrorCode.not_leader_or_follower) for r in routes}
    if not result.responses and _throttle_ms(result) > 0:
        # over a quota of the proxy's at that cluster, the broker answers no partition (KafkaApis.handleFetchRequest:
        # getThrottledResponse, error NONE): as that answer says to a client, no records and no error, watermarks
        # unknown (-1: a guessed one, the position, would show a false lag of 0 and a false EOF in librdkafka)
        return {(r.topic, r.partition): _error(ErrorCode.none) for r in routes}
    physical = {(t.topic, p.partition_index): p for t in result.responses for p in t.partitions}
    out = {}
    for routed in routes:
        r = routed if now is None else _still_routed(now, routed)
        if r is None:  # the proxy would no longer ask this: no records, and the client fetches again
            out[(routed.topic, routed.partition)] = _error(ErrorCode.none)
            continue
        seg = r.target.segment
        pd = physical.get((seg.topic, seg.partition))
        if pd is None:
            out[(r.topic, r.partition)] = _error(ErrorCode.unknown_server_error)
        elif pd.error_code == ErrorCode.offset_out_of_range and r.target.in_gap:
            out[(r.topic, r.partition)] = _skip_gap(r)  # the dead cluster's tail ended below the position
        elif pd.error_code != ErrorCode.none:
            if pd.error_code in _REFRESH_ON:
                ctx.physical.request_refresh(seg.cluster)
                out[(r.topic, r.partition)] = _error(ErrorCode.not_leader_or_follower)
            else:
                out[(r.topic, r.partition)] = _error(pd.error_code)
        else:
            out[(r.topic, r.partition)] = _partition_answer(r, pd, broker)
    return out


def _still_routed(now: Context, routed: _Route) -> _Route | None:
    """The route the proxy makes now for a partition whose answer arrives after its view or fence changed, when it
    asks the broker exactly what was asked (the same physical partition and offset): the answer is then the one
    this route would get, translated with the chain as it is now (records only up to a seal the old route did not
    know of). None when it would not ask that: nothing of the answer is translated (docs/DESIGN.md §4.9)."""
    r = _route(now, routed.topic, routed.asked)
    if not isinstance(r, _Route):
        return None
    seg, old = r.target.segment, routed.target.segment
    if (seg.cluster, seg.topic, seg.partition, r.target.physical_offset) != \
            (old.cluster, old.topic, old.partition, routed.target.physical_offset):
        return None
    return r


def _partition_answer(route: _Route, pd, broker: Broker | None = None) -> rec.FetchPartitionData:
    chain, seg = route.chain, route.target.segment
    delta = seg.logical_base - seg.phys_start
    try:
        data = rec.fit_to_segment_parts(pd.records or b"", phys_end=route.target.stop_before, delta=delta,
                                        max_epoch=chain.leader_epoch)
    except rec.RecordsError:
        return _error(ErrorCode.corrupt_message)
    if route.target.in_gap and not data and _tail_ended(route.target, pd):
        return _skip_gap(route)  # move the reader past the gap
    if not data and _compacted_to_seal(route.target, pd):
        return _skip_gap(route, route.target.segment.sealed_end())  # move the reader to the seal
    hw, lso = pd.high_watermark, pd.last_stable_offset
    logical_hw = logical_high_watermark(chain, seg, hw)
    if lso >= 0:  # most often the high watermark itself: translated once
        lso = logical_hw if lso == hw else logical_high_watermark(chain, seg, lso)
    aborted = None if pd.aborted_transactions is None else tuple(
        rec.AbortedTransaction(a.producer_id, seg.to_logical(a.first_offset)) for a in pd.aborted_transactions)
    # Fetch v4 answers carry no log start (v5 added it): unknown, as the broker would say
    log_start = _logical_log_start(chain, seg, getattr(pd, "log_start_offset", -1))
    # hw, lso and log start are never below -1 (at least the segment's logical base, or unknown): an answer past
    # MAX_OFFSET, or any aborted transaction, is checked (checking every answer cost 0.35 us a partition)
    if logical_hw > MAX_OFFSET or lso > MAX_OFFSET or log_start > MAX_OFFSET or aborted:
        outside = _outside_int64(logical_hw, lso, log_start, *(a.first_offset for a in aborted or ()))
        if outside is not None:
            return _unanswerable(route, broker, outside)
    return rec.FetchPartitionData(-1, ErrorCode.none, logical_hw, lso, log_start, aborted, -1, data)


def _outside_int64(*offsets: int) -> int | None:
    return next((o for o in offsets if not MIN_OFFSET <= o <= MAX_OFFSET), None)


def _unanswerable(route: _Route, broker: Broker | None, offset: int) -> rec.FetchPartitionData:
    """A broker's answer whose offsets, moved into the logical space, leave an int64 (a broken or hostile broker:
    Kafka's offsets stay far below 2^63): it cannot be written. The partition is answered UNKNOWN_SERVER_ERROR (a
    client logs it and fetches again) with one warning line, and the request's other partitions as usual; it used to
    fail the whole answer's encoding, a traceback per request and the client's connection closed."""
    seg = route.target.segment
    who = f"{seg.cluster}'s broker" if broker is None else f"{broker.cluster}'s broker {broker.node_id}"
    log.warning("%s answered %s/%d of %s/%d with an offset that does not fit in logical offsets (%d): "
                "answered UNKNOWN_SERVER_ERROR", who, seg.topic, seg.partition, route.topic, route.partition, offset)
    return _error(ErrorCode.unknown_server_error)


def _nothing_left(target: FetchTarget) -> bool:
    """In a gap, past everything its segment's physical partition may hold (a later segment starts there)."""
    return target.in_gap and target.stop_before is not None and target.physical_offset >= target.stop_before


def _tail_ended(target: FetchTarget, pd) -> bool:
    """Nothing of the dead cluster's tail at or after the position: the broker has no record there, or only
    records at or past the gap's end (a later segment of the same physical partition)."""
    if pd.high_watermark <= target.physical_offset:
        return True
    limit = target.sealed_stop_before()
    return any(h.base_offset >= limit for h in rec.walk_batches(pd.records or b"", allow_partial_tail=True))


def _compacted_to_seal(target: FetchTarget, pd) -> bool:
    """Nothing of a sealed segment left at or after the position, though its seal is still ahead: the broker's first
    complete batch is at or past it, a later segment's of the same physical partition (A -> B -> A on a compacted
    topic, whose cleaner removed the old segment's last records once their keys were written again later). Only
    that batch proves the hole: an empty answer may be a read_committed one held at the last stable offset."""
    stop = target.stop_before
    if stop is None or not pd.records:
        return False
    first = next(rec.walk_batches(pd.records, allow_partial_tail=True), None)
    return first is not None and first.base_offset >= stop


def _skip_gap(route: _Route, end: int | None = None) -> rec.FetchPartitionData:
    """The answer that moves a reader from its position to `end` (by default the end of the unclean gap): empty
    batches covering the offsets between (docs/DESIGN.md §5.5, §9). High watermark = `end`, where the reader lands."""
    end = route.target.gap_end_offset() if end is None else end
    first = route.target.segment.to_logical(route.target.physical_offset)
    return rec.FetchPartitionData(-1, ErrorCode.none, end, end, route.chain.segments[0].logical_base, None, -1,
                                  rec.gap_batches(first, end, route.chain.leader_epoch))


def _logical_log_start(chain: PartitionChain, seg: Segment, physical_start: int) -> int:
    """Inside this segment when retention removed older data of it; else the chain's first offset (older
    segments may still hold data, ListOffsets earliest gives the exact answer)."""
    if physical_start < 0:
        return physical_start
    if seg is chain.segments[0] or physical_start > seg.phys_start:
        return seg.to_logical(max(physical_start, seg.phys_start))
    return chain.segments[0].logical_base


def _error(code: ErrorCode) -> rec.FetchPartitionData:
    return rec.FetchPartitionData(-1, code, -1, -1, -1, None, -1, b"")
