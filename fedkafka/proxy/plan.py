"""The contract between handlers (pure) and the core (I/O); see `fedkafka.proxy.handlers` for the rules.

A handler returns a `Reply`: a kio response entity (answered at once), `NO_RESPONSE` (acks=0), a
`CloseConnection` (acks=0 with an error: no answer, the connection is closed), or a `Plan`: upstream calls the
core sends, and a `finish` function that turns their results into the next `Reply`. Results are, per call and
in order, the decoded response entity or an `UpstreamError`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal, Protocol, TypeVar

from kio.schema.errors import ErrorCode

from fedkafka.protocol.codec import MAX_REQUEST_ELEMENTS
from fedkafka.security.acl import CLUSTER_NAME, SUPPORTED_OPERATIONS, Authorizer, Operation, ResourceType
from fedkafka.security.session import Session
from fedkafka.view.model import ClusterState, Endpoint, PartitionChain, ProxyInfo, ProxyRole, Segment, View


@dataclass(frozen=True, slots=True)
class AnyBroker:
    """Any reachable broker of a physical cluster."""

    cluster: str


@dataclass(frozen=True, slots=True)
class Broker:
    """One broker of a physical cluster, by its node id (e.g. a partition's leader)."""

    cluster: str
    node_id: int


@dataclass(frozen=True, slots=True)
class ControllerApi:
    """The controller's admin API: Kafka admin writes (CreateTopics, configs, ...) change the federation, which
    only the controller may do. The call's request is a `ControllerRequest`, its result a `ControllerAnswer`."""

    cluster: str = "controller"  # where an UpstreamError says the failure was


Target = AnyBroker | Broker | ControllerApi


@dataclass(frozen=True, slots=True)
class ControllerRequest:
    method: str
    path: str  # under the controller's URL, e.g. "/v1/admin/topics"
    body: Any = None


@dataclass(frozen=True, slots=True)
class ControllerAnswer:
    """The controller's answer: HTTP status and JSON body. A 4xx body carries `detail` (a message) and
    `kafka_error` (the Kafka error name, e.g. "TOPIC_ALREADY_EXISTS") when it maps to one. By the time a
    handler sees a 2xx answer carrying `view_version`, this proxy serves that view (or a newer one)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


# Not frozen: a frozen dataclass' __init__ sets each field through object.__setattr__ (66 bytecodes for these
# eight, 26 plain), and the core never keeps a Call past its request (no Call is hashed or shared).
@dataclass(slots=True)
class Call:
    target: Target
    request: Any  # a kio request entity
    expect_response: bool = True  # False for acks=0 produce
    # A broker serves one request per connection at a time: calls that may block (long-poll Fetch,
    # JoinGroup, SyncGroup) get a connection of their own so they never stall other clients' requests.
    dedicated: bool = False
    timeout_s: float | None = None  # None: the core's default; JoinGroup may legitimately wait a rebalance out
    # The timeout derives from a wait the client chose (Fetch max_wait, JoinGroup rebalance timeout): when it
    # runs out the call fails, but the cluster is not marked unreachable for everyone else.
    client_timeout: bool = False
    client_id: str | None = None  # None: the proxy's own; group calls carry the client's (shown by group tools)
    # Calls with the same key share one upstream connection whatever client connection they came from
    # (an idempotent producer that reconnects must not have its retries overtake its older batches).
    ordering_key: int | None = None


class UpstreamError(Exception):
    """A call that got no response: cluster unreachable, connection lost, timeout."""

    def __init__(self, cluster: str, reason: str):
        super().__init__(f"{cluster}: {reason}")
        self.cluster = cluster
        self.reason = reason


# A handler's chain of plans ends by the handler's own bounds (the core counts its rounds, dispatch._next_round);
# the longest, a produce, waits for a leader up to LEADER_WAITS (8) times, reads a sealed floor, asks InitProducerId
# up to PID_ATTEMPTS (12) times and sends a first batch alone: 22 rounds. A chain longer than this is a handler
# looping (a bug, or a request it did not foresee): the request is given up and the client's connection closed, as
# for any other handler failure, rather than calling clusters without end. The client reconnects and retries (an
# idempotent producer with the same sequences): a produce given up behind a barrier forwarded none of its batches.
MAX_PLAN_ROUNDS = 32


@dataclass(slots=True)
class Plan:
    calls: Sequence[Call]
    finish: Callable[[list[Any]], Reply]
    # The core sends a barrier plan's calls and waits for them before reading the client's next request,
    # so upstream order follows client order (idempotent producers depend on it).
    barrier: bool = False
    # Fan-out without added latency (docs/DESIGN.md §3.1): when set, the core finishes as soon as one result
    # satisfies it; calls still in flight are then given to `finish` as UNANSWERED.
    return_early: Callable[[Any], bool] | None = None
    delay_s: float = 0.0  # wait before sending (a handler's retry backoff; the core owns the clock)
    # Called (at least once) when the core gives up on the plan before `finish` ran on its results: cancelled (its
    # client closed the connection) or failed. The calls may still be at the broker: what `finish` would have settled,
    # the handler settles once they can no longer be written (produce: DESIGN §5.3 rule 3), and what `finish` would
    # have released it releases (fetch: the kept answers it took, DESIGN §3.1 "Kept answers").
    abandoned: Callable[[], None] | None = None
    # With return_early: the calls (by index) it never finishes without, however early another has data; and
    # called with (index, result) of each call it finished without, once that call's result comes (never for a call
    # not sent then): a handler's fairness between the clusters of a connection's fetches (DESIGN §3.1).
    awaited: tuple[int, ...] = ()
    answered_late: Callable[[int, Any], None] | None = None
    # With awaited: how long after the calls went out the core waits for them at most (None: until they end); past
    # it, once another result satisfied return_early, it finishes without them (dropped, heard late as the others).
    awaited_within_s: float | None = None


class _NoResponse:
    def __repr__(self) -> str:
        return "NO_RESPONSE"


NO_RESPONSE: Any = _NoResponse()


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """No answer, and the client's connection closed: nothing more is read, the answers of the requests read
    before the close was known (some after this one: they may have been forwarded) are written in order, then it
    closes (docs/DESIGN.md §5.4).

    What a Kafka broker does when an acks=0 produce had any partition error (KafkaApis.handleProduceRequest):
    the client gets no answer to read an error from, so the closed connection is its sign to refresh metadata
    at once (else it keeps writing to a proxy that drops its records until its periodic refresh). `reason` is
    the core's one log line; `answer`, the answer the client would have had, feeds the error metrics."""

    reason: str
    answer: Any = None


class _Unanswered:
    def __repr__(self) -> str:
        return "UNANSWERED"


UNANSWERED: Any = _Unanswered()

Reply = Any  # kio response entity | NO_RESPONSE | CloseConnection | Plan


def on_answer(reply: Reply, change: Callable[[Any], Reply]) -> Reply:
    """`reply` with `change` applied to the answer it ends in, however many plans come before it (a handler adding
    entries it answered itself, e.g. refused groups, to what the upstream answered)."""
    if not isinstance(reply, Plan):
        return change(reply)
    then = reply.finish

    def finish(results: list[Any]) -> Reply:
        return on_answer(then(results), change)

    return replace(reply, finish=finish)


def merged_by_group(answers: Sequence[Any], entries: str, asked: Iterable[str]) -> Any:
    """`answers[0]` with its `entries` list holding every answer's entries (each has a `group_id`) in the order
    `asked` names the groups: a group named k times gets its k-th entry there, its entries taken in the order the
    answers hold them; any entry of a group not asked comes last, as it came. How a group API answers the groups of
    several coordinators, or the coordinator's with the proxy's own (refused groups), in request order."""
    by_group: dict[str, deque[Any]] = {}
    for answer in answers:
        for item in getattr(answer, entries):
            by_group.setdefault(item.group_id, deque()).append(item)
    merged = [by_group[g].popleft() for g in asked if by_group.get(g)]
    merged.extend(item for left in by_group.values() for item in left)
    return replace(answers[0], **{entries: tuple(merged)})


# All the groups of one DescribeGroups or ConsumerGroupDescribe answer together: at most this many times
# --max-request-elements array elements (docs/DESIGN.md §4.8)
ANSWER_BUDGET_FACTOR = 10


@dataclass
class RepeatBudget:
    """What the repeats `per_naming` adds may cost: `left` array elements (None: any) that the answer's entries may
    still hold once each group is answered once, each repeat charged `cost(entry)` (0: free, an error entry); the
    namings past it are answered by `past(group ids)`'s entries (COORDINATOR_LOAD_IN_PROGRESS, which clients retry)."""

    left: int | None
    cost: Callable[[Any], int]
    past: Callable[[list[str]], Sequence[Any]]


def per_naming(answer: Any, entries: str, asked: Sequence[str], budget: RepeatBudget | None = None) -> Any:
    """`answer` (its `entries`, each group once, each with a `group_id`) with one entry per naming of its group in
    `asked`, the copies next to it: Kafka's DescribeGroups and ConsumerGroupDescribe answer every naming, a denied
    one too (KafkaApis adds a refused entry per naming; the coordinators keep a list, not a set). The repeats are
    the one entry again, built (and renamed) once, but each is encoded in full: they are charged to `budget`, in
    answer order, and the repeat that crosses it and every charged one after it are answered `budget.past` (a
    group of 4,000 elements named 100,000 times was a 400-million-element answer). Any entry of a group not asked
    stays once; an answer without `entries` (not of the request's API) is passed on as it is."""
    items = getattr(answer, entries, None)
    namings: dict[str, int] = {}
    for group in asked:
        namings[group] = namings.get(group, 0) + 1
    if items is None or len(namings) == len(asked):  # no group named twice: the answer as it is
        return answer
    left = None if budget is None else budget.left
    repeated: list[Any] = []
    past: dict[int, str] = {}  # index in `repeated` -> the group of a naming past the budget
    for item in items:
        repeated.append(item)
        cost = 0 if budget is None else budget.cost(item)
        for _ in range(namings.pop(item.group_id, 1) - 1):
            if cost and left is not None and (past or cost > left):
                past[len(repeated)] = item.group_id
            elif left is not None:
                left -= cost
            repeated.append(item)
    if past and budget is not None:
        for i, entry in zip(past, budget.past(list(past.values())), strict=True):
            repeated[i] = entry
    return replace(answer, **{entries: tuple(repeated)})


class PhysicalState(Protocol):
    """What handlers may read about the physical clusters (kept fresh by the core)."""

    def leader(self, cluster: str, topic: str, partition: int) -> int | None: ...
    def reachable(self, cluster: str) -> bool: ...
    def request_refresh(self, cluster: str) -> None: ...
    def topic_id(self, cluster: str, topic: str) -> Any: ...  # the physical topic's id there (a UUID) or None
    # whether `topic_id`'s None means "not there": the cluster's metadata was read since the proxy tracks it
    def topics_known(self, cluster: str) -> bool: ...
    def topic_name(self, cluster: str, topic_id: Any) -> str | None: ...
    # (replicas, in-sync replicas) of a physical partition as its cluster's Metadata last named them; None: not known
    def replication(self, cluster: str, topic: str, partition: int) -> tuple[int, int] | None: ...
    replication_version: int  # changes whenever a `replication` an answer read since the last change may have


SeqKey = tuple[int, int, str, int]  # (logical producer id, epoch, logical topic, logical partition)
PhysicalPartition = tuple[str, str, int, int]  # (cluster, physical topic, physical partition, physical id)
SegmentId = tuple[str, str, int, int]  # (cluster, physical topic, physical partition, phys_start)


class Unasked(Enum):
    UNASKED = "unasked"


UNASKED = Unasked.UNASKED  # ProducerIds.floor: nobody asked the sealed segment yet


@dataclass(frozen=True, slots=True)
class SegmentWrite:
    """Where this proxy last forwarded a logical producer's batch for one logical partition."""

    segment: SegmentId
    producer_id: int  # the physical id it wrote with
    end: int  # the newest end (last sequence + 1, modulo 2**31) of the batches it forwarded there


@dataclass(slots=True)
class ConnectionProducers:
    """One client connection's producer ids, as the refusal memory needs them (docs/DESIGN.md §5.4, "The batch's
    CRC"): a batch whose CRC-32C fails touches the table only under an id the connection vouches for; any other is
    held against the connection itself. Kept on the connection's session (`Session.producers`), made on first use."""

    # (logical id, epoch) pairs InitProducerId gave on this connection, or of its batches whose CRC held (oldest first)
    vouched: dict[tuple[int, int], None] = field(default_factory=dict)
    # (logical topic, partition), or None for all of them, -> when the connection's last corrupt batch there of an id
    # it did not vouch for was refused: its own batches there the broker does not check wait REFUSAL_MEMORY_S after it
    held: dict[tuple[str, int] | None, float] = field(default_factory=dict)


def connection_producers(session: Any) -> ConnectionProducers:
    """The session's connection's producer ids (`Session.producers`), made on first use."""
    producers: ConnectionProducers | None = session.producers
    if producers is None:
        producers = session.producers = ConnectionProducers()
    return producers


class ProducerIds(Protocol):
    """The proxy's producer-id table, as the produce and InitProducerId handlers use it (docs/DESIGN.md §5.3):
    logical ids, the (logical id, epoch, cluster) -> physical id map, and per logical producer and partition
    what this proxy refused, forwarded and confirmed. `fedkafka/proxy/core/producer_ids.py` says why."""

    # -- ids
    def next_logical(self) -> int | None:
        """A fresh logical producer id, or None while the next block is being fetched."""
    def physical(self, logical_id: int, epoch: int, cluster: str, topic: str, partition: int,
                 phys_start: int, sequences: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """The physical (id, epoch) to write this segment with, or None: obtain a fresh one first."""
    def store_physical(self, logical_id: int, epoch: int, cluster: str, producer_id: int, epoch_: int) -> None:
        """Remember the physical id a cluster gave (InitProducerId) for a logical id and epoch."""
    def logical_of(self, cluster: str, producer_id: int) -> tuple[int, int] | None:
        """The (logical id, epoch) this proxy wrote as physical `producer_id` on `cluster`, or None."""

    # -- sequences this proxy refused (a later batch past one of them is a gap)
    def note_refused(self, key: SeqKey, first_seq: int) -> None:
        """A batch starting at `first_seq` was answered with an error and nothing of it was written."""
    def note_refused_unread(self, key: SeqKey) -> None:
        """A batch of `key` whose header is not known to be the client's (a CRC-32C mismatch) was refused."""
    def vouch(self, connection: ConnectionProducers, producer_id: int, epoch: int) -> None:
        """The connection was given (InitProducerId) or sent a batch with an intact CRC-32C under this id and epoch."""
    def note_refused_corrupt(self, connection: ConnectionProducers, key: SeqKey) -> None:
        """A batch claiming `key` whose CRC-32C fails was refused on `connection`: `note_refused_unread` when the
        connection vouches for the id and epoch, else the connection's own batches on the partition are held."""
    def held(self, connection: ConnectionProducers, topic: str, partition: int) -> bool:
        """Whether the connection's batches on the partition the broker does not check are held back."""
    def unsequenced(self, key: SeqKey) -> bool:
        """Whether a refused batch of `key` is remembered at no known sequence (`broker_checked` batches only)."""
    def note_written(self, key: SeqKey, first_seq: int, end_seq: int) -> None:
        """Sequences first_seq..end_seq-1 were written (or were already)."""
    def refused_before(self, key: SeqKey, first_seq: int) -> int | None:
        """The first sequence of the oldest refused batch that `first_seq` would skip, or None."""
    def overflowing(self, key: SeqKey) -> bool:
        """Whether a refusal of `key` the full memory did not keep could matter (`broker_checked` batches only)."""
    def broker_checked(self, key: SeqKey, segment: SegmentId, first_seq: int) -> tuple[int, int] | None:
        """The physical (id, epoch) a batch goes to `segment` with when the broker checks its sequence, or None."""
    def note_ambiguous(self, key: SeqKey, first_seq: int) -> None:
        """A batch starting at `first_seq` on a confirmed pair got an answer that leaves open whether it was written."""
    def ambiguous_before(self, key: SeqKey, first_seq: int) -> int | None:
        """The first sequence of the oldest batch not known written that `first_seq` would skip, or None."""
    def note_sent(self, key: SeqKey) -> bool:
        """A batch of `key` goes upstream now; whether it was counted (then `note_settled` once its call ended,
        however; an uncounted one is never settled)."""
    def note_settled(self, key: SeqKey) -> None:
        """The call of a batch of `key` ended (answered, lost, not sent)."""
    def note_abandoned(self, key: SeqKey) -> None:
        """The core gave up on the call of a batch of `key` before its answer was noted: uncounted once it can no
        longer be written."""
    def in_flight(self, key: SeqKey) -> bool:
        """Whether a batch of `key` is in flight, its answer pending (asked only for a batch `broker_checked` None)."""

    # -- the broker's own sequence check holds only once it answered a batch of the physical id there
    def confirmed(self, where: PhysicalPartition) -> bool:
        """Whether the broker answered a batch of this physical id on this partition."""
    def confirm(self, where: PhysicalPartition) -> None:
        """The broker answered a batch of this physical id on this partition."""

    # -- across a seal: the segment last written to, and how far the producer got there
    def note_forwarded(self, key: SeqKey, segment: SegmentId, producer_id: int, end_seq: int) -> None:
        """A batch of `key` ending before `end_seq` went to `segment` as `producer_id`."""
    def earlier_write(self, key: SeqKey, segment: SegmentId) -> SegmentWrite | None:
        """This proxy's last write for `key` when it went to another segment than `segment`."""
    def floor(self, key: SeqKey, segment: SegmentId) -> int | Literal[Unasked.UNASKED] | None:
        """The sequence the producer's batches on `segment` start at (None: not known), or UNASKED."""
    def set_floor(self, key: SeqKey, segment: SegmentId, floor: int | None) -> None:
        """Record the floor read from the sealed segment's broker (None: it could not tell)."""
    def gap_at_floor(self, key: SeqKey, segment: SegmentId) -> bool:
        """Whether a batch past the floor may still be refused as a gap (not REFUSAL_MEMORY_S after the first)."""


class MemoryBudget(Protocol):
    """The process' memory budget (--max-buffered-bytes: the core's `limits.ByteBudget`, which charges broker answers
    while they arrive and client answers while they are held) as a handler charges what it keeps for a connection
    past a request (Fetch: a dropped answer's records, `handlers.fetch._KeptAnswers`): taken only from its spare
    share (`take_spare`: nobody waiting, at most 1/`share` of the budget in use once taken), and given back before
    anyone would wait for the budget (`give_back_on_wait`: the callback releases it; called once, then forgotten),
    so what handlers keep never holds a client's request back; each byte taken is released once (`release`)."""

    def take_spare(self, n: int, share: int = 2) -> bool: ...
    def release(self, n: int) -> None: ...
    def give_back_on_wait(self, give_back: Callable[[], None]) -> None: ...
    def forget_give_back(self, give_back: Callable[[], None]) -> None: ...


class LiveState(Protocol):
    """The proxy's state as it is now (`proxy.state.ProxyState`): what a read's upstream answer is checked against
    when it arrives, since the view may have changed while the call was out (`as_now`)."""

    @property
    def view(self) -> View: ...
    def lease_valid(self) -> bool: ...


class Refused:
    """A request's refusals of one reason (`Context.refused`), reported as one log line: how many, why (the
    handlers' distinct details: an ACL denial's operation and resource type, a refusal's message), the first few
    names. A hostile client's request of 100 000 refused entries is one line, not 100 000."""

    __slots__ = ("count", "details", "examples", "reason")
    SHOWN = 5  # names, and distinct details, in the line
    NAME_CHARS = 100  # of each name shown: a client's name can be as long as its frame

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.count = 0
        self.examples: list[str] = []
        self.details: list[str] = []

    def add(self, name: str, partition: int, detail: str | None) -> None:
        self.count += 1
        if len(self.examples) < self.SHOWN:
            shown = name if len(name) <= self.NAME_CHARS else name[:self.NAME_CHARS] + "..."
            self.examples.append(shown if partition < 0 else f"{shown}/{partition}")
        if detail is not None and len(self.details) < self.SHOWN and detail not in self.details:
            self.details.append(detail)


def collect_refusal(pending: dict[str, Refused], reason: str, name: str, partition: int, detail: str | None,
                    client_id: str | None = None) -> None:
    """Add one refused entry to a request's refusals by reason (`client_id`: the observer's `refused` takes it)."""
    refused = pending.get(reason)
    if refused is None:
        refused = pending[reason] = Refused(reason)
    refused.add(name, partition, detail)


@dataclass(slots=True)
class Context:
    """Everything a handler may read. Built by the core per request; handlers never mutate the view."""

    view: View
    me: ProxyInfo
    advertised: dict[int, tuple[int, int]]
    physical: PhysicalState
    producer_ids: ProducerIds
    lease_valid: bool = True
    client_id: str | None = None
    max_fetch_wait_ms: int = 30_000  # a Fetch's max_wait is clamped to this (the proxy's --max-fetch-wait-ms)
    # Array elements one request may hold (the proxy's --max-request-elements; None: any): the decode of bytes a
    # request carries opaquely (a JoinGroup's subscriptions) counts against it too
    max_request_elements: int | None = MAX_REQUEST_ELEMENTS
    # The client connection's security state (listener protocol, principal); the SASL handler advances it.
    session: Session = field(default_factory=Session)
    authorizer: Authorizer | None = None  # None: authorization off, everything allowed
    extra: dict[str, Any] = field(default_factory=dict)
    on_refusal: Callable[..., None] | None = None  # the core's refusal counter and log line, per entry
    # The core's counter and log line of a request's refusals of one reason, all in one (`report_refusals`); None:
    # each refusal goes to `on_refusal` as it comes (a context made by hand)
    on_refusals: Callable[[Refused, str | None, Session], None] | None = None
    refusals: dict[str, Refused] | None = None  # this request's not yet reported, by reason (None: none)
    # The request's first context, which holds the refusals of every context made from it (`as_now`); None: itself
    origin: Context | None = None
    # The proxy's state now, read when an upstream answer of a read arrives (`as_now`); None: `view` and
    # `lease_valid` stay what they were (a context made by hand)
    live: LiveState | None = None
    # The process' memory budget, charged with what a handler keeps for the connection past a request; None: it
    # keeps nothing (a context made by hand)
    budget: MemoryBudget | None = None

    def refused(self, reason: str, topic: str, partition: int, detail: str | None = None) -> None:
        """A part of the request refused by the proxy's own rules (reason: lease, frozen, gap, cluster,
        transactions, auth, ...), not by a broker: the core counts it by reason and logs one line per reason for
        the whole request (`report_refusals`), however many entries were refused."""
        if self.on_refusals is None:
            if self.on_refusal is not None:
                self.on_refusal(reason, topic, partition, detail, self.client_id)
            return
        holder = self if self.origin is None else self.origin
        if holder.refusals is None:
            holder.refusals = {}
        collect_refusal(holder.refusals, reason, topic, partition, detail)

    def report_refusals(self) -> None:
        """Count and log the request's refusals so far, one line per reason; the core calls it once the request is
        answered (or failed), before its answer goes out."""
        holder = self if self.origin is None else self.origin
        pending, holder.refusals = holder.refusals, None
        if pending is not None and self.on_refusals is not None:
            Context.report(self.on_refusals, pending, self.client_id, self.session)

    @staticmethod
    def report(on_refusals: Callable[[Refused, str | None, Session], None], refusals: dict[str, Refused],
               client_id: str | None, session: Session | None) -> None:
        """One `on_refusals` call per reason, with the client's id and session (none: a default session's principal
        and host, as `Dispatcher.context` gives a context asked without one); the Produce lane's reports too."""
        session = Session() if session is None else session
        for refused in refusals.values():
            on_refusals(refused, client_id, session)

    def forget_refusals(self) -> None:
        """Drop the refusals not yet reported: a routing pass that repeats every check of the one before it
        (Produce's, once a leader, a floor or a producer id is known) refuses what that one did, and its answer
        is the one the client gets."""
        holder = self if self.origin is None else self.origin
        holder.refusals = None

    @property
    def role(self) -> ProxyRole:
        return self.me.role


def admin_outcome(result: Any) -> tuple[Any, str | None]:
    """(Kafka ErrorCode, message) of a controller call's result, for a Kafka admin answer."""
    from kio.schema.errors import ErrorCode

    if isinstance(result, UpstreamError):  # the controller did not answer: retriable, nothing was changed
        return ErrorCode.request_timed_out, result.reason
    if result.ok:
        return ErrorCode.none, None
    body = result.body if isinstance(result.body, dict) else {}
    message = str(body.get("detail") or f"the controller answered HTTP {result.status}")
    name = str(body.get("kafka_error") or "").lower()
    if name in ErrorCode.__members__:
        return ErrorCode[name], message
    by_status = {404: ErrorCode.unknown_topic_or_partition, 409: ErrorCode.invalid_request,
                 422: ErrorCode.invalid_request, 503: ErrorCode.request_timed_out}
    return by_status.get(result.status, ErrorCode.unknown_server_error), message


class Handler(Protocol):
    """A handler module (`fedkafka/proxy/handlers/__init__.py` has the rules); mypy checks every module in
    `handlers.MODULES` against it. The optional `cache_key(ctx, request)` is not part of it (a protocol cannot
    say "optional"); dispatch looks it up with getattr."""

    API_KEYS: dict[int, tuple[int, int]]  # api_key -> (min, max) versions the module implements
    ROLE: str  # "produce" | "consume" | "any" | "produce_only" | "consume_only"

    def handle(self, ctx: Context, header: Any, request: Any) -> Reply: ...


def reachable_brokers(ctx: Context, proxies: Iterable[ProxyInfo]) -> list[tuple[ProxyInfo, Endpoint]]:
    """The proxies a client can reach on the security protocol it came in on, each with that listener's
    address (docs/DESIGN.md §11): a SASL_SSL client is never sent to a PLAINTEXT port, nor the reverse."""
    protocol = ctx.session.protocol
    return [(p, e) for p in proxies if (e := p.endpoint(protocol)) is not None]


def listed_brokers(ctx: Context) -> list[tuple[ProxyInfo, Endpoint]]:
    """The brokers Metadata and DescribeCluster tell a client of this proxy about, each with its listener for the
    client's protocol (`reachable_brokers`): this proxy (before the view lists it) and the other proxies of its
    pool. A draining proxy leaves itself out whenever another one is listed, so its clients move there
    (docs/DESIGN.md §4.11). Leaders and the controller are named among these only: a client has no address for
    any other node (the Java client's leader or controller is then null)."""
    me = ctx.me
    others = reachable_brokers(ctx, [p for p in ctx.view.proxies_in_pool(me.pool) if p.node_id != me.node_id])
    if others and me.node_id in ctx.view.draining:
        return others
    return reachable_brokers(ctx, (me,)) + others


def controller_id(ctx: Context, listed: Sequence[tuple[ProxyInfo, Endpoint]]) -> int:
    """The controller a Metadata or DescribeCluster answer names: one of the brokers it lists, as Kafka in KRaft
    mode names one of its alive brokers (KafkaApis: getRandomAliveBrokerId; AuthHelper.computeDescribeCluster
    Response answers -1 for an id not among its nodes). The Java AdminClient sends CreateTopics, DeleteTopics
    and the like there and has no node for an id it was not given. This proxy when listed (any proxy serves the
    admin API), else the first listed; -1 (Kafka's NO_CONTROLLER_ID) when none is."""
    if not listed:
        return -1
    me = ctx.me.node_id
    return me if any(p.node_id == me for p, _ in listed) else listed[0][0].node_id


_Asked = TypeVar("_Asked")


def by_leader(ctx: Context, asks: Iterable[_Asked], partition_of: Callable[[_Asked], tuple[str, str, int]],
              ) -> tuple[dict[tuple[str, int], list[_Asked]], list[_Asked]]:
    """`asks` grouped by the (cluster, leader node) of their physical partition ((cluster, topic, partition): its
    `partition_of`), in their order; and, apart, those whose partition has no known leader or whose cluster is not
    reachable, a metadata refresh of that cluster asked for each (the caller answers them NOT_LEADER_OR_FOLLOWER)."""
    groups: dict[tuple[str, int], list[_Asked]] = {}
    leaderless: list[_Asked] = []
    for ask in asks:
        cluster, topic, partition = partition_of(ask)
        leader = ctx.physical.leader(cluster, topic, partition)
        if leader is None or not ctx.physical.reachable(cluster):
            ctx.physical.request_refresh(cluster)
            leaderless.append(ask)
        else:
            groups.setdefault((cluster, leader), []).append(ask)
    return groups, leaderless


def authorized(ctx: Context, operation: Operation, resource_type: ResourceType, name: str = CLUSTER_NAME) -> bool:
    """Whether this connection's principal may do `operation` on the resource (docs/DESIGN.md §11). Handlers ask
    before building any upstream call, so a denied request never reaches a broker."""
    az = ctx.authorizer
    return az is None or az.allowed(ctx.session.principal, ctx.session.host, operation, resource_type, name)


def authorized_operations(ctx: Context, resource_type: ResourceType, name: str = CLUSTER_NAME) -> int:
    """The authorized_operations bit field a describe answers when asked to (Kafka's AuthHelper.authorizedOperations):
    bit `op` set for each operation the resource type supports (SUPPORTED_OPERATIONS) that this connection's
    principal may do on the resource, implied ones included (`authorized`); without an authorizer, all of them, as
    Kafka without one. Never the upstream cluster's answer, which is about the proxy's own principal there."""
    return sum(1 << op for op in SUPPORTED_OPERATIONS[resource_type] if authorized(ctx, op, resource_type, name))


def cluster_authorized_operations(ctx: Context) -> int:
    """The cluster_authorized_operations of a Metadata (v8-10) or DescribeCluster answer asked for it: the
    cluster's bit field (`authorized_operations`), 0 for a principal without DESCRIBE on the cluster, as Kafka
    (KafkaApis.handleTopicMetadataRequest, AuthHelper.computeDescribeClusterResponse)."""
    if not authorized(ctx, Operation.DESCRIBE, ResourceType.CLUSTER):
        return 0
    return authorized_operations(ctx, ResourceType.CLUSTER)


def as_now(ctx: Context) -> Context | None:
    """The context as the proxy stands when a read's upstream answer arrives (or a group offset request's coordinator
    lookup, `groups._via_coordinator`): its view and fence now, or None when
    neither changed since the read was routed. A Fetch may wait at the broker for up to --max-fetch-wait-ms, and a
    proxy acks a new view without waiting for its reads (it drains produce only): meanwhile the partition may have
    moved on, even back to the physical partition asked (A -> B -> A). Reads translate their answer with the
    routes the proxy makes now, never the stale ones (docs/DESIGN.md §4.9)."""
    live = ctx.live
    if live is None:
        return None
    view, valid = live.view, live.lease_valid()
    if view is ctx.view and valid == ctx.lease_valid:
        return None
    return replace(ctx, view=view, lease_valid=valid, origin=ctx if ctx.origin is None else ctx.origin)


def past_fence(ctx: Context, topic: str, partition: int) -> bool:
    """Whether this proxy's fence ran out (counted as a `lease` refusal for the partition). Past it the proxy
    serves no read from its view (Fetch, ListOffsets, OffsetForLeaderEpoch) and maps no offset with it
    (DeleteRecords, DescribeProducers), as it takes no produce: the controller no longer waits for its acks, so
    its view may be moves behind and map offsets to the wrong segment (docs/DESIGN.md §4.9). The client gets
    retriable NOT_LEADER_OR_FOLLOWER and refreshes metadata. (Committed offsets, whose cluster the view names, are
    refused past it too: `groups._past_fence`, answered `groups.refused_offsets_code`.)"""
    if ctx.lease_valid:
        return False
    ctx.refused("lease", topic, partition, "proxy fence ran out: reads refused until a controller renews it")
    return True


def readable_chain(ctx: Context, topic: str, partition: int,
                   current_leader_epoch: int = -1) -> PartitionChain | ErrorCode:
    """The chain a read of a logical partition maps its offsets with (Fetch, ListOffsets, OffsetForLeaderEpoch), or
    the error to answer instead: NOT_LEADER_OR_FOLLOWER past the fence (`past_fence`), UNKNOWN_TOPIC_OR_PARTITION,
    or, for a leader epoch the client holds that is not the chain's, FENCED_LEADER_EPOCH (older) or
    UNKNOWN_LEADER_EPOCH (newer), as a broker answers."""
    if past_fence(ctx, topic, partition):
        return ErrorCode.not_leader_or_follower
    chain = ctx.view.chain(topic, partition)
    if chain is None:
        return ErrorCode.unknown_topic_or_partition
    if 0 <= current_leader_epoch != chain.leader_epoch:
        return ErrorCode.fenced_leader_epoch if current_leader_epoch < chain.leader_epoch \
            else ErrorCode.unknown_leader_epoch
    return chain


def topic_missing(ctx: Context, seg: Segment) -> bool:
    """Whether the segment's cluster answers without its physical topic: reachable, and Metadata read there since the
    proxy tracks the cluster names no such topic. A cluster just tracked (the proxy started, its bootstrap changed)
    names none until its first refresh answers: nothing is missing there yet, its segments are waited for. Reading
    that as missing moved a reader of a sealed segment past its records as lost for good (docs/DESIGN.md §9.2)."""
    physical = ctx.physical
    return (physical.reachable(seg.cluster) and physical.topic_id(seg.cluster, seg.topic) is None
            and physical.topics_known(seg.cluster))


def lost_for_good(ctx: Context, chain: PartitionChain, seg: Segment) -> bool:
    """A sealed segment whose records are gone for good: its cluster answers without the physical topic (a lost
    disk, a cluster rebuilt empty; the controller never creates such a topic again, docs/DESIGN.md §9.3) and the
    operator took the cluster out of service for it: this chain failed over from it (an unclean gap follows one of
    its segments there) or the cluster is no longer active (read_only or draining, by a failover or a decommission:
    the given-up mark is not read here; it is about a cluster that does not answer, where a blip says nothing of its
    data, while an answer without the topic does, and nothing restores a topic for a cluster leaving the federation).
    A reader there is moved past it, earliest skips it and a timestamp question leaves it out; before that (an active
    cluster) it is waited for, as a dead cluster is: its data may yet be restored. `topic_missing` judges the topic
    missing only from metadata read since the proxy tracks the cluster: a cluster just tracked names no topic yet."""
    if seg.active or not topic_missing(ctx, seg):
        return False
    cluster = ctx.view.clusters.get(seg.cluster)
    if cluster is None or cluster.state != ClusterState.ACTIVE:
        return True
    return any(chain.gap_after(s) is not None for s in chain.segments if s.cluster == seg.cluster)
