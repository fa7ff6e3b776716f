"""Consumer groups (classic protocol) on the coordination cluster (docs/DESIGN.md §5.6).

FindCoordinator (`find_coordinator.py`) answers a consume proxy of the caller's pool, chosen by rendezvous on
the group id, so a group's requests gather on one proxy. Every group API here is forwarded to the coordination cluster's
own coordinator for the group (looked up with FindCoordinator first, in client order), with topic names
rewritten logical -> shadow on the way in and back on the way out. Committed offsets are logical offsets;
the shadow topic has P partitions, so the broker validates and fences commits natively. Group protocol
bytes (subscriptions, assignments) name shadow topics at the coordinator and logical ones at the client.
Past the proxy's fence committed offsets are neither read nor written (`_past_fence`: NOT_COORDINATOR, an
OffsetFetch COORDINATOR_LOAD_IN_PROGRESS, `refused_offsets_code`), the coordination cluster its view names may have
been moved from; membership goes on (docs/DESIGN.md §4.9 F2). An OffsetFetch is answered no code that sends the client
to look the coordinator up again, whoever gave it (`_retried_here`): librdkafka never retries it. Like
the other conditions of the proxy's own (`_unavailable`), it is answered once the request is authorized, as Kafka
asks its coordinator only then (docs/DESIGN.md §11).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
from kio.schema.metadata.v12.request import MetadataRequest
from kio.static.primitive import i8

from fedkafka.protocol import bounds
from fedkafka.protocol import consumer_protocol as cp
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import MAX_REQUEST_ELEMENTS, TooManyElements, response_schema
from fedkafka.proxy.described_groups import with_authorized_operations
from fedkafka.proxy.group_coordinators import consume_proxies, coordinator_of
from fedkafka.proxy.plan import (
    ANSWER_BUDGET_FACTOR,  # all the groups of one DescribeGroups answer together: this many times the limit
    MAX_PLAN_ROUNDS,
    AnyBroker,
    Broker,
    Call,
    CloseConnection,
    Context,
    Plan,
    RepeatBudget,
    UpstreamError,
    as_now,
    authorized,
    merged_by_group,
    on_answer,
    per_naming,
)
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import logical_from_shadow, shadow_topic

OFFSET_COMMIT, OFFSET_FETCH, JOIN, HEARTBEAT, LEAVE, SYNC = 8, 9, 11, 12, 13, 14
DESCRIBE, LIST, DELETE, OFFSET_DELETE = 15, 16, 42, 47

API_KEYS = {OFFSET_COMMIT: (2, 9), OFFSET_FETCH: (1, 9), JOIN: (0, 9), HEARTBEAT: (0, 4), LEAVE: (0, 5), SYNC: (0, 5),
            DESCRIBE: (0, 6), LIST: (0, 5), DELETE: (0, 2), OFFSET_DELETE: (0, 0)}
ROLE = "consume"
AUTHORIZES = True

GROUP_KEY = 0  # FindCoordinator's key type of the lookups sent to the coordination cluster
# A JoinGroup's subscriptions (a SyncGroup's assignments) together, and all members' subscriptions and assignments
# of one group in a coordinator answer (the leader's JoinGroup, each group of a DescribeGroups): at most this many
# times --max-request-elements
ENTRIES_BUDGET_FACTOR = 4
# What the offsets APIs need on each topic besides the group right (Kafka's KafkaApis)
TOPIC_OPERATION = {OFFSET_COMMIT: Operation.READ, OFFSET_FETCH: Operation.DESCRIBE, OFFSET_DELETE: Operation.READ}
# What each group API needs on the group (docs/DESIGN.md §11, as Kafka's authorizer asks)
GROUP_OPERATION = {OFFSET_COMMIT: Operation.READ, OFFSET_FETCH: Operation.DESCRIBE, JOIN: Operation.READ,
                   HEARTBEAT: Operation.READ, LEAVE: Operation.READ, SYNC: Operation.READ,
                   DESCRIBE: Operation.DESCRIBE, DELETE: Operation.DELETE, OFFSET_DELETE: Operation.DELETE}
# What changes a group's committed offsets on the coordinator, which a planned coordination move copies (docs/DESIGN.md
# §10.1): refused under a frozen view, and drained before a proxy acks a view (dispatch.DRAINED_API_KEYS)
FENCED_DURING_MOVE = (OFFSET_COMMIT, DELETE, OFFSET_DELETE)
# What reads or changes committed offsets where the view says they live (its coordination cluster): refused past the
# proxy's fence, when the controller no longer waits for its acks and a coordination move may have switched without
# it (docs/DESIGN.md §4.9 F2, §10.1)
OFFSETS_OF_THE_VIEW = (OFFSET_COMMIT, OFFSET_FETCH, DELETE, OFFSET_DELETE)
PAST_FENCE = ("proxy fence ran out: committed offsets neither read nor written until a controller renews it (the "
              "coordination cluster may have moved)")
# the log line of a committed offsets request refused, by `offsets_refusal`'s reason
OFFSETS_REFUSED = {"lease": PAST_FENCE, "coordination": "the view moved the groups to another coordination cluster "
                   "while the coordinator lookup was answered: committed offsets request not sent"}
BLOCKING = (JOIN, SYNC)  # held by the broker until the rebalance completes
JOIN_MARGIN_S = 15.0
# An OffsetFetch that finds this proxy past its fence waits for a renewal, up to this many rounds of this long, before
# it is refused (`_wait_for_renewal`, then `refused_offsets_code`): a renewal a moment late is no refusal at all. The
# rounds are the request's, before and after its lookups together.
FENCE_RENEWAL_ROUNDS = 12
FENCE_RENEWAL_STEP_S = 0.25
# What an OffsetFetch's start-over may take at most before it is answered: a wait for the renewal, a lookup and its
# call. A start-over (or a wait) that would take the request past MAX_PLAN_ROUNDS is refused instead
# (`_Passes.out_of_rounds`, `refused_offsets_code`): a fence lapsing between each lookup and its write took 3 rounds per
# wait, and the core gave the request up as looping, closing the client's connection.
START_OVER_ROUNDS = 3
T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class _Passes:
    """What an OffsetFetch's passes before this one took (`_authorized`'s start-overs): `waited`, its rounds of
    wait for the fence's renewal; `rounds`, its plans in all (waits, lookups, calls: the core's MAX_PLAN_ROUNDS);
    `topics_counted`, an earlier pass counted its denied topics (the same authorizer denies them again);
    `refusal_counted`, its one refusal was counted (by the core at a write): not counted again (docs/OPERATIONS.md,
    `fedkafka_proxy_refusals`)."""

    waited: int = 0
    rounds: int = 0
    topics_counted: bool = False
    refusal_counted: bool = False

    def after_wait(self) -> _Passes:
        return dataclasses.replace(self, waited=self.waited + 1, rounds=self.rounds + 1)

    def after_lookup(self, rounds: int, refused_at_write: bool) -> _Passes:
        """After a pass through `_via_coordinator` that took `rounds` (its lookup, its calls if sent)."""
        return dataclasses.replace(self, rounds=self.rounds + rounds, topics_counted=True,
                                   refusal_counted=self.refusal_counted or refused_at_write)

    @property
    def out_of_rounds(self) -> bool:
        return self.rounds + START_OVER_ROUNDS > MAX_PLAN_ROUNDS


def handle(ctx: Context, header, request):
    if request.__api_key__ == OFFSET_FETCH:
        return on_answer(_routed(ctx, request), _retried_here)
    return _routed(ctx, request)


def _routed(ctx: Context, request):
    key = request.__api_key__
    coordination = ctx.view.coordination_cluster
    if key == LIST:  # nothing to authorize first: the groups listed are filtered (`_group_lister`)
        if coordination is None:
            return failure(request, ErrorCode.coordinator_not_available)
        return list_groups(coordination, request, _group_lister(ctx))
    if _names_several_groups(request):
        return _per_group(ctx, coordination, request)
    if not authorized(ctx, GROUP_OPERATION[key], ResourceType.GROUP, request.group_id):
        # counted and logged as every denial (docs/DESIGN.md §11); nothing of it reaches the coordinator
        ctx.refused("auth", request.group_id, -1, f"no {GROUP_OPERATION[key].name} on the group")
        return failure(request, ErrorCode.group_authorization_failed)
    return _authorized(ctx, coordination, request)


def _authorized(ctx: Context, coordination: str | None, request, budget: _AnswerBudget | None = None,
                passes: _Passes = _Passes()):
    """A group request whose groups the principal may all use, on its way to the coordinator. `budget`: a
    DescribeGroups answer's (`_per_group`), shared with the repeats of its groups. The proxy's own coordinator
    conditions (`_unavailable`) are answered only now, authorized, as Kafka's coordinator is asked only once
    KafkaApis authorized the request; an OffsetCommit's after its topics are (`_offset_commit`). An OffsetFetch past
    the fence first waits for its renewal, then starts over with the view of then (`passes`: what it took before)."""
    key = request.__api_key__
    if key == OFFSET_COMMIT:
        return _offset_commit(ctx, coordination, request)  # its coordinator conditions after its topics' ACLs

    def start_over(now: Context, then: _Passes):
        return _authorized(now, now.view.coordination_cluster, request, budget, then)

    def after_lookup(asked: str, now: Context, rounds: int, refused_at_write: bool):
        then = passes.after_lookup(rounds, refused_at_write)
        if not then.out_of_rounds:
            return start_over(now, then)
        if not then.refusal_counted:  # refused after its lookup, by the handler: its one refusal
            _count_refusal(now, request, _refusal_now(now, asked) or "coordination")
        return failure(request, refused_offsets_code(key))
    if not ctx.lease_valid and (wait := _wait_for_renewal(ctx, request, passes, start_over)) is not None:
        return wait
    unavailable = _unavailable(ctx, coordination, request, passes.refusal_counted)
    if unavailable is not None or coordination is None:
        return failure(request, unavailable or ErrorCode.coordinator_not_available)
    if key in (OFFSET_FETCH, OFFSET_DELETE):
        again = functools.partial(after_lookup, coordination) if key == OFFSET_FETCH else None
        return _offsets_of_topics(ctx, coordination, request, again, count_denied=not passes.topics_counted)
    upstream, back = request, (lambda resp: resp)
    if key == DESCRIBE:  # each group asked once (`_described_from_shadow`)
        request = dataclasses.replace(request, groups=tuple(dict.fromkeys(request.groups)))
    if key in (JOIN, SYNC, DESCRIBE):
        limit, group = ctx.max_request_elements, None if key == DESCRIBE else request.group_id
        upstream = protocol_to_shadow(request, limit)
        back = functools.partial(protocol_from_shadow, max_elements=limit, group_id=group)
        if key == DESCRIBE:
            back = functools.partial(_described_from_shadow, max_elements=limit, budget=budget)
    if key == DESCRIBE:
        renamed = back

        def back(response):
            answer = renamed(response)
            return dataclasses.replace(answer, groups=with_authorized_operations(ctx, request, answer.groups))
    return _via_coordinator(coordination, request, upstream, back, ctx.client_id,
                            fence=ctx if key in OFFSETS_OF_THE_VIEW else None)


def _unavailable(ctx: Context, coordination: str | None, request, refusal_counted: bool = False) -> ErrorCode | None:
    """The error the proxy answers an authorized group request with itself, if any: no coordination cluster in the
    view; committed offsets past the proxy's fence (checked before the freeze: the view may be a move behind its
    freeze); or a change of committed offsets under a frozen view: a coordination move copies them now, so a commit
    landing on the old coordinator after the copy would be lost, a deletion undone (the switch puts the copied
    offsets back). Retriable: clients and AdminClient send it again, to the new coordinator (docs/DESIGN.md
    §10.1). `refusal_counted`: the request's refusal was counted already (an OffsetFetch's, at a write)."""
    key = request.__api_key__
    if coordination is None:
        return ErrorCode.coordinator_not_available
    if key in OFFSETS_OF_THE_VIEW and _past_fence(ctx, request, refusal_counted):
        return refused_offsets_code(key)
    if key in FENCED_DURING_MOVE and ctx.view.commits_frozen:
        return ErrorCode.coordinator_load_in_progress
    return None


def _wait_for_renewal(ctx: Context, request, passes: _Passes,
                      resume: Callable[[Context, _Passes], object]) -> Plan | None:
    """For an OffsetFetch that finds this proxy past its fence: a round of FENCE_RENEWAL_STEP_S, after which
    `resume` is called with the context as the proxy stands then (its fence maybe renewed, its view maybe newer) and
    the passes with this wait. None, to refuse it now: another API (a refused commit is sent again at the next
    commit, a deletion by the AdminClient), no proxy state that could be renewed, FENCE_RENEWAL_ROUNDS spent, or no
    rounds left for a lookup and its call after it. Nothing is sent upstream meanwhile, and the refusal, if it comes,
    is counted once."""
    if (request.__api_key__ != OFFSET_FETCH or ctx.live is None or passes.waited >= FENCE_RENEWAL_ROUNDS
            or passes.out_of_rounds):
        return None
    return Plan((), lambda _results: resume(as_now(ctx) or ctx, passes.after_wait()), barrier=True,
                delay_s=FENCE_RENEWAL_STEP_S)


def refused_offsets_code(key: int) -> ErrorCode:
    """What a committed offsets request of API `key` the proxy refuses on its own fence (or whose start-overs ran out
    of rounds) is answered, a code every client retries (docs/DESIGN.md §4.9 F2):

    - OffsetFetch: COORDINATOR_LOAD_IN_PROGRESS, as Kafka's coordinator answers while it loads the groups: the Java
      consumer (ConsumerCoordinator.OffsetFetchResponseHandler, a RetriableException) and librdkafka
      (rd_kafka_err_action: RETRY, the request sent again to the same broker, with no limit on its retries while
      the assignment is unchanged) ask this proxy again, and are answered once the fence is renewed. NOT_COORDINATOR
      is REFRESH alone for librdkafka: its assignment's OffsetFetch was never sent again, and those partitions were
      not consumed until the group's next rebalance, a Stable group's never, fence renewed or not. The price: when
      this proxy *alone* is past its fence (cut off from the controllers, the others renewed), NOT_COORDINATOR sent
      the Java consumer and the AdminClient to look the coordinator up, often through another proxy, and on; this
      code keeps them asking this proxy (heartbeats still pass) until it is renewed, restarted or stopped (the
      operator's call: docs/OPERATIONS.md, "One proxy past its fence alone"). Kept: past its own fence the proxy
      cannot tell that from a controller outage (every proxy past its fence, no better coordinator to find), and
      librdkafka stalled in both with NOT_COORDINATOR.
    - OffsetCommit, DeleteGroups, OffsetDelete: NOT_COORDINATOR, as before: a commit counts in its view's drain and a
      refused auto-commit is sent again at the next interval (librdkafka REFRESH; the Java consumer looks up and
      retries)."""
    return ErrorCode.coordinator_load_in_progress if key == OFFSET_FETCH else ErrorCode.not_coordinator


def _past_fence(ctx: Context, request, refusal_counted: bool = False) -> bool:
    """Whether this proxy's fence ran out (a `lease` refusal per group, unless `refusal_counted`). Committed offsets
    are logical, so no segment is mapped; but the view names the cluster holding them, and past the fence a
    coordination move may have copied them to another and switched without this proxy (its acks no longer waited
    for): a commit sent to the old one is lost, a deletion undone, a fetch answers the offsets the switch left behind.
    The client gets a code it retries (`refused_offsets_code`), as a partition's reader gets NOT_LEADER_OR_FOLLOWER
    past the fence (`plan.past_fence`)."""
    if ctx.lease_valid:
        return False
    if not refusal_counted:
        _count_refusal(ctx, request, "lease")
    return True


# The coordinator errors with which Kafka sends a client to look the coordinator up again
LOOKUP_AGAIN = frozenset({ErrorCode.not_coordinator, ErrorCode.coordinator_not_available})


def _retried_here(answer):
    """An OffsetFetch answer with every LOOKUP_AGAIN code, its groups', top level's or partitions', whoever gave it
    (the coordination cluster's coordinator, moved since the proxy looked it up; a lookup that failed or answered an
    error; a coordinator not reached; the view without a coordination cluster), answered
    COORDINATOR_LOAD_IN_PROGRESS: clients ask this proxy again, and it looks the coordinator up again itself, as for
    every request (docs/DESIGN.md §4.9 F2, §5.6). A lookup of the client's own finds nothing new, this proxy again
    (FindCoordinator answers the group's rendezvous proxy; unless this proxy alone is past its fence, the trade-off
    of `refused_offsets_code`), and librdkafka's assignment OffsetFetch does not retry
    those codes at all (`refused_offsets_code`): its partitions were not fetched until the group's next rebalance."""
    if getattr(answer, "__api_key__", None) != OFFSET_FETCH:  # not an OffsetFetch answer (a closed connection)
        return answer
    groups = getattr(answer, "groups", None)
    if groups is None:  # v0-v7: the answer is the one group's entry
        return _entry_retried_here(answer)
    renewed = tuple(map(_entry_retried_here, groups))
    changed = any(new is not old for new, old in zip(renewed, groups, strict=True))
    return dataclasses.replace(answer, groups=renewed) if changed else answer


def _entry_retried_here(entry):
    """An OffsetFetch answer's group entry (v8+: each of its groups; below: the answer itself) with its LOOKUP_AGAIN
    codes renewed (`_without_lookup_again`). Its partitions are walked only where such a code can sit: below v2 every
    code is a partition's (the entry has none of its own); from v2 on Kafka answers a coordinator error at the
    entry's level alone, and the proxy's own answers (`failure`) put it there as well as on each partition. So an
    entry with a code of its own that is no LOOKUP_AGAIN one is left as it came, its partitions unvisited: an answer
    of 100,000 partitions took ~0.12 s of event loop to walk for nothing."""
    if hasattr(entry, "error_code") and entry.error_code not in LOOKUP_AGAIN:
        return entry
    return _without_lookup_again(entry)


def _without_lookup_again(entity):
    """`entity` (an OffsetFetch answer, group, topic or partition) with every LOOKUP_AGAIN code under it made
    COORDINATOR_LOAD_IN_PROGRESS, itself when it holds none (an answer of many partitions is not copied for
    nothing)."""
    changes: dict[str, object] = {}
    if getattr(entity, "error_code", None) in LOOKUP_AGAIN:
        changes["error_code"] = ErrorCode.coordinator_load_in_progress
    for field in ("groups", "topics", "partitions"):
        items = getattr(entity, field, None)
        if items:
            renewed = tuple(map(_without_lookup_again, items))
            if any(new is not old for new, old in zip(renewed, items, strict=True)):
                changes[field] = renewed
    return dataclasses.replace(entity, **changes) if changes else entity


def _count_refusal(ctx: Context, request, reason: str) -> None:
    """A committed offsets request refused for `reason` (`offsets_refusal`), counted and logged once per group."""
    for group in dict.fromkeys(group_ids(request)):
        ctx.refused(reason, group, -1, OFFSETS_REFUSED[reason])


# -- authorization of requests naming several groups -----------------------------------------------------

def _names_several_groups(request) -> bool:
    key = request.__api_key__
    return key in (DESCRIBE, DELETE) or (key == OFFSET_FETCH and type(request).__version__ >= 8)


def _per_group(ctx: Context, coordination: str | None, request):
    """DescribeGroups, DeleteGroups and OffsetFetch v8+ authorized group by group, as Kafka 4.x's KafkaApis does
    (handleDescribeGroupsRequest, handleDeleteGroupsRequest, handleOffsetFetchRequestFromCoordinator): a denied
    group is answered GROUP_AUTHORIZATION_FAILED in its own entries (each entry naming it; DeleteGroups answers a
    group once) and is not sent to the coordinator, which is asked about the others only, and not at all when every
    group is denied."""
    key = request.__api_key__
    if key == DESCRIBE:
        # each group asked and built once (docs/DESIGN.md §4.8), answered once per naming as Kafka, denied or not,
        # the repeats charged to the answer's budget
        asked, budget = group_ids(request), _AnswerBudget.of(ctx.max_request_elements)
        return on_answer(_per_distinct_group(ctx, coordination, request, budget),
                         lambda answer: per_naming(answer, "groups", asked, budget.for_repeats(request)))
    return _per_distinct_group(ctx, coordination, request)


def _per_distinct_group(ctx: Context, coordination: str | None, request, budget: _AnswerBudget | None = None):
    """`_per_group`'s authorization and routing of each distinct group: DescribeGroups and DeleteGroups ask about and
    answer each once (DeleteGroups as Kafka: handleDeleteGroupsRequest takes `groupsNames.distinct`)."""
    key = request.__api_key__
    operation = GROUP_OPERATION[key]
    if key in (DESCRIBE, DELETE):
        field = _REQUEST_LISTS[key]
        request = dataclasses.replace(request, **{field: tuple(dict.fromkeys(getattr(request, field)))})
    allowed = {g: authorized(ctx, operation, ResourceType.GROUP, g) for g in dict.fromkeys(group_ids(request))}
    denied = [g for g, ok in allowed.items() if not ok]
    if not denied:
        return _authorized(ctx, coordination, request, budget)
    for g in denied:
        ctx.refused("auth", g, -1, f"no {operation.name} on the group")
    refused = _refused_groups(_subset(request, denied))
    if len(denied) == len(allowed):
        return refused
    kept = _subset(request, [g for g, ok in allowed.items() if ok])
    return on_answer(_authorized(ctx, coordination, kept, budget),
                     functools.partial(_with_refused, request, refused))


def _refused_groups(request):
    """The answer of a request all of whose groups are denied. An OffsetFetch v8+ group entry carries the error
    alone, no topics (Kafka's OffsetFetchResponse.groupError from v2)."""
    if request.__api_key__ == OFFSET_FETCH:
        return build(response_schema(OFFSET_FETCH, type(request).__version__), {"groups": [
            {"group_id": g.group_id, "topics": [], "error_code": ErrorCode.group_authorization_failed}
            for g in request.groups]})
    return failure(request, ErrorCode.group_authorization_failed)


def _with_refused(request, refused, answer):
    """The coordinator's `answer` (or the proxy's own for the authorized groups) with the `refused` groups' entries,
    where Kafka 4.x's KafkaApis puts them: OffsetFetch v8+ in request order (one answer per group entry, joined in
    order); DescribeGroups the refused first (added to the response before the coordinator's results); DeleteGroups
    the refused last (the coordinator's results set, then the unauthorized groups added)."""
    key = request.__api_key__
    field = _GROUP_LISTS[key]
    if getattr(answer, field, None) is None:  # not an answer of the request's API (a closed connection)
        return answer
    if key == OFFSET_FETCH:  # a denied group never reaches the coordinator: its entries are the refused ones only
        return merged_by_group([answer, refused], field, group_ids(request))
    mine, theirs = tuple(getattr(refused, field)), tuple(getattr(answer, field))
    return dataclasses.replace(answer, **{field: mine + theirs if key == DESCRIBE else theirs + mine})


# -- forwarding to the coordination cluster --------------------------------------------------------------

def group_ids(request) -> list[str]:
    key = request.__api_key__
    if key == DESCRIBE:
        return list(request.groups)
    if key == DELETE:
        return list(request.groups_names)
    if key == OFFSET_FETCH and type(request).__version__ >= 8:
        return [g.group_id for g in request.groups]
    return [request.group_id]


def _via_coordinator(coordination: str, request, upstream, back, client_id: str | None = None,
                     fence: Context | None = None, start_over: Callable[[Context, int, bool], object] | None = None):
    """Look the groups' coordinators up (in client order: a barrier), then send each its share. `fence`: a request
    of committed offsets' context, whose fence and view are read again, as they are now, once the lookup answers (it
    may take up to the upstream timeout: sent past the fence, a commit could reach the old cluster after a move's
    copy; a fetch sent to `coordination` once the view moved the groups from it reads the offsets the move left
    there). Either way the lookup's answer is not used: `start_over` (an OffsetFetch's, `_authorized`; given the
    context of now, the rounds this pass took and whether the core refused, and counted, its call at the write)
    goes again with the view of now, after a wait for the fence's renewal; the others are refused NOT_COORDINATOR, as a
    drained request takes no later lookup round (dispatch.DrainedLaterRound)."""
    groups = list(dict.fromkeys(group_ids(request)))
    if not groups:  # e.g. DescribeGroups of nothing: nothing to ask
        return failure(request, ErrorCode.none)
    lookup = FindCoordinatorRequest(key_type=i8(GROUP_KEY), coordinator_keys=tuple(groups))

    def route(results: list):
        now = None if fence is None else as_now(fence) or fence
        if now is not None and (reason := _refusal_now(now, coordination)) is not None:
            if start_over is not None:
                return start_over(now, 1, False)
            _count_refusal(now, request, reason)
            return failure(request, ErrorCode.not_coordinator)
        found = results[0]
        if isinstance(found, UpstreamError):
            return failure(request, ErrorCode.coordinator_not_available)
        nodes: dict[int, list[str]] = {}
        for c in found.coordinators:
            if c.error_code != ErrorCode.none:
                return failure(request, c.error_code)
            nodes.setdefault(c.node_id, []).append(c.key)
        if not nodes:
            return failure(request, ErrorCode.coordinator_not_available)
        parts = [(node, _subset(upstream, ids) if len(nodes) > 1 else upstream) for node, ids in nodes.items()]
        key = request.__api_key__
        timeout = _join_timeout(request) if key == JOIN else None
        calls = [Call(Broker(coordination, node), part, dedicated=key in BLOCKING, timeout_s=timeout,
                      client_timeout=timeout is not None, client_id=client_id) for node, part in parts]

        def finish(results: list):
            if any(isinstance(r, UpstreamError) for r in results):
                # past the fence, or once the view moved the groups, the core refused the call (its connection may
                # have taken seconds; refusal counted by the core, per cluster): an OffsetFetch starts over as after
                # its lookup (a wait for the renewal first), the others are answered as the handler refuses them,
                # NOT_COORDINATOR
                now = None if fence is None else as_now(fence) or fence
                if now is None or _refusal_now(now, coordination) is None:
                    return failure(request, ErrorCode.coordinator_not_available)
                return failure(request, ErrorCode.not_coordinator) if start_over is None else start_over(now, 2, True)
            if len(results) == 1:  # one coordinator's answer passed on as it came: Kafka's own order
                return back(results[0])
            # several coordinators' answers in request order, as Kafka answers OffsetFetch v8+ (one answer per group
            # entry, joined in order); Kafka's DescribeGroups order (by __consumer_offsets partition) has no
            # equivalent across coordinators
            return back(merged_by_group(results, _GROUP_LISTS[key], group_ids(request)))

        return Plan(calls, finish)

    return Plan([Call(AnyBroker(coordination), lookup)], route, barrier=True)


def offsets_refusal(lease_valid: bool, coordination_now: str | None, cluster: str) -> str | None:
    """Why committed offsets may no longer go to `cluster`, if they may not: `lease`, this proxy's fence ran out; or
    `coordination`, its view names another coordination cluster for the groups now. Read by the handler once the
    coordinator lookup answers (`_refusal_now`) and by the core right before each call is written
    (`Dispatcher._check_offsets_sendable`)."""
    if not lease_valid:
        return "lease"
    return "coordination" if coordination_now != cluster else None


def _refusal_now(now: Context, coordination: str) -> str | None:
    return offsets_refusal(now.lease_valid, now.view.coordination_cluster, coordination)


def _join_timeout(request) -> float:
    wait = getattr(request, "rebalance_timeout", None) or request.session_timeout
    return wait.total_seconds() + JOIN_MARGIN_S


_GROUP_LISTS = {DESCRIBE: "groups", DELETE: "results", OFFSET_FETCH: "groups"}
_REQUEST_LISTS = {DESCRIBE: "groups", DELETE: "groups_names", OFFSET_FETCH: "groups"}


def _subset(request, ids: list[str]):
    field = _REQUEST_LISTS[request.__api_key__]
    keep = set(ids)
    items = [g for g in getattr(request, field) if (g if isinstance(g, str) else g.group_id) in keep]
    return dataclasses.replace(request, **{field: tuple(items)})


def _group_lister(ctx: Context) -> Callable[[str], bool]:
    """Which listed groups this proxy answers: those it coordinates (`_coordinated_here`) that the principal sees, as
    KafkaApis.handleListGroupsRequest decides: every group with DESCRIBE on the cluster (kept by Kafka for backward
    compatibility: monitoring principals are commonly granted just that), otherwise those it may DESCRIBE one by
    one."""
    mine = _coordinated_here(ctx)
    if authorized(ctx, Operation.DESCRIBE, ResourceType.CLUSTER):
        return mine
    return lambda group: mine(group) and authorized(ctx, Operation.DESCRIBE, ResourceType.GROUP, group)


def _coordinated_here(ctx: Context) -> Callable[[str], bool]:
    """Whether this proxy is the group's coordinator, as FindCoordinator answers it. Kafka's brokers each list the
    groups they coordinate, and clients list groups by asking every broker and joining the answers (AdminClient
    listConsumerGroups, kafka-consumer-groups --list, librdkafka): each proxy listing every group of the
    coordination cluster named each group once per proxy of the pool to clients that do not deduplicate."""
    candidates = consume_proxies(ctx)
    me = ctx.me.node_id
    return lambda group: coordinator_of(ctx, group, candidates).node_id == me


def list_groups(coordination: str, request, visible: Callable[[str], bool] = lambda _group: True):
    """Every broker of the coordination cluster lists only the groups it coordinates: ask them all."""
    brokers = MetadataRequest(topics=(), allow_auto_topic_creation=False, include_topic_authorized_operations=False)

    def ask_each(results: list):
        if isinstance(results[0], UpstreamError):
            return failure(request, ErrorCode.coordinator_not_available)
        nodes = sorted(b.node_id for b in results[0].brokers)

        def merge(answers: list):
            if any(isinstance(a, UpstreamError) for a in answers):
                return failure(request, ErrorCode.coordinator_not_available)
            failed = next((a.error_code for a in answers if a.error_code != ErrorCode.none), ErrorCode.none)
            return dataclasses.replace(answers[0], error_code=failed,
                                       groups=tuple(g for a in answers for g in a.groups if visible(g.group_id)))

        return Plan([Call(Broker(coordination, n), request) for n in nodes], merge) if nodes else \
            failure(request, ErrorCode.coordinator_not_available)

    return Plan([Call(AnyBroker(coordination), brokers)], ask_each)


# -- topic names: logical <-> shadow ----------------------------------------------------------------------

def _rename(entity, rename):
    """A copy of a request/response whose `topics` (directly or under `groups`) are renamed; a topic whose
    new name is None is left out (physical topics of the coordination cluster that are not shadows)."""
    groups = getattr(entity, "groups", None)
    if groups is not None:  # OffsetFetch v8+: per group
        return dataclasses.replace(entity, groups=tuple(_rename(g, rename) for g in groups))
    topics = getattr(entity, "topics", None)
    if topics is None:
        return entity
    renamed = tuple(dataclasses.replace(t, name=rename(t.name)) for t in topics if rename(t.name) is not None)
    return dataclasses.replace(entity, topics=renamed)


def to_shadow(request):
    return _rename(request, shadow_topic)


def from_shadow(response):
    return _rename(response, logical_from_shadow)


def _is_consumer(entity) -> bool:
    """Classic consumer groups (protocol type "consumer"); SyncGroup before v5 does not say: the strict
    decode in consumer_protocol leaves other protocols' bytes alone."""
    return getattr(entity, "protocol_type", "consumer") in ("consumer", None)


def protocol_to_shadow(request, max_elements: int | None = MAX_REQUEST_ELEMENTS):
    """Subscriptions (JoinGroup) and assignments (SyncGroup) name shadow topics for the coordinator, which
    keeps a Stable group's committed offsets of subscribed topics from expiring. Each protocol's subscription of a
    JoinGroup (each member's assignment of a SyncGroup) may hold `max_elements` array elements, as a request itself
    (--max-request-elements), and all of them together ENTRIES_BUDGET_FACTOR times it (`_renamed_request`): past
    it, TooManyElements, and the client's connection is closed as for any request over the limit. The
    coordinator's answers are held to the same budgets (`protocol_from_shadow`)."""
    if not _is_consumer(request) or request.__api_key__ not in (JOIN, SYNC):
        return request
    try:
        return _renamed_request(request, max_elements)
    except TooManyElements as e:
        what = "JoinGroup subscriptions" if request.__api_key__ == JOIN else "SyncGroup assignments"
        raise TooManyElements(f"{what} of group {request.group_id!r} (v{type(request).__version__}) over the "
                              f"element limit: {e}") from None


def _renamed_request(request, max_elements: int | None):
    """Each entry renamed within its own budget of `max_elements`: the Java consumer lists its subscription once
    per assignor (range and cooperative-sticky by default), and a leader's SyncGroup holds every member's
    assignment; one budget for all of them refused a consumer owning half the limit's partitions, whose Fetch of
    all of them is accepted. The entries together may hold ENTRIES_BUDGET_FACTOR times `max_elements`: a frame of
    many entries each at the limit held the loop for seconds (a group that large exceeds what Kafka stores of a
    group's metadata in one record anyway)."""
    total = _Entries(max_elements)
    if request.__api_key__ == JOIN:
        return dataclasses.replace(request, protocols=tuple(
            dataclasses.replace(p, metadata=total.renamed(cp.rename_subscription, p.metadata))
            for p in request.protocols))
    return dataclasses.replace(request, assignments=tuple(
        dataclasses.replace(a, assignment=total.renamed(cp.rename_assignment, a.assignment))
        for a in request.assignments))


class _Entries:
    """The element budgets of one request's (one answer's, one described group's) group-protocol entries: each at
    most `max_elements`, all together at most ENTRIES_BUDGET_FACTOR times it, or `total` if that is less (what is
    left of a DescribeGroups answer's budget: then `short`). `names`: how their topics are renamed."""

    def __init__(self, max_elements: int | None, names: Callable[[str], str | None] = shadow_topic,
                 total: int | None = None):
        self.max_elements, self.names = max_elements, names
        own = None if max_elements is None else ENTRIES_BUDGET_FACTOR * max_elements
        self.left = own if own is None or total is None else min(own, total)
        self.start = self.left
        self.short = self.left != own  # `total` (what is left of a whole answer's budget) is below its own

    def used(self) -> int:
        return 0 if self.start is None or self.left is None else self.start - self.left

    def renamed(self, rename, data):
        if self.max_elements is None or self.left is None:
            return _within(None, lambda: rename(data, self.names, counted=True))
        budget = min(self.max_elements, self.left)
        saved = bounds.set_budget(budget)
        try:
            return rename(data, self.names, counted=True)
        finally:
            self.left -= budget - bounds.budget_left()
            bounds.restore_budget(saved)


def _within(max_elements: int | None, rewrite: Callable[[], T]) -> T:
    """`rewrite()`, its counted decodes taking their elements from one budget of `max_elements` (None: any)."""
    saved = bounds.set_budget(max_elements)
    try:
        return rewrite()
    finally:
        bounds.restore_budget(saved)


def protocol_from_shadow(response, max_elements: int | None = MAX_REQUEST_ELEMENTS, group_id: str | None = None):
    """The coordinator's answer with logical names in its group-protocol bytes, each group held to the budgets of a
    request's entries (`_Entries`): each member's subscription and assignment came in one request, held to
    `max_elements`, and all of a group's members together to ENTRIES_BUDGET_FACTOR times it. Each member sent its
    own JoinGroup, so only the answer sees them together: 53 members x 100,000 topic names held the loop ~30 s in
    the leader's JoinGroup answer and in each DescribeGroups answer. Past a group's budget nothing more of it is
    decoded and it is answered GROUP_MAX_SIZE_REACHED (`_too_large`): the leader's JoinGroup (`group_id`, which its
    answer does not name) or that group of a DescribeGroups answer (`_described_from_shadow`, which also holds all
    the answer's groups to one larger budget). A SyncGroup answer holds one member's assignment: past the limit (a
    leader that synced around the proxy) the client's connection is closed."""
    total = _Entries(max_elements, logical_from_shadow)
    key = response.__api_key__
    if key == JOIN and _is_consumer(response):
        try:
            return dataclasses.replace(response, members=tuple(
                dataclasses.replace(m, metadata=total.renamed(cp.rename_subscription, m.metadata))
                for m in response.members))
        except TooManyElements:
            _too_large([group_id], "JoinGroup", max_elements)
            return build(response_schema(JOIN, type(response).__version__), {
                "error_code": ErrorCode.group_max_size_reached, "generation_id": -1, "member_id": response.member_id})
    if key == SYNC and _is_consumer(response):
        try:
            return dataclasses.replace(response, assignment=total.renamed(cp.rename_assignment, response.assignment))
        except TooManyElements as e:
            return CloseConnection(f"the coordinator's SyncGroup answer holds a member's assignment over the "
                                   f"element limit: {e}")
    if key == DESCRIBE:
        return _described_from_shadow(response, max_elements)
    return response


@dataclasses.dataclass
class _AnswerBudget:
    """What one DescribeGroups answer's groups may still hold (`left`: ANSWER_BUDGET_FACTOR x `max_elements`, the
    --max-request-elements; None: any), shared by the renaming of its groups (`_described_from_shadow`) and the
    repeats of a group named several times (`plan.per_naming`), and the elements of each group described in full:
    its entry, its members and their renamed elements, what each repeat of it costs."""

    max_elements: int | None
    left: int | None
    elements: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, max_elements: int | None) -> _AnswerBudget:
        return cls(max_elements, None).restarted()

    def restarted(self) -> _AnswerBudget:
        """The whole budget again, no group described yet: an answer renamed anew (a plan finished twice) is
        charged once."""
        self.left = None if self.max_elements is None else ANSWER_BUDGET_FACTOR * self.max_elements
        self.elements.clear()
        return self

    def for_repeats(self, request) -> RepeatBudget:
        """A repeat of a group described in full costs its elements; of an error entry (denied, refused) nothing: a
        name and a code, no more than the naming itself. Past the budget: COORDINATOR_LOAD_IN_PROGRESS, as a group
        past it in `_described_from_shadow`, which the client asks again for."""
        message = _later_message(self.max_elements)

        def past(group_ids: list[str]) -> list:
            log.info("DescribeGroups: %s; %d repeated namings answered COORDINATOR_LOAD_IN_PROGRESS (the client "
                     "asks again), first %r", message, len(group_ids), group_ids[0])
            entries: list = [None] * len(group_ids)
            _answer_errors(entries, dict(enumerate(group_ids)), type(request).__version__,
                           ErrorCode.coordinator_load_in_progress, message)
            return entries

        def cost(entry) -> int:
            return self.elements.get(entry.group_id, 0) if entry.error_code == ErrorCode.none else 0

        return RepeatBudget(self.left, cost, past)


