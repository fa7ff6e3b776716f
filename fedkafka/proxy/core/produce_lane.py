"""The Produce lane: the common Produce request forwarded and answered without the generic machinery.

Per request the generic path builds a Context, runs the handler's routing (a _Routing, a _Part per partition, a
Plan, a Call), and completes the call through `Dispatcher._one_call`. The lane takes the common request
(`produce.lane_takes`: no transaction, acks 1 or -1, no topic entry of no partition; batches of no producer id, or
all of one idempotent producer in its steady state (`produce.lane_producer`: rewritten to the physical id, its
sequences noted as the handler notes them, every batch counted in flight: `produce.LaneUncounted` otherwise); every
partition's topic there and WRITE-authorized, its chain not frozen, its active cluster ACTIVE and reachable, its
leader known, all on one broker with an open pooled connection (an idempotent producer's own, as the generic path
orders its calls); the lease valid, the proxy not draining; no partition named twice) and does the same in one pass:
a route from a per-view cache, the frame written around the client's record sets, the answer read and written in
logical offsets in the upstream call's done-callback. Anything else returns None from `start` and goes the generic
way (`Dispatcher.start`), which stays the reference.

With the compiled twin (revision 7) a plain producer's request (no producer id) every partition of which has a route
in the cache (without authorization, not draining) is read, checked, routed and made into the broker's request by
one call (`records.read_lane_request`, over a copy of the routes the twin keeps: `_table`); whatever it leaves is
read here in Python (`_start_read`), which stays the lane's reference. What follows (fence, physical state,
connection, deadline, counts, observer, answer) is the same code for both. Since revision 8, with no metrics
observer, the step's request of one partition is a `records.LaneRequest`, whose topics are read from the frame only
for an answer other than a `Written`.

What the generic path guarantees holds here as well: the request is counted in `writes_in_flight` by the view
version it was routed with until answered (its answer cancelled once written: until ABANDONED_SETTLE_S after, or
the drain's close of its connection, `_abandoned`); it goes upstream with acks=all and the handler's timeout at once,
unless the client's deadline passed meanwhile (`_send`: then REQUEST_TIMED_OUT, unsent); a call without an
answer within REQUEST_TIMEOUT_S answers REQUEST_TIMED_OUT (`_Deadlines`); the observer sees the request, the upstream
call and the answer (`NULL_OBSERVER`, which does nothing, is not called).
Answers stay in request order: the connection queues the answer future as it queues any other.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import struct
from typing import Any, NamedTuple

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.core.dispatch import (
    _HEADER,
    SLOW_REQUEST_S,
    Dispatcher,
    _Answer,
    _time_out,
    _uncount_or_hold,
    _warn_slow,
)
from fedkafka.proxy.core.observe import NULL_OBSERVER
from fedkafka.proxy.core.upstream import PRODUCE_API_KEY, REQUEST_TIMEOUT_S
from fedkafka.proxy.handlers import produce
from fedkafka.proxy.plan import Broker, CloseConnection, Context, Refused, UpstreamError, collect_refusal
from fedkafka.security.acl import Authorizer, Operation, ResourceType
from fedkafka.security.session import Session

log = logging.getLogger(__name__)

ROUTE_CACHE_ENTRIES = 16_384  # (topic, partition[, principal, host]) routes of one view; past it, started over
ROUTE_KEY_CHARS = 512  # a session's principal and host longer together: its routes are made per request, not cached
_NOT_TAKEN = object()  # a cached "the lane does not take this partition under this view and session"
# read once a request: module globals, not attribute lookups
_LANE_UPSTREAM = produce.LANE_UPSTREAM
_Written = produce.Written
_REFRESHING = produce.REFRESHING  # a Written's error codes after which `lane_answer` asks for the cluster's metadata
_partial = functools.partial


class _LaneCallFields(NamedTuple):
    target: Broker
    request: produce.UpstreamProduce | None
    waits: _Deadlines | None  # its connection's deadlines; None: not sent
    producer: produce.LaneProducer | None  # idempotent batches: their sequences, noted on the answer


class _LaneCall(_LaneCallFields):
    """What `Dispatcher._outcome`, the observer and the slow-request warning read of a call (a `plan.Call` has
    eight fields to set, once per request). Made by `_new_call` (tuple.__new__): no Python `__init__` a request."""

    __slots__ = ()
    client_timeout = False
    timeout_s = None


_new_call = tuple.__new__  # _new_call(_LaneCall, (target, request, waits, producer))


class _Deadlines:
    """The lane's calls on one upstream connection in the order they were sent, each failed with TimeoutError
    (`_time_out`) REQUEST_TIMEOUT_S after it was sent if still unanswered, as `Dispatcher._one_call`'s timer per
    call does, but with one timer for them all: uvloop's call_later and cancel cost 4-7 µs, once per request. A
    broker answers a connection's requests in order, so answered calls leave from the head and the
    timer, set for the oldest unanswered call, fires about once per REQUEST_TIMEOUT_S while calls flow. The lane's
    `_send` appends a call and sets the timer, its `_answered` takes the answered ones off the head (inline: a call
    less a request each)."""

    __slots__ = ("calls", "conn", "lane", "loop", "timer")

    def __init__(self, lane: ProduceLane, conn: object, loop: asyncio.AbstractEventLoop):
        self.lane, self.conn, self.loop = lane, conn, loop
        self.calls: collections.deque[tuple[float, asyncio.Future]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None

    def expire(self) -> None:
        self.timer = None
        calls, now = self.calls, self.loop.time()
        while calls and (calls[0][1].done() or calls[0][0] <= now):
            _time_out(calls.popleft()[1])  # nothing for a call answered meanwhile
        if calls:
            self.timer = self.loop.call_at(calls[0][0], self.expire)
        elif self.lane._deadlines.get(self.conn) is self:  # a connection with nothing out: forgotten
            del self.lane._deadlines[self.conn]


class ProduceLane:
    """One per dispatcher. `start` returns the answer future of a request it took, None for one it leaves."""

    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.taken = 0  # requests the lane answered (tests and bench read it)
        self._view = None  # the view the cached routes were made from: another one, and they are dropped
        self._node_id: int | None = None  # and the proxy's node id then (`ProxyState.set_node_id`): the draining set
        self._routes: dict[tuple, object] = {}
        self._table: Any = None  # the compiled step's copy of the routes (`records.lane_routes`), or None
        self.compiled = 0  # requests the compiled step read (tests and bench read it)
        self._authorizer: Authorizer | None = None
        self._draining = False
        self._targets: dict[tuple[str, int], Broker] = {}
        self._deadlines: dict[object, _Deadlines] = {}  # by upstream connection

    def start(self, frame: bytes | memoryview, slot: int, session: Session | None = None) -> asyncio.Future | None:
        """The answer future of a Produce request the lane takes (None: it leaves it, or the frame is no Produce or
        too short: `Dispatcher.start` reports that). The dispatcher's `start_now` (a connection calls it directly)."""
        if len(frame) < _HEADER.size:
            return None
        api_key, version, correlation_id = _HEADER.unpack_from(frame)  # codec.peek_header, without the call
        if api_key != PRODUCE_API_KEY:
            return None
        d = self.dispatcher
        loop = d._loop or d.loop
        # a session still to authenticate or with a lifetime has its requests checked first: not the lane's
        if session is not None and (not session.authenticated or session.expires_at is not None):
            return None
        route = d._route(PRODUCE_API_KEY, version)
        if route is None or route[0] is not produce:  # not served, or a cproxy's consume_side_produce
            return None
        state = d.state
        view = state.view
        if view is not self._view or state.me.node_id != self._node_id:
            self._new_view(view, state.me.node_id)
        # the compiled step (`records.read_lane_request`): a plain producer's request whose routes are all cached,
        # held to the element limit the route's reader holds it to (`_route` binds it once per advertised table). With
        # no metrics observer (which reads every request's topics), a request of one partition is a
        # `records.LaneRequest`, its topics read only if an answer other than a Written asks for them
        read = rec.read_lane_request(frame, d._routes_limit, self._table, _LANE_UPSTREAM, d.observer is NULL_OBSERVER)
        if read is None:
            return self._start_read(frame, route[1], correlation_id, slot, session, loop)
        if not state.lease_valid():
            return None
        request, routes, upstream = read
        # the client's deadline counts from `loop.time()` here (`_send_deadline`)
        answer = self._send(request, routes, None, slot, loop.time(), loop, view, correlation_id, session, upstream)
        if answer is not None:
            self.compiled += 1
        return answer

    def _start_read(self, frame: bytes | memoryview, read_request, correlation_id: int, slot: int,
                    session: Session | None, loop: asyncio.AbstractEventLoop) -> asyncio.Future | None:
        """`start` for a request the compiled step left (or without it): read and routed in Python."""
        try:  # the route's reader: the handler's, held to the dispatcher's element limit
            request = read_request(frame)
        except codec.DecodeError:
            return None  # the generic path reads it again and closes the connection
        state = self.dispatcher.state
        view = state.view
        if not produce.lane_takes(request) or not state.lease_valid():
            return None
        read_at = loop.time()  # the client's deadline counts from here (`_send_deadline`)
        routed = self._routes_for(view, request, session)
        if routed is None:
            return None
        routes, producer = routed
        return self._send(request, routes, producer, slot, read_at, loop, view, correlation_id, session)

    def _new_view(self, view, node_id: int | None) -> None:
        """A new view (new topics, chains, clusters, ACLs, draining set) or node id (registered again: another entry
        of the draining set): the cached routes dropped. The compiled step's table (`_table`) only without
        authorization (its routes are no principal's) and while not draining."""
        self._view, self._node_id, self._routes = view, node_id, {}
        self._authorizer = self.dispatcher.authorizer(view)
        self._draining = node_id in view.draining
        self._table = None if self._authorizer is not None or self._draining else rec.lane_routes()

    def _routes_for(self, view, request, session: Session | None
                    ) -> tuple[list[produce.LaneRoute], produce.LaneProducer | None] | None:
        """The request's routes in its order, when every partition's is cached or made as the lane's and its batch
        is one the lane forwards, and its idempotent batches' producer when they are all of one in its steady state
        (`produce.lane_producer`) (None: leave the request). `start` has dropped the routes of an older view."""
        if self._draining:
            return None
        authorizer = self._authorizer
        who: tuple[str, ...] = ()  # with authorization, the routes are the principal's (and host's): their WRITE right
        if authorizer is not None:
            if session is None:
                return None
            who = (session.principal, session.host)
        cache = self._routes
        routes: list = []
        headers: list = []
        idempotent = False
        for t in request.topic_data:
            name = t.name
            for pd in t.partition_data:
                key = (name, pd.index, *who) if who else (name, pd.index)
                route = cache.get(key)
                if route is None:
                    route = self._missed(view, authorizer, who, name, pd.index)
                if route is _NOT_TAKEN or (header := produce.lane_batch(pd.records)) is None:
                    return None
                routes.append(route)
                headers.append(header)
                idempotent |= header.producer_id >= 0
        if len(routes) != 1 and (not routes or len({(r.seg.topic, r.seg.partition) for r in routes}) < len(routes)):
            return None  # no partition (`handle` answers it empty), or one named twice (`handle` refuses each entry)
        if not idempotent:
            return routes, None
        # the connection vouches for the producer's id, as `handle` notes it (§5.4, "The batch's CRC")
        producer = produce.lane_producer(self.dispatcher.producer_ids, request, routes, headers, session)
        if producer is None:
            return None
        return routes, producer

    def _missed(self, view, authorizer: Authorizer | None, who: tuple[str, ...], name: str, index: int):
        """The route of a partition not in the cache, cached under a key of bounded size: a partition the view's
        topic has, keyed by the view's own name object (the client's names are as long as its frame: one of no
        topic or partition of the view is not cached, the generic path answers it), with a principal and host of
        at most ROUTE_KEY_CHARS together. So the cache holds at most ROUTE_CACHE_ENTRIES keys of the view's
        (topic, partition)s and sessions' bounded names."""
        topic = view.topics.get(name)
        if topic is None or not 0 <= index < topic.partition_count:
            return _NOT_TAKEN
        route = self._made(view, authorizer, who, name, index)
        if who and len(who[0]) + len(who[1]) > ROUTE_KEY_CHARS:
            return route
        cache = self._routes
        table = self._table
        if len(cache) >= ROUTE_CACHE_ENTRIES:
            cache.clear()
            if table is not None:
                table.clear()
        cache[(topic.name, index, *who)] = route
        if table is not None and route is not _NOT_TAKEN:  # (None with authorization: `who` is empty here)
            table.insert(topic.name, index, route, route.seg.topic, route.seg.partition)
        return route

    @staticmethod
    def _made(view, authorizer: Authorizer | None, who: tuple[str, ...], name: str, index: int):
        may_write = authorizer is None or authorizer.allowed(who[0], who[1], Operation.WRITE, ResourceType.TOPIC, name)
        return produce.lane_route(view, may_write, name, index) or _NOT_TAKEN

    def _send(self, request, routes: list[produce.LaneRoute], producer: produce.LaneProducer | None, slot: int,
              read_at: float, loop: asyncio.AbstractEventLoop, view, correlation_id: int, session: Session | None,
              upstream: produce.UpstreamProduce | None = None) -> asyncio.Future | None:
        """Write the broker's request to the one leader of every partition on its open pooled connection: the
        slot's, or an idempotent producer's own as on the generic path (`Call.ordering_key`), and return the answer
        future (`_answer_later`). None: nothing written (the physical state is read here, per request, never
        cached). An idempotent producer's batches are rewritten and its sequences noted as forwarded before the
        client's deadline is looked at, as `handle` does them before `Dispatcher._send` looks. `upstream`: the
        broker's request, made by the compiled step."""
        d = self.dispatcher
        seg = routes[0].seg
        cluster = seg.cluster
        info = d.physical.clusters.get(cluster)
        if info is None or not info.reachable:
            return None
        leaders = info.leaders
        leader = leaders.get((seg.topic, seg.partition))
        if leader is None:
            return None
        if len(routes) > 1:  # every other partition on the same leader
            for route in routes:
                seg = route.seg
                if seg.cluster != cluster or leaders.get((seg.topic, seg.partition)) != leader:
                    return None
        address = info.brokers.get(leader)
        conn = None if address is None else \
            d.pool.ready(address[0], address[1], slot if producer is None else producer.key)
        if conn is None:  # the generic path connects (or finds the broker by another address)
            return None
        try:
            records = None if producer is None else produce.lane_forwarded(d.producer_ids, producer)
        except produce.LaneUncounted:  # the in-flight table full: nothing counted or written, the generic path
            return None  # counts what it can and remembers what it could not (`_Part.counted`)
        timeout_ms = request.timeout_ms
        if timeout_ms > 0:  # the client's deadline (`_send_deadline` from read_at): never sent past it (`_not_to_send`)
            timeout_s = timeout_ms / 1000
            if loop.time() > read_at + timeout_s - min(1.0, timeout_s / 10):
                call, item = self._not_sent((cluster, leader), producer, request.client_id)
                return self._answer_later(loop, view, request, routes, call, item, correlation_id, read_at, session)
        if upstream is None:
            upstream = produce.lane_upstream(request, routes, records)
        try:
            item = conn.send(upstream)
        except ConnectionError:  # nothing written; `handle` then does an idempotent producer's bookkeeping again, to
            if producer is not None:  # no further effect (`physical` and `note_forwarded` of the same batch change
                produce.lane_settled(d.producer_ids, producer)  # nothing more); not in flight
            return None
        waits = self._deadlines.get(conn)
        if waits is None:
            waits = self._deadlines[conn] = _Deadlines(self, conn, loop)
        deadline = loop.time() + REQUEST_TIMEOUT_S  # `_Deadlines`: failed then if still unanswered
        waits.calls.append((deadline, item))
        if waits.timer is None:
            waits.timer = loop.call_at(deadline, waits.expire)
        broker = self._targets.get((cluster, leader)) or self._broker(cluster, leader)
        call = _new_call(_LaneCall, (broker, upstream, waits, producer))
        return self._answer_later(loop, view, request, routes, call, item, correlation_id, read_at, session)

    def _broker(self, cluster: str, leader: int) -> Broker:
        broker = self._targets[(cluster, leader)] = Broker(cluster, leader)
        return broker

    def _not_sent(self, target: tuple[str, int], producer: produce.LaneProducer | None,
                  client_id: str | None) -> tuple[_LaneCall, asyncio.Future]:
        """A request whose client's timeout passed before it could be sent (a loaded process, a tiny timeout):
        not sent, answered REQUEST_TIMED_OUT, as the generic path's `_send` does (`_NotSent`); its idempotent batches
        noted as `_lost` notes them (`lane_noted`). The refusal's line names the client's id, as the generic path's
        `_NotSent` line does."""
        d = self.dispatcher
        message = "the client's request timeout passed: not sent"
        d.observer.refused("deadline", target[0], -1, message, client_id)
        item = (d._loop or d.loop).create_future()
        item.set_result(UpstreamError(target[0], message))
        return _new_call(_LaneCall, (Broker(*target), None, None, producer)), item

    def _answer_later(self, loop: asyncio.AbstractEventLoop, view, request, routes: list[produce.LaneRoute],
                      call: _LaneCall, item: asyncio.Future, correlation_id: int, read_at: float,
                      session: Session | None) -> asyncio.Future:
        """The request taken: the answer future, counted in writes_in_flight by `view`'s version until the call
        ended; the done-callback that answers (`_answered`). `session` is handed on as it is: its principal and host
        are read only for a refusal's log line."""
        self.taken += 1
        d = self.dispatcher
        counts = d.writes_in_flight
        version = view.version
        if counts is not None:
            counts[version] += 1
        observer = d.observer  # NULL_OBSERVER (no admin listener: the default) does nothing: not called
        seen = None if observer is NULL_OBSERVER else observer.request(PRODUCE_API_KEY, request.version, request, view)
        answer = _Answer(loop=loop)
        answer.awaits = item
        # the count is given back in `_answered`, which runs once whatever ends the call (its answer, its deadline
        # (`_Deadlines`), a lost connection; a cancellation once written: ABANDONED_SETTLE_S later or at the drain's
        # close of its connection, `_abandoned`): one done-callback less than `start`'s
        item.add_done_callback(_partial(self._answered, answer, read_at, request, routes, call, correlation_id, seen,
                                        counts, version, session))
        return answer

    def _answered(self, answer: asyncio.Future, started: float, request, routes: list[produce.LaneRoute],
                  call: _LaneCall, correlation_id: int, seen, counts: collections.Counter[int] | None,
                  view_version: int, session: Session | None, item: asyncio.Future) -> None:
        """`Dispatcher._one_answered` for a lane request: the call's outcome, observer, the client's answer (the
        usual, a `Written`, here; any other by `_answer_read`)."""
        waits = call.waits
        if waits is not None:  # None: not sent. Answered calls leave the head of its connection's `_Deadlines`
            calls = waits.calls
            while calls and calls[0][1].done():
                calls.popleft()
        d = self.dispatcher
        if answer.done():  # cancelled: so was the call; written, the broker may still write its request
            _abandoned(d, call, counts, view_version, item)
            return
        producer = call.producer
        if producer is not None:  # its batches' call ended, whatever ended it
            produce.lane_settled(d.producer_ids, producer)
        if counts is not None:
            counts[view_version] -= 1
        answer.awaits = None  # type: ignore[attr-defined]
        try:
            try:  # `Dispatcher._outcome`'s usual case inline; any failure is its to turn into an UpstreamError
                result = item.result()
            except (OSError, codec.DecodeError):  # a timeout (TimeoutError is an OSError) or a lost connection
                result = d._outcome(call, item)  # type: ignore[arg-type]  # it reads target and client_timeout
            observer = d.observer
            observed = observer is not NULL_OBSERVER  # which does nothing (no admin listener: the default)
            if observed:
                observer.upstream((call,), [result])
            elapsed = d._loop.time() - started  # type: ignore[union-attr]  # set by Dispatcher.start
            if elapsed > SLOW_REQUEST_S:
                _warn_slow(elapsed, (call,), [result])
            if type(result) is not _Written:
                self._answer_read(answer, request, routes, call, result, correlation_id, seen, session)
                return
            # a Written (`produce.lane_answer`'s usual case inline): no refusal, the frame written as it was read
            if producer is not None:
                produce.lane_noted(d.producer_ids, producer, result)
            if result.error_code in _REFRESHING:
                d.physical.request_refresh(call.target.cluster)
            if observed:
                observer.answered(seen, result)  # `Dispatcher._encode`, for the one reply a lane request has
            answer.set_result(result.frame)  # `Written.response_frame`
        except asyncio.CancelledError:
            answer.cancel()
        except BaseException as e:  # as `_one_answered`: the connection reports it and closes
            answer.set_exception(e)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise

    def _answer_read(self, answer: asyncio.Future, request, routes: list[produce.LaneRoute], call: _LaneCall, result,
                     correlation_id: int, seen, session: Session | None) -> None:
        """`_answered` for an answer other than a `Written` (a `BrokerAnswer`, an UpstreamError): translated by
        `produce.lane_answer`, with the request's refusals (writes landing below their segment), one line per
        reason as on the generic path. Its exceptions are `_answered`'s to report."""
        d = self.dispatcher
        refusals: dict[str, Refused] = {}
        reply, refresh = produce.lane_answer(request, routes, result, functools.partial(collect_refusal, refusals))
        if refusals:
            Context.report(d.observer.refused_together, refusals, request.client_id, session)
        if call.producer is not None:
            produce.lane_noted(d.producer_ids, call.producer, result)
        if refresh:
            d.physical.request_refresh(call.target.cluster)
        d.observer.answered(seen, reply)  # `Dispatcher._encode`, for the one reply a lane request has
        try:
            frame = reply.response_frame(correlation_id)
        except struct.error as e:  # an offset moved past 2^63 - 1 (a broker's answer near it): not answered
            answer.set_result(_unanswerable(call.target, e))
            return
        answer.set_result(frame)


