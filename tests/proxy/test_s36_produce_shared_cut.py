"""Session 36's cut of the shared per-request Python on the plain Produce lane's path, against main's code.

Cut (nothing else changed): `PhysicalClusters.changed` is a `physical.Flag` read as an attribute (an asyncio.Event's
`is_set()` was a Python call a request, in `Dispatcher._route`); `records.lane_written` is the twin's function itself
(bound by `records.use`), not a wrapper around it; `UpstreamConnection.send` looks a request's kind up in one
expression. (`Dispatcher.start_now`, `Dispatcher._route` and `UpstreamProduce.frame_parts` were cut too on
s36-produce and are main's again, bar `_route`'s read of the flag: their copies below are the same code.)
Main's versions of these functions (366d6e5) are kept below, only here, and installed for the "main" side: each
drawn request goes through one dispatcher of each side, with and without the metrics observer, after a first
request that fills the route caches, followed by a third, and the broker answers the second as the event says:
answered (drawn answers: errors, offsets below p2's segment, answers left out), the connection lost while the
request is out, no answer before the upstream timeout, the client's answer cancelled before the broker answers, the
brokers' api versions changed just before it (Produce v9-12 no longer served). The broker's frames, the client's
answers, the lane's counts, the writes in flight and those held as abandoned, the metrics and the log lines are
compared.

Its copy of `Dispatcher.start_now` (main's code then, unchanged by session 36) went with session 37's cut of that call
(the lane's own `ProduceLane.start` is the dispatcher's `start_now`): test_s37_produce_cut.py compares that one.

The stand-in broker, view and dispatcher are test_produce_lane.py's."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from example_counts import examples
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from protocol.test_records_twins import using

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.core import dispatch, produce_lane, upstream
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.observe import NULL_OBSERVER
from fedkafka.proxy.core.upstream import UpstreamConnection
from fedkafka.proxy.handlers import produce as produce_handler
from proxy.test_produce_lane import (
    Broker,
    batch,
    broker_answers,
    calls_of_a_lane_request,
    frame,
    proxy,
    requests_of,
    run,
    scripted,
    view,
)

# -- main's code (366d6e5), kept only here ----------------------------------------------------------------------


def _main_send(self, request, expect_response=True, client_id=None):
    transport = self._transport
    if self.closed or transport is None:  # _open sets _transport and _loop together
        raise ConnectionError(f"{self.label}: connection closed")
    corr = next(self._ids) & 0x7FFFFFFF
    kind = upstream._KINDS.get(type(request))  # the dict first: one call less a request
    if kind is None:
        kind = upstream._kind(type(request))
    writes_own, reads_own = kind
    if client_id is None:
        client_id = codec.PROXY_CLIENT_ID
    if writes_own:
        transport.writelines(request.frame_parts(corr, client_id))
    else:
        frame = codec.encode_request_chunks(request, corr, client_id)
        if isinstance(frame, codec.Chunks):
            transport.writelines(frame.parts)
        else:
            transport.write(frame)
    if not expect_response:
        return None
    fut = self._loop.create_future()
    resp_t = request if reads_own else codec.response_schema(request.__api_key__, request.__version__)
    self._pending.append((corr, resp_t, fut))
    return fut


def _main_route(self, api_key, version):
    advertised = self._advertised
    if advertised is None or self.physical.changed.is_set():
        advertised = self.advertised
    if advertised is not self._routes_of:
        self._routes, self._routes_of, self._routes_limit = {}, advertised, self.max_request_elements
        self._once_advertised = dispatch.versions.widened(self._once_advertised, advertised)
    route = self._routes.get((api_key, version))
    if route is None:
        if not dispatch.versions.accepts(advertised, api_key, version):
            return None
        module = self.registry[api_key]
        read_request = self._hook(module, "read_request")
        if read_request is not None:
            read_request = dispatch.functools.partial(read_request, max_elements=self._routes_limit)
        route = self._routes[(api_key, version)] = (module, read_request, self._hook(module, "cache_key"))
    return route


def _main_frame_parts(self, correlation_id, client_id):
    return rec.produce_request_parts(self.version, correlation_id, client_id, produce_handler.UPSTREAM_ACKS,
                                     self.timeout_ms, self.topic_data)


def _main_lane_written(frame, upstream_request, written_cls):
    if rec._lane_read is None:
        return None
    return rec._lane_read.lane_written(frame, upstream_request, written_cls)


@contextlib.contextmanager
def code_of(side: str):
    with pytest.MonkeyPatch.context() as patch:
        if side == "main":
            patch.setattr(UpstreamConnection, "send", _main_send)
            patch.setattr(Dispatcher, "_route", _main_route)
            patch.setattr(rec, "lane_written", _main_lane_written)
            patch.setattr(produce_handler.UpstreamProduce, "frame_parts", _main_frame_parts)  # LaneProduce's too
        yield


# -- the broker and the scenario -----------------------------------------------------------------------------------

class EventBroker(Broker):
    """test_produce_lane's broker, which can also close the connection a request came on instead of answering
    (`lose`), answer nothing (`answers` giving None) or hold its answers (`gate`)."""

    lose = False

    async def _serve(self, reader, writer) -> None:
        async for body in requests_of(reader):
            self.frames.append(body[:4] + bytes(4) + body[8:])
            if self.lose:
                self.lose = False
                writer.transport.abort()
                return
            request = rec.read_produce_request(body)
            topics = self.answers(request)
            if self.gate is not None:
                await self.gate.wait()
            if topics is not None:
                _, version, correlation_id = codec.peek_header(body)
                writer.write(rec.produce_response_frame(version, correlation_id, topics, 0))


def samples(observer) -> list:
    """The metrics' samples, their durations left out (the count of each duration kept)."""
    if observer is NULL_OBSERVER:
        return []
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for m in observer.collect() for s in m.samples
                  if "seconds" not in s.name or s.name.endswith("_count"))


