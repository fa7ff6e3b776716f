"""Fetch (consume side): each logical partition is read from the segment holding the requested offset.

Per partition: refuse it past the proxy's fence (its view may be moves behind: docs/DESIGN.md §4.9), check
the client's logical leader epoch (never forwarded), resolve the logical offset to a
segment and physical offset (`view.offsets.resolve_fetch`), ask that segment's cluster, then answer in
logical space: batches beyond a seal dropped, base offsets shifted, watermarks and aborted transactions
translated (`records.fit_to_segment`, `view.offsets`). Sessionless: every answer has session_id 0.
A position inside an unclean gap (docs/DESIGN.md §9) reads the tail its dead cluster may hold and, where
there is none, is answered with empty batches that move the reader to the gap's end; so is a hole inside the
logical log (a segment's log start past the position while records before it are left, §5.5).
A fetch finishes without waiting on a long poll as Kafka's broker answers at once (ReplicaManager.fetchMessages):
a partition answered with data or an error (the proxy's own answer, or a broker's) ends it (`_ends_the_wait`,
`_answers_at_once`, `Plan.return_early`), and a quota-throttled broker's empty answer (KIP-219) is no error: its
partitions get no records and the client the largest throttle time (`_throttle_ms`). Each call
runs on a dedicated upstream connection because a long-poll fetch holds its broker connection; the core sends a
client connection's calls to one broker one at a time, so a poll left running by an early finish delays the next
call there rather than piling up beside it (`UpstreamFetch.waiting_at_most`, docs/DESIGN.md §3.1). Such a dropped
call that ends with records keeps them, bounded and charged to the process' memory budget (`_KeptAnswers`), for the
connection's next Fetch asking exactly the same there, which gets them without a call (`_kept_parts`); one with an
error, or records past the bound, is owed: that Fetch waits for its broker (`_fair_plan`).
The broker's answer is read by records.py (`UpstreamFetch.read_response`), its record sets left in the broker's
frame, and the client's is written by records.py around them (`FetchAnswer`): an unchanged record set (an
identity segment) goes from the broker's frame to the client's socket without a copy, and a moved segment's
large batches too, but for their rewritten first 16 bytes (`records.fit_to_segment_parts`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, ClassVar, cast

from kio.schema.errors import ErrorCode

from fedkafka.protocol import records as rec
from fedkafka.protocol.codec import DecodeError
from fedkafka.proxy.physical_offsets import (
    EARLIEST,
    LATEST,
    LOG_END,
    ask_physical,
    log_start_asks,
    logical_log_start,
    seg_key,
)
from fedkafka.proxy.plan import (
    UNANSWERED,
    Broker,
    Call,
    Context,
    MemoryBudget,
    Plan,
    UpstreamError,
    as_now,
    authorized,
    lost_for_good,
    readable_chain,
    topic_missing,
)
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import PartitionChain, Segment, View
from fedkafka.view.offsets import FetchTarget, logical_high_watermark, resolve_fetch

API_KEYS = {1: (4, 12)}
ROLE = "consume"
AUTHORIZES = True

MAX_OFFSET = (1 << 63) - 1
MIN_OFFSET = -(1 << 63)
# The upstream call may run this much longer than the (clamped) max_wait: the broker answers at max_wait,
# plus its own time to read and send up to max_bytes (the old fixed timeout for every call was 40 s).
WAIT_MARGIN_S = 20.0
# A Fetch waits for a call asking what an earlier one dropped (`_fair_plan`) at most the client's max_wait, and at
# least this long: a farther cluster's round trip (a client's max_wait 0 would else drop that call every time).
OWED_WAIT_FLOOR_MS = 500
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


@dataclass(slots=True, frozen=True)
class _EmptyAtASealedLogsEnd:
    """A sealed segment's empty answer at its log's end or a high watermark that lags (`_empty_at_a_sealed_logs_end`):
    its route, and `waiting`, the broker's answer as translated (the seal as high watermark: the lag still to read),
    which the reader gets while the log end read says that high watermark lags."""
    route: _Route
    waiting: rec.FetchPartitionData


def handle(ctx: Context, header, request):
    version = type(request).__version__
    if getattr(request, "session_id", 0) != 0:
        # we never hand out a session id, so a client asking for one is confused: make it start over
        return FetchAnswer(version, ErrorCode.fetch_session_id_not_found, ())
    asked = _asked(request)
    answers, groups = _routed(ctx, asked)
    kept = _kept_parts(ctx, request, groups)  # served by answers a dropped call kept: no call for them

    routes_per_call = list(groups.values())
    max_wait_ms = min(max(request.max_wait // timedelta(milliseconds=1), 0), ctx.max_fetch_wait_ms)
    if kept or any(_ends_the_wait(a) for a in answers.values()):
        max_wait_ms = 0  # a gap skip or kept records (data) or an error answered here: no long poll holds it back
    brokers = [Broker(cluster, node) for cluster, node in groups]
    owed = _owed(ctx)
    calls = [Call(broker, _upstream_request(request, routes, max_wait_ms), dedicated=True,
                  timeout_s=max_wait_ms / 1000 + WAIT_MARGIN_S, client_timeout=True)
             for broker, routes in zip(brokers, routes_per_call, strict=True)]

    def finish(results: list):
        _release(kept)  # their records are in this answer now, charged by the core while it is held
        now = as_now(ctx) if results or kept else None  # the view or fence changed while the calls were out
        if owed:  # a poll dropped before ended with records while this Fetch was out, which heard its broker itself
            heard = {b for b, r in zip(brokers, results, strict=True) if r is not UNANSWERED}
            owed.difference_update([key for key in owed if key[0] in heard])
        throttle_ms = 0  # the longest a broker asks the proxy to back off: the client backs off as long (KIP-219)
        # OFFSET_OUT_OF_RANGE read with the log's bounds, an empty answer at a sealed log's end with its log end
        unsettled: dict[tuple[str, int], _Route | _EmptyAtASealedLogsEnd] = {}
        for broker, routes, result in [*zip(brokers, routes_per_call, results, strict=True),
                                       *((k.broker, k.routes, k.result) for k in kept)]:
            for key, got in _translate(ctx, routes, result, now, broker).items():
                if isinstance(got, rec.FetchPartitionData):
                    answers[key] = got
                else:
                    unsettled[key] = got
            throttle_ms = max(throttle_ms, _throttle_ms(result))

        def answer_with(settled: dict[tuple[str, int], rec.FetchPartitionData]) -> FetchAnswer:
            answers.update(settled)
            return _fetch_answer(version, request.max_bytes, asked, answers, throttle_ms)

        if not unsettled:
            return answer_with({})
        return _settle_out_of_range(ctx, unsettled, answer_with, max_wait_ms / 1000 + WAIT_MARGIN_S)

    if not calls:
        owed.clear()  # consumed by every Fetch (`_fair_plan`): what it does not ask is forgotten
        return finish([])
    return _fair_plan(ctx, owed, calls, finish, brokers, max_wait_ms,
                      functools.partial(_release, kept) if kept else None)


def _routed(ctx: Context, asked: dict[tuple[str, int], Any]) -> tuple[dict[tuple[str, int], rec.FetchPartitionData],
                                                                      dict[tuple[str, int], list[_Route]]]:
    """The partitions the proxy answers itself, and the others' routes grouped by the (cluster, leader) to ask."""
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
    return answers, groups


