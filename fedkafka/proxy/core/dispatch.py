"""Handler registry and plan execution: the only place that turns a frame into handler calls and back.

Versions: the advertised table is the registry's ranges (for this proxy's role) intersected with every
physical cluster's own ranges; a request outside it gets UNSUPPORTED_VERSION (ApiVersions answers as v0,
like Kafka) when kio knows its response schema, else the connection is closed; so is it at a version an earlier
table of this process advertised (the table narrowed under the connection: the client negotiates again).

Calls to the controller (`plan.ControllerApi`: the Kafka admin writes) go over the proxy's controller link, a few
at a time, the others waiting their turn within their timeout (`controller_calls.py`); a successful answer that
names a view version is handed to the handler only once this proxy serves that view, so a client that created a
topic finds it in the next Metadata it asks this proxy for. A proxy without a controller (static view file) does
not advertise the modules that need one (`NEEDS_CONTROLLER`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from kio.schema.errors import ErrorCode

from fedkafka.fencing import ABANDONED_SETTLE_S
from fedkafka.protocol import codec, versions
from fedkafka.protocol.errors import error_response
from fedkafka.proxy import handlers
from fedkafka.proxy.core.controller_calls import ADMIN_CALLS_AT_ONCE, ControllerCall, ControllerCalls, ControllerLink
from fedkafka.proxy.core.limits import ByteBudget
from fedkafka.proxy.core.observe import NULL_OBSERVER
from fedkafka.proxy.core.physical import ClusterInfo, PhysicalClusters
from fedkafka.proxy.core.upstream import PRODUCE_API_KEY, REQUEST_TIMEOUT_S, PoolBusy, UpstreamPool
from fedkafka.proxy.handlers import api_versions, groups
from fedkafka.proxy.plan import (
    MAX_PLAN_ROUNDS,
    NO_RESPONSE,
    UNANSWERED,
    AnyBroker,
    Call,
    CloseConnection,
    Context,
    ControllerApi,
    Plan,
    UpstreamError,
)
from fedkafka.security.acl import Authorizer
from fedkafka.security.session import Session
from fedkafka.view.model import ProxyInfo, ProxyRole, View

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">hhi")  # a request's api_key, api_version, correlation_id
SLOW_REQUEST_S = 5.0
FETCH_API_KEY = 1
# Produce, and what changes a group's committed offsets (OffsetCommit, DeleteGroups, OffsetDelete): counted in
# writes_in_flight, so a view is acked only once those routed under older views are answered (docs/DESIGN.md §10.1)
DRAINED_API_KEYS = (PRODUCE_API_KEY, *groups.FENCED_DURING_MOVE)
# What reads or changes committed offsets (OffsetCommit, OffsetFetch, DeleteGroups, OffsetDelete): the fence (as for
# produce) and the view's coordination cluster are read again right before each call of it is written
# (docs/DESIGN.md §4.9 F2)
FENCED_OFFSETS_API_KEYS = frozenset(groups.OFFSETS_OF_THE_VIEW)
OFFSETS_PAST_FENCE = "proxy fence ran out: committed offsets request not sent"
OFFSETS_MOVED = "the view moved the groups to another coordination cluster: committed offsets request not sent"
ANSWER_CACHE_ENTRIES = 64  # encoded answers of cacheable handlers (Metadata), per view
ANSWER_CACHE_BYTES = 16 * 1024 * 1024  # ... and their bytes together (an all-topics answer of ~600,000 partitions)


# an answer frame (Chunks: record sets by reference); None: no answer; a handler's CloseConnection: none, and the
# connection writes the answers before it, then closes
Answer = bytes | codec.Chunks | CloseConnection | None


class _NotSent(Exception):
    """A produce (or a committed offsets call) kept from going upstream (lease run out, client deadline passed, the
    groups moved to another coordination cluster): reason and message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


class _NoBrokerAnswered(ConnectionError):
    """`Dispatcher._send_to_any` found no broker of a cluster: `asked`, the cluster's entry whose brokers were tried
    (`PhysicalClusters.tracked`, when the call started). The view may have changed the cluster's bootstrap while they
    were tried (a connection's set-up can take seconds): their failure then says nothing of the new one."""

    def __init__(self, message: str, asked: ClusterInfo | None):
        super().__init__(message)
        self.asked = asked


class ProtocolViolation(Exception):
    """The client sent something we cannot answer: close its connection."""


# MAX_PLAN_ROUNDS (the plan contract's: a handler keeps within it) caps a handler's chain of plans
class HandlerLooping(ProtocolViolation):
    """A handler returned plan after plan past MAX_PLAN_ROUNDS."""


class DrainedLaterRound(RuntimeError):
    """A drained request's handler (`DRAINED_API_KEYS`) returned a plan after its first answer round (a bug: none
    does). Refused before any call of it is sent, so the request's answer ends with nothing of it written. Why (DESIGN
    §4.1 step 2): such a round runs after the client's answer took over the drain count (`_uncount_answered`), which
    could not tell whether a round cancelled midway had written a call the broker may still append above a seal.
    Barrier rounds are allowed: `start` runs them itself and holds what a failed one wrote."""

    def __init__(self, plan: Plan):
        calls = sorted({type(c.request).__name__ for c in plan.calls})
        super().__init__(f"a drained request's handler returned a round after its first answer (calls: "
                         f"{calls or 'none'}); request given up before sending it")


_Handled = tuple[Any, float | None, Any, Context]  # `_handle`'s: reply, produce deadline, observer's token, context


def _report_refusals(ctx: Context | None, _done: object = None) -> None:
    """Count and log a request's refusals not yet reported (one line per reason; `_done`: as a done-callback).

    A request's refusals are reported once, where it ends; each way it can end has one place that does it:
    - answered: `_encode` (`_encode_whole` for a cached answer), before the answer is handed to the connection;
    - failed in `start`'s own steps (the handler, its barrier rounds, the sends): `start`'s except (`_handle` hands
      a failed handler's context back to it, `_HandlerFailed`);
    - failed or cancelled on its task of several calls (`_complete`, with its later rounds): `_complete`'s except,
      or, for a task cancelled before it started, the done-callback `start` adds when there are refusals already
      (a coroutine never started runs no except);
    - failed or cancelled on the one-call callback (`_one_answered`, with its later rounds' task, even one
      cancelled before it started: `_pass_on`): `_unanswered`.
    Reporting pops them (`Context.report_refusals`), so a second place reached (a failure after the answer was
    encoded) logs nothing more. None of these adds work to a request answered without a refusal: the excepts
    cost nothing until they catch, the checks on the answered path are the ones there were."""
    if ctx is not None and ctx.refusals is not None:
        ctx.report_refusals()


class _HandlerFailed:
    """`_handle`'s, for a handler that raised: `start` raises `error` as its own failure, with its context."""

    __slots__ = ("ctx", "error")

    def __init__(self, ctx: Context, error: BaseException):
        self.ctx, self.error = ctx, error


def _next_round(rounds: int, plan: Plan, what: str) -> int:
    """`rounds` + 1, or HandlerLooping (with one warning) when `plan` would be one round past the cap."""
    if rounds < MAX_PLAN_ROUNDS:
        return rounds + 1
    # a partial (produce's forward) by the function it wraps: its repr held its arguments, a Context among them
    # (the whole view, the session's secret)
    function = getattr(plan.finish, "func", plan.finish)
    finish = getattr(function, "__qualname__", None) or type(function).__qualname__
    calls = sorted({type(c.request).__name__ for c in plan.calls})
    message = (f"{what}: the handler still had plans after {MAX_PLAN_ROUNDS} rounds "
               f"(next: {finish} after {calls or 'no calls'}); request given up")
    log.warning("%s", message)
    raise HandlerLooping(message)


