"""The Produce lane (core/produce_lane.py) under what a client or a broker controls: the route cache keeps no
client's name (a topic name is as long as the frame, and the cache is outside the byte budgets), a node id given
again is seen as the generic path sees it, and a broker's answer that does not fit in logical offsets closes the
client's connection as on the generic path, without a traceback per answer.

The dispatcher, broker stand-in and frames of test_produce_lane.py."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import struct
import tracemalloc

import pytest
from kio.schema.errors import ErrorCode
from protocol.test_records_twins import using

from fedkafka.protocol import records as rec
from fedkafka.proxy.core import connection
from fedkafka.proxy.core.limits import Limits
from fedkafka.security.session import Session
from proxy.test_limits_unit import _serve_with
from proxy.test_produce_lane import Broker, answers_of, ask, batch, frame, proxy, run, view, writers

NAME = 256 * 1024  # characters of a client's topic name (compact strings run up to the frame size)
REQUESTS = 100  # held: REQUESTS x NAME (25 MiB) before the fix


async def retained(d, requests: list[tuple[bytes, Session | None]]) -> int:
    """Bytes still allocated once `requests` were answered and dropped (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        while requests:
            request, session = requests.pop()
            answer = await ask(d, request, session)
            assert answer is not None
            del request, session, answer
            await asyncio.sleep(0)  # the answer future's done-callbacks hold it (and its frame) until they ran
        await asyncio.sleep(0)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def key_chars(d) -> int:
    return sum(len(part) for key in d.lane._routes for part in key if isinstance(part, str))


def test_unknown_topic_names_of_any_length_are_not_kept_by_the_route_cache():
    """A client's unknown topic names were cached (as not the lane's), each as the client's string: 100 requests of
    256 KiB names held 25 MiB, up to ROUTE_CACHE_ENTRIES x the frame size."""
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        try:
            requests = [(frame({0: batch()}, topic=f"{i:06d}" + "x" * NAME), None) for i in range(REQUESTS)]
            held = await retained(d, requests)
            assert held < 2 * 2**20, f"{held / 2**20:.1f} MiB held"
            assert key_chars(d) < 1024 and all(key[0] in d.state.view.topics for key in d.lane._routes)
            assert d.lane.taken == 0  # each answered by the generic path (UNKNOWN_TOPIC_OR_PARTITION)
            assert answers_of(await ask(d, frame({0: batch()})))[0][:2] == (0, 100) and d.lane.taken == 1
            assert list(d.lane._routes) == [("t", 0)]
        finally:
            broker.close()
    run(scenario)


def test_partitions_the_topic_does_not_have_are_not_kept_by_the_route_cache():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        try:
            for index in range(3, 50):
                code = answers_of(await ask(d, frame({index: batch()})))[index][0]
                assert code == ErrorCode.unknown_topic_or_partition
            assert d.lane._routes == {} and d.lane.taken == 0
        finally:
            broker.close()
    run(scenario)


def test_long_principals_are_not_kept_by_the_route_cache():
    """With ACLs a route is the session's: a principal of any length (without WRITE right) was kept as well."""
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(acls=writers("User:alice")), broker, authorization=True)
        try:
            requests = [(frame({0: batch()}), Session(principal=f"User:{i:06d}" + "x" * NAME, host="10.0.0.1"))
                        for i in range(REQUESTS)]
            held = await retained(d, requests)
            assert held < 2 * 2**20, f"{held / 2**20:.1f} MiB held"
            assert d.lane._routes == {} and d.lane.taken == 0
            alice = Session(principal="User:alice", host="10.0.0.1")
            assert answers_of(await ask(d, frame({0: batch()}), alice))[0][:2] == (0, 100) and d.lane.taken == 1
            assert list(d.lane._routes) == [("t", 0, "User:alice", "10.0.0.1")]
        finally:
            broker.close()
    run(scenario)