def _owed(ctx: Context) -> set[tuple[Broker, str, int, int]]:
    """What this client connection's fetches dropped (`Session.fetch_owed`, made on first use): (broker, physical
    topic, partition, offset asked) of each partition a dropped answer had records or an error for."""
    owed = ctx.session.fetch_owed
    if owed is None:
        owed = ctx.session.fetch_owed = set()
    return owed


def _fair_plan(ctx: Context, owed: set[tuple[Broker, str, int, int]], calls: list[Call], finish,
               brokers: list[Broker], max_wait_ms: int, abandoned: Callable[[], None] | None) -> Plan:
    """The fetch's plan: it finishes at the first answer Kafka's broker would give at once (`_answers_at_once`), but
    not before the calls asking a partition, at the offset, whose such answer the connection's fetches dropped since
    they last heard its broker (`owed`, `_note_dropped`) and did not keep (`_KeptAnswers`: a kept answer is given
    without a call, `_kept_parts`): a faster cluster with records at every Fetch had a slower one's answers dropped
    every time, its partitions starved (DESIGN §3.1). Such a call asks min_bytes 1: its records
    (or error) are still at the broker, which answers it at once, as Kafka's broker answers a Fetch whose other
    partitions hold min_bytes; the client's min_bytes kept, a trickle cluster's broker would hold it for its whole
    max_wait. It is waited for at most the client's max_wait (`OWED_WAIT_FLOOR_MS` at least: one round trip to a
    farther cluster), then dropped as any other (a stalled broker). A call not asking an owed partition at its
    offset is not waited for (the client paused it, or seeked). `owed` is consumed here (a partition not asked now
    is not waited for later): it holds at most the partitions of the polls this connection left running.
    `abandoned`: what the plan holds that its `finish` releases (kept answers), released if it never runs."""
    awaited = tuple(i for i, (b, c) in enumerate(zip(brokers, calls, strict=True))
                    if any((b, *at, offset) in owed for at, offset in _offsets_asked(c.request).items())) \
        if owed and len(calls) > 1 else ()  # (one call: its Fetch waits for it anyway, as the client asked)
    owed.clear()
    for i in awaited:
        calls[i] = replace(calls[i], request=replace(calls[i].request, min_bytes=1))
    # a dropped answer stands in for its broker's next answer at most as long as a Fetch waits for an owed call
    within_s = max(max_wait_ms, OWED_WAIT_FLOOR_MS) / 1000
    late = functools.partial(_note_dropped, owed, _kept_store(ctx), within_s, ctx.view, brokers, calls) \
        if len(calls) > 1 else None
    return Plan(calls, finish, return_early=_answers_at_once, awaited=awaited, answered_late=late,
                awaited_within_s=within_s if awaited else None,
                abandoned=abandoned)