def registry_for(role: ProxyRole, modules=handlers.MODULES, with_controller: bool = True) -> dict[int, Any]:
    """api_key -> handler module, for the keys this role serves (and, without a controller, that need none)."""
    out: dict[int, Any] = {}
    for module in modules:
        if getattr(module, "NEEDS_CONTROLLER", False) and not with_controller:
            continue
        if module.ROLE == "any" or (module.ROLE == "produce" and role.produces()) or (
                module.ROLE == "consume" and role.consumes()) or (
                module.ROLE == "produce_only" and role == ProxyRole.PPROXY) or (
                module.ROLE == "consume_only" and role == ProxyRole.CPROXY):
            for key in module.API_KEYS:
                out[key] = module
    return out


class Dispatcher:
    observer = NULL_OBSERVER  # metrics and refusal log lines (proxy/core/observe.py)
    _loop: asyncio.AbstractEventLoop | None = None
    writes_in_flight: collections.Counter[int] | None = None
    lane: Any = None  # the Produce lane (core/produce_lane.py); None: every Produce goes the generic way

    def __init__(self, *, state, physical: PhysicalClusters, producer_ids, pool: UpstreamPool,
                 modules=handlers.MODULES, max_fetch_wait_ms: int = 30_000, max_dedicated_per_connection: int = 16,
                 controller: ControllerLink | None = None, observer=NULL_OBSERVER,
                 authorization: bool = False, super_users: frozenset[str] = frozenset(),
                 max_request_elements: int = codec.MAX_REQUEST_ELEMENTS,
                 max_controller_calls: int = ADMIN_CALLS_AT_ONCE):
        self.state = state  # has .view, .me, .lease_valid()
        self.max_request_elements = max_request_elements  # array elements in one request (bounds.py)
        self.controller = controller
        self._controller_calls = ControllerCalls(controller, state, max_controller_calls) \
            if controller is not None else None
        self.observer = observer
        self.max_fetch_wait_ms = max_fetch_wait_ms
        self.max_dedicated_per_connection = max_dedicated_per_connection
        self._dedicated_by_slot: dict[int, asyncio.Semaphore] = {}  # client connection -> its dedicated calls
        # client connection -> per broker address, held while a Fetch of it is out there (`_send_poll`)
        self._polls_by_slot: dict[int, dict[tuple[str, int], _Turns]] = {}
        self._poll_tasks: set[asyncio.Task] = set()  # Fetch calls waiting for their turn (`_poll_later`)
        self.physical = physical
        self.producer_ids = producer_ids
        self.pool = pool
        # what handlers keep for a connection past a request is charged to the process' memory budget, the pool's
        # (none without a pool: unit tests')
        self.budget: ByteBudget | None = getattr(pool, "budget", None)
        self.registry = registry_for(state.me.role, modules, with_controller=controller is not None)
        self.implemented = {k: rng for m in set(self.registry.values()) for k, rng in m.API_KEYS.items()
                            if k in self.registry}
        self._advertised: dict[int, tuple[int, int]] | None = None
        self._answers: collections.OrderedDict[Any, bytes] = collections.OrderedDict()  # LRU
        self._answers_view: View | None = None
        self._hooks: dict[tuple[Any, str], Any] = {}  # (handler module, name) -> its optional function or None
        self._routes: dict[tuple[int, int], tuple] = {}  # (api_key, version) -> _route's answer, for _routes_of
        self._routes_of: dict[int, tuple[int, int]] | None = None  # the advertised table they were made for
        self._routes_limit = max_request_elements  # and the element limit their readers hold a request to
        # every version any advertised table of this process held (`_route` widens it): one no longer advertised
        # closes the connection (`_unsupported`)
        self._once_advertised: dict[int, tuple[int, int]] = {}
        # produce requests and group offset writes (DRAINED_API_KEYS) in flight by the view version they were
        # routed with (server.InflightProduce: a new view is acked only once the older ones are answered);
        # None: not counted
        self.writes_in_flight: collections.Counter[int] | None = None
        self.abandoned_writes = AbandonedWrites()  # those given up on once written: `close_drained_upstream`
        self.authorization, self.super_users = authorization, super_users
        self._authorizer: tuple[View, Authorizer] | None = None  # built once per view
        if isinstance(physical, PhysicalClusters):  # the lane reads its leaders and addresses directly
            from fedkafka.proxy.core.produce_lane import ProduceLane  # it builds on this module

            self.lane = ProduceLane(self)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop it serves on, saved at first use: Python 3.11's get_running_loop() is a getpid() system call,
        and a produce would make five of them."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def advertised(self) -> dict[int, tuple[int, int]]:
        if self._advertised is None or self.physical.changed.value:
            self.physical.changed.clear()
            self._advertised = versions.intersect(self.implemented, self.physical.api_tables())
        return self._advertised

    def context(self, client_id: str | None, session: Session | None = None,
                advertised: dict[int, tuple[int, int]] | None = None) -> Context:
        """A request's context; without the connection's `session` (a throwaway one is made) no memory budget: what a
        handler kept for it would never be given back (nothing closes that session)."""
        view: View = self.state.view
        me: ProxyInfo = self.state.me
        return Context(view=view, me=me, advertised=self.advertised if advertised is None else advertised,
                       physical=self.physical,
                       producer_ids=self.producer_ids, lease_valid=self.state.lease_valid(), client_id=client_id,
                       max_fetch_wait_ms=self.max_fetch_wait_ms, max_request_elements=self.max_request_elements,
                       on_refusal=self.observer.refused, on_refusals=self.observer.refused_together,
                       session=session or Session(), authorizer=self.authorizer(view) if self.authorization else None,
                       live=self.state, budget=self.budget if session is not None else None)

    def authorizer(self, view: View) -> Authorizer | None:
        """None with authorization off; else the view's ACLs, indexed once per view."""
        if not self.authorization:
            return None
        if self._authorizer is None or self._authorizer[0] is not view:
            self._authorizer = (view, Authorizer(view.acls, self.super_users))
        return self._authorizer[1]

    @property
    def start_now(self) -> Callable[..., asyncio.Future | None] | None:
        """`start_now(frame, slot, session=None)`: the answer future of a request the Produce lane takes, taken
        synchronously (no coroutine, as `start` is); None: the lane leaves it (then `start(..., lane=False)`: it is
        not asked twice). The lane's own `ProduceLane.start`, which a connection reads once and calls per request
        (a call less a request than a method of the dispatcher's calling it); None without a lane: a connection
        then sends every request by `start`."""
        lane = self.lane
        return None if lane is None else lane.start

    def close_drained_upstream(self) -> int:
        """The drain's last resort (`server.InflightProduce`, after DRAIN_PATIENCE_S): close every upstream
        connection with a produce pending, so those calls fail and their counts go, and those of the requests given
        up on once written (`AbandonedWrites.close`), which then no longer wait ABANDONED_SETTLE_S: a live proxy
        has less than that to ack a frozen view (controller `live_ack_timeout`). Returns how many it closed or
        released."""
        return self.pool.close_pending(PRODUCE_API_KEY) + self.abandoned_writes.close(self.pool)

    async def start(self, frame: bytes | memoryview, slot: int, session: Session | None = None,
                    lane: bool = True) -> asyncio.Future[Answer]:
        """Decode, run the handler and send its first upstream calls now (so upstream order follows the
        client's order); returns an awaitable of the response frame (None: no response). `lane`: a Produce is
        offered to the Produce lane first (False: `start_now` did already)."""
        loop = self._loop or self.loop  # saved once: the property is a call, and start used it six times
        api_key, version, correlation_id = codec.peek_header(frame)
        if lane and api_key == PRODUCE_API_KEY and self.lane is not None and \
                (taken := self.lane.start(frame, slot, session)) is not None:
            return taken  # the common Produce, answered by the lane; anything else goes on below, as before
        counts = self.writes_in_flight if api_key in DRAINED_API_KEYS else None
        if counts is not None:  # by the view version it is routed with (the handler reads it before any wait)
            view_version = self.state.view.version
            counts[view_version] += 1
        ctx = reply = None
        sent: list | tuple = ()  # the first answer round's calls: what a drained answer given up on may leave written
        try:
            handled = self._handle(frame, session, api_key, version, correlation_id, loop)
            if not isinstance(handled, tuple):  # answered without an upstream call, or the handler failed
                if isinstance(handled, _HandlerFailed):
                    ctx = handled.ctx
                    raise handled.error
                answer = self._done(handled)
            else:
                reply, deadline, seen, ctx = handled
                rounds = 0
                while isinstance(reply, Plan) and reply.barrier:
                    rounds = _next_round(rounds, reply, f"api_key={api_key}")
                    if reply.delay_s:
                        await asyncio.sleep(reply.delay_s)
                    reply = reply.finish(await self._execute(reply.calls, slot, deadline, ctx.client_id))
                if isinstance(reply, Plan):
                    sent = await self._send(reply.calls, slot, deadline, ctx.client_id)
                    # one call to a broker (a controller call is a ControllerCall, type() is not Future): a callback
                    # awaits it
                    if len(sent) == 1 and type(sent[0]) is asyncio.Future:
                        answer = self._one_call(loop, reply, sent[0], slot, correlation_id, deadline, seen, ctx,
                                                counts is not None)
                    else:
                        answer = loop.create_task(self._complete(reply, sent, slot, correlation_id, deadline, seen,
                                                                 ctx, counts is not None))
                        if ctx.refusals is not None:  # `_complete` reports them, unless cancelled before it starts
                            answer.add_done_callback(functools.partial(_report_refusals, ctx))
                    if reply.abandoned is not None:  # cancelled (even before `_complete` starts) or failed
                        answer.add_done_callback(functools.partial(_abandon_unless_answered, reply))
                else:
                    answer = self._done(self._encode(reply, correlation_id, seen, ctx))
        except BaseException as e:
            if counts is not None:  # written, the broker may still write it: counted until it no longer can
                _uncount_unless_written(counts, view_version, e, loop, self.abandoned_writes)
            _abandon(reply)  # a barrier round's or the plan's calls being sent: `finish` did not run on them
            _report_refusals(ctx)  # the handler's and its barrier rounds' (None: failed before the handler ran)
            raise
        if counts is not None:  # answered: uncounted; given up on with a call unanswered: held (`_uncount_answered`)
            answer.add_done_callback(functools.partial(_uncount_answered, counts, view_version, sent, loop,
                                                       self.abandoned_writes))
        return answer

    def _handle(self, frame: bytes | memoryview, session: Session | None, api_key: int, version: int,
                correlation_id: int, loop: asyncio.AbstractEventLoop) -> _Handled | Answer | _HandlerFailed:
        """Check, decode and hand the request to its handler: (its reply, the produce deadline, the observer's
        token, its context), or the answer when no upstream call is needed (version not served, denied, cached), or
        the handler's failure with its context (`_HandlerFailed`: `start` raises it and reports the refusals)."""
        if session is not None and (not session.authenticated or session.expires_at is not None) and \
                (refusal := session.refusal(api_key)) is not None:
            # a broker closes a SASL connection that sends what its authentication stage does not take, or
            # anything but a re-authentication after its session expired (KIP-368); one log line says why
            return self._refused_before_authentication(session, refusal, api_key, version, correlation_id)
        route = self._route(api_key, version)
        if route is None:
            self.observer.unsupported(api_key, version)
            return self._unsupported(api_key, version, correlation_id)
        module, read_request, cache_key = route
        try:  # a module with `read_request` reads its own frames (Produce: a header walk that leaves the record
            # sets in the frame); that one object is both header and request
            if read_request is None:
                header, request = codec.decode_request(frame, self.max_request_elements)
            else:
                header = request = read_request(frame)
        except codec.DecodeError as e:
            raise ProtocolViolation(str(e)) from None
        ctx = self.context(header.client_id, session, self._routes_of)
        if ctx.authorizer is not None and \
                (denied := self._denied(module, ctx, api_key, version, header.client_id, correlation_id)) is not None:
            return denied
        deadline = _send_deadline(api_key, request, loop)
        seen = self.observer.request(api_key, version, request, ctx.view)
        key = None if cache_key is None else self._answer_key(cache_key, ctx, request)
        if key is not None and (cached := self._answers.get(key)) is not None:
            self._answers.move_to_end(key)
            self.observer.answered(seen, None)
            return _with_correlation_id(cached, correlation_id)
        try:
            reply = module.handle(ctx, header, request)
        except codec.DecodeError as e:  # bytes the request carries opaquely, which the handler decodes (a
            # JoinGroup's subscriptions, held to the same element limit): refused as the request's own bytes are
            return _HandlerFailed(ctx, ProtocolViolation(str(e)))
        except BaseException as e:
            return _HandlerFailed(ctx, e)
        if key is not None and not isinstance(reply, Plan):
            answer = self._encode_whole(reply, correlation_id, seen, ctx)
            if isinstance(answer, bytes):
                self._remember(key, answer)
            return answer
        return reply, deadline, seen, ctx

    def _route(self, api_key: int, version: int) -> tuple[Any, Any, Any] | None:
        """(handler module, its `read_request`, its `cache_key`) for a request version this proxy serves (a hook
        a module does not have: None); None: not served. Worked out once per served (api_key, version) and
        advertised table, for speed: the version check and the module lookups were five calls a request. A reader
        is bound to `_routes_limit`, the element limit when the table came: the Produce lane's compiled step reads
        it too, so both hold a request to one limit."""
        advertised = self._advertised
        if advertised is None or self.physical.changed.value:  # the property's check, without its call
            advertised = self.advertised
        if advertised is not self._routes_of:
            self._routes, self._routes_of, self._routes_limit = {}, advertised, self.max_request_elements
            self._once_advertised = versions.widened(self._once_advertised, advertised)
        route = self._routes.get((api_key, version))
        if route is None:
            if not versions.accepts(advertised, api_key, version):
                return None  # not remembered: a client can name any of 2^32 pairs
            module = self.registry[api_key]
            read_request = self._hook(module, "read_request")
            if read_request is not None:  # Produce's own frame walk, held to the same element limit
                read_request = functools.partial(read_request, max_elements=self._routes_limit)
            route = self._routes[(api_key, version)] = (module, read_request, self._hook(module, "cache_key"))
        return route

    def _denied(self, module, ctx: Context, api_key: int, version: int, client_id: str | None,
                correlation_id: int) -> bytes | None:
        """The refusal of a request to a handler without ACL checks of its own when its principal is no super user
        (deny by default, docs/DESIGN.md §11); None: allowed."""
        if getattr(module, "AUTHORIZES", False) or ctx.session.principal in ctx.authorizer.super_users:  # type: ignore[union-attr]
            return None
        self.observer.refused("auth", "*", -1, f"api_key={api_key} has no ACL checks: super users only", client_id)
        resp_t = codec.response_schema(api_key, version)  # kio decoded the request: it has the answer too
        return codec.encode_response(error_response(resp_t, ErrorCode.cluster_authorization_failed), correlation_id)
    async def _complete(self, plan: Plan, sent: list, slot: int, correlation_id: int,
                        deadline: float | None, seen=None, ctx: Context | None = None, drained: bool = False) -> Answer:
        loop = self._loop or self.loop
        started = loop.time()
        try:
            results = await self._collect(plan.calls, sent, plan.return_early, plan.awaited, plan.answered_late,
                                          plan.awaited_within_s)
            elapsed = loop.time() - started
            if elapsed > SLOW_REQUEST_S:
                _warn_slow(elapsed, plan.calls, results)
            return await self._finish_rounds(plan.finish(results), slot, correlation_id, deadline, seen, ctx,
                                             drained)
        except BaseException:  # failed or cancelled, in this round or a later one (`_finish_rounds`)
            _report_refusals(ctx)
            raise

    def _one_call(self, loop: asyncio.AbstractEventLoop, plan: Plan, item: asyncio.Future, slot: int,
                  correlation_id: int, deadline: float | None, seen, ctx: Context | None = None,
                  drained: bool = False) -> _Answer:
        """`_complete` for a plan of one upstream call, done by a callback instead of a Task (for speed: per
        Produce that Task cost ~180 bytecodes, in its coroutines `_complete`, `_collect` and `_one` and in
        asyncio's WeakSet of tasks, and two more loop steps). The same steps, in the same order: the call's timer
        (`_one`), then in `_one_answered` its result, observer.upstream, the slow-request warning, plan.finish and
        the encoded answer."""
        answer = _Answer(loop=loop)
        answer.awaits = item
        timer = loop.call_later(plan.calls[0].timeout_s or REQUEST_TIMEOUT_S, _time_out, item)
        # a partial, not an object with attributes: its arguments reach the callback as locals
        item.add_done_callback(functools.partial(self._one_answered, answer, loop.time(), timer, plan, slot,
                                                 correlation_id, deadline, seen, ctx, drained))
        return answer

    def _one_answered(self, answer: _Answer, started: float, timer: asyncio.TimerHandle, plan: Plan, slot: int,
                      correlation_id: int, deadline: float | None, seen, ctx: Context | None, drained: bool,
                      item: asyncio.Future) -> None:
        timer.cancel()
        if answer.done():  # cancelled: so was the call
            _unanswered(answer, ctx)
            return
        answer.awaits = None
        try:
            results = [self._outcome(plan.calls[0], item)]
            self.observer.upstream(plan.calls, results)
            elapsed = self._loop.time() - started  # type: ignore[union-attr]  # set by start
            if elapsed > SLOW_REQUEST_S:
                _warn_slow(elapsed, plan.calls, results)
            reply = plan.finish(results)
            if isinstance(reply, Plan):  # more rounds: in a Task, as `_complete` runs them
                rounds = answer.awaits = self.loop.create_task(
                    self._finish_rounds(reply, slot, correlation_id, deadline, seen, ctx, drained))
                rounds.add_done_callback(functools.partial(_pass_on, answer, ctx, reply))
                return
            answer.set_result(self._encode(reply, correlation_id, seen, ctx))
        except BaseException as e:  # cancelled (by another call): so is the answer, as the Task was; failed: as a
            _unanswered(answer, ctx, e)  # Task would, so the connection reports it and closes
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise

    async def _finish_rounds(self, reply: Any, slot: int, correlation_id: int, deadline: float | None,
                             seen=None, ctx: Context | None = None, drained: bool = False) -> Answer:
        """A handler's reply after its first answers: the plans it still returns run in turn, then the answer. Its
        failure is reported by its caller's end (`_complete`, or `_pass_on` on the one-call path). A `drained`
        request's plan is refused here before any call of it is sent (`DrainedLaterRound`)."""
        rounds = 0
        try:
            while isinstance(reply, Plan):
                if drained:
                    raise DrainedLaterRound(reply)
                rounds = _next_round(rounds, reply, "after the answers")
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                reply = reply.finish(await self._execute(reply.calls, slot, deadline,
                                                         None if ctx is None else ctx.client_id))
        except BaseException:
            _abandon(reply)  # the round whose calls `finish` did not run on (its refusals: the caller's end)
            raise
        return self._encode(reply, correlation_id, seen, ctx)

    def _done(self, value: Answer) -> asyncio.Future[Answer]:
        fut: asyncio.Future[Answer] = self.loop.create_future()
        fut.set_result(value)
        return fut

    def _hook(self, module, name: str) -> Any:
        """A handler module's optional function (None: it has none), looked up once per module: a getattr of a
        missing module attribute formats an AttributeError, per request otherwise."""
        try:
            return self._hooks[module, name]
        except KeyError:
            hook = self._hooks[module, name] = getattr(module, name, None)
            return hook

    def _answer_key(self, cache_key: Callable[[Context, Any], Any], ctx: Context, request) -> Any:
        """The key of the cached answer (the module's `cache_key` of the request; None: not cached)."""
        if ctx.view is not self._answers_view:  # a new view: every cached answer is stale
            self._answers.clear()
            self._answers_view = ctx.view
        key = cache_key(ctx, request)
        return None if key is None else (request.__api_key__, key)

    def _remember(self, key: Any, frame: bytes) -> None:
        """Keep an answer for its key; the least recently used go past ANSWER_CACHE_ENTRIES answers or
        ANSWER_CACHE_BYTES together, and a larger answer is not kept (the cache is outside the budgets)."""
        if len(frame) > ANSWER_CACHE_BYTES:
            return
        self._answers[key] = frame
        while len(self._answers) > ANSWER_CACHE_ENTRIES or \
                sum(map(len, self._answers.values())) > ANSWER_CACHE_BYTES:
            self._answers.popitem(last=False)

    def _encode(self, reply: Any, correlation_id: int, seen=None, ctx: Context | None = None) -> Answer:
        """The answer frame, its record sets by reference (`codec.Chunks`); the request's refusals (`ctx`'s) are
        reported first, one line per reason."""
        if ctx is not None and ctx.refusals is not None:
            ctx.report_refusals()
        if type(reply) is CloseConnection:
            return self._close(reply, seen)
        self.observer.answered(seen, reply)
        return None if reply is NO_RESPONSE else codec.encode_response_chunks(reply, correlation_id)

    def _encode_whole(self, reply: Any, correlation_id: int, seen=None, ctx: Context | None = None
                      ) -> bytes | CloseConnection | None:
        """The answer frame in one piece (a cached answer gets another correlation id by slicing); the request's
        refusals reported first, as `_encode` does."""
        _report_refusals(ctx)
        if type(reply) is CloseConnection:
            return self._close(reply, seen)
        self.observer.answered(seen, reply)
        return None if reply is NO_RESPONSE else codec.encode_response(reply, correlation_id)

    def _close(self, reply: CloseConnection, seen) -> CloseConnection:
        """No answer, the connection closed: the errors of the answer the client would have had are counted
        (as a broker records an acks=0 produce's errors when it closes the connection)."""
        self.observer.answered(seen, reply.answer)
        return reply

    @staticmethod
    def _refused_before_authentication(session: Session, refusal: str, api_key: int, version: int,
                                       correlation_id: int) -> bytes:
        """After SaslHandshake, Kafka's SaslServerAuthenticator answers any request but SaslAuthenticate with its
        error response (ILLEGAL_SASL_STATE), then closes the connection (the session fails, which the connection
        logs); before the handshake, or once the session expired, it closes without an answer (raised here)."""
        resp_t = codec.response_type(api_key, version) if session.in_exchange() else None
        if resp_t is None:
            raise ProtocolViolation(refusal)
        session.fail(refusal)
        return codec.encode_response(error_response(resp_t, ErrorCode.illegal_sasl_state), correlation_id)

    def _unsupported(self, api_key: int, version: int, correlation_id: int) -> bytes:
        """A request at a version not served: ApiVersions answers as v0, with the table, as Kafka does; a version
        this process once advertised closes the connection; any other is answered UNSUPPORTED_VERSION."""
        if api_key == versions.API_VERSIONS:
            body = api_versions.answer(self.advertised, 0, ErrorCode.unsupported_version)
            return codec.encode_response(body, correlation_id)
        if versions.accepts(self._once_advertised, api_key, version):
            # The table narrowed under the connection (a metadata refresh read a cluster of an older Kafka) and the
            # client keeps the version it negotiated. Answered, a Produce had no partition in its answer (it has no
            # top-level error: the client's batches waited for delivery.timeout) and acks=0 an answer; every later
            # request the same, on a connection the client keeps. Closed, as a broker closes on a version it does
            # not take, the client connects again and asks ApiVersions (review s34-rvproduce finding 3).
            raise ProtocolViolation(f"api_key={api_key} version={version} is no longer advertised (the clusters' "
                                    "versions narrowed): closing, the client negotiates again")
        resp_t = codec.response_type(api_key, version)
        if resp_t is None:
            raise ProtocolViolation(f"unknown api_key={api_key} version={version}")
        log.info("refusing api_key=%s version=%s with UNSUPPORTED_VERSION", api_key, version)
        return codec.encode_response(error_response(resp_t, ErrorCode.unsupported_version), correlation_id)

    async def _execute(self, calls, slot: int, deadline: float | None = None, client_id: str | None = None) -> list:
        sent = await self._send(calls, slot, deadline, client_id)
        try:
            return await self._collect(calls, sent)
        except BaseException as e:  # cancelled awaiting the answers: the calls are written (`start` reads it)
            _note_written(e, sent)
            raise

    async def _send(self, calls, slot: int, deadline: float | None = None, client_id: str | None = None) -> list:
        """Write every call now; per call a future, None (no response expected) or an UpstreamError. `client_id`:
        the client's, named by a produce's refusal line (as the Produce lane's `_not_sent` names it). Cancelled or
        failed midway (awaiting a connection's set-up: a write, `conn.send`, is synchronous, whole or not at all), the
        calls before were written and the one awaited was not: the exception says whether any was (`_note_written`)."""
        sent: list = []
        try:  # free unless raised (3.11's zero-cost exceptions)
            for call in calls:
                target = call.target
                cluster = target.cluster
                if isinstance(target, ControllerApi):  # in turn, a few at a time (controller_calls.py)
                    sent.append(self._controller_calls.submit(call, self._loop or self.loop)
                                if self._controller_calls is not None else UpstreamError(
                                    "controller", "this proxy has no controller (static view file)"))
                    continue
                api_key = call.request.__api_key__
                produce = api_key == PRODUCE_API_KEY
                try:
                    if produce:
                        if refusal := self._not_to_send(deadline):  # _check_sendable, one call less
                            raise _NotSent(*refusal)
                    elif api_key in FENCED_OFFSETS_API_KEYS:  # an earlier call's connection may have taken seconds
                        self._check_offsets_sendable(cluster)
                    if isinstance(target, AnyBroker):
                        sent.append(await self._send_to_any(call, slot, deadline if produce else None))
                        continue
                    host, port = self.physical.address(cluster, target.node_id)
                    # an open pooled connection is written to here, without _send_to's coroutine (for speed)
                    conn = None if call.dedicated else \
                        self.pool.ready(host, port, slot if call.ordering_key is None else call.ordering_key)
                    if conn is not None:
                        sent.append(conn.send(call.request, call.expect_response, call.client_id))
                    else:
                        sent.append(await self._send_to(host, port, call, slot, deadline if produce else None))
                except _NotSent as e:
                    self.observer.refused(e.reason, cluster, -1, e.message, client_id)
                    sent.append(UpstreamError(cluster, e.message))
                except PoolBusy as e:  # the proxy's own cap, not the cluster's health
                    log.warning("%s", e)
                    sent.append(UpstreamError(cluster, str(e)))
                except (OSError, ConnectionError, TimeoutError, KeyError) as e:
                    self._lost(call.target, str(e) or type(e).__name__, sending=True,
                               asked=e.asked if isinstance(e, _NoBrokerAnswered) else None)
                    sent.append(UpstreamError(cluster, f"cannot reach cluster {cluster}"))
        except BaseException as e:
            _note_written(e, sent)
            raise
        return sent

    def _check_sendable(self, deadline: float | None) -> None:
        """Raises _NotSent for a produce that must not go upstream now: checked before the connection is
        found and again once it is (a new connection's TLS and SASL login can take seconds)."""
        if refusal := self._not_to_send(deadline):
            raise _NotSent(*refusal)

    def _check_offsets_sendable(self, cluster: str) -> None:
        """Raises _NotSent for a committed offsets request past the fence, or to a `cluster` the view no longer names
        for the groups. The handler read both when the coordinator lookup answered; written past the fence, a commit
        or deletion could reach a coordination cluster a move has left, after its copy, and a fetch read the offsets
        the switch left behind; and the switch itself may come meanwhile: a fetch is not drained, so the proxy acks it
        while the fetch's connection takes its login (docs/DESIGN.md §4.9 F2, §10.1). Checked before each of its calls
        is written and again once a new connection opened for it."""
        reason = groups.offsets_refusal(self.state.lease_valid(), self.state.view.coordination_cluster, cluster)
        if reason is not None:
            raise _NotSent(reason, OFFSETS_PAST_FENCE if reason == "lease" else OFFSETS_MOVED)

    def _not_to_send(self, deadline: float | None) -> tuple[str, str] | None:
        """(reason, message) when a produce routed earlier (a barrier or a retry waited meanwhile) must not go
        upstream now."""
        if not self.state.lease_valid():
            return "lease", "proxy lease expired: not sent"  # the controller may be sealing (docs/DESIGN.md §4.3)
        if deadline is not None and (self._loop or self.loop).time() > deadline:
            # The client has given up on this request and sends its next ones (or a retry, maybe through
            # another proxy): written now, it would land after them (docs/DESIGN.md §4.2).
            return "deadline", "the client's request timeout passed: not sent"
        return None

    async def _send_to_any(self, call: Call, slot: int, produce_deadline: float | None = None):
        """Any broker of the cluster will do: the next one in rotation, the one after on a connection error. When the
        view changed the cluster's bootstrap while one was tried (a connection's set-up can take seconds), the rest
        are the new entry's: the old bootstrap's other brokers may be gone, and their failure says nothing of the new
        one (docs/DESIGN.md §9.2). None answering: `_NoBrokerAnswered`, naming the entry whose brokers were tried
        last (the old one when the cluster left the view meanwhile: nothing is marked then)."""
        errors: list[str] = []
        cluster = call.target.cluster
        asked = self.physical.tracked(cluster)
        candidates = self.physical.candidates(cluster)
        while candidates:
            host, port = candidates.pop(0)
            if errors and call.request.__api_key__ == PRODUCE_API_KEY:
                # a failed connect can take seconds, and the next broker's open connection is used unchecked
                self._check_sendable(produce_deadline)
            try:
                return await self._send_to(host, port, call, slot, produce_deadline)
            except (OSError, ConnectionError, TimeoutError) as e:
                errors.append(f"{host}:{port}: {e or type(e).__name__}")
            if (now := self.physical.tracked(cluster)) is not asked:  # the view replaced the entry meanwhile
                if now is None:
                    break
                asked, candidates = now, self.physical.candidates(cluster)
        raise _NoBrokerAnswered("; ".join(errors) or "no broker known", asked)

    async def _send_to(self, host: str, port: int, call: Call, slot: int, produce_deadline: float | None = None):
        """`produce_deadline` (a produce only): the lease and the client's deadline are checked again once the
        connection is there."""
        if call.dedicated:
            if call.request.__api_key__ == FETCH_API_KEY:
                return await self._send_poll(host, port, call, slot)
            return await self._send_dedicated(host, port, call, slot)
        key = slot if call.ordering_key is None else call.ordering_key
        conn = self.pool.ready(host, port, key)
        if conn is None:  # a new connection: its TLS and SASL login can take seconds (none: checked just now)
            conn = await self.pool.get(host, port, key, call.target.cluster)
            api_key = call.request.__api_key__
            if api_key == PRODUCE_API_KEY:
                self._check_sendable(produce_deadline)
            elif api_key in FENCED_OFFSETS_API_KEYS:
                self._check_offsets_sendable(call.target.cluster)
        return conn.send(call.request, call.expect_response, call.client_id)

    def _lost(self, target, reason: str, sending: bool = False, asked: ClusterInfo | None = None) -> None:
        """No answer from `target`. Every broker of the cluster failed to connect: unreachable, unless `asked` (the
        entry they were the candidates of) is no longer the cluster's (`PhysicalClusters.mark_unreachable`). One
        broker: refresh (its partitions may have moved to another leader); the refresh decides about the cluster."""
        if sending and isinstance(target, AnyBroker):
            self.physical.mark_unreachable(target.cluster, reason, asked)
        else:
            self.physical.broker_lost(target.cluster, getattr(target, "node_id", None), reason)

    async def _send_dedicated(self, host: str, port: int, call: Call, slot: int):
        # Waiting here holds back this client connection's next requests only (backpressure), not others'.
        mine = self._dedicated_by_slot.setdefault(slot, asyncio.Semaphore(self.max_dedicated_per_connection))
        await mine.acquire()
        try:
            conn = await self.pool.dedicated(host, port, call.target.cluster)
        except BaseException:
            mine.release()
            raise

        def release(_f=None) -> None:
            self.pool.release(conn)
            mine.release()

        try:
            fut = conn.send(call.request, call.expect_response, call.client_id)
        except ConnectionError:
            release()
            raise
        if fut is None:
            release()
        else:
            fut.add_done_callback(release)
        return fut

    def forget(self, slot: int) -> None:
        """A client connection closed (calls of it still running release into a dropped semaphore and locks)."""
        self._dedicated_by_slot.pop(slot, None)
        self._polls_by_slot.pop(slot, None)

    async def _send_poll(self, host: str, port: int, call: Call, slot: int) -> asyncio.Future:
        """A Fetch call: one at a time per client connection and broker, as a Kafka client keeps one Fetch per
        broker in flight and a broker serves a connection's requests one after the other (docs/DESIGN.md §3.1,
        "Abandoned polls"). With none of this connection's out to the broker it is sent now; else it waits for that
        one (a poll an early-finished Fetch left running, or a pipelined Fetch's) to end, holding no dedicated
        connection meanwhile, and goes out then with what is left of its max_wait (`_Polled`). Its Fetch finishing
        early first, it is never sent. So a client connection holds at most one long poll per broker for its
        Fetches, however many of them finished early. A call whose max_wait is 0 (a Fetch already holding a gap
        skip's records, or a client's max_wait 0) does not wait for its turn: the broker answers it at once, so it
        cannot pile up, and queued it would be held for the abandoned poll's whole wait."""
        if getattr(call.request, "max_wait_ms", None) == 0:
            return await self._send_dedicated(host, port, call, slot)
        turns = self._polls_by_slot.setdefault(slot, {}).get((host, port))
        if turns is None:
            turns = self._polls_by_slot[slot][(host, port)] = _Turns()
        if turns.take_now():
            try:
                fut = await self._send_dedicated(host, port, call, slot)
            except BaseException:
                turns.give_back()
                raise
            fut.add_done_callback(turns.give_back)
            return fut
        loop = self._loop or self.loop
        polled = _Polled(loop=loop)
        polled.add_done_callback(functools.partial(_polled_done, self.pool))
        task = polled.queued = loop.create_task(self._poll_later(turns, polled, host, port, call, slot, loop.time()))
        self._poll_tasks.add(task)
        task.add_done_callback(self._poll_tasks.discard)
        return polled

    async def _poll_later(self, turns: _Turns, polled: _Polled, host: str, port: int, call: Call, slot: int,
                          queued_at: float) -> None:
        """`_send_poll`'s queued call: sent once the broker's earlier poll of this connection ended, unless its
        answer is no longer wanted (its Fetch finished early, the client went away, it timed out)."""
        await turns.take(polled.get_loop())
        if polled.done():
            turns.give_back()
            return
        request = call.request
        waited_ms = int(((self._loop or self.loop).time() - queued_at) * 1000)
        if (shorten := getattr(request, "waiting_at_most", None)) is not None:  # the client's max_wait holds
            call = dataclasses.replace(call, request=shorten(request.max_wait_ms - waited_ms))
        cluster = call.target.cluster
        try:
            fut = await self._send_dedicated(host, port, call, slot)
        except PoolBusy as e:  # as `_send` answers them
            turns.give_back()
            log.warning("%s", e)
            _settle(polled, UpstreamError(cluster, str(e)))
            return
        except (OSError, ConnectionError, TimeoutError, KeyError) as e:
            turns.give_back()
            self._lost(call.target, str(e) or type(e).__name__, sending=True)
            _settle(polled, UpstreamError(cluster, f"cannot reach cluster {cluster}"))
            return
        except BaseException:
            turns.give_back()
            raise
        fut.add_done_callback(turns.give_back)
        polled.sent = fut
        fut.add_done_callback(functools.partial(_pass_polled, polled))

    async def _one(self, call: Call, item):
        """One call's result: its answer, or an UpstreamError (None: no answer expected)."""
        if item is None or isinstance(item, UpstreamError):
            return item
        if isinstance(call.target, ControllerApi):  # a ControllerCall, which bounds its own wait
            return await item
        # wait_for without its Task and waiter: a timer fails the future itself with TimeoutError (the connection
        # then drops the late answer, as it drops one for a cancelled future). Cancelled while waiting, the
        # future is cancelled too, as by wait_for.
        timer = item.get_loop().call_later(call.timeout_s or REQUEST_TIMEOUT_S, _time_out, item)
        try:
            await item
        except (ConnectionError, OSError, codec.DecodeError):  # TimeoutError is an OSError
            pass  # _outcome turns them into an UpstreamError
        finally:
            timer.cancel()
        return self._outcome(call, item)

    def _outcome(self, call: Call, item: asyncio.Future):
        """A call's done future as its result: the answer, or an UpstreamError for a timeout or a lost connection
        (any other failure is raised)."""
        try:
            return item.result()
        except TimeoutError:
            # responses come in order: a connection whose broker stopped answering is useless
            self.pool.close_for(item)
            if not call.client_timeout:  # running past a wait the client chose says nothing of the cluster
                self._lost(call.target, "request timed out")
            return UpstreamError(call.target.cluster, "request timed out")
        except (ConnectionError, OSError, codec.DecodeError) as e:
            self._lost(call.target, str(e) or type(e).__name__)
            return UpstreamError(call.target.cluster, str(e) or type(e).__name__)

    async def _collect(self, calls, sent: list, return_early=None, awaited: tuple[int, ...] = (),
                       answered_late: Callable[[int, Any], None] | None = None,
                       awaited_within_s: float | None = None) -> list:
        one = self._one
        if len(calls) == 1:  # most requests: awaited here, without gather's Task per call
            results = [await one(calls[0], sent[0])]
            self.observer.upstream(calls, results)
            return results
        if return_early is None or len(calls) < 2:
            # a controller call's future is awaited as it is (it never raises): no Task each, for ~100,000 of them
            results = list(await asyncio.gather(*(s if type(s) is ControllerCall else one(c, s)
                                                  for c, s in zip(calls, sent, strict=True))))
            self.observer.upstream(calls, results)
            return results
        # Finish at the first result with data, once the `awaited` calls have answered too (or `awaited_within_s`
        # passed: a stalled broker holds no answer longer); the others keep running (not cancelled, so a dedicated
        # connection goes back to the pool only once its broker answered) and are dropped: `answered_late` hears of
        # each one's result when it comes.
        tasks = [asyncio.ensure_future(one(c, s)) for c, s in zip(calls, sent, strict=True)]
        pending = set(tasks)
        early = False
        loop = asyncio.get_running_loop()
        until = None if awaited_within_s is None or not awaited else loop.time() + awaited_within_s
        while pending:
            left = None if until is None or not early else max(0.0, until - loop.time())
            done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            early = early or any(return_early(t.result()) for t in done)
            if early and (not done or all(tasks[i].done() for i in awaited)):  # (none done: `until` passed)
                break
        for item in sent:  # a Fetch call still waiting for its turn (`_send_poll`): never sent now
            if type(item) is _Polled and item.sent is None:
                item.cancel()
        results = [t.result() if t.done() else UNANSWERED for t in tasks]
        if answered_late is not None and pending:
            for i, task in enumerate(tasks):
                if not task.done():
                    task.add_done_callback(functools.partial(_pass_late, answered_late, i))
        self.observer.upstream(calls, results)
        return results


