"""Produce: split by logical partition, route each part to its active segment, merge, translate offsets.

The request is never decoded into kio entities: records.py walks its frame (`read_request`), writes each
broker's request around the client's record sets (by reference), reads each broker's answer
(`UpstreamProduce.read_response`) and writes the client's (`ProduceAnswer`).
Records are never decoded: a part's one batch is checked (records.forwarded_batch: lengths, counts, and the CRC of
an idempotent batch, whose header the proxy acts on; a plain batch's CRC is its broker's to check, docs/DESIGN.md
§5.4; a bad one is answered for its partition alone) and forwarded by reference; only idempotent batches get their
producer id/epoch rewritten to the cluster's physical id (records.with_producer: a new 61-byte head, the CRC updated
for the change, the rest of the client's buffer by reference).
Errors drive client refresh: frozen partition, expired lease or unreachable cluster -> retriable
NOT_LEADER_OR_FOLLOWER before anything is sent; a lost upstream request -> REQUEST_TIMED_OUT (retriable,
idempotent producers retry with the same sequence). An acks=0 client reads no answer: any error closes its
connection instead (`plan.CloseConnection`, after the good parts were forwarded), as a broker does.
Nothing is ever sent to a cluster other than the active segment's.
"""

from __future__ import annotations

import datetime
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple

from kio.schema.describe_producers.v0.request import DescribeProducersRequest, TopicRequest
from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.types import ProducerId, TopicName
from kio.static.primitive import i16, i32, i32Timedelta

from fedkafka.fencing import MAX_PRODUCE_WAIT_S
from fedkafka.protocol import records as rec
from fedkafka.protocol import sequences as seqs
from fedkafka.protocol.codec import MAX_REQUEST_ELEMENTS, DecodeError
from fedkafka.proxy.plan import (
    NO_RESPONSE,
    UNASKED,
    AnyBroker,
    Broker,
    Call,
    CloseConnection,
    Context,
    PhysicalPartition,
    Plan,
    SegmentId,
    SegmentWrite,
    SeqKey,
    UpstreamError,
    authorized,
    connection_producers,
)
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import TOPIC_NAME, ClusterState, PartitionChain, Segment

log = logging.getLogger(__name__)

API_KEYS = {0: (3, 12)}
ROLE = "produce"
AUTHORIZES = True


@dataclass(slots=True)
class _Part:
    topic: str
    partition: int
    chain: PartitionChain
    seg: Segment
    records: rec.Buffer | rec.RecordParts  # as received (a view of the client's frame), or rewritten to a physical id
    seq_key: tuple[int, int, str, int] | None = None  # idempotent batches: (logical id, epoch, topic, partition)
    first_seq: int = -1
    end_seq: int = -1  # the sequence after the batch's last record
    # idempotent batches: where the physical id writes, and whether the broker has answered a batch of that
    # id there (it checks sequences only from then on)
    physical: PhysicalPartition | None = None
    confirmed: bool = True
    counted: bool = False  # counted in flight (`note_sent`), not yet settled or abandoned: each one of them, once


