"""The consumer group protocol (KIP-848): ConsumerGroupHeartbeat and ConsumerGroupDescribe on the coordination
cluster, with topic names and topic ids rewritten between logical and shadow topics (docs/DESIGN.md §5.6).

The coordinator assigns partitions of the shadow topics it knows, by their ids on the coordination cluster;
clients know logical topics by the ids Metadata gives them (each logical topic's stable id from the config
database). So on the way in subscribed names become shadow names and owned partitions' logical ids become
shadow ids, and on the way back assignments' shadow ids become logical ids (ConsumerGroupDescribe: names too).
Shadow topic ids come from the proxy's physical metadata of the coordination cluster: a heartbeat naming a
topic of the view whose shadow id is not known yet (a topic just created), as a subscription or in its owned
partitions, is answered COORDINATOR_LOAD_IN_PROGRESS, which clients retry, and a refresh is asked for. Owned
partitions are never left out for that: the coordinator takes an owned partition it is not told of as revoked
and may give it to another member while this one still consumes it.

Owned partitions of a topic id the view does not have (a deleted topic) are left out of what the coordinator is
sent. The Java consumer resends its owned partitions after any error and keeps a deleted topic's until the
coordinator assigns anew, so answering them COORDINATOR_LOAD_IN_PROGRESS, as before, held the member there for
good: no refresh brings back a topic the view dropped. Kafka's coordinator (GroupMetadataManager, Kafka 4.x)
accepts them: CurrentAssignmentBuilder.ownsRevokedPartitions looks each owned topic id up in the member's
partitions pending revocation only, and the deleted shadow topic's partitions are there (computeNextAssignment
revokes what the target, built from the coordinator's metadata, no longer has), so left out they count as revoked
and the member moves on to its new assignment, which the client then takes, dropping the deleted topic's
partitions. Left out rather than passed with an id the coordinator does not know: a heartbeat of the previous
member epoch (its answer lost) is accepted only if its owned partitions are a subset of the member's assignment
(GroupMetadataManager.throwIfConsumerGroupMemberEpochIsInvalid, isSubset), which an unknown id never is, so it
would be fenced (FENCED_MEMBER_EPOCH: the member gives up all its partitions and joins again). No other member
can consume a deleted topic meanwhile: its shadow topic is deleted with it on the coordination cluster
(docs/DESIGN.md §10.3) and this proxy serves nothing of a topic its view does not have. The one id this cannot
tell from a deleted one is a topic newer than this proxy's view (the member was assigned it through a proxy
whose view was ahead, then its heartbeats moved here): its partitions, left out for that moment, may count as
revoked early.

Regular-expression subscriptions are refused: the coordinator would match them against shadow names.

Authorization is Kafka's (docs/DESIGN.md §11), before anything reaches the coordinator and before the proxy answers
a coordinator condition of its own (a view without a coordination cluster): a heartbeat needs READ on
the group (GROUP_AUTHORIZATION_FAILED) and DESCRIBE on every topic it subscribes to (TOPIC_AUTHORIZATION_FAILED);
ConsumerGroupDescribe needs DESCRIBE per group (the others are still described; the denied groups are answered
first, then the coordinator's answer as it came, which is Kafka's order, or, the groups having several coordinators,
their answers in request order; a group named twice once, as DescribeGroups), and a group whose assignments name a
topic the principal may not describe is answered TOPIC_AUTHORIZATION_FAILED without its members. Asked for
authorized operations, each group answered without an error carries the asking principal's operations on it
(`described_groups.with_authorized_operations`, shared with DescribeGroups), never the coordination cluster's for
the proxy.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid

from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
from kio.static.primitive import i8

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.described_groups import with_authorized_operations
from fedkafka.proxy.plan import (
    ANSWER_BUDGET_FACTOR,
    AnyBroker,
    Broker,
    Call,
    Context,
    Plan,
    RepeatBudget,
    UpstreamError,
    authorized,
    merged_by_group,
    on_answer,
    per_naming,
)
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import logical_from_shadow, shadow_topic

HEARTBEAT, DESCRIBE = 68, 69
API_KEYS = {HEARTBEAT: (0, 1), DESCRIBE: (0, 1)}
ROLE = "consume"
AUTHORIZES = True
GROUP_KEY = i8(0)
NO_REGEX = ("regular-expression subscriptions are not supported through fedkafka yet: subscribe to topic names "
            "(or use group.protocol=classic)")
HIDDEN_TOPICS = "The group has described topic(s) that the client is not authorized to describe."


NO_COORDINATION = "no coordination cluster in the view"


def handle(ctx: Context, header, request):
    # a view without a coordination cluster is answered after authorization (`heartbeat`, `_describe_each_group`), as
    # Kafka's coordinator is asked only once KafkaApis authorized the request
    coordination = ctx.view.coordination_cluster
    if request.__api_key__ == HEARTBEAT:
        return heartbeat(ctx, coordination, request, header.client_id)
    return describe(ctx, coordination, request, header.client_id)


# -- ConsumerGroupHeartbeat ------------------------------------------------------------------------------

def heartbeat(ctx: Context, coordination: str | None, request, client_id: str | None):
    if not authorized(ctx, Operation.READ, ResourceType.GROUP, request.group_id):
        ctx.refused("auth", request.group_id, -1, "no READ on the group")
        return _failure(request, ErrorCode.group_authorization_failed, None)
    hidden = next((n for n in dict.fromkeys(request.subscribed_topic_names or ())  # each name checked once
                   if not authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, n)), None)
    if hidden is not None:
        ctx.refused("auth", hidden, -1, "no DESCRIBE on a subscribed topic")
        return _failure(request, ErrorCode.topic_authorization_failed, None)
    if coordination is None:
        return _failure(request, ErrorCode.coordinator_not_available, NO_COORDINATION)
    if getattr(request, "subscribed_topic_regex", None):
        return _failure(request, ErrorCode.invalid_request, NO_REGEX)
    names = list(request.subscribed_topic_names or ())
    missing = [n for n in names if n in ctx.view.topics and _shadow_id(ctx, coordination, n) is None]
    owned = _owned_to_shadow(ctx, coordination, request.topic_partitions or (), missing)
    if missing:
        ctx.physical.request_refresh(coordination)
        return _failure(request, ErrorCode.coordinator_load_in_progress,
                        f"shadow topics of {sorted(missing)} not known yet; retry")
    upstream = dataclasses.replace(
        request, subscribed_topic_names=None if request.subscribed_topic_names is None else tuple(
            shadow_topic(n) for n in names),
        topic_partitions=None if request.topic_partitions is None else tuple(owned))

    def back(resp):
        if resp.assignment is None:
            return resp
        parts = []
        for tp in resp.assignment.topic_partitions:
            logical = _logical_id(ctx, coordination, tp.topic_id)
            if logical is None:  # not a shadow topic this proxy knows yet: let the client ask again
                ctx.physical.request_refresh(coordination)
                return _failure(request, ErrorCode.coordinator_load_in_progress, "assignment names an unknown topic")
            parts.append(dataclasses.replace(tp, topic_id=logical))
        return dataclasses.replace(resp, assignment=dataclasses.replace(resp.assignment, topic_partitions=tuple(parts)))

    return _via_coordinator(coordination, request, [request.group_id], upstream, back, client_id)


def _owned_to_shadow(ctx: Context, coordination: str, owned, missing: list[str]) -> list:
    """The owned partitions of a heartbeat with shadow ids, those of a topic the view no longer has left out (a
    deleted topic: see the module docstring); the name of a topic of the view whose shadow id is not known yet is
    added to `missing`."""
    by_id = ctx.view.topics_by_id()  # parsed once per view object
    out = []
    for tp in owned:
        logical = by_id.get(tp.topic_id)
        if logical is None:
            continue
        shadow_id = _shadow_id(ctx, coordination, logical)
        if shadow_id is None:
            missing.append(logical)
        else:
            out.append(dataclasses.replace(tp, topic_id=shadow_id))
    return out


# -- ConsumerGroupDescribe -------------------------------------------------------------------------------

def describe(ctx: Context, coordination: str | None, request, client_id: str | None):
    """Each distinct group described once (`_describe_each_group`), answered once per naming, as Kafka answers a
    group named twice (denied or not: KafkaApis adds a refused entry per naming)."""
    asked = list(request.group_ids)
    return on_answer(_describe_each_group(ctx, coordination, request, client_id),
                     lambda answer: per_naming(answer, "groups", asked, _repeat_budget(ctx, request, answer)))


def _repeat_budget(ctx: Context, request, answer) -> RepeatBudget:
    """The repeats' share of the answer's budget (ANSWER_BUDGET_FACTOR x --max-request-elements, DescribeGroups'):
    what the groups answered once leave of it, each repeat of a group described without error charged its elements
    (`_elements`). The repeats past it are answered COORDINATOR_LOAD_IN_PROGRESS, which clients ask again for: a
    group of 100 members named 100,000 times was answered with 10 million members."""
    limit = ctx.max_request_elements
    left = None if limit is None else ANSWER_BUDGET_FACTOR * limit - sum(
        _elements(g) for g in getattr(answer, "groups", ()))

    def cost(entry) -> int:
        return _elements(entry) if entry.error_code == ErrorCode.none else 0

    def past(group_ids: list[str]) -> tuple:
        message = (f"fedkafka proxy: the groups before this naming filled what the proxy answers in one "
                   f"ConsumerGroupDescribe ({ANSWER_BUDGET_FACTOR} x --max-request-elements array elements); ask "
                   f"again for this group")
        return _failure(dataclasses.replace(request, group_ids=tuple(group_ids)),
                        ErrorCode.coordinator_load_in_progress, message).groups

    return RepeatBudget(left, cost, past)


def _elements(group) -> int:
    """A ConsumerGroupDescribe group entry's array elements: itself, its members, each one's subscribed topic names,
    and its assignments' topics and partitions."""
    return 1 + sum(1 + len(m.subscribed_topic_names or ()) + sum(
        1 + len(tp.partitions) for a in (m.assignment, m.target_assignment) for tp in a.topic_partitions)
        for m in group.members)


def _describe_each_group(ctx: Context, coordination: str | None, request, client_id: str | None):
    ids = ctx.view.topic_ids()

    def topic_partitions(tps):
        out = []
        for tp in tps:
            logical = logical_from_shadow(tp.topic_name)
            if logical is None or logical not in ids:
                continue  # not a logical topic of this federation
            out.append(dataclasses.replace(tp, topic_name=logical, topic_id=ids[logical]))
        return tuple(out)

    def member(m):
        return dataclasses.replace(
            m, subscribed_topic_names=tuple(logical_from_shadow(n) or n for n in m.subscribed_topic_names),
            assignment=dataclasses.replace(m.assignment, topic_partitions=topic_partitions(
                m.assignment.topic_partitions)),
            target_assignment=dataclasses.replace(m.target_assignment, topic_partitions=topic_partitions(
                m.target_assignment.topic_partitions)))

    def visible(g):
        """Kafka's rule: a group whose assignments name a topic the principal may not describe shows no members."""
        names = {tp.topic_name for m in g.members for a in (m.assignment, m.target_assignment)
                 for tp in a.topic_partitions}
        if all(authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, n) for n in names):
            return g
        return dataclasses.replace(g, error_code=ErrorCode.topic_authorization_failed, error_message=HIDDEN_TOPICS,
                                   members=())

    def back(resp):
        return dataclasses.replace(resp, groups=with_authorized_operations(ctx, request, tuple(
            visible(dataclasses.replace(g, members=tuple(member(m) for m in g.members))) for g in resp.groups)))

    groups: list[str] = []
    denied: list = []
    # each id once, in client order (one pass: no list scans): asked and built once, as DescribeGroups (docs/DESIGN.md
    # §4.8: forwarded as it came, a request naming one large group 100,000 times had the coordinator build and the
    # proxy rename it each time); `describe` repeats its entry per naming
    for g in dict.fromkeys(request.group_ids):
        if authorized(ctx, Operation.DESCRIBE, ResourceType.GROUP, g):
            groups.append(g)
        else:
            denied.append(_denied_group(request, g))
            ctx.refused("auth", g, -1, "no DESCRIBE on the group")
    if not groups:
        return build(response_schema(DESCRIBE, type(request).__version__), {"groups": denied})
    upstream = request if list(request.group_ids) == groups else dataclasses.replace(request, group_ids=tuple(groups))
    if coordination is None:
        unavailable = _failure(upstream, ErrorCode.coordinator_not_available, NO_COORDINATION)
        return dataclasses.replace(unavailable, groups=tuple(denied) + unavailable.groups)
    forwarded = _via_coordinator(coordination, upstream, groups, upstream, back, client_id,
                                 merge=functools.partial(_merge_describe, groups))
    # the denied groups first, as KafkaApis adds them to the response before the coordinator's results; they keep
    # GROUP_AUTHORIZATION_FAILED whatever the coordinator answers for the others
    return on_answer(forwarded, lambda resp: dataclasses.replace(resp, groups=tuple(denied) + resp.groups))