def _abandon(reply: Any) -> None:
    """The core gives up on `reply` (a plan) before its `finish` ran on its results: the handler's hook, if any (it
    settles only what `finish` did not; called more than once, it does nothing more)."""
    if isinstance(reply, Plan) and reply.abandoned is not None:
        reply.abandoned()


def _abandon_unless_answered(plan: Plan, answer: asyncio.Future) -> None:
    """`answer` (of `plan`'s first round) ended cancelled or failed: `plan.finish` may not have run."""
    if answer.cancelled() or answer.exception() is not None:
        _abandon(plan)


def _time_out(answer: asyncio.Future) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


def _warn_slow(elapsed: float, calls, results: list) -> None:
    """Past SLOW_REQUEST_S: a stalled broker or connection shows up here first."""
    log.warning("slow upstream: %.1f s for %s", elapsed,
                [(c.target, type(c.request).__name__, type(r).__name__) for c, r in zip(calls, results, strict=True)])


class _Answer(asyncio.Future):
    """The answer future of a plan of one call (`Dispatcher._one_call`). Cancelled (only the loop's teardown
    cancels the connection's writer while it awaits an answer), it cancels what it waits for, as cancelling
    `_complete`'s Task did."""

    __slots__ = ("awaits",)
    awaits: asyncio.Future | None  # the call's future, then the Task of further rounds (None: nothing)

    def cancel(self, msg=None) -> bool:
        awaits, self.awaits = self.awaits, None
        if awaits is not None:
            awaits.cancel()
        return super().cancel(msg)