def _described_from_shadow(response, max_elements: int | None, budget: _AnswerBudget | None = None):
    """A DescribeGroups answer, each group's members renamed on a budget of the group's own (`_Entries`), all the
    groups on one of ANSWER_BUDGET_FACTOR times `max_elements`. The Java AdminClient asks a coordinator about all
    its groups in one request (kafka-consumer-groups --describe --all-groups, lag exporters): one budget of a
    group's size for them all refused the 993rd of 1,100 one-member groups, a hard failure to AdminClient. A group
    past its own budget is answered GROUP_MAX_SIZE_REACHED. Once the answer's budget is spent, the group that
    crossed it and those after it are not decoded (further) and are answered COORDINATOR_LOAD_IN_PROGRESS, which
    AdminClient retries in a request of those groups alone: each answer serves at least its first group in full.
    The request names each group once (`handle`); `budget` keeps what is left, and each group's elements, for the
    repeats of a group named several times (`_AnswerBudget`)."""
    budget = _AnswerBudget.of(max_elements) if budget is None else budget.restarted()
    groups: list = []
    refused: dict[int, str] = {}  # index in the answer -> the group answered GROUP_MAX_SIZE_REACHED
    later: dict[int, str] = {}  # ... COORDINATOR_LOAD_IN_PROGRESS
    for i, group in enumerate(response.groups):
        groups.append(group)
        if later or budget.left == 0:
            later[i] = group.group_id
            continue
        entries = _Entries(max_elements, logical_from_shadow, total=budget.left)
        try:
            groups[i] = _describe_from_shadow(group, entries)
            budget.elements[group.group_id] = 1 + len(group.members) + entries.used()
        except TooManyElements:
            (later if entries.short else refused)[i] = group.group_id
        finally:
            budget.left = None if budget.left is None else budget.left - entries.used()
    version = type(response).__version__
    if refused:
        _too_large(list(refused.values()), "DescribeGroups", max_elements)
        _answer_errors(groups, refused, version, ErrorCode.group_max_size_reached,
                       _too_large_message("DescribeGroups", max_elements))
    if later:
        log.info("DescribeGroups: %s; %d groups answered COORDINATOR_LOAD_IN_PROGRESS (the client asks again), "
                 "first %r", _later_message(max_elements), len(later), next(iter(later.values())))
        _answer_errors(groups, later, version, ErrorCode.coordinator_load_in_progress, _later_message(max_elements))
    return dataclasses.replace(response, groups=tuple(groups))