def _denied_group(request, group: str):
    """One ConsumerGroupDescribe group entry answered GROUP_AUTHORIZATION_FAILED."""
    answer = build(response_schema(DESCRIBE, type(request).__version__), {"groups": [
        {"error_code": ErrorCode.group_authorization_failed, "error_message": None, "group_id": group,
         "members": []}]})
    return answer.groups[0]


# -- forwarding ------------------------------------------------------------------------------------------

def _via_coordinator(coordination: str, request, groups: list[str], upstream, back, client_id, merge=None):
    """Look the groups' coordinators up (a barrier: upstream order follows client order), then forward."""
    lookup = FindCoordinatorRequest(key_type=GROUP_KEY, coordinator_keys=tuple(groups))

    def route(results: list):
        found = results[0]
        if isinstance(found, UpstreamError):
            return _failure(request, ErrorCode.coordinator_not_available, found.reason)
        nodes: dict[int, list[str]] = {}
        for c in found.coordinators:
            if c.error_code != ErrorCode.none:
                return _failure(request, c.error_code, c.error_message)
            nodes.setdefault(c.node_id, []).append(c.key)
        if len(nodes) > 1 and merge is None:
            return _failure(request, ErrorCode.coordinator_not_available, "several coordinators")
        parts = [upstream if len(nodes) == 1 else dataclasses.replace(upstream, group_ids=tuple(ids))
                 for ids in nodes.values()]
        calls = [Call(Broker(coordination, node), part, client_id=client_id) for node, part in zip(nodes, parts,
                                                                                                  strict=True)]

        def finish(replies: list):
            failed = next((r for r in replies if isinstance(r, UpstreamError)), None)
            if failed is not None:
                return _failure(request, ErrorCode.coordinator_not_available, failed.reason)
            return back(replies[0] if len(replies) == 1 else merge(replies))

        return Plan(calls, finish)

    return Plan([Call(AnyBroker(coordination), lookup)], route, barrier=True)