class _Polled(asyncio.Future):
    """The future of a Fetch call that waits for its turn (`Dispatcher._send_poll`): `sent`, the upstream call's
    future once it is sent (None: not yet), whose outcome it takes. Cancelled before it is sent, it is never sent;
    cancelled or timed out after, the upstream call is cancelled or its connection closed, as a call's would be."""

    __slots__ = ("queued", "sent")
    queued: asyncio.Task | None  # `Dispatcher._poll_later`, which sends it
    sent: asyncio.Future | None

    def __init__(self, *, loop: asyncio.AbstractEventLoop):
        super().__init__(loop=loop)
        self.queued = self.sent = None


class _Turns:
    """One Fetch call at a time per client connection and broker (`Dispatcher._send_poll`): `busy` while one is
    out; the queued calls' wake-up futures in order, each handed the turn in place of the one ending."""

    __slots__ = ("busy", "queue")

    def __init__(self) -> None:
        self.busy = False
        self.queue: collections.deque[asyncio.Future] = collections.deque()

    def take_now(self) -> bool:
        """The turn if nobody has it (nobody queues then either)."""
        if self.busy:
            return False
        self.busy = True
        return True

    async def take(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.take_now():
            return
        woken = loop.create_future()
        self.queue.append(woken)
        try:
            await woken
        except asyncio.CancelledError:
            if woken.done() and not woken.cancelled():  # handed the turn as it was cancelled: pass it on
                self.give_back()
            elif woken in self.queue:  # no longer waiting: out of the queue (a Fetch answered early leaves nothing)
                self.queue.remove(woken)
            raise

    def give_back(self, _fut: asyncio.Future | None = None) -> None:
        while self.queue:
            woken = self.queue.popleft()
            if not woken.done():
                woken.set_result(None)  # busy stays: the turn is that caller's now
                return
        self.busy = False


def _settle(polled: _Polled, result: UpstreamError) -> None:
    if not polled.done():  # (it may have timed out while its connection was being made)
        polled.set_result(result)


def _pass_polled(polled: _Polled, fut: asyncio.Future) -> None:
    if polled.done():
        return
    if fut.cancelled():
        polled.cancel()
    elif (error := fut.exception()) is not None:
        polled.set_exception(error)
    else:
        polled.set_result(fut.result())


def _pass_late(answered_late: Callable[[int, Any], None], index: int, task: asyncio.Future) -> None:
    """A call a plan finished early without (`Plan.answered_late`) ended: its result, unless it was never sent
    (cancelled) or failed otherwise (raised: `_one` turns a lost connection or a timeout into an UpstreamError)."""
    if task.cancelled():
        return
    error = task.exception()  # retrieved here: logged as asyncio would log a failed task nobody awaited
    if error is not None:
        log.error("a call its plan finished without failed: %r", error)
        return
    answered_late(index, task.result())


def _polled_done(pool: UpstreamPool, polled: _Polled) -> None:
    """A queued Fetch call's future ended before its upstream call did. Not sent yet: it never is (its task leaves
    the queue). Sent: cancelled (the client's connection went away), the call is too (its dedicated connection is
    closed as it comes back with a request pending); timed out, its connection is closed (`Dispatcher._outcome`
    closes the one owning a call's own future)."""
    fut = polled.sent
    if fut is None:
        if polled.queued is not None:
            polled.queued.cancel()
        return
    if fut.done():
        return
    if polled.cancelled():
        fut.cancel()
    else:
        pool.close_for(fut)


def _pass_on(answer: _Answer, ctx: Context | None, later: Plan, rounds: asyncio.Task) -> None:
    """A `_one_call` answer whose handler returned more plans (`later`, the first of them): the Task that ran them
    gives it its outcome (its refusals reported by `_encode` when it answered, by `_unanswered` when it failed or was
    cancelled, even before it started: it then ran nothing). Failed or cancelled, `later`'s `abandoned` hook is
    called here too: a Task cancelled before its first step never runs `_finish_rounds`' failure path, so the plan
    was given up on without it (its counts left to the 300 s backstop). Run, that path called the hook of the round
    it was in; `later`'s again settles only what its `finish` did not (nothing, if it ran)."""
    answer.awaits = None  # ended: nothing left to cancel
    if rounds.cancelled():
        _abandon(later)
        _unanswered(answer, ctx)
    elif (error := rounds.exception()) is not None:
        _abandon(later)
        _unanswered(answer, ctx, error)
    elif not answer.done():
        answer.set_result(rounds.result())


def _unanswered(answer: _Answer, ctx: Context | None, error: BaseException | None = None) -> None:
    """The end of a one-call request without an answer (`_one_answered`, `_pass_on`): its refusals reported, its
    answer cancelled (`error` None or a CancelledError) or failed with `error`, unless it is done already (the
    connection cancelled it)."""
    _report_refusals(ctx)
    if answer.done():
        return
    if error is None or isinstance(error, asyncio.CancelledError):
        answer.cancel()
    else:
        answer.set_exception(error)


def _uncount(counts: collections.Counter[int], view_version: int, _answer: asyncio.Future | None) -> None:
    counts[view_version] -= 1


def _uncount_answered(counts: collections.Counter[int], view_version: int, sent: list | tuple,
                      loop: asyncio.AbstractEventLoop, held: AbandonedWrites, answer: asyncio.Future) -> None:
    """`start`'s done-callback of a drained request's answer (`writes_in_flight`). Answered: uncounted. Cancelled (the
    loop's teardown: `_Answer.cancel`, or `_complete`'s Task, even before its first step) or failed with a call of
    its answer round (`sent`) written and not answered: the broker may still append it, so it stays counted as any
    request given up on once written (`_uncount_or_hold`: until the drain closes its connection, ABANDONED_SETTLE_S
    at most); none: uncounted now. A later round is never left to look at: a drained request has none
    (`DrainedLaterRound`). The answered path pays two checks (`cancelled`, `exception`), the generic path's only: the
    lane counts its own requests."""
    if answer.cancelled() or answer.exception() is not None:
        _uncount_or_hold(counts, view_version, _written_unanswered(sent), loop, held)
    else:
        counts[view_version] -= 1


def _written_unanswered(sent: list | tuple) -> list:
    """The items of `sent` (`_send`'s) whose call was written and has no answer: pending, cancelled with the request,
    failed (a timeout whose connection `_outcome` had no turn to close), or None (no answer expected: unknown)."""
    return [item for item in sent if item is None or (
        type(item) is not UpstreamError and (not item.done() or item.cancelled() or item.exception() is not None))]


class AbandonedWrites:
    """Drained requests given up on once written (DESIGN §4.1 step 2): each keeps its `writes_in_flight` count until
    `settle_s` has passed or the drain closed the upstream connections its written calls are pending on (`close`),
    whichever comes first. A record lives at most `settle_s`: bounded by what can be abandoned in that time."""

    def __init__(self) -> None:
        self._held: dict[object, tuple[list | None, Callable[[], None], asyncio.TimerHandle]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, loop: asyncio.AbstractEventLoop, written: list, release: Callable[[], None],
             settle_s: float) -> None:
        """`written`: the request's written calls' items (`conn.send`'s futures, None for a call with no answer)."""
        key = object()
        # a future is found by its connection (`UpstreamPool.close_for`); a call with no answer, or another kind of
        # item, cannot be: that record waits for its timer
        futures = written if all(type(item) is asyncio.Future for item in written) else None
        self._held[key] = (futures, release, loop.call_later(settle_s, self._expire, key))

    def _expire(self, key: object) -> None:
        _, release, _ = self._held.pop(key)
        release()

    def close(self, pool: UpstreamPool) -> int:
        """Close the connections the held requests' calls are pending on and release their counts: Kafka drops a
        connection's unread requests when it closes, so none of those can be appended later (the reason the drain
        closes the connections of produce calls still pending). One it had already read and queued is still
        processed (only its answer is dropped): appended as soon as a handler thread takes it, normally within
        milliseconds; a known limit under an overloaded broker's request queue (DESIGN §4.1 step 2). A call
        answered meanwhile left its connection: done too. Returns how many were released."""
        released = 0
        for key, (futures, release, timer) in list(self._held.items()):
            if futures is None:
                continue
            for fut in futures:
                pool.close_for(fut, "the drain closes a write given up on")
            timer.cancel()
            del self._held[key]
            release()
            released += 1
        return released


_WRITTEN = "fedkafka_calls_written"  # set on an exception out of `_send`/`_execute` raised with calls written


def _note_written(error: BaseException, sent: list) -> None:
    """`error` ends a send or a round after some of its calls were written (anything but an UpstreamError in
    `sent`: a future, or None for a call with no answer): the broker may still write them. Set on the exception
    (the written items, for `AbandonedWrites.close` to find their connections), not per call, so that a request's
    success path pays nothing for it."""
    written = [item for item in sent if type(item) is not UpstreamError]
    if written:
        setattr(error, _WRITTEN, [*getattr(error, _WRITTEN, ()), *written])


def _uncount_unless_written(counts: collections.Counter[int], view_version: int, error: BaseException,
                            loop: asyncio.AbstractEventLoop, held: AbandonedWrites) -> None:
    """`start` gave up on a drained request (`writes_in_flight`), cancelled (`stop_reading()`: its client connection
    broke while a barrier round was out, or a connection was being set up) or failed: nothing written, it is
    uncounted now; a call written (`_note_written`), it stays counted until it can no longer be written (DESIGN §4.1
    step 2): ABANDONED_SETTLE_S more, or until the drain closes its connection (`held`, `AbandonedWrites.close`):
    the drain must not ack a frozen view while the broker may still append it, above the seal."""
    _uncount_or_hold(counts, view_version, getattr(error, _WRITTEN, None), loop, held)


def _uncount_or_hold(counts: collections.Counter[int], view_version: int, written: list | None,
                     loop: asyncio.AbstractEventLoop, held: AbandonedWrites) -> None:
    """A drained request given up on: uncounted now if none of its calls was written, else held (`written`, their
    futures) until the drain closes their connections or ABANDONED_SETTLE_S passed (`start`'s and the lane's)."""
    if not written:
        counts[view_version] -= 1
    else:
        held.hold(loop, written, functools.partial(_uncount, counts, view_version, None), ABANDONED_SETTLE_S)


def _send_deadline(api_key: int, request, loop: asyncio.AbstractEventLoop | None = None) -> float | None:
    """The loop time after which a produce is no longer sent upstream: its own timeout field, less a margin
    for the way here (the client's timer started when it sent the request). None: other requests, and acks=0 (no
    answer awaited, no retry: a record refused unsent would be dropped without a word; sent late, it is written once).
    For acks=1 the field bounds no replication (`produce.upstream_timeout_ms`) but it is still no later than the
    client's own timer: Java's and librdkafka's request.timeout.ms is the field, the others' timers are longer."""
    if api_key != PRODUCE_API_KEY or request.acks == 0:
        return None
    timeout_ms = getattr(request, "timeout_ms", None)  # the produce handler's frame walk
    # else kio's ProduceRequest: a cproxy's consume_side_produce (which refuses it) has no frame walk
    timeout_s = request.timeout.total_seconds() if timeout_ms is None else timeout_ms / 1000
    if timeout_s <= 0:
        return None  # "do not wait for replication", not a deadline
    return (loop or asyncio.get_running_loop()).time() + timeout_s - min(1.0, timeout_s / 10)


def _with_correlation_id(frame: bytes, correlation_id: int) -> bytes:
    """A cached answer frame for another request: the correlation id follows the 4-byte size prefix."""
    return frame[:4] + struct.pack(">i", correlation_id) + frame[8:]




Starter = Callable[[bytes, int], Awaitable[asyncio.Future[Answer]]]