def test_a_long_principal_with_the_right_to_write_is_still_taken_uncached():
    async def scenario():
        broker = await Broker().start()
        long = "User:" + "y" * 4096
        d = await proxy(view(acls=writers(long)), broker, authorization=True)
        try:
            for p in (0, 1, 0):
                answer = answers_of(await ask(d, frame({p: batch()}), Session(principal=long, host="10.0.0.1")))
                assert answer[p][:2] == (0, 100 + p)
            assert d.lane.taken == 3 and d.lane._routes == {}
        finally:
            broker.close()
    run(scenario)


def test_a_node_id_given_again_that_the_view_drains_is_refused_by_the_generic_path():
    """`ProxyState.set_node_id` (registered again) changes the proxy's id without a new view: the lane kept the
    draining flag of its old id and went on writing while the generic path refused."""
    async def scenario(lane: bool):
        broker = await Broker().start()
        d = await proxy(view(draining=(9,)), broker, lane=lane)
        try:
            first = answers_of(await ask(d, frame({0: batch()})))[0][:2]
            d.state.set_node_id(9)  # the view lists id 9 as draining
            second = answers_of(await ask(d, frame({0: batch()})))[0][0]
            return first, second, len(broker.frames), d.lane.taken if lane else 1
        finally:
            broker.close()
    assert run(lambda: scenario(False)) == run(lambda: scenario(True)) == \
        ((0, 100), ErrorCode.not_leader_or_follower, 1, 1)


# -- a broker's answer that does not fit in logical offsets ----------------------------------------------------------

def near_int64_max(request: rec.ProduceRequestFrame) -> list:
    """A base offset and log start near 2^63: p2's shift of 40 moves them past an int64."""
    return [(t.name, [rec.ProducePartitionAnswer(p.index, 0, 2**63 - 10, -1, 2**63 - 10) for p in t.partition_data])
            for t in request.topic_data]


async def over_a_socket(lane: bool, monkeypatch) -> tuple[bytes, int, int, dict]:
    """p2's request with an answer moved past 2^63 - 1, over a client connection: what the client read before the
    connection closed, the lane's count, the broker's frames, the writes in flight."""
    broker = await Broker(near_int64_max).start()
    d = await proxy(view(), broker, lane=lane)
    monkeypatch.setattr(connection, "_slots", itertools.count())  # slot 0: the pooled connection `proxy` opened
    server, port, _ = await _serve_with(d, Limits())
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = frame({2: batch()})
        w.write(struct.pack(">i", len(request)) + request)
        read = await asyncio.wait_for(r.read(), 30)  # up to the close; a wait on a loaded machine, not a limit
        return read, d.lane.taken if lane else 1, len(broker.frames), dict(d.writes_in_flight)
    finally:
        w.close()
        server.close()
        broker.close()


@pytest.mark.parametrize("implementation", ["python", "compiled"])
def test_an_answer_past_int64_in_logical_offsets_closes_the_connection_as_the_generic_path_does(
        implementation, monkeypatch, caplog):
    """The Python twin of translated_produce_answer raised struct.error inside the upstream connection's reader: a
    traceback per answer, and the client answered REQUEST_TIMED_OUT on an open connection."""
    with using(implementation):  # type: ignore[arg-type]
        generic = asyncio.run(over_a_socket(False, monkeypatch))
        caplog.clear()
        with caplog.at_level(logging.INFO):
            lane = asyncio.run(over_a_socket(True, monkeypatch))
    assert lane == generic == (b"", 1, 1, {4: 0})  # closed unanswered; taken by the lane
    ours = [r for r in caplog.records if r.name.startswith("fedkafka")]  # not the broker stand-in's teardown
    assert not [r for r in ours if r.exc_info], "a traceback was logged"
    (warning,) = [r.getMessage() for r in ours if r.levelno >= logging.WARNING]
    assert "does not fit in logical offsets" in warning and "c2's broker 1" in warning