def _offsets_asked(request: UpstreamFetch) -> dict[tuple[str, int], int]:
    """(physical topic, partition) -> the offset an upstream Fetch asks there."""
    return {(t.topic, p.partition): p.fetch_offset for t in request.topics for p in t.partitions}


def _note_dropped(owed: set[tuple[Broker, str, int, int]], kept: _KeptAnswers | None, keep_s: float, view: View,
                  brokers: list[Broker], calls: list[Call], index: int, result) -> None:
    """A call its fetch finished without ended: dropped, and owed to the connection's next Fetch asking the same
    there, each partition it answered with what Kafka's broker answers at once (records, an error; every partition
    asked for an error of the whole answer); nothing when it timed out empty or failed, nor for a quota throttle
    (KIP-219: its broker muted that connection for the throttle time, and a call waited for there would hold the
    other clusters' records as long; the broker's next answer to this connection tells the throttle again). A
    partition's records are kept too (`kept`, bounded: `_KeptAnswers.keep`; for `keep_s` seconds), given to that
    next Fetch without a call: they are not read again from the broker."""
    if not _answers_at_once(result) or _throttle_ms(result) > 0:
        return
    broker, request = brokers[index], calls[index].request
    asked = {(t.topic, p.partition): p for t in request.topics for p in t.partitions}
    if result.error_code:
        owed.update((broker, *at, p.fetch_offset) for at, p in asked.items())
        return
    for t in result.responses:
        for p in t.partitions:
            part = asked.get((t.topic, p.partition_index))
            if part is None or not (p.records or p.error_code):
                continue
            key = (broker, t.topic, p.partition_index, part.fetch_offset)
            owed.add(key)  # (a kept answer used, its call is not made; else its call is waited for)
            if kept is not None and not p.error_code:
                kept.keep(key, _Kept(p, view, request, part.partition_max_bytes), keep_s)


# What one client connection's kept answers hold at most (`_KeptAnswers`), and the share of the process' memory
# budget in use, theirs and everything else's, past which nothing more is kept (`MemoryBudget.take_spare`): kept
# answers never take the room a client's request waits for, and at most a quarter of the budget in all.
KEPT_BYTES_PER_CONNECTION = 8 * 1024 * 1024
KEPT_BUDGET_SHARE = 4
# What a kept answer holds besides its records, charged with them (`_Kept.nbytes`): its Python objects (the entry,
# its key, the partition data and its fields, ~500 bytes measured on CPython 3.11), and each aborted transaction
# of a READ_COMMITTED answer (16 bytes on the wire; an object with two ints and its tuple slot, ~120 bytes).
KEPT_ENTRY_BYTES = 512
KEPT_ABORTED_TRANSACTION_BYTES = 128