def _answer_errors(groups: list, which: dict[int, str], version: int, code: ErrorCode, message: str) -> None:
    """The groups at `which`'s indexes answered `code`, with `message` from v6 (one build for all of them)."""
    entry = {"error_code": code, "members": [], **({"error_message": f"fedkafka proxy: {message}"}
                                                  if version >= 6 else {})}
    built = build(response_schema(DESCRIBE, version), {"groups": [
        {**entry, "group_id": group_id} for group_id in which.values()]}).groups
    for i, answer in zip(which, built, strict=True):
        groups[i] = answer


def _later_message(max_elements: int | None) -> str:
    total = None if max_elements is None else ANSWER_BUDGET_FACTOR * max_elements
    return (f"the groups before this one filled what the proxy renames in one DescribeGroups answer ({total} "
            f"array elements in all: {ANSWER_BUDGET_FACTOR} x --max-request-elements); ask again for this group")


def _describe_from_shadow(group, total: _Entries):
    if group.protocol_type != "consumer":
        return group
    return dataclasses.replace(group, members=tuple(dataclasses.replace(
        m, member_metadata=total.renamed(cp.rename_subscription, m.member_metadata),
        member_assignment=total.renamed(cp.rename_assignment, m.member_assignment)) for m in group.members))


def _too_large_message(api: str, max_elements: int | None) -> str:
    total = None if max_elements is None else ENTRIES_BUDGET_FACTOR * max_elements
    return (f"the group's members' subscriptions and assignments hold more than the proxy renames of one group in "
            f"one {api} answer ({max_elements} array elements a member, {total} in all: {ENTRIES_BUDGET_FACTOR} x "
            f"--max-request-elements)")