LEADER_WAITS = 8  # about 1.3 s of backoff: a segment published a moment ago whose leader is not known yet


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What earlier routing passes over this request learned; a retry routes again with a newer one."""

    pid_failures: frozenset[str] = frozenset()  # clusters that gave no physical producer id
    leader_waits: int = 0  # passes that found an active segment's leader unknown

    def failing(self, clusters: frozenset[str]) -> _Attempt:
        return _Attempt(clusters, self.leader_waits)


_FIRST_ATTEMPT = _Attempt()  # frozen: one for every request's first pass


class _Routing:
    """One pass: per partition an answer now (`errors`) or a part to forward, and what must happen first.
    (A plain class: a dataclass' __init__ with four default factories cost twice as much, once per request.)"""

    __slots__ = ("errors", "groups", "missing_floors", "missing_pids", "producer_key", "unconfirmed",
                 "unknown_leader")

    def __init__(self) -> None:
        self.errors: dict[tuple[str, int], tuple[ErrorCode, str | None]] = {}
        self.groups: dict[tuple[str, int], list[_Part]] = {}  # (cluster, leader) -> parts
        self.missing_pids: set[tuple[int, int, str]] = set()
        self.missing_floors: list[tuple[SeqKey, SegmentId]] = []
        self.unknown_leader = False
        self.unconfirmed = False  # some idempotent batch is the first of its physical id on its partition
        self.producer_key: int | None = None  # idempotent producers: one upstream connection per logical id


def read_request(frame: bytes | memoryview, max_elements: int | None = MAX_REQUEST_ELEMENTS) -> rec.ProduceRequestFrame:
    """The core reads Produce frames with this instead of kio: a header walk, the record sets left in the frame
    (the returned frame is also the request's header: it carries client_id and correlation_id). At most
    `max_elements` topics, partitions and tagged fields together, as codec.decode_request."""
    try:
        return rec.read_produce_request(frame, max_elements)
    except rec.MalformedFrame as e:
        raise DecodeError(f"malformed ProduceRequest: {e}") from None


def handle(ctx: Context, header, request: rec.ProduceRequestFrame):
    return _route(ctx, header, request, _FIRST_ATTEMPT)


def _route(ctx: Context, header, request, attempt: _Attempt):
    """Classify every partition, then do what must come first (a leader, a sealed floor, a physical id) behind
    a barrier and route again, or forward the parts and translate the answers. A pass after the first repeats
    every check: its refusals replace the earlier pass's (one count and line per refused partition)."""
    ctx.forget_refusals()  # a later pass's: the earlier pass's are not answered
    routing = _Routing()
    refused = _request_refusal(ctx, request)  # the same for every partition: asked once
    remember = refused[1] is None or refused[1][0] not in _UNREMEMBERED
    duplicated = _duplicated_partitions(request)
    for t in request.topic_data:
        topic = ctx.view.topics.get(t.name)
        may_write = authorized(ctx, Operation.WRITE, ResourceType.TOPIC, t.name)
        for pd in t.partition_data:
            if not may_write:  # before the batch is even read (docs/DESIGN.md §11); nothing remembered either
                routing.errors[(t.name, pd.index)] = (ErrorCode.topic_authorization_failed, None)
                ctx.refused("auth", t.name, pd.index, "no WRITE on the topic")
                continue
            if duplicated and (t.name, pd.index) in duplicated:
                routing.errors[(t.name, pd.index)] = _DUPLICATE
                ctx.refused("duplicate", t.name, pd.index, _DUPLICATE[1])
                if remember:
                    _note_unchecked(ctx, t.name, pd)
                continue
            _classify(ctx, topic, t.name, pd, refused, remember, attempt, routing)
    if routing.unknown_leader:  # wait for the refresh behind a barrier rather than fail the batch (a gap)
        waited = _Attempt(attempt.pid_failures, attempt.leader_waits + 1)
        return Plan([], lambda _: _route(ctx, header, request, waited), barrier=True,
                    delay_s=min(0.02 * 2 ** attempt.leader_waits, 0.25))
    if routing.missing_floors:
        return _read_sealed_floors(ctx, header, request, routing.missing_floors, attempt)
    if routing.missing_pids:
        return _obtain_physical_ids(ctx, header, request, sorted(routing.missing_pids), attempt)
    return _forward(ctx, request, routing)


# A partition named more than once in one request: every entry is refused, none forwarded. A broker keeps the
# last entry and drops the others unanswered (KafkaApis.handleProduceRequest collects them in a map by
# partition); no client sends that, and forwarding one batch of an idempotent producer while its others vanish
# would break the sequence bookkeeping: the proxy then asked for a new physical id over and over. INVALID_REQUEST
# is what a broker answers for a partition named twice in a ListOffsets request.
_DUPLICATE = (ErrorCode.invalid_request, "partition named more than once in the request")
_NOTHING_DUPLICATED: frozenset[tuple[str, int]] = frozenset()


def _duplicated_partitions(request: rec.ProduceRequestFrame) -> frozenset[tuple[str, int]] | set[tuple[str, int]]:
    """The (topic, partition) pairs the request names more than once (in one topic entry or in two)."""
    topic_data = request.topic_data
    if len(topic_data) == 1 and len(topic_data[0].partition_data) == 1:  # the usual: nothing to look for
        return _NOTHING_DUPLICATED
    seen: set[tuple[str, int]] = set()
    twice: set[tuple[str, int]] = set()
    for t in topic_data:
        for pd in t.partition_data:
            key = (t.name, pd.index)
            (twice if key in seen else seen).add(key)
    return twice


Refusal = tuple[str | None, tuple[ErrorCode, str | None] | None]  # (reason, (error, message)); see _refusal


# The client's own errors: the request refused as a whole (acks), or a transactional batch. Answered whatever the
# producer's state, retried by no client (the batch fails: nothing queued for a later success to ack implicitly),
# and anyone may send them claiming any producer's id: never remembered as refused (rule 2). They were: a client with
# WRITE sent acks=2 batches of another producer's id at sequences 0 and 2**30 every < 30 s, and every batch of that
# producer was refused as a gap for as long as it went on.
_UNREMEMBERED = frozenset({ErrorCode.invalid_required_acks, ErrorCode.transactional_id_authorization_failed})


def _classify(ctx: Context, topic, name: str, pd, refused: Refusal, remember: bool, attempt: _Attempt,
              routing: _Routing) -> None:
    """One partition's batch: refused, waiting for something, or a part to forward to its active segment.
    `refused`: the request's own refusal (_request_refusal), if any; `remember`: whether a refusal of an idempotent
    batch is remembered (rule 2: not for a request refused for the client's own error)."""
    checked = _checked_batch(topic, pd)  # the partition's one walk over its bytes, after the topic check
    if not isinstance(checked, rec.BatchHeader):
        routing.errors[(name, pd.index)] = checked
        if remember:
            _note_unchecked(ctx, name, pd)
        return
    chain = topic.partitions[pd.index]
    reason, failure = refused if refused[1] is not None else _refusal(ctx, chain)
    sequences = seq_key = None
    if checked.producer_id >= 0 and not checked.is_transactional:  # sequence bookkeeping: idempotent batches only
        # its CRC held: the connection vouches for its id (§5.4, "The batch's CRC")
        vouched(ctx.producer_ids, ctx.session, (checked.producer_id, checked.producer_epoch))
        sequences = _sequences(checked)
        seq_key = (checked.producer_id, checked.producer_epoch, name, pd.index) if sequences else None
    if failure is None and checked.producer_id >= 0:
        reason, failure = _producer_refusal(ctx, checked, seq_key, sequences, chain.active)
    seg = chain.active
    leader = None
    if failure is None:
        leader = ctx.physical.leader(seg.cluster, seg.topic, seg.partition)
        if leader is None or attempt.pid_failures:
            reason, failure = _leader_refusal(ctx, seg, leader, attempt)
            if failure is _WAIT:
                routing.unknown_leader = True
                return
    if failure is not None:
        routing.errors[(name, pd.index)] = failure
        if reason:
            ctx.refused(reason, name, pd.index, failure[1])
        if seq_key and sequences and remember and failure[0] not in _UNREMEMBERED:
            ctx.producer_ids.note_refused(seq_key, sequences[0])
        return
    assert leader is not None  # _leader_refusal refuses a partition whose leader is unknown
    part = _Part(name, pd.index, chain, seg, pd.records, seq_key, *(sequences or (-1, -1)))
    if checked.producer_id >= 0 and not _as_physical_producer(ctx, checked, part, routing):
        return
    routing.groups.setdefault((seg.cluster, leader), []).append(part)


def _note_unchecked(ctx: Context, name: str, pd) -> None:
    """A batch answered with an error before it was checked, or because its check failed (an unknown topic or
    partition, a corrupt or invalid batch, a partition named twice): nothing of it was written. An idempotent one
    (as its header claims) is remembered as refused (rule 2), as any other refusal: UNKNOWN_TOPIC_OR_PARTITION is
    retriable, and a proxy whose view lags a topic's creation or expansion answered batch 0 with it while batch 1,
    sent once the view arrived, went out on a fresh physical id and was written; librdkafka acked 0 implicitly.
    Remembered at the sequence its header claims only when the batch's CRC-32C vouches for it; otherwise its sequence,
    producer id and epoch may have been hit (or forged): the table remembers it where the client's order puts it only
    under an id the connection vouches for, else it holds back the connection's own batches there
    (`note_refused_corrupt`, §5.4)."""
    if not TOPIC_NAME.fullmatch(name):  # no logical topic is named so; a key holds its name (the memory's bound, §5.3)
        return
    claimed = rec.claimed_sequence(pd.records)
    if claimed is None:
        return
    key = (claimed[0], claimed[1], name, pd.index)
    ids = ctx.producer_ids
    if rec.header_intact(pd.records):
        ids.vouch(connection_producers(ctx.session), claimed[0], claimed[1])
        ids.note_refused(key, claimed[2])
    else:
        ids.note_refused_corrupt(connection_producers(ctx.session), key)


def _producer_refusal(ctx: Context, checked: rec.BatchHeader, seq_key: SeqKey | None, sequences: tuple[int, int] | None,
                      seg: Segment) -> tuple[str | None, tuple[ErrorCode, str | None] | None]:
    if checked.producer_id >= 0 and checked.is_transactional:
        return "transactions", (ErrorCode.transactional_id_authorization_failed, "transactions are not supported")
    if seq_key is None or sequences is None:
        return None, None
    ids = ctx.producer_ids
    skipped = ids.refused_before(seq_key, sequences[0])
    if skipped is None:
        unknown = ids.ambiguous_before(seq_key, sequences[0])
        producers = ctx.session.producers  # a corrupt batch of an id it does not vouch for holds the connection
        unread = unknown is None and (ids.unsequenced(seq_key) or (
            producers is not None and ids.held(producers, seq_key[2], seq_key[3])))
        # `in_flight` only for a batch the broker would not check (a steady pipeline's are never asked about)
        if ids.broker_checked(seq_key, (seg.cluster, seg.topic, seg.partition, seg.phys_start), sequences[0]) is None \
                and (unknown is not None or unread or ids.overflowing(seq_key) or ids.in_flight(seq_key)):
            return "gap", (_GAP, _held_back_why(sequences[0], unknown, unread, ids.overflowing(seq_key)))
        return None, None
    message = f"sequence {sequences[0]} skips the refused batch at {skipped}: resend that first"
    log.debug("producer %s/%s %s/%s: %s", *seq_key, message)
    return "gap", (_GAP, message)


def _held_back_why(first_seq: int, unknown: int | None, unread: bool, overflowing: bool) -> str:
    """The message of a batch the broker would not check, held back as a gap (`_producer_refusal`)."""
    if unknown is not None:
        return f"sequence {first_seq} skips {unknown}, not known written: resend that first"
    if unread:
        return ("a corrupt batch of the producer (or of this connection) was refused at an unknown sequence: only "
                "batches the broker checks are forwarded")
    if overflowing:
        return "refusal memory full: only batches the broker checks are forwarded"
    return (f"sequence {first_seq}: an earlier batch of the producer on the partition is in flight, its answer "
            "pending: resend once it is answered")


_WAIT = (ErrorCode.leader_not_available, "waiting for the leader")  # not an answer: route again shortly


def _leader_refusal(ctx: Context, seg: Segment, leader: int | None, attempt: _Attempt):
    """(reason, failure) as _refusal, or (None, _WAIT): route again once the leader is known."""
    if seg.cluster in attempt.pid_failures:
        return "cluster", (ErrorCode.not_leader_or_follower, f"cluster {seg.cluster} unreachable")
    if leader is not None:
        return None, None
    ctx.physical.request_refresh(seg.cluster)
    return None, (_WAIT if attempt.leader_waits < LEADER_WAITS else (ErrorCode.leader_not_available, None))


def _as_physical_producer(ctx: Context, checked: rec.BatchHeader, part: _Part, routing: _Routing) -> bool:
    """Rewrite an idempotent part's batch to the cluster's physical producer id. False: not forwarded now (an
    answer was recorded, or a sealed floor or a physical id must be obtained first)."""
    seg, seq_key = part.seg, part.seq_key
    logical, epoch = checked.producer_id, checked.producer_epoch
    sequences = (part.first_seq, part.end_seq) if seq_key else None
    seg_id = (seg.cluster, seg.topic, seg.partition, seg.phys_start)
    if seq_key and sequences and not _checked_against_floor(ctx, seq_key, seg_id, sequences, part, routing):
        return False
    mapped = ctx.producer_ids.physical(logical, epoch, seg.cluster, seg.topic, seg.partition, seg.phys_start,
                                       sequences)
    if mapped is None:
        routing.missing_pids.add((logical, epoch, seg.cluster))
        return False
    if seq_key:
        ctx.producer_ids.note_forwarded(seq_key, seg_id, mapped[0], part.end_seq)
    part.records = rec.with_producer(_as_sent(part), checked, mapped[0], mapped[1])
    routing.producer_key = logical
    part.physical = (seg.cluster, seg.topic, seg.partition, mapped[0])
    part.confirmed = ctx.producer_ids.confirmed(part.physical)
    routing.unconfirmed |= not part.confirmed
    if sequences and log.isEnabledFor(logging.DEBUG):
        log.debug("producer %s/%s %s/%s: sequences %s..%s -> %s as physical %s%s", logical, epoch, part.topic,
                  part.partition, sequences[0], sequences[1] - 1, part.physical[:3], mapped[0],
                  "" if part.confirmed else " (first batch there)")
    return True


def _as_sent(part: _Part) -> rec.Buffer:
    """A part's records as the client sent them (before `with_producer`)."""
    assert not isinstance(part.records, rec.RecordParts)
    return part.records


def _checked_against_floor(ctx: Context, seq_key: SeqKey, seg_id: SegmentId, sequences: tuple[int, int],
                           part: _Part, routing: _Routing) -> bool:
    """False: the sealed segment's floor must be read first, or the batch is answered from it."""
    verdict = _against_sealed_floor(ctx, seq_key, seg_id, sequences)
    if verdict is _ASK_FLOOR:
        routing.missing_floors.append((seq_key, seg_id))
        return False
    if verdict is None:
        return True
    log.debug("producer %s/%s %s/%s: %s", *seq_key, verdict[1])
    routing.errors[(part.topic, part.partition)] = verdict
    if verdict[0] == ErrorCode.duplicate_sequence_number:
        ctx.producer_ids.note_written(seq_key, *sequences)
    else:
        ctx.producer_ids.note_refused(seq_key, sequences[0])
    return False


def _forward(ctx: Context, request: rec.ProduceRequestFrame, routing: _Routing):
    """Always acks=all upstream, always awaited (see UpstreamProduce): the drain then sees every write in flight."""
    timeout_ms = upstream_timeout_ms(request)
    calls = []
    counted = False
    for (cluster, node), parts in routing.groups.items():
        for part in parts:
            # counted: settled in `_translate`, whatever ends the call, or abandoned (`_abandoned`); not counted (the
            # in-flight table full): never settled, so its end never uncounts a later batch of its key
            if part.seq_key and ctx.producer_ids.note_sent(part.seq_key):
                part.counted = counted = True
        calls.append(Call(Broker(cluster, node), UpstreamProduce.of(request.version, timeout_ms, parts),
                          ordering_key=routing.producer_key))
    if not calls:
        return _answer(ctx, request, routing, [])
    # The first batch of a physical id on a partition goes alone: the broker takes any first sequence from
    # an id it does not know, so a later batch must not reach it before this one's answer (see _translate).
    return Plan(calls, functools.partial(_answer, ctx, request, routing), barrier=routing.unconfirmed,
                abandoned=functools.partial(_abandoned, ctx, routing) if counted else None)


def _abandoned(ctx: Context, routing: _Routing) -> None:
    """The core gave up on `_forward`'s plan before `_answer` ran (its client closed the connection): the batches it
    counted and `_translate` did not settle are uncounted once their requests can no longer be written
    (`note_abandoned`), not at once (they may still be at the broker), not never (held back until IN_FLIGHT_LEAK_S)."""
    for parts in routing.groups.values():
        for part in parts:
            if part.counted:
                part.counted = False
                ctx.producer_ids.note_abandoned(part.seq_key)  # type: ignore[arg-type]  # counted: idempotent


def _answer(ctx: Context, request: rec.ProduceRequestFrame, routing: _Routing, results: list):
    """The client's answer: the refusals of `routing` and the brokers' answers (`results`, one per group of
    parts), in the request's order."""
    answers: dict[tuple[str, int], rec.ProducePartitionAnswer] = {}
    for (name, index), (code, message) in routing.errors.items():
        answers[(name, index)] = rec.ProducePartitionAnswer(index, code, error_message=message)
    for parts, result in zip(routing.groups.values(), results, strict=True):
        _translate(ctx, parts, result, answers)
    topics = []
    for t in request.topic_data:
        name = t.name
        topics.append(ProduceTopicAnswer(name, tuple([answers[(name, p.index)] for p in t.partition_data])))
    answer = ProduceAnswer(request.version, tuple(topics), _throttle_ms(results))
    if request.acks == 0:  # the client wants no answer; the broker's was awaited all the same
        return _unanswered(request, answer)
    return answer


def _throttle_ms(results: list) -> int:
    """The longest a broker asked the proxy to back off (a quota; it mutes the connection meanwhile): the client
    backs off as long (KIP-219), as a Fetch's client does (handlers/fetch.py)."""
    return max([r.throttle_time_ms for r in results if type(r) is BrokerAnswer], default=0)


SHOWN_ERRORS = 5  # partitions named in the log line of a connection closed after an acks=0 produce


def _unanswered(request: rec.ProduceRequestFrame, answer: ProduceAnswer):
    """acks=0: no answer. With any partition refused or failed, the client's connection is closed after the
    parts that were forwarded (every group's answer is in), as a broker does (KafkaApis.handleProduceRequest):
    without an answer, a closed connection is the client's only sign to refresh its metadata at once."""
    failed = [f"{t.name}/{p.index} {_error_name(p.error_code)}" + (f" ({p.error_message})" if p.error_message else "")
              for t in answer.responses for p in t.partition_responses if p.error_code not in _WRITTEN]
    if not failed:
        return NO_RESPONSE
    more = len(failed) - SHOWN_ERRORS
    shown = ", ".join(failed[:SHOWN_ERRORS]) + (f" and {more} more" if more > 0 else "")
    return CloseConnection(f"acks=0 produce (correlation id {request.correlation_id}, client id {request.client_id!r})"
                           f" with errors: {shown}", answer)


# a partition answered with these was written (DUPLICATE_SEQUENCE_NUMBER: before; clients count it as success)
_WRITTEN = frozenset({ErrorCode.none, ErrorCode.duplicate_sequence_number})


def _checked_batch(topic, pd) -> rec.BatchHeader | tuple[ErrorCode, str | None]:
    """The partition's batch, checked before anything reads or rewrites it (`records.forwarded_batch`: the CRC of an
    idempotent one too, whose header the bookkeeping acts on; a plain one's is its broker's to check), or the error
    for this partition alone."""
    if topic is None or not 0 <= pd.index < topic.partition_count:
        return ErrorCode.unknown_topic_or_partition, None
    try:
        return rec.forwarded_batch(pd.records)
    except rec.InvalidRecords as e:
        return ErrorCode.invalid_record, str(e)
    except rec.RecordsError as e:
        return ErrorCode.corrupt_message, str(e)


def _sequences(batch: rec.BatchHeader) -> tuple[int, int] | None:
    """(first sequence, sequence after the last record) of an idempotent partition's batch."""
    if batch.base_sequence < 0:
        return None
    return batch.base_sequence, batch.base_sequence + batch.last_offset_delta + 1


_NO_REFUSAL: Refusal = (None, None)
_VALID_ACKS = frozenset({-1, 0, 1})


def _request_refusal(ctx: Context, request: rec.ProduceRequestFrame) -> Refusal:
    """What the proxy refuses every partition of the request for (a partition's batch and topic are checked
    first); reason None: the client's error."""
    if request.acks not in _VALID_ACKS:  # as a broker answers (ReplicaManager.appendRecords), before anything else
        return None, (ErrorCode.invalid_required_acks, f"acks must be -1, 0 or 1, not {request.acks}")
    if request.transactional_id is not None:
        return "transactions", (ErrorCode.transactional_id_authorization_failed,
                                "transactions are not supported by fedkafka yet")
    if not ctx.lease_valid:
        return "lease", (ErrorCode.not_leader_or_follower, "proxy lease expired")
    if ctx.me.node_id in ctx.view.draining:  # it leads nothing now: the client refreshes and goes to the leader
        return "draining", (ErrorCode.not_leader_or_follower, "proxy draining")
    return _NO_REFUSAL


def _refusal(ctx: Context, chain: PartitionChain) -> Refusal:
    """(reason, (error, message)) when the proxy refuses a partition's batch for the partition's sake."""
    if chain.frozen:
        return "frozen", (ErrorCode.not_leader_or_follower, "partition frozen for a segment move")
    cluster = ctx.view.clusters.get(chain.active.cluster)
    if cluster is None or cluster.state != ClusterState.ACTIVE or not ctx.physical.reachable(cluster.id):
        return "cluster", (ErrorCode.not_leader_or_follower, f"cluster {chain.active.cluster} not writable")
    return _NO_REFUSAL


_ASK_FLOOR = object()
# A batch past a sequence that was not written gets the retriable error a real leader would give a whole
# pipeline it refused: the client drains, refreshes and resends from its oldest unacked batch.
# OUT_OF_ORDER_SEQUENCE_NUMBER (what a broker says once a gap reaches its log) makes librdkafka bump the
# producer epoch for every such batch, and during a freeze that storm ends in its fatal error.
_GAP = ErrorCode.not_leader_or_follower


def _against_sealed_floor(ctx: Context, seq_key: SeqKey, seg_id: SegmentId, sequences: tuple[int, int]):
    """Check a batch against the sequence the producer reached on the segment sealed before `seg_id`.

    None: forward it. An (error, message) answer: already written there (DUPLICATE_SEQUENCE_NUMBER,
    which clients count as success) or a gap (see _GAP). _ASK_FLOOR: read it first."""
    floor = ctx.producer_ids.floor(seq_key, seg_id)
    earlier = ctx.producer_ids.earlier_write(seq_key, seg_id)
    if floor is UNASKED:
        return _ASK_FLOOR if earlier is not None else None
    if floor is None:
        return None
    first, end = sequences  # compared across the wrap (fedkafka/protocol/sequences.py)
    if seqs.behind(end - 1, floor):
        return ErrorCode.duplicate_sequence_number, f"sequences {first}..{end - 1} were written before the seal"
    # A gap only when this process's own batches there did not all land (the floor is behind the end it forwarded):
    # at its end, the producer went on through another process or proxy (§5.3 rule 4)
    if earlier is not None and seqs.after(first, floor) and seqs.behind(floor, earlier.end) \
            and ctx.producer_ids.gap_at_floor(seq_key, seg_id):
        return _GAP, f"sequence {first} skips {floor}: resend from {floor}"
    return None


def _read_sealed_floors(ctx: Context, header, request, missing: list[tuple[SeqKey, SegmentId]],
                        attempt: _Attempt):
    """Ask the broker of each producer's sealed segment (DescribeProducers) how far the producer got there,
    behind a barrier, then route again. Unknown (unreachable, producer state expired): no floor."""
    calls, asked = [], []
    for seq_key, seg_id in missing:
        write = ctx.producer_ids.earlier_write(seq_key, seg_id)
        assert write is not None  # _against_sealed_floor asks only after a write to an earlier segment
        cluster, topic, partition, _start = write.segment
        leader = ctx.physical.leader(cluster, topic, partition)
        if leader is None or not ctx.physical.reachable(cluster):
            ctx.producer_ids.set_floor(seq_key, seg_id, None)
            continue
        ask = TopicRequest(name=TopicName(topic), partition_indexes=(i32(partition),))
        calls.append(Call(Broker(cluster, leader), DescribeProducersRequest(topics=(ask,)), timeout_s=5.0))
        asked.append((seq_key, seg_id, write))
    if not calls:
        return _route(ctx, header, request, attempt)

    def finish(results: list):
        for (seq_key, seg_id, write), result in zip(asked, results, strict=True):
            floor = _sequence_after(result, write)
            log.debug("producer %s/%s %s/%s: sealed segment %s holds its sequences below %s", *seq_key,
                     write.segment, floor)
            ctx.producer_ids.set_floor(seq_key, seg_id, floor)
        return _route(ctx, header, request, attempt)

    return Plan(calls, finish, barrier=True)


def _sequence_after(result, write: SegmentWrite) -> int | None:
    """The sequence after the last one `write.producer_id` appended to its partition, if the broker knows."""
    if isinstance(result, UpstreamError):
        return None
    for t in result.topics:
        for p in t.partitions:
            if p.error_code != ErrorCode.none:
                return None
            for state in p.active_producers:
                if state.producer_id == write.producer_id and state.last_sequence >= 0:
                    return seqs.wrapped(state.last_sequence + 1)  # after 2**31 - 1: 0
    return None


PID_ATTEMPTS = 12  # about 6 s of backoff: a fresh cluster answers COORDINATOR_LOAD_IN_PROGRESS at first


def _obtain_physical_ids(ctx: Context, header, request, missing: list[tuple[int, int, str]],
                         attempt: _Attempt, tries: int = 0):
    """One InitProducerId per (logical id, epoch, cluster) on that cluster, then route again.

    Retriable errors are retried here (a barrier: the client's later requests wait) rather than answered:
    failing batch n while batch n+1 of the same partition goes through would break the broker's sequence
    check for good (OUT_OF_ORDER_SEQUENCE_NUMBER on the retry of n).
    """
    req = InitProducerIdRequest(transactional_id=None, transaction_timeout=i32Timedelta.parse(
        datetime.timedelta(milliseconds=60000)), producer_id=ProducerId(-1), producer_epoch=i16(-1))
    calls = [Call(AnyBroker(cluster), req) for _, _, cluster in missing]

    def finish(results: list):
        failed = set(attempt.pid_failures)
        retry = []
        for key, r in zip(missing, results, strict=True):
            logical, epoch, cluster = key
            if not isinstance(r, UpstreamError) and r.error_code == ErrorCode.none:
                ctx.producer_ids.store_physical(logical, epoch, cluster, r.producer_id, r.producer_epoch)
            elif tries + 1 < PID_ATTEMPTS and (isinstance(r, UpstreamError) or r.error_code.retriable):
                retry.append(key)
            else:
                failed.add(cluster)
                ctx.physical.request_refresh(cluster)
        if retry:
            plan = _obtain_physical_ids(ctx, header, request, retry, attempt.failing(frozenset(failed)), tries + 1)
            plan.delay_s = min(0.05 * 2 ** tries, 1.0)
            return plan
        return _route(ctx, header, request, attempt.failing(frozenset(failed)))

    return Plan(calls, finish, barrier=True)


# The seal is read at the high watermark. A write the leader acknowledged before its followers had it
# (acks=1), or never acknowledged at all (acks=0), could lie above it: invisible to consumers, its logical
# offsets given to other records. So every write goes upstream with acks=all, whatever the client asked
# for (an acks=1 client gets a stronger guarantee, never a weaker one), and is awaited (docs/ARCHITECTURE.md,
# "Why no acked record lands above a seal").
UPSTREAM_ACKS = -1
# A broker keeps an acks=all write waiting for its followers up to the request's timeout; capped, so that
# every produce is answered within the core's upstream wait (the controller's fencing bound counts on it).
MAX_UPSTREAM_PRODUCE_TIMEOUT_MS = int(MAX_PRODUCE_WAIT_S * 1000)


def upstream_timeout_ms(request: rec.ProduceRequestFrame) -> int:
    """The replication wait the upstream acks=all write is sent with. An acks=all client's own timeout, capped. Kafka
    reads a Produce's timeout only for acks=all (no DelayedProduce for acks 0 or 1), and clients say so (Sarama's
    Producer.Timeout, franz-go's ProduceRequestTimeout): for acks 0 and 1 the field is no bound on replication, and
    with followers lagging past a short one the broker appended the batch and answered REQUEST_TIMED_OUT, which the
    client retried: written twice where a broker answering acks=1 acks it once. Those wait up to the cap."""
    if request.acks == UPSTREAM_ACKS:
        return min(request.timeout_ms, MAX_UPSTREAM_PRODUCE_TIMEOUT_MS)
    return MAX_UPSTREAM_PRODUCE_TIMEOUT_MS


class BrokerAnswer(NamedTuple):
    """A broker's ProduceResponse: per physical topic its partitions' answers, and its throttle time."""

    topics: rec.ProduceAnswers
    throttle_time_ms: int


@dataclass(slots=True)  # not frozen: cheaper to make (see records.BatchHeader)
class UpstreamProduce:
    """The client's request narrowed to one broker's parts, in physical names, with acks=all and the timeout of
    `upstream_timeout_ms`: written by records.py around the record sets (by reference), not by kio. The core sends it
    as it sends a kio request (`frame_parts`) and reads the broker's answer with `read_response`: a BrokerAnswer."""

    __api_key__: ClassVar[int] = 0
    version: int
    timeout_ms: int
    topic_data: tuple[rec.ProduceTopicData, ...]

    @property
    def __version__(self) -> int:
        return self.version

    @classmethod
    def of(cls, version: int, timeout_ms: int, parts: list[_Part] | list[_Forwarded]) -> UpstreamProduce:
        """Around each part's `records`, to its segment `seg`: grouped by physical topic, in the parts' order."""
        if len(parts) == 1:  # the usual: one partition of the request on this broker
            seg = parts[0].seg
            return cls(version, timeout_ms, (rec.ProduceTopicData(
                seg.topic, (rec.ProducePartitionData(seg.partition, parts[0].records),)),))
        by_topic: dict[str, list[rec.ProducePartitionData]] = {}
        for part in parts:
            by_topic.setdefault(part.seg.topic, []).append(rec.ProducePartitionData(part.seg.partition, part.records))
        return cls(version, timeout_ms, tuple([rec.ProduceTopicData(n, tuple(pd)) for n, pd in by_topic.items()]))

    def frame_parts(self, correlation_id: int, client_id: str | None) -> list[bytes | bytearray | memoryview]:
        # topic_data's named tuples are the (name, [(index, records)]) pairs produce_request_parts takes
        return rec.produce_request_parts(self.version, correlation_id, client_id, UPSTREAM_ACKS, self.timeout_ms,
                                         self.topic_data)

    def read_response(self, frame: bytes | memoryview) -> BrokerAnswer:
        """The broker's ProduceResponse (after its size prefix), read by records.py; a malformed one fails the call
        as a kio DecodeError does (the core answers its partitions REQUEST_TIMED_OUT)."""
        try:
            return BrokerAnswer(*rec.read_produce_answer(frame, self.version))
        except rec.MalformedFrame as e:
            raise DecodeError(f"malformed ProduceResponse: {e}") from None


class ProduceTopicAnswer(NamedTuple):  # the (name, answers) pair produce_response_frame takes, as it is
    name: str
    partition_responses: tuple[rec.ProducePartitionAnswer, ...]


@dataclass(slots=True)  # not frozen: cheaper to make (see records.BatchHeader)
class ProduceAnswer:
    """The client's answer, written by records.py (`response_frame`); `count_errors` feeds the core's metrics."""

    __api_key__: ClassVar[int] = 0
    version: int
    responses: tuple[ProduceTopicAnswer, ...]
    throttle_time_ms: int = 0  # the largest its brokers answered (`_throttle_ms`)

    def response_frame(self, correlation_id: int) -> bytes:
        return rec.produce_response_frame(self.version, correlation_id, self.responses, self.throttle_time_ms)

    def count_errors(self, counts: dict) -> None:
        for t in self.responses:
            for p in t.partition_responses:
                if p.error_code:
                    counts[p.error_code] = counts.get(p.error_code, 0) + 1


def _translate(ctx: Context, parts: list[_Part], result, answers: dict) -> None:
    """Into `answers`: each part's answer from its broker's (`result`), or the error that took its place."""
    for part in parts:
        if part.counted:  # its call ended (`_forward`'s `note_sent`; not abandoned)
            part.counted = False
            ctx.producer_ids.note_settled(part.seq_key)  # type: ignore[arg-type]  # counted: idempotent
    if isinstance(result, UpstreamError):
        _lost(ctx, parts, result, answers)
        return
    physical = {}
    for name, broker_answers in result.topics:
        for pr in broker_answers:
            physical[(name, pr.index)] = pr
    for part in parts:
        seg = part.seg
        pr = physical.get((seg.topic, seg.partition))
        if pr is None:
            answers[(part.topic, part.partition)] = rec.ProducePartitionAnswer(
                part.partition, ErrorCode.unknown_server_error, error_message=_LEFT_OUT)
            continue
        if pr.error_code in REFRESHING:
            ctx.physical.request_refresh(seg.cluster)
        if part.seq_key:
            _note_sequences(ctx, part, pr)
        answers[(part.topic, part.partition)] = _logical_answer(ctx, part, pr)


_LEFT_OUT = "cluster left the partition out of its answer"


def _lost(ctx: Context, parts: list[_Part], result: UpstreamError, answers: dict) -> None:
    """The parts of a call that got no answer: REQUEST_TIMED_OUT (retriable)."""
    ctx.physical.request_refresh(result.cluster)
    for p in parts:
        answers[(p.topic, p.partition)] = rec.ProducePartitionAnswer(p.partition, ErrorCode.request_timed_out,
                                                                     error_message=result.reason)
        if not p.seq_key:
            continue
        log.debug("producer %s/%s %s/%s: sequence %s lost its answer: %s", *p.seq_key, p.first_seq, result.reason)
        if not p.confirmed:  # no broker state yet: only the client's resend can tell
            ctx.producer_ids.note_refused(p.seq_key, p.first_seq)
        else:  # the broker checks what follows on this id, not on a fresh one (rule 3)
            ctx.producer_ids.note_ambiguous(p.seq_key, p.first_seq)


def _note_sequences(ctx: Context, part: _Part, pr: rec.ProducePartitionAnswer) -> None:
    assert part.seq_key is not None
    if log.isEnabledFor(logging.DEBUG):
        log.debug("producer %s/%s %s/%s: sequence %s answered %s at %s", *part.seq_key, part.first_seq,
                  _error_name(pr.error_code), pr.base_offset)
    _note_answer(ctx.producer_ids, part, pr.error_code)


def _note_answer(producer_ids, part: _Part | LaneSequences, error_code: int) -> None:
    """The broker answered an idempotent part (`_translate`, `lane_noted`): its sequences written, or refused."""
    assert part.seq_key is not None
    if error_code in _WRITTEN:
        producer_ids.note_written(part.seq_key, part.first_seq, part.end_seq)
        assert part.physical is not None  # a part with a seq_key is idempotent: it has its physical id
        producer_ids.confirm(part.physical)
    elif error_code not in _MAYBE_WRITTEN or not part.confirmed:
        producer_ids.note_refused(part.seq_key, part.first_seq)
        if error_code == ErrorCode.out_of_order_sequence_number:
            log.info("producer %s/%s %s/%s: %s answered OUT_OF_ORDER_SEQUENCE_NUMBER for sequence %s",
                     *part.seq_key, part.seg.cluster, part.first_seq)
    else:  # maybe written, on a confirmed pair: the broker checks what follows on this id, not on a fresh one
        producer_ids.note_ambiguous(part.seq_key, part.first_seq)


def _error_name(code: int) -> str:
    """An error code's name for the log; a code kio does not know (a newer broker's) by its number."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def _logical_answer(ctx: Context, part: _Part, pr: rec.ProducePartitionAnswer) -> rec.ProducePartitionAnswer:
    return _in_logical_offsets(part.partition, part.chain, part.seg, pr,
                               functools.partial(ctx.refused, BELOW_SEGMENT, part.topic, part.partition))


# A broker's answer placing a write below the active segment's phys_start: the physical partition lost the
# offsets the segment starts at (its topic created again, empty: a lost disk, a cluster rebuilt empty; the
# controller no longer re-creates such a topic, but an operator or another tool may). Mapped to logical offsets
# it would land in an older segment's range, which readers resolve to that segment: the record would be acked at
# an offset already handed out and never be read (docs/DESIGN.md §4.5, §9.3). It is not acked: NOT_LEADER_OR_FOLLOWER
# is what the proxy answers for any partition not writable now (`_refusal`), and every client retries it after a
# metadata refresh, with no producer epoch bump. KAFKA_STORAGE_ERROR would say more but some clients treat it as
# possibly persisted; nothing is gained. The refusal does not last: the broker appended the batch all the same, each
# retry appends it again, and once they have filled the partition up to phys_start the next write is at or above it
# and acked at an offset already handed out. An alarm, not a protection: only the controller never creating such a
# topic again covers this (docs/DESIGN.md §4.5).
BELOW_SEGMENT = "below_segment"
_BELOW_SEGMENT_LOG_S = 60.0
_below_logged: dict[tuple[str, str, int], float] = {}


def _below_segment(seg: Segment, pr: rec.ProducePartitionAnswer, index: int,
                   refused: Callable[[str], None] | None) -> rec.ProducePartitionAnswer:
    """The retriable refusal of a broker's answer at physical offset `pr.base_offset` < `seg.phys_start`; logged at
    most once a minute per physical partition, and counted as a refusal (`refused`, when there is a Context)."""
    detail = (f"{seg.cluster} wrote {seg.topic}/{seg.partition} at offset {pr.base_offset}, below the active "
              f"segment's start {seg.phys_start}: the physical partition lost its data")
    now = time.monotonic()
    key = (seg.cluster, seg.topic, seg.partition)
    if now - _below_logged.get(key, -_BELOW_SEGMENT_LOG_S) >= _BELOW_SEGMENT_LOG_S:
        _below_logged[key] = now
        log.error("%s: not acked (NOT_LEADER_OR_FOLLOWER); the broker kept it, and retries fill the partition up to "
                  "the segment's start, past which writes take offsets already handed out: stop its producers "
                  "(docs/OPERATIONS.md, \"A cluster lost a topic's data\")", detail)
    if refused is not None:
        refused(detail)
    return rec.ProducePartitionAnswer(index, ErrorCode.not_leader_or_follower, error_message="partition lost its data")


def _in_logical_offsets(index: int, chain: PartitionChain, seg: Segment, pr: rec.ProducePartitionAnswer,
                        refused: Callable[[str], None] | None = None) -> rec.ProducePartitionAnswer:
    """The broker's answer for logical partition `index` (written to `seg`, the active segment of `chain`) in
    logical offsets (fields an older version lacks keep their defaults); a write placed below the segment's start
    is refused instead (`_below_segment`)."""
    base_offset = pr.base_offset
    if 0 <= base_offset < seg.phys_start:
        return _below_segment(seg, pr, index, refused)
    return rec.ProducePartitionAnswer(
        index, pr.error_code, seg.to_logical(base_offset) if base_offset >= 0 else base_offset,
        pr.log_append_time_ms, _logical_start(chain, seg, pr.log_start_offset), pr.record_errors, pr.error_message)


# Broker errors after which the leader may hold the batch (acks=all replication timed out): not a gap once
# the broker checks the id's sequences (a resend of it is then deduplicated, a later batch refused by the
# broker). Before that, the batch is refused from the proxy's side too: the client resends it first, and the
# broker deduplicates that resend against the state the batch left if it was written after all.
_MAYBE_WRITTEN = frozenset({ErrorCode.request_timed_out, ErrorCode.not_enough_replicas_after_append})


def _logical_start(chain: PartitionChain, seg: Segment, physical_start: int) -> int:
    """Log start in logical space: inside the active segment when older data expired, else the chain's start."""
    if physical_start < 0:
        return physical_start
    first = chain.segments[0]
    if len(chain.segments) == 1 or physical_start > seg.phys_start:
        return seg.to_logical(max(physical_start, seg.phys_start))
    return first.logical_base


# -- the Produce lane (core/produce_lane.py) --------------------------------------------------------------------
# The common request (no transaction, acks 1 or -1, batches of no producer id or of one idempotent producer in its
# steady state, every partition writable now, all on one broker) is routed by the core from a per-view cache of
# `lane_route`'s answers, then forwarded and answered with these functions: no Context, Plan, _Routing or _Part, no
# refusal to count. An idempotent producer's batches get `_as_physical_producer`'s rewrite and bookkeeping
# (`lane_forwarded`) and `_translate`'s (`lane_noted`, `_note_answer`). They decide only what
# the view and the session decide; the core checks the lease and the physical state per request. Whatever they do
# not take goes through `handle`, which stays the reference: the lane's frames are its frames, byte for byte
# (tests/proxy/test_produce_lane.py).


class LaneRoute(NamedTuple):
    """A logical partition the lane writes to `seg`, the active segment of its `chain`; `shift`: what
    records.translated_produce_answer moves the broker's offsets by (`_in_logical_offsets`, as numbers)."""

    chain: PartitionChain
    seg: Segment
    shift: tuple[int, int, int | None]
    seg_id: SegmentId  # (cluster, topic, partition, phys_start): the producer id table's name for `seg`


def lane_takes(request: rec.ProduceRequestFrame) -> bool:
    """Whether the request as a whole is one the lane may take: `handle` refuses a transactional one or one of acks
    other than 1 and -1 (acks=0 answers nothing or closes the connection), and answers a topic entry of no
    partition with an empty entry (the lane writes answers for the partitions it routed)."""
    return request.transactional_id is None and (request.acks == -1 or request.acks == 1) and \
        all(t.partition_data for t in request.topic_data)


def lane_route(view, may_write: bool, name: str, index: int) -> LaneRoute | None:
    """The partition's route when `handle` would forward its (valid) batch as it is, as far as the view and the
    session's WRITE right decide (None: the lane leaves the request to `handle`). Cached per view and session."""
    topic = view.topics.get(name)
    if not may_write or topic is None or not 0 <= index < topic.partition_count:
        return None
    chain = topic.partitions[index]
    if chain.frozen:
        return None
    seg = chain.active
    cluster = view.clusters.get(seg.cluster)
    if cluster is None or cluster.state != ClusterState.ACTIVE:
        return None
    # seg.to_logical(x) is x + delta; _logical_start's chain start only for a chain of more than one segment
    chain_base = None if len(chain.segments) == 1 else chain.segments[0].logical_base
    return LaneRoute(chain, seg, (seg.logical_base - seg.phys_start, seg.phys_start, chain_base),
                     (seg.cluster, seg.topic, seg.partition, seg.phys_start))


def lane_batch(records: rec.Buffer | None) -> rec.BatchHeader | None:
    """The batch's header when `handle` would forward it without a refusal of its own: it passes `forwarded_batch`'s
    check and, of a producer id, is not transactional and has sequences (None: not the lane's). An idempotent batch
    is the lane's only in its producer's steady state (`lane_producer`)."""
    try:
        header = rec.forwarded_batch(records)
    except rec.RecordsError:
        return None
    if header.producer_id >= 0 and (header.attributes & 0x10 or header.base_sequence < 0):
        return None  # transactional (`_producer_refusal`), or no sequences to keep
    return header


class LaneSequences(NamedTuple):
    """An idempotent partition the lane forwards: what `_note_answer` reads of a `_Part` (confirmed: always)."""

    seq_key: SeqKey
    first_seq: int
    end_seq: int
    physical: PhysicalPartition
    confirmed: bool
    seg: Segment


class LaneProducer(NamedTuple):
    """The idempotent batches of a lane request, all of one logical producer: `key` orders its upstream connection
    (`_Routing.producer_key`); per partition in the request's order its sequences, route, batch header and records."""

    key: int
    physical: tuple[int, int]  # the physical (id, epoch): one cluster, one id
    parts: list[tuple[LaneSequences, LaneRoute, rec.BatchHeader, rec.Buffer | rec.RecordParts | None]]  # a checked
    # batch, as the client sent it


def lane_producer(producer_ids, request: rec.ProduceRequestFrame, routes: list[LaneRoute],
                  headers: list[rec.BatchHeader], session=None) -> LaneProducer | None:
    """The request's idempotent batches when `handle` would forward each as it is, rewritten to its physical id,
    with no refusal, barrier, floor or physical id to obtain first (`ProducerIdTable.steady`, read only); every batch
    of the request of one producer id and epoch. None: the lane leaves the request. Taken, `session`'s connection
    vouches for the id and epoch, as `handle` notes it (`vouched`, inline: one look-up once the pair is in)."""
    first = headers[0]
    logical, epoch = first.producer_id, first.producer_epoch
    parts = []
    physical = None
    at = 0
    for t in request.topic_data:
        for pd in t.partition_data:
            header, route = headers[at], routes[at]
            at += 1
            if header.producer_id != logical or header.producer_epoch != epoch:
                return None  # a batch of no id or of another: `handle` orders by the last one's id
            seq_key = (logical, epoch, t.name, pd.index)
            first_seq = header.base_sequence
            mapped = producer_ids.steady(seq_key, route.seg_id, first_seq)
            if mapped is None or (physical is not None and mapped != physical):
                return None
            physical = mapped
            cluster, topic, partition, _ = route.seg_id
            parts.append((LaneSequences(seq_key, first_seq, first_seq + header.last_offset_delta + 1,
                                        (cluster, topic, partition, mapped[0]), True, route.seg),
                          route, header, pd.records))
    assert physical is not None
    if session is not None:  # its batches' CRCs held (`lane_batch`): §5.4, "The batch's CRC"
        # `vouched`, inline: keep the two in sync
        producers = session.producers
        if producers is None or (logical, epoch) not in producers.vouched:
            producer_ids.vouch(connection_producers(session), logical, epoch)
    return LaneProducer(logical, physical, parts)


def vouched(producer_ids, session, pair: tuple[int, int]) -> None:
    """`session`'s connection sent a batch of the producer id and epoch `pair` with its CRC-32C intact: it vouches
    for them (`ProducerIds.vouch`; a corrupt batch of them after is remembered in the table alike), on the generic
    path (`_classify`; the lane does the same inline, `lane_producer`: keep the two in sync). One dict look-up once
    the pair is in."""
    producers = session.producers
    if producers is None or pair not in producers.vouched:
        producer_ids.vouch(connection_producers(session), *pair)


class LaneUncounted(Exception):
    """`lane_forwarded` could not count a batch in flight (the in-flight table full): nothing counted, nothing sent;
    the generic path takes the request (its `_Part.counted` remembers an uncounted batch, the lane has no place to)."""


def lane_forwarded(producer_ids, producer: LaneProducer) -> list[rec.RecordParts]:
    """The record sets to forward, rewritten to the physical id, and the bookkeeping `_as_physical_producer` does on
    the way (`physical`, `note_forwarded`), in the request's order: once the lane is sure to send or answer. Every
    batch counted in flight (`note_sent`), or LaneUncounted with none (the request's bookkeeping then done again by
    the generic path, to no further effect, as after a failed write)."""
    out: list[rec.RecordParts] = []
    for seq, route, header, batch in producer.parts:
        seq_key = seq.seq_key
        cluster, topic, partition, phys_start = seg_id = route.seg_id
        mapped = producer_ids.physical(seq_key[0], seq_key[1], cluster, topic, partition, phys_start,
                                       (seq.first_seq, seq.end_seq))
        assert mapped == producer.physical  # `steady` said so, and nothing ran in between
        producer_ids.note_forwarded(seq_key, seg_id, mapped[0], seq.end_seq)
        if not producer_ids.note_sent(seq_key):  # settled by `lane_settled` once the call ended, however
            _uncount_counted(producer_ids, producer, len(out))
            raise LaneUncounted
        out.append(rec.with_producer(batch, header, mapped[0], mapped[1]))  # type: ignore[arg-type]
    return out


def _uncount_counted(producer_ids, producer: LaneProducer, counted: int) -> None:
    """The first `counted` batches of the producer were counted, and are not sent after all."""
    for seq, *_ in producer.parts[:counted]:
        producer_ids.note_settled(seq.seq_key)


def lane_settled(producer_ids, producer: LaneProducer) -> None:
    """The call of the producer's batches (`lane_forwarded`'s `note_sent`) ended, however: none in flight now."""
    for seq, *_ in producer.parts:
        producer_ids.note_settled(seq.seq_key)


def lane_abandoned(producer_ids, producer: LaneProducer) -> None:
    """The answer of the producer's batches' call was cancelled once the request was written: the broker may still
    write it, so they count until they no longer can (`note_abandoned`), as the generic path's `_abandoned`."""
    for seq, *_ in producer.parts:
        producer_ids.note_abandoned(seq.seq_key)


def lane_noted(producer_ids, producer: LaneProducer, result) -> None:
    """The bookkeeping `_translate` does for idempotent parts on the broker's answer (`result`, as `lane_answer`
    reads it): for a lost call, every part not known written (every part is confirmed, `_lost`); none for a partition
    left out of the answer."""
    if type(result) is Written:  # one partition
        _note_answer(producer_ids, producer.parts[0][0], result.error_code)
        return
    if isinstance(result, UpstreamError):
        for seq, *_ in producer.parts:
            producer_ids.note_ambiguous(seq.seq_key, seq.first_seq)
        return
    physical = {(name, pr.index): pr for name, broker_answers in result.topics for pr in broker_answers}
    for seq, *_ in producer.parts:
        pr = physical.get((seq.seg.topic, seq.seg.partition))
        if pr is not None:
            _note_answer(producer_ids, seq, pr.error_code)


def lane_upstream(request: rec.ProduceRequestFrame, routes: list[LaneRoute],
                  records: Sequence[rec.Buffer | rec.RecordParts | None] | None = None) -> UpstreamProduce:
    """The broker's request: `UpstreamProduce.of` for the request's partitions (`routes` in the request's order,
    all on one broker), the record sets by reference (or `records`, rewritten to a physical producer id)."""
    timeout_ms = upstream_timeout_ms(request)  # the generic path's, so that both write the same bytes
    if len(routes) == 1:
        seg = routes[0].seg
        t = request.topic_data[0]
        pd = t.partition_data[0]
        return LaneProduce(request.version, timeout_ms, (rec.ProduceTopicData(
            seg.topic, (rec.ProducePartitionData(seg.partition, pd.records if records is None else records[0]),)),),
            request.correlation_id, t.name, pd.index, routes[0].shift)
    if records is None:
        records = [pd.records for t in request.topic_data for pd in t.partition_data]
    return UpstreamProduce.of(request.version, timeout_ms,
                              [_Forwarded(r.seg, rs) for r, rs in zip(routes, records, strict=True)])


class _Forwarded(NamedTuple):  # what UpstreamProduce.of reads of a _Part
    seg: Segment
    records: rec.Buffer | rec.RecordParts | None


def lane_answer(request: rec.ProduceRequestFrame, routes: list[LaneRoute], result,
                refused: Callable[..., None] | None = None) -> tuple[ProduceAnswer | Written, bool]:
    """The client's answer from the broker's (`result`: its answer or an UpstreamError), as `_answer` gives it,
    and whether the cluster's metadata must be refreshed (a lost call, NOT_LEADER or UNKNOWN_TOPIC answers).
    `refused` (the observer's: reason, topic, partition, detail, client id) counts a write refused for landing below
    its segment (`_below_segment`)."""
    if type(result) is Written:  # the usual: written as the broker's answer was read (LaneProduce)
        return result, result.error_code in REFRESHING
    lost = isinstance(result, UpstreamError)
    throttle_ms = 0 if lost else result.throttle_time_ms
    if not lost and len(routes) == 1 and len(answered := result.topics) == 1 and len(answered[0][1]) == 1:  # usual
        chain, seg = routes[0][:2]
        pr = answered[0][1][0]
        if answered[0][0] == seg.topic and pr.index == seg.partition:
            t = request.topic_data[0]
            index = t.partition_data[0].index
            answer = _in_logical_offsets(index, chain, seg, pr, _refusal_of(refused, t.name, index))
            return ProduceAnswer(request.version, (ProduceTopicAnswer(t.name, (answer,)),), throttle_ms), \
                pr.error_code in REFRESHING
    physical = {}
    if not lost:
        for name, broker_answers in result.topics:
            for pr in broker_answers:
                physical[(name, pr.index)] = pr
    refresh = lost
    topics = []
    at = 0
    for t in request.topic_data:
        answers = []
        for pd in t.partition_data:
            chain, seg = routes[at][:2]
            at += 1
            if lost:
                answers.append(rec.ProducePartitionAnswer(pd.index, ErrorCode.request_timed_out,
                                                          error_message=result.reason))
            elif (pr := physical.get((seg.topic, seg.partition))) is None:
                answers.append(rec.ProducePartitionAnswer(pd.index, ErrorCode.unknown_server_error,
                                                          error_message=_LEFT_OUT))
            else:
                refresh |= pr.error_code in REFRESHING
                answers.append(_in_logical_offsets(pd.index, chain, seg, pr, _refusal_of(refused, t.name, pd.index)))
        topics.append(ProduceTopicAnswer(t.name, tuple(answers)))
    return ProduceAnswer(request.version, tuple(topics), throttle_ms), refresh


def _refusal_of(refused: Callable[..., None] | None, name: str, index: int) -> Callable[[str], None] | None:
    return None if refused is None else functools.partial(refused, BELOW_SEGMENT, name, index, client_id=None)


# error codes after which the cluster's metadata is asked for: `_translate`'s, and the lane's `_answered` (a Written)
REFRESHING = (ErrorCode.not_leader_or_follower, ErrorCode.unknown_topic_or_partition)


@dataclass(slots=True)
class LaneProduce(UpstreamProduce):
    """The lane's broker request for a request of one partition: its broker's answer is read and the client's
    written in one call (`records.translated_produce_answer`) as it arrives; an answer of another shape is read as
    UpstreamProduce reads it, and `lane_answer` translates it."""

    correlation_id: int = 0  # the client's
    name: str = ""  # the client's topic and partition
    index: int = 0
    shift: tuple[int, int, int | None] = (0, 0, None)

    def read_response(self, frame: bytes | memoryview) -> Written | BrokerAnswer:  # type: ignore[override]
        done = rec.lane_written(frame, self, Written)  # the compiled step of all below, when it takes the answer
        if done is not None:
            return done  # type: ignore[return-value]  # a Written
        (topic, (partition,)), = self.topic_data
        try:
            written = rec.translated_produce_answer(frame, self.version, self.correlation_id, self.name, self.index,
                                                    topic, partition.index, self.shift)
        except rec.MalformedFrame as e:
            raise DecodeError(f"malformed ProduceResponse: {e}") from None
        if written is None:
            return UpstreamProduce.read_response(self, frame)
        delta, phys_start, _ = self.shift
        if phys_start > 0 and rec.translated_base_offset(written[0], self.version, self.name) < phys_start + delta:
            # below the segment's logical base: an error's -1, or a write below phys_start, which `lane_answer`
            # refuses (`_below_segment`): never acked at an older segment's offset
            return UpstreamProduce.read_response(self, frame)
        return Written(*written)


# What the compiled step of the lane (`records.read_lane_request`) makes the broker's request of, as `lane_upstream`
# makes it: LaneProduce of one partition, UpstreamProduce of more, their fields in order, the timeout's cap
LANE_UPSTREAM = (LaneProduce, tuple(f.name for f in fields(LaneProduce)), UpstreamProduce,
                 tuple(f.name for f in fields(UpstreamProduce)), MAX_UPSTREAM_PRODUCE_TIMEOUT_MS)


class Written:
    """A client's answer frame, written as its broker's answer was read: what the lane sends (`response_frame`), and
    its one error code for the metrics (`count_errors`, as ProduceAnswer's)."""

    __slots__ = ("error_code", "frame")
    __api_key__: ClassVar[int] = 0

    def __init__(self, frame: bytes, error_code: int):
        self.frame, self.error_code = frame, error_code

    def response_frame(self, correlation_id: int) -> bytes:
        return self.frame  # written with the client's correlation id (LaneProduce.correlation_id)

    def count_errors(self, counts: dict) -> None:
        if self.error_code:
            counts[self.error_code] = counts.get(self.error_code, 0) + 1