class _Kept:
    """A dropped answer's partition with records, kept for the connection's next Fetch: the broker's partition
    data with its records copied out of the broker's frame (only they are held; `nbytes` charges them with the
    objects and aborted transactions it holds), what its call asked with, the view of the Fetch that dropped it, and
    when it expires (`expires_at`, on the session's clock: set by `_KeptAnswers.keep`). Charged from
    `_KeptAnswers.keep` until `release` (once)."""

    __slots__ = ("data", "expires_at", "isolation_level", "max_bytes", "nbytes", "owner", "partition_max_bytes",
                 "version", "view")

    def __init__(self, data, view: View, request: UpstreamFetch, partition_max_bytes: int):
        self.data = rec.FetchPartitionData(
            data.partition_index, ErrorCode.none, data.high_watermark, data.last_stable_offset,
            getattr(data, "log_start_offset", -1), data.aborted_transactions, -1, data.records)
        self.nbytes = len(data.records) + KEPT_ENTRY_BYTES + \
            KEPT_ABORTED_TRANSACTION_BYTES * len(data.aborted_transactions or ())
        self.view, self.version, self.isolation_level = view, request.version, request.isolation_level
        self.max_bytes, self.partition_max_bytes = request.max_bytes, partition_max_bytes
        self.owner: _KeptAnswers | None = None  # charged to it while set
        self.expires_at = 0.0

    def serves(self, view: View, request, partition_max_bytes: int, now: float) -> bool:
        """Whether this is the answer a call asking its partition at its offset (the key it is kept under) for
        `request` would get: not expired at `now` (an older answer's log start, watermarks and records may be gone
        at the broker: retention, DeleteRecords, a re-created topic), the same view (a view change drops it), version
        and isolation level (READ_COMMITTED: its last stable offset and aborted transactions are those of its
        records), and no more records than the partition's max bytes and the request's max_bytes allow now: asked
        with no less than its call, or its records fit (fewer than a broker would give is an answer a broker may
        give; a call asking fewer would get only its first batch, KIP-74, as `_Budget` counts a broker's records)."""
        size = len(cast(rec.Buffer, self.data.records))  # (bytes, copied by `_KeptAnswers.keep`)
        return (now <= self.expires_at and view is self.view and type(request).__version__ == self.version
                and request.isolation_level == self.isolation_level
                and (partition_max_bytes >= self.partition_max_bytes or size <= partition_max_bytes)
                and (request.max_bytes >= self.max_bytes or size <= request.max_bytes))

    def release(self) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.nbytes -= self.nbytes
            owner.budget.release(self.nbytes)


class _KeptAnswers:
    """A client connection's dropped Fetch answers kept for its next Fetch (`Session.fetch_kept`, made on first use
    by a context with a memory budget, `_kept_store`): (broker, physical topic, partition, offset asked) -> that
    partition's records as its broker answered them, which the next Fetch asking exactly that gives without a call
    (`_kept_parts`). Each is charged to the process' memory budget (its spare share only: `KEPT_BUDGET_SHARE`) and
    to this connection's bound (`KEPT_BYTES_PER_CONNECTION`) from `keep` until the Fetch that used it built its
    answer (or was given up on), or the next Fetch did not ask it (`take`), or someone would wait for the budget
    (`give_back`, given to it while anything is kept: `MemoryBudget.give_back_on_wait`), or the connection closed
    (`close`): released once. What does not fit is not kept (only owed: `_fair_plan`)."""

    __slots__ = ("budget", "clock", "closed", "entries", "nbytes")

    def __init__(self, budget: MemoryBudget, clock: Callable[[], float]):
        self.budget = budget
        self.clock = clock  # the session's (monotonic, the loop's clock): when kept answers expire
        self.entries: dict[tuple[Broker, str, int, int], _Kept] = {}
        self.nbytes = 0  # kept, and taken by a Fetch not yet answered
        self.closed = False

    def keep(self, key: tuple[Broker, str, int, int], kept: _Kept, keep_s: float) -> None:
        """Keep `kept` for `keep_s` seconds (expired, the next Fetch asks its broker and releases it: an idle
        connection's expired answers hold their bytes only until someone would wait for them, `give_back`)."""
        n = kept.nbytes
        if self.closed or self.nbytes + n > KEPT_BYTES_PER_CONNECTION or \
                not self.budget.take_spare(n, KEPT_BUDGET_SHARE):
            return
        # copied out of the broker's frame (a view into it, `UpstreamFetch.read_response`): the frame is not kept
        kept.data.records = bytes(cast(rec.Buffer, kept.data.records))
        self.nbytes += n
        kept.owner = self
        kept.expires_at = self.clock() + keep_s
        if not self.entries:  # (registered while anything is kept: a callback per connection keeping, no more)
            self.budget.give_back_on_wait(self.give_back)
        older = self.entries.pop(key, None)  # (a pipelined Fetch's dropped answer of the same)
        self.entries[key] = kept
        if older is not None:
            older.release()

    def take(self) -> dict[tuple[Broker, str, int, int], _Kept]:
        """Every kept answer, none left: the Fetch taking them uses or releases each."""
        entries, self.entries = self.entries, {}
        if entries:
            self.budget.forget_give_back(self.give_back)
        return entries

    def give_back(self) -> None:
        """Someone would wait for the process' budget: every kept answer is released for them (the connection's
        next Fetch asks its brokers again, as for an answer never kept: owed, `_fair_plan`)."""
        _release_all(self.take().values())

    def close(self) -> None:
        self.closed = True
        self.give_back()