def _too_large(group_ids: list[str | None], api: str, max_elements: int | None) -> None:
    """One WARNING for the groups of one answer refused GROUP_MAX_SIZE_REACHED: as Kafka's group.max.size, fatal
    to the Java consumer's poll and kafka-python's (an application that stops there closes its consumer, which
    leaves the group; a leader that never syncs is dropped by the coordinator after its rebalance or session
    timeout: the group shrinks and rebalances), joined again on librdkafka's join interval, a failed group (not
    retried) to AdminClient.describeConsumerGroups. A closed connection instead made the leader's client
    reconnect and join again at once as the same member, to the same answer, for as long as it stayed."""
    more = f" and {len(group_ids) - 1} more" if len(group_ids) > 1 else ""
    log.warning("group %r%s: %s; answered GROUP_MAX_SIZE_REACHED", group_ids[0], more,
                _too_large_message(api, max_elements))


def _offset_commit(ctx: Context, coordination: str | None, request):
    """An OffsetCommit sorted as Kafka 4.x's KafkaApis.handleOffsetCommitRequest sorts it before it asks the
    coordinator (`_commit_split`): the topics the principal may not read TOPIC_AUTHORIZATION_FAILED, topics the view
    does not have and partitions beyond P UNKNOWN_TOPIC_OR_PARTITION; the rest go to the shadow topic, and the
    coordinator is not asked at all when none is left. So only those can get a coordinator condition, the proxy's own
    (`_unavailable`: no coordination cluster, past the fence, a frozen view) or one met on the way (the fence ran
    out during the lookup, the coordinator lost): Kafka's coordinator answers the partitions it was given. Clients
    retry a commit's UNKNOWN_TOPIC_OR_PARTITION as they retry the conditions (the Java consumer, librdkafka): what
    the order gains is Kafka's own code, and no `lease` refusal logged for a commit of partitions beyond P only."""
    denied, unknown, committable = _commit_split(ctx, request)
    with_refused = functools.partial(_with_commit_errors, request, {ErrorCode.topic_authorization_failed: denied,
                                                                    ErrorCode.unknown_topic_or_partition: unknown})
    if not committable:
        return with_refused(_commit_errors(request, [], ErrorCode.none))
    mine = dataclasses.replace(request, topics=tuple(committable))
    unavailable = _unavailable(ctx, coordination, mine)
    if unavailable is not None or coordination is None:
        return with_refused(failure(mine, unavailable or ErrorCode.coordinator_not_available))
    upstream = dataclasses.replace(mine, topics=tuple(dataclasses.replace(t, name=shadow_topic(t.name))
                                                      for t in committable))
    return on_answer(_via_coordinator(coordination, mine, upstream, from_shadow, ctx.client_id, fence=ctx),
                     with_refused)


