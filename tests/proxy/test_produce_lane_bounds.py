"""The Produce lane (core/produce_lane.py) under what a client or a broker controls: the route cache keeps no
client's name (a topic name is as long as the frame, and the cache is outside the byte budgets), a node id given
again is seen as the generic path sees it, and a broker's answer that does not fit in logical offsets closes the
client's connection as on the generic path, without a traceback per answer.

The dispatcher, broker stand-in and frames of test_produce_lane.py."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from kio.schema.errors import ErrorCode

from fedkafka.security.session import Session
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