def _kept_store(ctx: Context) -> _KeptAnswers | None:
    """The connection's kept answers (made on first use), None without a memory budget to charge: nothing kept."""
    kept = ctx.session.fetch_kept
    if kept is None and ctx.budget is not None:
        kept = ctx.session.fetch_kept = _KeptAnswers(ctx.budget, ctx.session.clock)
    return kept


@dataclass(slots=True)
class _KeptPart:
    """Partitions of a Fetch one broker's kept answers serve: as a result of a call to it asking them alone."""

    broker: Broker
    routes: list[_Route]
    kept: list[_Kept]
    result: rec.FetchResponseFrame


def _kept_parts(ctx: Context, request, groups: dict[tuple[str, int], list[_Route]]) -> list[_KeptPart]:
    """The partitions of this Fetch the connection's kept answers serve (`_KeptAnswers`, `_Kept.serves`): the route
    made now asks the broker that answered (its leader now), the physical partition and the offset it answered. Their
    routes are taken out of `groups` (a group left with none gets no call); each group's are one result, translated
    as a call's with the view as it is when the Fetch finishes (`_still_routed`). Every other kept answer is released
    now: this Fetch asks something else, and the client moves on from what it gets."""
    store: _KeptAnswers | None = ctx.session.fetch_kept
    if store is None or not store.entries:
        return []
    entries, now = store.take(), store.clock()
    parts: list[_KeptPart] = []
    for (cluster, node), routes in list(groups.items()):
        broker = Broker(cluster, node)
        served: list[tuple[_Route, _Kept]] = []
        left: list[_Route] = []
        for r in routes:
            seg = r.target.segment
            kept = entries.pop((broker, seg.topic, seg.partition, r.target.physical_offset), None)
            if kept is not None and kept.serves(ctx.view, request, r.partition_max_bytes, now):
                served.append((r, kept))
                continue
            left.append(r)
            if kept is not None:
                kept.release()
        if served:
            result = rec.FetchResponseFrame(0, 0, 0, tuple(
                rec.FetchTopicData(r.target.segment.topic, (k.data,)) for r, k in served))
            parts.append(_KeptPart(broker, [r for r, _ in served], [k for _, k in served], result))
            if left:
                groups[(cluster, node)] = left
            else:
                del groups[(cluster, node)]
    _release_all(entries.values())
    return parts


def _release(parts: list[_KeptPart]) -> None:
    for part in parts:
        _release_all(part.kept)


def _release_all(kept: Iterable[_Kept]) -> None:
    for k in kept:
        k.release()


def _fetch_answer(version: int, max_bytes: int, asked: dict[tuple[str, int], Any],
                  answers: dict[tuple[str, int], rec.FetchPartitionData], throttle_ms: int) -> FetchAnswer:
    budget = _Budget(max_bytes)  # over every answer with records, gap skips too, in the request's order
    return FetchAnswer(version, ErrorCode.none, tuple(
        rec.FetchTopicData(name, tuple(budget.fit(answers[(name, p)], p) for p in parts))
        for name, parts in _in_topics(asked)), throttle_time_ms=throttle_ms)


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
        if route.target.in_gap and not _tail_known(route) and _tail_out_of_reach(ctx, seg):
            return _skip_gap(route)
        if lost_for_good(ctx, route.chain, seg):  # below its seal or a known tail's end: nothing will answer here
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