def _commit_split(ctx: Context, request) -> tuple[dict[str, list[int]], dict[str, list[int]], list]:
    """An OffsetCommit's partitions of topics the principal may not read (each such topic counted and logged as an
    `auth` refusal), those of topics the view does not have or beyond P, and the topics of the rest (logical
    names). A topic named twice: both entries' partitions kept (the second does not replace the first)."""
    denied: dict[str, list[int]] = {}
    unknown: dict[str, list[int]] = {}
    committable = []
    for t in request.topics:
        if not authorized(ctx, TOPIC_OPERATION[OFFSET_COMMIT], ResourceType.TOPIC, t.name):
            ctx.refused("auth", t.name, -1, f"no {TOPIC_OPERATION[OFFSET_COMMIT].name} on the topic")
            denied.setdefault(t.name, []).extend(p.partition_index for p in t.partitions)
            continue
        topic = ctx.view.topics.get(t.name)
        count = 0 if topic is None else topic.partition_count
        ok, bad = [], []
        for p in t.partitions:  # one pass: a request may name tens of thousands of partitions
            if 0 <= p.partition_index < count:
                ok.append(p)
            else:
                bad.append(p.partition_index)
        if bad:
            unknown.setdefault(t.name, []).extend(bad)
        if ok:
            committable.append(dataclasses.replace(t, partitions=tuple(ok)))
    return denied, unknown, committable