def _merge_describe(asked: list[str], replies: list):
    """Several coordinators' answers as one, in the order `asked` (the request's, each group once) names the groups:
    Kafka's coordinator answers a request's groups grouped by __consumer_offsets partition, an order the proxy cannot
    rebuild across coordinators, so request order (joined as they came, [g, k, m] with g and m on one coordinator
    was answered [g, m, k]); any group not asked last. One coordinator's answer is passed on as it came."""
    return merged_by_group(replies, "groups", asked)


def _shadow_id(ctx: Context, coordination: str, logical: str) -> uuid.UUID | None:
    return ctx.physical.topic_id(coordination, shadow_topic(logical))


def _logical_id(ctx: Context, coordination: str, shadow_id: uuid.UUID) -> uuid.UUID | None:
    name = ctx.physical.topic_name(coordination, shadow_id)
    logical = None if name is None else logical_from_shadow(name)
    return None if logical is None else ctx.view.topic_ids().get(logical)


def _failure(request, code: ErrorCode, message: str | None):
    version = type(request).__version__
    if request.__api_key__ == HEARTBEAT:
        return build(response_schema(HEARTBEAT, version), {"error_code": code, "error_message": message,
                                                          "member_id": request.member_id, "member_epoch": -1,
                                                          "assignment": None})
    return build(response_schema(DESCRIBE, version), {"groups": [
        {"error_code": code, "error_message": message, "group_id": g, "members": []} for g in request.group_ids]})