def _tail_known(route: _Route) -> bool:
    """Inside a gap, a tail the chain knows holds the position's record: a later segment of the same physical
    partition starts past it (A -> B -> A: the move back began at A's log end then, so the tail below was written and
    replicated before A failed). It is waited for as records below a seal are (docs/DESIGN.md §9.2), never skipped
    because its cluster blips unreachable or its high watermark, just restarted, still lags: the reader would pass
    records it never comes back for. Only once they are lost for good (`proxy.plan.lost_for_good`) is it moved on.
    A position at or past that segment's start is not routed here (`_nothing_left`); the segments after `seg` are
    the ones with a larger logical base (the gap is between)."""
    seg = route.target.segment
    return any(s.logical_base > seg.logical_base and (s.cluster, s.topic, s.partition) ==
               (seg.cluster, seg.topic, seg.partition) for s in route.chain.segments)


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
    Kafka's broker answers at once (ReplicaManager.fetchMessages): a partition with records or an error (an
    OFFSET_OUT_OF_RANGE read with the log's bounds becomes a skip or the client's OFFSET_OUT_OF_RANGE,
    `_settle_out_of_range`), an error for the whole answer, or a quota-throttled answer (KIP-219: the
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
               broker: Broker | None = None) -> dict[tuple[str, int], rec.FetchPartitionData | _Route |
                                                     _EmptyAtASealedLogsEnd]:
    """The client's answers for one call's partitions; `now`: the proxy's view and fence when the answer arrived, if
    either changed since the routes were made (`_still_routed`); `broker`: the one that answered (named in a log
    line when its offsets do not fit in the logical space). Answered later by the bounds round
    (`_settle_out_of_range`): a route, for an OFFSET_OUT_OF_RANGE inside a gap, on a sealed segment or on a segment
    after the chain's first, answered once the physical log's bounds and the logical log start are known (on the
    active first segment outside a gap nothing is before it, and it is the client's answer as it is); an
    `_EmptyAtASealedLogsEnd`, for a sealed segment's empty answer at a high watermark at or below the position
    (`_empty_at_a_sealed_logs_end`), answered once its log end is known."""
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
    out: dict[tuple[str, int], rec.FetchPartitionData | _Route | _EmptyAtASealedLogsEnd] = {}
    for routed in routes:
        r = routed if now is None else _still_routed(now, routed)
        if r is None:  # the proxy would no longer ask this: no records, and the client fetches again
            out[(routed.topic, routed.partition)] = _error(ErrorCode.none)
            continue
        seg = r.target.segment
        pd = physical.get((seg.topic, seg.partition))
        if pd is None:
            out[(r.topic, r.partition)] = _error(ErrorCode.unknown_server_error)
        elif pd.error_code == ErrorCode.offset_out_of_range and \
                (r.target.in_gap or seg is not r.chain.segments[0] or not seg.active):
            out[(r.topic, r.partition)] = r  # below the log start, or past its end: ask which (and what is before)
        elif pd.error_code != ErrorCode.none:
            if pd.error_code in _REFRESH_ON:
                ctx.physical.request_refresh(seg.cluster)
                out[(r.topic, r.partition)] = _error(ErrorCode.not_leader_or_follower)
            else:
                out[(r.topic, r.partition)] = _error(pd.error_code)
        elif seg.phys_end is not None and _empty_at_a_sealed_logs_end(r, pd):  # one test on the active segment's path
            # the log ends there for good, or its high watermark lags: ask its end
            out[(r.topic, r.partition)] = _EmptyAtASealedLogsEnd(r, _partition_answer(r, pd, broker))
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
    if route.target.in_gap and not data and _tail_ended(route.target, pd, _tail_known(route)):
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


def _tail_ended(target: FetchTarget, pd, known: bool = False) -> bool:
    """Nothing of the dead cluster's tail at or after the position: the broker has no record there, or only
    records at or past the gap's end (a later segment of the same physical partition). A high watermark at or below
    the position of a tail the chain knows (`known`, `_tail_known`) lags (the cluster just restarted): not an end."""
    if pd.high_watermark <= target.physical_offset:
        return not known
    limit = target.sealed_stop_before()
    return any(h.base_offset >= limit for h in rec.walk_batches(pd.records or b"", allow_partial_tail=True))


def _settle_out_of_range(ctx: Context, unsettled: dict[tuple[str, int], _Route | _EmptyAtASealedLogsEnd], then,
                         timeout_s: float):
    """The bounds round: answers for what `_translate` left unanswered, a Plan whose answers go to `then`. Bounded as
    the Fetch's own calls (`timeout_s`). A route is an OFFSET_OUT_OF_RANGE inside a gap, on a sealed segment or on
    one with others before it, which Kafka's broker answers alike below the log start (retention or DeleteRecords
    moved it) and past the log end (ReplicaManager.readFromLog): the round asks each physical partition's log start
    and high watermark (ListOffsets EARLIEST and LATEST), a sealed one's log end too (LOG_END), and what the logical
    log start is read from (`log_start_asks`: the segments before), and answers it (`_after_out_of_range`). An
    `_EmptyAtASealedLogsEnd` (`_empty_at_a_sealed_logs_end`) is asked its log end only: above the position its high
    watermark lags and the reader waits, answered as the broker answered (the seal as high watermark); not read,
    NOT_LEADER_OR_FOLLOWER; at or below it, its log ends there (rare) and it takes a round as a route then, the
    segments before asked. A reader waiting at a lagging high watermark asked every earlier segment's cluster with
    each Fetch, and lost its lag (-1). An in-gap OFFSET_OUT_OF_RANGE used to be read as a tail that ended (a reader
    below the log start moved past the rest of the tail), and one below a later segment's log start answered
    OFFSET_OUT_OF_RANGE while an earlier segment held records: the reset went back there, and came to the same hole
    again, for good."""
    asks = set()
    for u in unsettled.values():
        if isinstance(u, _EmptyAtASealedLogsEnd):
            asks.add((seg_key(u.route.target.segment), LOG_END))
            continue
        seg = u.target.segment
        asks.update(log_start_asks(u.chain.segments[:u.chain.segments.index(seg)]))
        asks.update(((seg_key(seg), EARLIEST), (seg_key(seg), LATEST)))
        if not seg.active:  # and its log end: an empty log tells itself from a high watermark that lags
            asks.add((seg_key(seg), LOG_END))

    def respond(physical: dict, _brokers) -> Any:
        settled: dict[tuple[str, int], rec.FetchPartitionData] = {}
        ended: dict[tuple[str, int], _Route | _EmptyAtASealedLogsEnd] = {}
        for key, u in unsettled.items():
            if not isinstance(u, _EmptyAtASealedLogsEnd):
                settled[key] = _after_out_of_range(ctx, u, physical)
            elif (got := _while_it_lags(u, physical)) is not None:
                settled[key] = got
            else:
                ended[key] = u.route
        if not ended:
            return then(settled)
        return _settle_out_of_range(ctx, ended, lambda more: then({**settled, **more}), timeout_s)

    # read_uncommitted: LATEST is the high watermark
    return ask_physical(ctx, asks, 0, respond, timeout_s=timeout_s, client_timeout=True)