def _with_commit_errors(request, refused: dict[ErrorCode, dict[str, list[int]]], answered):
    """An OffsetCommit answer with the partitions the proxy refused itself (error -> topic -> partitions) added."""
    if getattr(answered, "topics", None) is None:  # not an OffsetCommit answer (a closed connection)
        return answered
    for code, partitions in refused.items():
        if partitions:
            answered = dataclasses.replace(answered, topics=answered.topics + _commit_errors(
                request, partitions.items(), code).topics)
    return answered


def _offsets_of_topics(ctx: Context, coordination: str, request,
                       start_over: Callable[[Context, int, bool], object] | None,
                       count_denied: bool = True):
    """OffsetFetch and OffsetDelete ask the coordinator only about topics the principal may describe (fetch) or
    read (delete); each refused partition is answered TOPIC_AUTHORIZATION_FAILED, and an all-topics fetch
    (topics null) leaves the topics it may not describe out of the answer, as Kafka's KafkaApis does. A group
    the coordinator answers with an error gets that answer alone (Kafka adds the refused topics only to a
    group answered without one). `start_over`: `_via_coordinator`'s; `count_denied`: False on a started-over
    pass, whose denials the first pass counted (once per request in the refusals metric and audit line)."""
    key, version = request.__api_key__, type(request).__version__
    operation = TOPIC_OPERATION[key]

    def allowed(name: str) -> bool:
        return authorized(ctx, operation, ResourceType.TOPIC, name)

    # (group id, its occurrence in the request) -> refused topic -> its partitions: an OffsetFetch v8+ may name a
    # group in several entries, each fetched on its own by Kafka and answered only the topics it asked. The
    # coordinator answers a group's entries in request order (per coordinator: `merged_by_group` keeps it), so the
    # k-th answer of a group id is its k-th entry's
    refused: dict[tuple[str, int], dict[str, list[int]]] = {}

    def split(entry, occurrence: int):
        if entry.topics is None:  # OffsetFetch of all the group's topics: filtered on the way back
            return entry
        mine = refused.setdefault((entry.group_id, occurrence), {})
        kept = []
        for t in entry.topics:
            if allowed(t.name):
                kept.append(t)
            else:
                mine.setdefault(t.name, []).extend(_partition_ids(t))
                if count_denied:
                    ctx.refused("auth", t.name, -1, f"no {operation.name} on the topic")
        return dataclasses.replace(entry, topics=tuple(kept))

    nested = key == OFFSET_FETCH and version >= 8
    if nested:
        entries = request.groups
        kept = dataclasses.replace(request, groups=tuple(map(split, entries, _occurrences(entries))))
    else:
        kept = split(request, 0)

    def answer(entry, occurrence: int):  # a response group (OffsetFetch v8+) or the whole response
        if getattr(entry, "error_code", ErrorCode.none) != ErrorCode.none:
            return entry
        extra = _refused_topics(request, refused.get((entry.group_id if nested else request.group_id, occurrence), {}))
        return dataclasses.replace(entry, topics=tuple(t for t in entry.topics if allowed(t.name)) + extra)

    def back(response):
        answered = from_shadow(response)
        if nested:
            entries = answered.groups
            return dataclasses.replace(answered, groups=tuple(map(answer, entries, _occurrences(entries))))
        return answer(answered, 0)

    return _via_coordinator(coordination, request, to_shadow(kept), back, ctx.client_id, fence=ctx,
                            start_over=start_over)