def _abandoned(dispatcher: Dispatcher, call: _LaneCall, counts: collections.Counter[int] | None, view_version: int,
               item: asyncio.Future) -> None:
    """A lane call whose answer was cancelled (`_Answer.cancel` cancels the upstream future: the loop's teardown):
    not written (`call.waits` None), nothing can be, and it is uncounted now; written, its batches stay counted in
    flight and the request in `writes_in_flight` until it can no longer be written, `ABANDONED_SETTLE_S` from now, as
    the generic path's abandoned calls (DESIGN §5.3 rule 3, §4.1 step 2), or, for the drain count, until the drain
    closes `item`'s connection (`AbandonedWrites.close`). Before this, it was uncounted at once."""
    written = call.waits is not None
    if call.producer is not None:
        (produce.lane_abandoned if written else produce.lane_settled)(dispatcher.producer_ids, call.producer)
    if counts is not None:
        _uncount_or_hold(counts, view_version, [item] if written else None, dispatcher._loop or dispatcher.loop,
                         dispatcher.abandoned_writes)


def _unanswerable(target: Broker, e: struct.error) -> CloseConnection:
    """The generic path fails writing such an answer, and the connection closes: so does the lane's, without the
    error's traceback, with one line naming the broker."""
    message = f"the answer of {target.cluster}'s broker {target.node_id} does not fit in logical offsets ({e})"
    log.warning("%s: closing the client's connection unanswered", message)
    return CloseConnection(message)