def _while_it_lags(empty: _EmptyAtASealedLogsEnd, physical: dict) -> rec.FetchPartitionData | None:
    """An empty answer at a sealed log's end given its log end (LOG_END): the broker's answer while it is above the
    position (the high watermark lags a restart: the records are there), NOT_LEADER_OR_FOLLOWER while it is not read
    (asked again with the next fetch); None at or below the position: the log ends there."""
    above = _log_end_above_position(empty.route.target, physical)
    if above is None:
        return _error(ErrorCode.not_leader_or_follower)
    return empty.waiting if above else None


def _after_out_of_range(ctx: Context, route: _Route, physical: dict) -> rec.FetchPartitionData:
    """An OFFSET_OUT_OF_RANGE, or an empty answer at a sealed log's end whose log end is at or below the position
    (`_empty_at_a_sealed_logs_end`, after `_while_it_lags`), given the segment's physical log start and high
    watermark, and what the segments before it hold (`ask_physical`'s answers; a bound not known:
    NOT_LEADER_OR_FOLLOWER, asked again with the next fetch). Below the log start: a hole inside the logical log,
    where records before it are left (the logical log start, ListOffsets EARLIEST's answer, at or below the
    position), is skipped as a compacted range is, to the first offset that may hold a record (`_past_the_hole`); so
    is a gap with nothing of its tail left at or after the position (docs/DESIGN.md §9.2). Otherwise the position is
    below the logical log start: OFFSET_OUT_OF_RANGE, as Kafka answers, and the client resets to that log start, past
    the position (no loop). At or past the log end: a gap's tail the chain does not know ended (`_tail_known`),
    skipped; a sealed segment's is `_at_or_past_a_sealed_logs_end`'s (records below a seal or in a known tail the log
    no longer holds skipped to the segment's end, §9.3); else OFFSET_OUT_OF_RANGE (past the active log's end, as
    Kafka). A skip answers the segment's high watermark (it answered the landing: lag 0 for a Fetch). Bounds that say
    the position is readable now (the log changed meanwhile): no records, no error, and the client fetches again."""
    seg, target = route.target.segment, route.target
    start, end = physical.get((seg_key(seg), EARLIEST)), physical.get((seg_key(seg), LATEST))
    if not isinstance(start, tuple) or not isinstance(end, tuple):
        return _error(ErrorCode.not_leader_or_follower)
    position, log_start, log_end = target.physical_offset, start[0], end[0]
    high_watermark = logical_high_watermark(route.chain, seg, log_end)
    if position < log_start:
        landed = physical.get((seg_key(seg), LOG_END))
        landing = _past_the_hole(route, log_start, log_end, landed[0] if isinstance(landed, tuple) else None)
        if (target.in_gap and landing == target.gap_end) or \
                logical_log_start(ctx, route.chain, physical) <= seg.to_logical(position):
            return _skip_gap(route, landing, high_watermark)
        return _error(ErrorCode.offset_out_of_range)
    if position >= log_end:
        if target.in_gap and not _tail_known(route):
            return _skip_gap(route, high_watermark=high_watermark)
        if not seg.active:
            return _at_or_past_a_sealed_logs_end(ctx, route, physical, high_watermark)
        return _error(ErrorCode.offset_out_of_range)
    return _error(ErrorCode.none)


