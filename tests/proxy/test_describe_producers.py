"""DescribeProducers as a pure function: logical partitions -> the active segment's broker -> the client's terms.

Covers: the question goes to the active segment's leader under its physical name; the answer comes back
under the logical name, with this proxy's physical producer ids mapped to the logical ids the client knows
(others left as they are) and a transaction start offset made logical; bad input (unknown topic or
partition) and a principal without READ answered without asking anyone; a dead cluster or a lost
connection answered NOT_LEADER_OR_FOLLOWER (retriable); the broker's own errors passed through."""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import describe_producers
from fedkafka.proxy.plan import Broker, Plan, UpstreamError
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session
from proxy.test_admin_handlers import chain_view
from proxy.test_handlers import FakePhysical, ctx


def request(parts: dict[str, list[int]]):
    return build(request_type(61, 0), {"topics": [{"name": t, "partition_indexes": ps} for t, ps in parts.items()]})


def broker_answer(call, producers: dict | None = None, errors: dict | None = None):
    """The physical broker's answer: `producers[(topic, partition)]` = [(id, epoch, last_seq, txn_start)]."""
    producers, errors = producers or {}, errors or {}
    return build(response_type(61, 0), {"topics": [{"name": t.name, "partitions": [
        {"partition_index": p, "error_code": errors.get((t.name, p), ErrorCode.none),
         "active_producers": [{"producer_id": pid, "producer_epoch": epoch, "last_sequence": seq,
                               "last_timestamp": 1234, "coordinator_epoch": -1, "current_txn_start_offset": start}
                              for pid, epoch, seq, start in producers.get((t.name, p), [])]}
        for p in t.partition_indexes]} for t in call.request.topics]})


def asked(plan: Plan) -> set:
    return {(c.target.cluster, c.target.node_id, t.name, p) for c in plan.calls for t in c.request.topics
            for p in t.partition_indexes}


def answers(resp) -> dict:
    return {(t.name, p.partition_index): p for t in resp.topics for p in t.partitions}


def test_asks_the_active_segments_leader_and_answers_in_logical_terms():
    c = ctx(chain_view())
    c.producer_ids.store_physical(1001, 3, "c2", 55, 0)  # this proxy wrote logical 1001 (epoch 3) as 55 on c2
    plan = describe_producers.handle(c, None, request({"t": [0, 1]}))
    assert isinstance(plan, Plan) and all(isinstance(x.target, Broker) for x in plan.calls)
    # p0's active segment is c2/phys[0] from physical 10 at logical 50; p1 is c1/phys[1] from 0
    assert asked(plan) == {("c2", 2, "phys", 0), ("c1", 1, "phys", 1)}
    resp = plan.finish([broker_answer(x, producers={("phys", 0): [(55, 0, 41, 30), (77, 2, 5, -1)],
                                                    ("phys", 1): [(55, 0, 9, -1)]}) for x in plan.calls])
    got = answers(resp)
    assert [t.name for t in resp.topics] == ["t"]
    p0 = [(s.producer_id, s.producer_epoch, s.last_sequence, s.current_txn_start_offset)
          for s in got[("t", 0)].active_producers]
    assert p0 == [(1001, 3, 41, 70), (77, 2, 5, -1)]  # 77: not this proxy's id, left physical
    # the same physical id on another cluster is someone else's
    assert [s.producer_id for s in got[("t", 1)].active_producers] == [55]
    assert got[("t", 0)].active_producers[0].last_timestamp == 1234


def test_an_id_still_maps_after_the_proxy_moved_it_to_a_newer_segment():
    c = ctx(chain_view())
    c.producer_ids.store_physical(1001, 0, "c2", 55, 0)
    assert c.producer_ids.physical(1001, 0, "c2", "phys", 0, 10) == (55, 0)
    assert c.producer_ids.physical(1001, 0, "c2", "phys", 0, 99) is None  # a new segment: the forward map drops it
    plan = describe_producers.handle(c, None, request({"t": [0]}))
    resp = plan.finish([broker_answer(x, producers={("phys", 0): [(55, 0, 3, -1)]}) for x in plan.calls])
    assert answers(resp)[("t", 0)].active_producers[0].producer_id == 1001


def test_unknown_topic_or_partition_is_answered_without_asking():
    resp = describe_producers.handle(ctx(chain_view()), None, request({"nope": [0], "t": [7]}))
    assert not isinstance(resp, Plan)
    assert {k: p.error_code for k, p in answers(resp).items()} == {
        ("nope", 0): ErrorCode.unknown_topic_or_partition, ("t", 7): ErrorCode.unknown_topic_or_partition}


def test_a_mix_of_known_and_unknown_partitions_keeps_the_request_order():
    plan = describe_producers.handle(ctx(chain_view()), None, request({"t": [1, 9, 0]}))
    assert asked(plan) == {("c2", 2, "phys", 0), ("c1", 1, "phys", 1)}
    resp = plan.finish([broker_answer(x) for x in plan.calls])
    assert [(p.partition_index, p.error_code) for p in resp.topics[0].partitions] == [
        (1, ErrorCode.none), (9, ErrorCode.unknown_topic_or_partition), (0, ErrorCode.none)]


def test_a_dead_cluster_is_retriable_and_asks_for_a_refresh():
    physical = FakePhysical(down={"c2"})
    plan = describe_producers.handle(ctx(chain_view(), physical=physical), None, request({"t": [0, 1]}))
    assert asked(plan) == {("c1", 1, "phys", 1)}  # c2 is not asked at all
    resp = plan.finish([broker_answer(x) for x in plan.calls])
    got = answers(resp)
    assert got[("t", 0)].error_code == ErrorCode.not_leader_or_follower and "c2" in got[("t", 0)].error_message
    assert got[("t", 1)].error_code == ErrorCode.none and physical.refreshed == ["c2"]


def test_a_lost_connection_is_retriable_and_broker_errors_pass_through():
    physical = FakePhysical()
    plan = describe_producers.handle(ctx(chain_view(), physical=physical), None, request({"t": [0, 1]}))
    replies = [UpstreamError("c2", "connection lost") if x.target.cluster == "c2"
               else broker_answer(x, errors={("phys", 1): ErrorCode.not_leader_or_follower}) for x in plan.calls]
    got = answers(plan.finish(replies))
    assert got[("t", 0)].error_code == ErrorCode.not_leader_or_follower
    assert got[("t", 1)].error_code == ErrorCode.not_leader_or_follower and got[("t", 1)].active_producers == ()
    assert sorted(physical.refreshed) == ["c1", "c2"]


def test_without_read_on_the_topic_nothing_is_asked():
    def allow(op):
        return AclBinding(ResourceType.TOPIC, "t", PatternType.LITERAL, "User:bob", "*", op, Permission.ALLOW)
    denied = dataclasses.replace(ctx(chain_view()), authorizer=Authorizer((allow(Operation.DESCRIBE),)),
                                 session=Session(principal="User:bob"))
    resp = describe_producers.handle(denied, None, request({"t": [0]}))
    assert not isinstance(resp, Plan)
    assert resp.topics[0].partitions[0].error_code == ErrorCode.topic_authorization_failed
    reader = dataclasses.replace(denied, authorizer=Authorizer((allow(Operation.READ),)))
    assert isinstance(describe_producers.handle(reader, None, request({"t": [0]})), Plan)