def _occurrences(entries) -> list[int]:
    """For each OffsetFetch v8+ group entry in turn, how many entries of its group id came before: entries of
    groups [g, h, g] -> [0, 0, 1]."""
    seen: dict[str, int] = {}
    counts = []
    for entry in entries:
        counts.append(seen.get(entry.group_id, 0))
        seen[entry.group_id] = counts[-1] + 1
    return counts


def _partition_ids(topic) -> list[int]:
    """A request topic's partitions: OffsetFetch lists indexes, OffsetDelete entities."""
    indexes = getattr(topic, "partition_indexes", None)
    return list(indexes) if indexes is not None else [p.partition_index for p in topic.partitions]


def _refused_topics(request, partitions: dict[str, list[int]]) -> tuple:
    """Response topics of the request's API and version, each partition TOPIC_AUTHORIZATION_FAILED."""
    if not partitions:
        return ()
    key, version = request.__api_key__, type(request).__version__
    code = ErrorCode.topic_authorization_failed
    if key == OFFSET_DELETE:
        return build(response_schema(key, version), {"error_code": ErrorCode.none, "topics": [
            {"name": name, "partitions": [{"partition_index": p, "error_code": code} for p in ps]}
            for name, ps in partitions.items()]}).topics
    topics = _fetch_topics(partitions.items(), code)
    if version >= 8:
        return build(response_schema(key, version), {"groups": [{"group_id": "", "topics": topics}]}).groups[0].topics
    return build(response_schema(key, version), {"topics": topics}).topics


