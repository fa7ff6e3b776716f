"""Calls meant for any broker, metadata refreshes and leader changes when one broker of a cluster is down
(issue #12, hole 5), against a real broker and a dead address beside it (multi-broker clusters: after the
brokers work is merged, see the report)."""

from __future__ import annotations

import asyncio

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode

from fedkafka.protocol import records as rec
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.physical import ClusterInfo, PhysicalClusters
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.handlers import produce
from fedkafka.proxy.plan import AnyBroker, Broker, Call, Plan, UpstreamError
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import ProxyInfo, ProxyRole, View

from .support import free_port
from .test_handlers import FakePhysical, _through, batch, broker_answer, by_partition, ctx, produce_req

DEAD = ("127.0.0.1", free_port())  # nothing listens there


def _address(bootstrap: str) -> tuple[str, int]:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    return host, int(port)


def _dispatcher(physical: PhysicalClusters) -> Dispatcher:
    state = ProxyState(view=View(version=1), me=ProxyInfo(7, "p7", 9092, ProxyRole.PPROXY))
    return Dispatcher(state=state, physical=physical, producer_ids=None, pool=UpstreamPool())


def _versions() -> ApiVersionsRequest:
    return ApiVersionsRequest(client_software_name="fedkafka-test", client_software_version="0")


def test_candidates_rotate_over_the_brokers_then_the_bootstrap():
    physical = PhysicalClusters()
    physical.clusters["x"] = ClusterInfo("x", "b:1,a:1", brokers={1: ("a", 1), 2: ("b", 2), 3: ("c", 3)})
    firsts = [physical.candidates("x")[0] for _ in range(3)]
    assert sorted(firsts) == [("a", 1), ("b", 2), ("c", 3)]  # every broker takes its share
    assert physical.candidates("x")[3:] == [("b", 1)]  # bootstrap addresses that are no known broker


@pytest.mark.integration
def test_a_call_for_any_broker_goes_to_a_live_one_when_the_first_is_down(make_clusters):
    """Old code sent every such call (InitProducerId, DescribeConfigs, FindCoordinator) to the first broker
    of the metadata: with that broker down they all failed although the others answered."""
    (x,) = make_clusters("x")
    live = _address(x.bootstrap)

    async def scenario():
        physical = PhysicalClusters()
        physical.clusters["x"] = ClusterInfo("x", f"{DEAD[0]}:{DEAD[1]}", brokers={1: DEAD, 2: live})
        dispatcher = _dispatcher(physical)
        for _ in range(4):
            (answer,) = await dispatcher._execute([Call(AnyBroker("x"), _versions())], 0)
            assert not isinstance(answer, UpstreamError), answer
            assert answer.error_code == ErrorCode.none
        assert physical.reachable("x")
        dispatcher.pool.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_metadata_refresh_reaches_a_known_broker_when_the_bootstrap_one_is_down(make_clusters):
    (x,) = make_clusters("x")

    async def scenario():
        physical = PhysicalClusters()
        physical.clusters["x"] = ClusterInfo("x", f"{DEAD[0]}:{DEAD[1]}", brokers={1: _address(x.bootstrap)})
        assert await physical.refresh("x")
        assert physical.reachable("x") and physical.clusters["x"].brokers

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_dead_leader_asks_for_a_refresh_without_fencing_the_whole_cluster(make_clusters):
    """One broker down: the partitions it led get new leaders, the others keep working. Old code marked the
    whole cluster unreachable, refusing produce to every partition of it until the next refresh."""
    (x,) = make_clusters("x")

    async def scenario():
        physical = PhysicalClusters()
        physical.clusters["x"] = ClusterInfo("x", x.bootstrap, brokers={1: DEAD, 2: _address(x.bootstrap)})
        dispatcher = _dispatcher(physical)
        (answer,) = await dispatcher._execute([Call(Broker("x", 1), _versions())], 0)
        assert isinstance(answer, UpstreamError)
        assert physical.reachable("x") and "x" in physical._wanted  # a refresh is due, the cluster still counts
        dispatcher.pool.close()

    asyncio.run(scenario())


class _MovingLeader(FakePhysical):
    def __init__(self):
        super().__init__()
        self.leaders = {"c1": 1, "c2": 2}

    def leader(self, cluster, topic, partition):
        return self.leaders[cluster]


def _answer(plan: Plan, code: ErrorCode) -> list:
    return [broker_answer([{"name": "phys", "partition_responses": [
        {"index": 0, "error_code": code, "base_offset": -1}]}]) for _ in plan.calls]


def _physical_id(plan: Plan) -> int:
    return rec.produce_batch(bytes(plan.calls[0].request.topic_data[0].partition_data[0].records)).producer_id


def test_a_leader_change_refreshes_and_the_resend_goes_to_the_new_leader_in_order():
    """The old leader answers NOT_LEADER_OR_FOLLOWER (or NOT_ENOUGH_REPLICAS: nothing appended): the proxy
    asks for a refresh and answers the client the retriable error. Batches behind it are refused until the
    client resends it, so the new leader gets them in order, each once, under the same physical id (the
    broker's sequence state moved with the log)."""
    for code in (ErrorCode.not_leader_or_follower, ErrorCode.not_enough_replicas):
        physical = _MovingLeader()
        c = ctx(physical=physical)
        _through(c, produce_req({0: batch(1000, 0, 0)}))  # the broker knows the physical id now
        plan = produce.handle(c, None, produce_req({0: batch(1000, 0, 1)}))
        first_pid = _physical_id(plan)
        got = by_partition(plan.finish(_answer(plan, code)))
        assert got[0][0] == code and code.retriable
        if code == ErrorCode.not_leader_or_follower:
            assert "c1" in physical.refreshed
        physical.leaders["c1"] = 3  # the refresh found the new leader
        got, sent = _through(c, produce_req({0: batch(1000, 0, 2)}))  # pipelined behind 1: not written
        assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []
        got, sent = _through(c, produce_req({0: batch(1000, 0, 1)}))  # the resend
        assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c1", 3), 0)]
        got, sent = _through(c, produce_req({0: batch(1000, 0, 2)}))
        assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c1", 3), 0)]
        assert _physical_id(produce.handle(c, None, produce_req({0: batch(1000, 0, 3)}))) == first_pid


def test_a_lost_connection_to_the_leader_is_ambiguous_and_the_resend_is_deduplicated_by_the_broker():
    physical = _MovingLeader()
    c = ctx(physical=physical)
    _through(c, produce_req({0: batch(1000, 0, 0)}))
    plan = produce.handle(c, None, produce_req({0: batch(1000, 0, 1)}))
    got = by_partition(plan.finish([UpstreamError("c1", "connection reset")]))
    assert got[0][0] == ErrorCode.request_timed_out and "c1" in physical.refreshed
    physical.leaders["c1"] = 3
    # maybe written, so no gap: the resend goes to the new leader, whose sequence check drops it if it landed
    got, sent = _through(c, produce_req({0: batch(1000, 0, 1)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c1", 3), 0)]