async def outcome(request: bytes, event: str, answers: dict, metrics: bool):
    produce_handler._below_logged.clear()  # its lines at most once a minute per partition: each side logs its own
    broker = await EventBroker().start()
    d = await proxy(view(), broker)
    if not metrics:
        d.observer = NULL_OBSERVER
    port = str(broker.port)  # in log lines and in an UpstreamError's message: the same length, another number
    lines: list[tuple[str, int, str]] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda r: lines.append((r.name, r.levelno, r.getMessage().replace(port, "X" * len(port))))
    root = logging.getLogger("fedkafka")
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    got: list = []

    async def started():
        """As the client connection dispatches: the lane first (`start_now`), else the generic path."""
        try:
            pending = d.start_now(request, 0, None)
            return pending if pending is not None else await d.start(request, 0, None, lane=False)
        except BaseException as e:  # the same refusal on both sides (a version no longer advertised)
            got.append(f"{type(e).__name__}: {e}")
            return None

    async def answer_of(pending) -> None:
        if pending is None:
            return
        try:
            a = await pending
            got.append(bytes(a).replace(port.encode(), b"X" * len(port))
                       if isinstance(a, (bytes, bytearray, memoryview)) else repr(a))
        except BaseException as e:  # the same failure on both sides
            got.append(type(e).__name__)
    try:
        await answer_of(await started())  # fills the route caches
        if event == "versions_changed":  # the brokers now take Produce up to v8: v9-12 no longer served
            for info in d.physical.clusters.values():
                info.api_versions = {0: (3, 8)}
            d.physical.changed.set()
        broker.answers = (lambda r: None) if event == "timed_out" else scripted(answers)
        broker.lose = event == "lost"
        if event == "cancelled":
            broker.gate = asyncio.Event()
        pending = await started()
        if event == "cancelled" and pending is not None:
            pending.cancel()
        if broker.gate is not None:
            broker.gate.set()
        await answer_of(pending)
        broker.answers = scripted({k: rec.ProducePartitionAnswer(k[1], 0, 5) for k in answers})
        await answer_of(await started())  # after: on the same connection, or a new one
        assert d.writes_in_flight is not None
        return (sorted(broker.frames), got, (d.lane.taken, d.lane.compiled), dict(d.writes_in_flight),
                len(d.abandoned_writes), samples(d.observer), lines)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        d.pool.close()
        broker.close()


@st.composite
def lane_requests(draw) -> bytes:
    """What a plain producer sends: one or several partitions of topic t (p2 on another cluster: left to the
    generic path with p0 or p1), acks=all or acks=1, versions 3-12, a timeout of none or some."""
    parts = draw(st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=3, unique=True))
    return frame({p: batch(draw(st.integers(1, 3))) for p in parts}, version=draw(st.integers(3, 12)),
                 acks=draw(st.sampled_from([-1, 1])), timeout_ms=draw(st.sampled_from([0, 30_000])))


EVENTS = ["answered", "answered", "versions_changed", "lost", "timed_out", "cancelled"]


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])  # sockets, loaded
@given(lane_requests(), broker_answers(), st.sampled_from(EVENTS), st.booleans())
def test_the_cut_lane_writes_answers_counts_and_logs_what_main_s_code_does(request, answers, event, metrics):
    assert_same_outcome(request, event, lambda: outcome(request, event, answers, metrics))


def assert_same_outcome(request: bytes, event: str, outcome_of, main_code=None) -> None:
    """`outcome_of()`, run with main's code (`main_code("main")`: this file's `code_of` unless given) and with
    the new, gives the same (a drawn example that cannot be compared is left out)."""
    # a request of both clusters (p2 with p0 or p1) is two calls on two connections, which race for a lost
    # connection, a cancellation or the timeouts' lines whatever the code: drawn only to be answered
    assume(event in ("answered", "versions_changed") or
           2 not in {p.index for t in rec.read_produce_request(request).topic_data for p in t.partition_data} or
           len(rec.read_produce_request(request).topic_data[0].partition_data) == 1)
    with pytest.MonkeyPatch.context() as patch:
        for module in (produce_lane, dispatch):  # the "timed_out" event's upstream timeout; 30 s otherwise
            patch.setattr(module, "REQUEST_TIMEOUT_S", 0.05 if event == "timed_out" else 30)
        with (main_code or code_of)("main"):
            main = run(outcome_of)
        new = run(outcome_of)
    assert new == main


@pytest.mark.skipif(rec._lane_read is None, reason="the compiled twin of revision 7 is not built")
@pytest.mark.parametrize("side", ["main", "new"])
def test_a_plain_lane_request_calls_neither_is_set_nor_a_wrapper_of_the_twin_s_answer_step(side):
    """The Python functions a plain request of one partition runs once the route caches are made: main's ran
    `asyncio.Event.is_set` (in `Dispatcher._route`) and `records.lane_written` each time; the cut runs neither."""
    async def scenario() -> list[str]:
        broker = await EventBroker().start()
        d = await proxy(view(), broker)
        d.observer = NULL_OBSERVER
        request = frame({0: batch(2)})
        try:
            await (await d.start(request, 0, None))
            return await calls_of_a_lane_request(d.start_now, request)
        finally:
            d.pool.close()
            broker.close()
    with using("compiled"), code_of(side):
        called = run(scenario)
    cut = {"Event.is_set", "Flag.is_set", "_main_lane_written", "lane_written", "_no_lane_written"}
    assert ("ProduceLane._send" in called) and (bool(cut & set(called)) == (side == "main")), sorted(set(called))