def _empty_at_a_sealed_logs_end(route: _Route, pd) -> bool:
    """No record at a sealed segment's position below its end, the broker's high watermark at or below it: its log
    was cut or lost there (an unclean election, the topic created again, docs/DESIGN.md §9.3), or its high watermark
    lags its log end after a restart. Kafka answers a read at its log end empty, never OFFSET_OUT_OF_RANGE, so a
    reader there (a group that committed exactly there, one that read the cut log to its end) sat on empty answers for
    good; the bounds round tells the two by the log end (`_while_it_lags`, then `_at_or_past_a_sealed_logs_end`). A
    gap's tail the chain does not know is `_tail_ended`'s. A sealed segment's high watermark is at or past its seal
    otherwise, so only such a log pays the round. The caller checks the segment is sealed."""
    target = route.target
    if pd.records or not 0 <= pd.high_watermark <= target.physical_offset:
        return False
    if target.in_gap and not _tail_known(route):
        return False
    return target.stop_before is None or target.physical_offset < target.stop_before


def _at_or_past_a_sealed_logs_end(ctx: Context, route: _Route, physical: dict,
                                  high_watermark: int) -> rec.FetchPartitionData:
    """A sealed segment's position at or past its high watermark, below its end: its log end (LOG_END) above the
    position is a high watermark that lags (a restart; the records are there) or a log grown since the broker
    answered: no records, no error, and the client fetches again (an empty answer at a lagging high watermark is
    answered before, `_while_it_lags`, with the seal as high watermark). At or below it the records up to the seal
    are gone, not lagging (Kafka answers OFFSET_OUT_OF_RANGE only past its log end offset, and an empty read at it):
    moved to the segment's end while the logical log start is at or below the position, as earliest skips them too;
    else OFFSET_OUT_OF_RANGE, and the reset lands past them. The log end not read: NOT_LEADER_OR_FOLLOWER, asked
    again with the next fetch."""
    above = _log_end_above_position(route.target, physical)
    if above is None:
        return _error(ErrorCode.not_leader_or_follower)
    if above:
        return _error(ErrorCode.none)
    if logical_log_start(ctx, route.chain, physical) <= route.target.segment.to_logical(route.target.physical_offset):
        return _skip_gap(route, _segment_end(route.target), high_watermark)
    return _error(ErrorCode.offset_out_of_range)


def _log_end_above_position(target: FetchTarget, physical: dict) -> bool | None:
    """Whether the segment's log end (LOG_END, `ask_physical`'s answer) is above the target's position: records are
    there (a high watermark that lags, or a log grown since); None when it was not read."""
    log_end = physical.get((seg_key(target.segment), LOG_END))
    return log_end[0] > target.physical_offset if isinstance(log_end, tuple) else None


def _segment_end(target: FetchTarget) -> int:
    """Where the records a sealed segment may hold end: its gap's end, or its seal."""
    return target.gap_end if target.gap_end is not None else target.segment.sealed_end()


def _past_the_hole(route: _Route, log_start: int, high_watermark: int, log_end: int | None) -> int:
    """Where a reader below its segment's physical log start lands: the log start's logical offset, or the end of
    what the segment may hold (a gap's end, the seal) when its log starts past that, or when its log is empty there:
    a sealed segment's log start at its log end (`log_end`, LOG_END; None: not known), as earliest counts it
    (`view.offsets.earliest_offset`), or a gap's tail the chain does not know at its high watermark (emptied whole by
    DeleteRecords or retention; it may not exist). A high watermark at the log start below the log end lags (a
    restart): the reader waits at the log start as it would there. Without the log end a sealed segment's empty log
    was never skipped past: the reader sat on empty answers for good while earliest moved past it."""
    target = route.target
    stop = target.stop_before
    if stop is not None and (log_start >= stop or (log_end is not None and log_start >= log_end) or
                             (target.in_gap and log_start >= high_watermark and not _tail_known(route))):
        return _segment_end(target)
    return target.segment.to_logical(log_start)


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


def _skip_gap(route: _Route, end: int | None = None, high_watermark: int = -1) -> rec.FetchPartitionData:
    """The answer that moves a reader from its position to `end` (by default the end of the unclean gap): empty
    batches covering the offsets between (docs/DESIGN.md §5.5, §9). High watermark: the segment's logical one when
    known (`high_watermark`, read by the bounds round) and past `end`, else `end`, where the reader lands (a client
    shows lag 0 for one Fetch); last stable offset `end` (a lower bound: nothing below it is left to read)."""
    end = route.target.gap_end_offset() if end is None else end
    first = route.target.segment.to_logical(route.target.physical_offset)
    return rec.FetchPartitionData(-1, ErrorCode.none, max(end, high_watermark), end,
                                  route.chain.segments[0].logical_base, None, -1,
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
