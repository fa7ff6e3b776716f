"""KIP-848 heartbeats and describes as pure functions: topic names and ids rewritten logical <-> shadow."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from types import SimpleNamespace

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32Timedelta

from consume.support import CountingAuthorizer
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import consumer_groups
from fedkafka.proxy.plan import AnyBroker, Broker, Context, Plan
from fedkafka.view import model
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

LOGICAL_ID = uuid.UUID(int=0xAB)
SHADOW_ID = uuid.UUID(int=0x5AD)


class Physical:
    def __init__(self, known: bool = True):
        self.ids = {"__fedkafka-shadow-log": SHADOW_ID} if known else {}
        self.refreshed: list[str] = []

    def topic_id(self, cluster, topic):
        return self.ids.get(topic)

    def topic_name(self, cluster, topic_id):
        return next((n for n, i in self.ids.items() if i == topic_id), None)

    def request_refresh(self, cluster):
        self.refreshed.append(cluster)


def ctx(physical: Physical | None = None) -> Context:
    chain = PartitionChain(segments=(Segment("c1", "log", 0, 0, None, 0),))
    view = View(version=3, clusters={"c1": Cluster("c1", "h:1")}, coordination_cluster="c1",
                topics={"log": LogicalTopic("log", LOGICAL_ID.hex, (chain, chain))},
                proxies=(ProxyInfo(1, "p1", 9092, ProxyRole.BOTH),))
    return Context(view=view, me=view.proxies[0], advertised={}, physical=physical or Physical(), producer_ids=None)


class Header:
    client_id = "app"


def heartbeat(**kw):
    body = {"group_id": "g", "member_id": "m1", "member_epoch": 0, "instance_id": None, "rack_id": None,
            "rebalance_timeout": i32Timedelta.parse(datetime.timedelta(seconds=30)),
            "subscribed_topic_names": ["log"], "subscribed_topic_regex": None, "server_assignor": None,
            "topic_partitions": [], **kw}
    return build(request_type(68, 1), body)


def coordinator_found(plan: Plan):
    answer = build(response_type(10, 4), {"coordinators": [
        {"key": "g", "node_id": 5, "host": "b", "port": 1, "error_code": ErrorCode.none, "error_message": None}]})
    return plan.finish([answer])


def consumer_group_describe_answer(members: int):
    """A coordinator's ConsumerGroupDescribe answer (v1): group "g", Stable, of `members` members (m0, m1, ...),
    each subscribed to the shadow topic and assigned its partition 0."""
    shadow = [{"topic_id": SHADOW_ID, "topic_name": "__fedkafka-shadow-log", "partitions": [0]}]
    return build(response_type(69, 1), {"groups": [{
        "error_code": ErrorCode.none, "error_message": None, "group_id": "g", "group_state": "Stable",
        "group_epoch": 3, "assignment_epoch": 3, "assignor_name": "uniform", "authorized_operations": 0,
        "members": [{"member_id": f"m{i}", "instance_id": None, "rack_id": None, "member_epoch": 3,
                     "client_id": "app", "client_host": "/1", "subscribed_topic_names": ["__fedkafka-shadow-log"],
                     "subscribed_topic_regex": None, "assignment": {"topic_partitions": shadow},
                     "target_assignment": {"topic_partitions": shadow}, "member_type": 1} for i in range(members)]}]})

def test_heartbeat_goes_to_the_coordinator_with_shadow_names_and_ids_and_comes_back_logical():
    request = heartbeat(topic_partitions=[{"topic_id": LOGICAL_ID, "partitions": [0]}])
    lookup = consumer_groups.handle(ctx(), Header(), request)
    assert lookup.barrier and isinstance(lookup.calls[0].target, AnyBroker)
    forward = coordinator_found(lookup)
    (call,) = forward.calls
    assert call.target == Broker("c1", 5) and call.client_id == "app"
    assert call.request.subscribed_topic_names == ("__fedkafka-shadow-log",)
    assert [tp.topic_id for tp in call.request.topic_partitions] == [SHADOW_ID]
    answer = build(response_type(68, 1), {
        "error_code": ErrorCode.none, "error_message": None, "member_id": "m1", "member_epoch": 2,
        "heartbeat_interval": i32Timedelta.parse(datetime.timedelta(seconds=5)),
        "assignment": {"topic_partitions": [{"topic_id": SHADOW_ID, "partitions": [0, 1]}]}})
    resp = forward.finish([answer])
    assert resp.member_epoch == 2
    assert [(tp.topic_id, tp.partitions) for tp in resp.assignment.topic_partitions] == [(LOGICAL_ID, (0, 1))]


def test_a_heartbeat_that_keeps_its_subscription_sends_none():
    forward = coordinator_found(consumer_groups.handle(ctx(), Header(), heartbeat(subscribed_topic_names=None,
                                                                                  topic_partitions=None)))
    assert forward.calls[0].request.subscribed_topic_names is None
    assert forward.calls[0].request.topic_partitions is None


def test_unknown_shadow_ids_are_retried_not_guessed():
    physical = Physical(known=False)
    resp = consumer_groups.handle(ctx(physical), Header(), heartbeat())
    assert resp.error_code == ErrorCode.coordinator_load_in_progress and physical.refreshed == ["c1"]


def test_regex_subscriptions_are_refused_with_a_message():
    resp = consumer_groups.handle(ctx(), Header(), heartbeat(subscribed_topic_names=None,
                                                             subscribed_topic_regex="lo.*"))
    assert resp.error_code == ErrorCode.invalid_request and "regular-expression" in resp.error_message


def test_describe_shows_logical_names_and_ids():
    request = build(request_type(69, 1), {"group_ids": ["g"], "include_authorized_operations": False})
    forward = coordinator_found(consumer_groups.handle(ctx(), Header(), request))
    shadow = [{"topic_id": SHADOW_ID, "topic_name": "__fedkafka-shadow-log", "partitions": [1]}]
    answer = build(response_type(69, 1), {"groups": [{
        "error_code": ErrorCode.none, "error_message": None, "group_id": "g", "group_state": "Stable",
        "group_epoch": 3, "assignment_epoch": 3, "assignor_name": "uniform", "authorized_operations": 0,
        "members": [{"member_id": "m1", "instance_id": None, "rack_id": None, "member_epoch": 3, "client_id": "app",
                     "client_host": "/1", "subscribed_topic_names": ["__fedkafka-shadow-log"],
                     "subscribed_topic_regex": None, "assignment": {"topic_partitions": shadow},
                     "target_assignment": {"topic_partitions": shadow}, "member_type": 1}]}]})
    member = forward.finish([answer]).groups[0].members[0]
    assert member.subscribed_topic_names == ("log",)
    assert [(tp.topic_name, tp.topic_id) for tp in member.assignment.topic_partitions] == [("log", LOGICAL_ID)]


class CountedId(str):
    """A group id that counts the comparisons made with it."""

    compared = 0
    __hash__ = str.__hash__

    def __eq__(self, other):
        CountedId.compared += 1
        return str.__eq__(self, other)


def test_describe_of_many_group_ids_compares_no_id_with_the_others():
    """300 group ids: each is looked at once, never searched for in a list of the others (the handler's
    `g not in groups`, twice per id, was ~n^2 comparisons: 40,000 ids blocked the loop for 28 s)."""
    n = 300
    request = build(request_type(69, 1), {"group_ids": [CountedId(f"g{i}") for i in range(n)],
                                          "include_authorized_operations": False})
    CountedId.compared = 0
    lookup = consumer_groups.handle(ctx(), Header(), request)
    assert CountedId.compared <= n
    assert list(lookup.calls[0].request.coordinator_keys) == [f"g{i}" for i in range(n)]


def test_heartbeats_parse_the_topic_ids_once_per_view(monkeypatch):
    """100 heartbeats against a view of 50 logical topics parse each topic's id once, not once per heartbeat
    (10,000 topics: ~14 ms a heartbeat); a new view object is parsed again, so a topic it adds is known."""
    parsed = []

    def counting_uuid(*args, **kw):
        parsed.append(kw.get("hex"))
        return uuid.UUID(*args, **kw)

    for module in (model, consumer_groups):  # wherever the ids are parsed
        monkeypatch.setattr(module, "uuid", SimpleNamespace(UUID=counting_uuid), raising=False)
    base = ctx()
    chain = base.view.topics["log"].partitions[0]
    topics = {f"t{i}": LogicalTopic(f"t{i}", uuid.UUID(int=i + 1).hex, (chain,)) for i in range(49)}
    first = dataclasses.replace(base, view=dataclasses.replace(base.view, topics={**base.view.topics, **topics}))
    for _ in range(100):
        forward = coordinator_found(consumer_groups.handle(first, Header(), heartbeat(topic_partitions=[
            {"topic_id": LOGICAL_ID, "partitions": [0]}])))
        assert [tp.topic_id for tp in forward.calls[0].request.topic_partitions] == [SHADOW_ID]
    assert len(parsed) <= 50
    new_id = uuid.UUID(int=0xCAFE)
    added = {"new": LogicalTopic("new", new_id.hex, (chain,))}
    physical = Physical()
    physical.ids["__fedkafka-shadow-new"] = uuid.UUID(int=0xBEEF)
    second = dataclasses.replace(first, physical=physical,
                                 view=dataclasses.replace(first.view, topics={**first.view.topics, **added}))
    forward = coordinator_found(consumer_groups.handle(second, Header(), heartbeat(
        subscribed_topic_names=["new"], topic_partitions=[{"topic_id": new_id, "partitions": [0]}])))
    assert [tp.topic_id for tp in forward.calls[0].request.topic_partitions] == [uuid.UUID(int=0xBEEF)]


def test_a_subscribed_topic_named_many_times_is_authorized_once():
    authorizer = CountingAuthorizer()
    request = heartbeat(subscribed_topic_names=["log"] * 300, topic_partitions=None)
    forward = coordinator_found(consumer_groups.handle(dataclasses.replace(ctx(), authorizer=authorizer), Header(),
                                                       request))
    assert authorizer.asked == ["g", "log"]  # READ on the group, DESCRIBE on the topic
    assert forward.calls[0].request.subscribed_topic_names == ("__fedkafka-shadow-log",) * 300