# -- error answers shaped like each API's response ------------------------------------------------------

def _commit_errors(request, partitions: Iterable[tuple[str, list[int]]], code: ErrorCode):
    """OffsetCommit response topics of (name, partition indexes) pairs, one topic per pair (never keyed by name: a
    topic named in two request entries is answered in both), every partition answered `code`."""
    return build(response_schema(OFFSET_COMMIT, type(request).__version__), {"topics": [
        {"name": name, "partitions": [{"partition_index": p, "error_code": code} for p in ps]}
        for name, ps in partitions]})


def _fetch_topics(partitions, code: ErrorCode) -> list[dict]:
    """OffsetFetch response topics of (name, partition indexes) pairs, every partition answered `code`."""
    return [{"name": name, "partitions": [
        {"partition_index": p, "committed_offset": -1, "committed_leader_epoch": -1, "metadata": None,
         "error_code": code} for p in ps]} for name, ps in partitions]


def failure(request, code: ErrorCode):
    """The request's own response type with `code` where the client looks for it."""
    key, version = request.__api_key__, type(request).__version__
    resp_t = response_schema(key, version)
    if key == OFFSET_COMMIT:
        # every partition of every entry, a topic named twice in both (Kafka's OffsetCommitRequest.getErrorResponse)
        return _commit_errors(request, [(t.name, [p.partition_index for p in t.partitions]) for t in request.topics],
                              code)
    if key == OFFSET_FETCH:
        def topics(ts):
            return _fetch_topics([(t.name, t.partition_indexes) for t in ts or ()], code)
        if version >= 8:
            return build(resp_t, {"groups": [{"group_id": g.group_id, "topics": topics(g.topics), "error_code": code}
                                             for g in request.groups]})
        return build(resp_t, {"topics": topics(request.topics), "error_code": code})
    if key == DESCRIBE:
        return build(resp_t, {"groups": [{"group_id": g, "error_code": code, "members": []} for g in request.groups]})
    if key == DELETE:
        return build(resp_t, {"results": [{"group_id": g, "error_code": code} for g in request.groups_names]})
    if key == JOIN:
        return build(resp_t, {"error_code": code, "generation_id": -1, "member_id": request.member_id})
    return build(resp_t, {"error_code": code})
