"""Produce: split by logical partition, route each part to its active segment, merge, translate offsets.

Records are never decoded: a part's one batch is checked (records.produce_batch: CRC, lengths, counts; a bad
one is answered for its partition alone) and forwarded as one buffer; only idempotent batches get their
producer id/epoch rewritten to the cluster's physical id (records.py recomputes the CRC).
Errors drive client refresh: frozen partition, expired lease or unreachable cluster -> retriable
NOT_LEADER_OR_FOLLOWER before anything is sent; a lost upstream request -> REQUEST_TIMED_OUT (retriable,
idempotent producers retry with the same sequence). Nothing is ever sent to a cluster other than the
active segment's.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from kio.schema.describe_producers.v0.request import DescribeProducersRequest, TopicRequest
from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.types import TopicName
from kio.static.primitive import i16, i32, i32Timedelta, i64

from fedkafka.fencing import MAX_PRODUCE_WAIT_S
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.core.producer_ids import UNASKED, PhysicalPartition, SegmentId, SegmentWrite, SeqKey
from fedkafka.proxy.plan import NO_RESPONSE, AnyBroker, Broker, Call, Context, Plan, UpstreamError, authorized
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import ClusterState, PartitionChain, Segment

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
    records: bytes | None
    seq_key: tuple[int, int, str, int] | None = None  # idempotent batches: (logical id, epoch, topic, partition)
    first_seq: int = -1
    end_seq: int = -1  # the sequence after the batch's last record
    # idempotent batches: where the physical id writes, and whether the broker has answered a batch of that
    # id there (it checks sequences only from then on)
    physical: PhysicalPartition | None = None
    confirmed: bool = True


LEADER_WAITS = 8  # about 1.3 s of backoff: a segment published a moment ago whose leader is not known yet


def handle(ctx: Context, header, request, _pid_failures: frozenset[str] = frozenset(), _leader_waits: int = 0):
    version = type(request).__version__
    errors: dict[tuple[str, int], tuple[ErrorCode, str | None]] = {}
    groups: dict[tuple[str, int], list[_Part]] = {}
    missing_pids: set[tuple[int, int, str]] = set()
    missing_floors: list[tuple[SeqKey, SegmentId]] = []
    unknown_leader = False
    unconfirmed = False  # some idempotent batch is the first of its physical id on its partition
    producer_key: int | None = None  # idempotent producers: one upstream connection per logical id
    order = [(t.name, [p.index for p in t.partition_data]) for t in request.topic_data]

    for t in request.topic_data:
        topic = ctx.view.topics.get(t.name)
        may_write = authorized(ctx, Operation.WRITE, ResourceType.TOPIC, t.name)
        for pd in t.partition_data:
            key = (t.name, pd.index)
            if not may_write:  # before the batch is even read (docs/DESIGN.md §9)
                errors[key] = (ErrorCode.topic_authorization_failed, None)
                continue
            records = pd.records
            checked = _checked_batch(topic, pd)  # the partition's one walk over its bytes, after the topic check
            if not isinstance(checked, rec.BatchHeader):
                errors[key] = checked
                continue
            producer = checked.producer_id, checked.producer_epoch, checked.is_transactional
            idempotent = producer[0] >= 0
            sequences = _sequences(checked) if idempotent else None
            seq_key = (producer[0], producer[1], t.name, pd.index) if sequences else None
            failure = _refusal(ctx, request, topic, pd.index)
            if failure is None and idempotent and producer[2]:
                failure = (ErrorCode.transactional_id_authorization_failed, "transactions are not supported")
            if failure is None and seq_key:
                skipped = ctx.producer_ids.refused_before(seq_key, sequences[0])
                if skipped is not None:
                    failure = (ErrorCode.not_leader_or_follower,  # see _GAP
                               f"sequence {sequences[0]} skips the refused batch at {skipped}: resend that first")
                    log.debug("producer %s/%s %s/%s: %s", producer[0], producer[1], t.name, pd.index, failure[1])
            if failure is None:
                chain = topic.partitions[pd.index]
                seg = chain.active
                leader = ctx.physical.leader(seg.cluster, seg.topic, seg.partition)
                if seg.cluster in _pid_failures:
                    failure = (ErrorCode.not_leader_or_follower, f"cluster {seg.cluster} unreachable")
                elif leader is None:
                    ctx.physical.request_refresh(seg.cluster)
                    if _leader_waits < LEADER_WAITS:
                        unknown_leader = True
                        continue
                    failure = (ErrorCode.leader_not_available, None)
            if failure is not None:
                errors[key] = failure
                if seq_key:
                    ctx.producer_ids.note_refused(seq_key, sequences[0])
                continue
            if idempotent:
                seg_id = (seg.cluster, seg.topic, seg.partition, seg.phys_start)
                if seq_key:
                    verdict = _against_sealed_floor(ctx, seq_key, seg_id, sequences)
                    if verdict is _ASK_FLOOR:
                        missing_floors.append((seq_key, seg_id))
                        continue
                    if verdict is not None:
                        log.debug("producer %s/%s %s/%s: %s", producer[0], producer[1], t.name, pd.index, verdict[1])
                        errors[key] = verdict
                        if verdict[0] == ErrorCode.duplicate_sequence_number:
                            ctx.producer_ids.note_written(seq_key, *sequences)
                        else:
                            ctx.producer_ids.note_refused(seq_key, sequences[0])
                        continue
                mapped = ctx.producer_ids.physical(producer[0], producer[1], seg.cluster, seg.topic, seg.partition,
                                                   seg.phys_start, sequences)
                if mapped is None:
                    missing_pids.add((producer[0], producer[1], seg.cluster))
                    continue
                if seq_key:
                    ctx.producer_ids.note_forwarded(seq_key, seg_id, mapped[0])
                records = rec.with_producer(records, checked, mapped[0], mapped[1])
                producer_key = producer[0]
                physical = (seg.cluster, seg.topic, seg.partition, mapped[0])
                confirmed = ctx.producer_ids.confirmed(physical)
                unconfirmed |= not confirmed
                if sequences and log.isEnabledFor(logging.DEBUG):
                    log.debug("producer %s/%s %s/%s: sequences %s..%s -> %s as physical %s%s", producer[0],
                              producer[1], t.name, pd.index, sequences[0], sequences[1] - 1, physical[:3],
                              mapped[0], "" if confirmed else " (first batch there)")
            else:
                physical, confirmed = None, True
            groups.setdefault((seg.cluster, leader), []).append(
                _Part(t.name, pd.index, chain, seg, records, seq_key, *(sequences or (-1, -1)), physical, confirmed))

    if unknown_leader:  # wait for the refresh behind a barrier rather than fail the batch (a gap)
        return Plan([], lambda _: handle(ctx, header, request, _pid_failures, _leader_waits + 1), barrier=True,
                    delay_s=min(0.02 * 2 ** _leader_waits, 0.25))
    if missing_floors:
        return _read_sealed_floors(ctx, header, request, missing_floors, _pid_failures)
    if missing_pids:
        return _obtain_physical_ids(ctx, header, request, sorted(missing_pids), _pid_failures)

    # Always acks=all upstream, always awaited (see _upstream_request): the drain then sees every write in flight.
    calls = [Call(Broker(cluster, node), _upstream_request(request, parts), ordering_key=producer_key)
             for (cluster, node), parts in groups.items()]
    parts_per_call = list(groups.values())

    def finish(results: list):
        answers: dict[tuple[str, int], dict] = {k: {"error_code": code, "base_offset": -1, "error_message": msg}
                                                for k, (code, msg) in errors.items()}
        for parts, result in zip(parts_per_call, results, strict=True):
            answers.update(_translate(ctx, parts, result))
        if request.acks == 0:  # the client wants no answer; the broker's was awaited all the same
            return NO_RESPONSE
        return build(response_type(0, version), {"responses": [
            {"name": name, "partition_responses": [{"index": p, **answers[(name, p)]} for p in parts]}
            for name, parts in order]})

    if not calls:
        return finish([])
    # The first batch of a physical id on a partition goes alone: the broker takes any first sequence from
    # an id it does not know, so a later batch must not reach it before this one's answer (see _translate).
    return Plan(calls, finish, barrier=unconfirmed)


def _checked_batch(topic, pd) -> rec.BatchHeader | tuple[ErrorCode, str | None]:
    """The partition's batch, checked before anything reads or rewrites it (a rewrite recomputes the CRC, so
    a corrupt batch would reach the broker as a valid one), or the error for this partition alone."""
    if topic is None or not 0 <= pd.index < topic.partition_count:
        return ErrorCode.unknown_topic_or_partition, None
    try:
        return rec.produce_batch(pd.records)
    except rec.InvalidRecords as e:
        return ErrorCode.invalid_record, str(e)
    except rec.RecordsError as e:
        return ErrorCode.corrupt_message, str(e)


def _sequences(batch: rec.BatchHeader) -> tuple[int, int] | None:
    """(first sequence, sequence after the last record) of an idempotent partition's batch."""
    if batch.base_sequence < 0:
        return None
    return batch.base_sequence, batch.base_sequence + batch.last_offset_delta + 1


def _refusal(ctx: Context, request, topic, index: int) -> tuple[ErrorCode, str | None] | None:
    if request.transactional_id is not None:
        return ErrorCode.transactional_id_authorization_failed, "transactions are not supported by fedkafka yet"
    if topic is None or not 0 <= index < topic.partition_count:
        return ErrorCode.unknown_topic_or_partition, None
    if not ctx.lease_valid:
        return ErrorCode.not_leader_or_follower, "proxy lease expired"
    chain = topic.partitions[index]
    if chain.frozen:
        return ErrorCode.not_leader_or_follower, "partition frozen for a segment move"
    cluster = ctx.view.clusters.get(chain.active.cluster)
    if cluster is None or cluster.state != ClusterState.ACTIVE or not ctx.physical.reachable(cluster.id):
        return ErrorCode.not_leader_or_follower, f"cluster {chain.active.cluster} not writable"
    return None


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
    first_write_here = ctx.producer_ids.earlier_write(seq_key, seg_id) is not None
    if floor is UNASKED:
        return _ASK_FLOOR if first_write_here else None
    if floor is None:
        return None
    first, end = sequences
    if end <= floor:
        return ErrorCode.duplicate_sequence_number, f"sequences {first}..{end - 1} were written before the seal"
    if first > floor and first_write_here:
        return _GAP, f"sequence {first} skips {floor}: resend from {floor}"
    return None


def _read_sealed_floors(ctx: Context, header, request, missing: list[tuple[SeqKey, SegmentId]],
                        failures: frozenset[str]):
    """Ask the broker of each producer's sealed segment (DescribeProducers) how far the producer got there,
    behind a barrier, then route again. Unknown (unreachable, producer state expired): no floor."""
    calls, asked = [], []
    for seq_key, seg_id in missing:
        write = ctx.producer_ids.earlier_write(seq_key, seg_id)
        cluster, topic, partition, _start = write.segment
        leader = ctx.physical.leader(cluster, topic, partition)
        if leader is None or not ctx.physical.reachable(cluster):
            ctx.producer_ids.set_floor(seq_key, seg_id, None)
            continue
        ask = TopicRequest(name=TopicName(topic), partition_indexes=(i32(partition),))
        calls.append(Call(Broker(cluster, leader), DescribeProducersRequest(topics=(ask,)), timeout_s=5.0))
        asked.append((seq_key, seg_id, write))
    if not calls:
        return handle(ctx, header, request, failures)

    def finish(results: list):
        for (seq_key, seg_id, write), result in zip(asked, results, strict=True):
            floor = _sequence_after(result, write)
            log.debug("producer %s/%s %s/%s: sealed segment %s holds its sequences below %s", *seq_key,
                     write.segment, floor)
            ctx.producer_ids.set_floor(seq_key, seg_id, floor)
        return handle(ctx, header, request, failures)

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
                    return state.last_sequence + 1
    return None


PID_ATTEMPTS = 12  # about 6 s of backoff: a fresh cluster answers COORDINATOR_LOAD_IN_PROGRESS at first


def _obtain_physical_ids(ctx: Context, header, request, missing: list[tuple[int, int, str]],
                         failures: frozenset[str], attempt: int = 0):
    """One InitProducerId per (logical id, epoch, cluster) on that cluster, then route again.

    Retriable errors are retried here (a barrier: the client's later requests wait) rather than answered:
    failing batch n while batch n+1 of the same partition goes through would break the broker's sequence
    check for good (OUT_OF_ORDER_SEQUENCE_NUMBER on the retry of n).
    """
    req = InitProducerIdRequest(transactional_id=None, transaction_timeout=i32Timedelta.parse(
        datetime.timedelta(milliseconds=60000)), producer_id=i64(-1), producer_epoch=i16(-1))
    calls = [Call(AnyBroker(cluster), req) for _, _, cluster in missing]

    def finish(results: list):
        failed = set(failures)
        retry = []
        for key, r in zip(missing, results, strict=True):
            logical, epoch, cluster = key
            if not isinstance(r, UpstreamError) and r.error_code == ErrorCode.none:
                ctx.producer_ids.store_physical(logical, epoch, cluster, r.producer_id, r.producer_epoch)
            elif attempt + 1 < PID_ATTEMPTS and (isinstance(r, UpstreamError) or r.error_code.retriable):
                retry.append(key)
            else:
                failed.add(cluster)
                ctx.physical.request_refresh(cluster)
        if retry:
            plan = _obtain_physical_ids(ctx, header, request, retry, frozenset(failed), attempt + 1)
            plan.delay_s = min(0.05 * 2 ** attempt, 1.0)
            return plan
        return handle(ctx, header, request, frozenset(failed))

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


def _upstream_request(request, parts: list[_Part]):
    by_topic: dict[str, list[dict]] = {}
    for part in parts:
        by_topic.setdefault(part.seg.topic, []).append({"index": part.seg.partition, "records": part.records})
    req_t = request_type(0, type(request).__version__)
    timeout = min(request.timeout, datetime.timedelta(milliseconds=MAX_UPSTREAM_PRODUCE_TIMEOUT_MS))
    return build(req_t, {"transactional_id": None, "acks": UPSTREAM_ACKS, "timeout": timeout,
                         "topic_data": [{"name": n, "partition_data": pd} for n, pd in by_topic.items()]})


def _translate(ctx: Context, parts: list[_Part], result) -> dict[tuple[str, int], dict]:
    if isinstance(result, UpstreamError):
        ctx.physical.request_refresh(result.cluster)
        for p in parts:
            if not p.seq_key:
                continue
            log.debug("producer %s/%s %s/%s: sequence %s lost its answer: %s", *p.seq_key, p.first_seq, result.reason)
            if not p.confirmed:  # no broker state yet: only the client's resend can tell
                ctx.producer_ids.note_refused(p.seq_key, p.first_seq)
        return {(p.topic, p.partition): {"error_code": ErrorCode.request_timed_out, "base_offset": -1,
                                         "error_message": result.reason} for p in parts}
    physical = {(t.name, pr.index): pr for t in result.responses for pr in t.partition_responses}
    out = {}
    for part in parts:
        pr = physical.get((part.seg.topic, part.seg.partition))
        if pr is None:
            out[(part.topic, part.partition)] = {"error_code": ErrorCode.unknown_server_error, "base_offset": -1,
                                                 "error_message": "cluster left the partition out of its answer"}
            continue
        if pr.error_code in (ErrorCode.not_leader_or_follower, ErrorCode.unknown_topic_or_partition):
            ctx.physical.request_refresh(part.seg.cluster)
        if part.seq_key:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("producer %s/%s %s/%s: sequence %s answered %s at %s", *part.seq_key, part.first_seq,
                          pr.error_code.name, pr.base_offset)
            if pr.error_code in (ErrorCode.none, ErrorCode.duplicate_sequence_number):
                ctx.producer_ids.note_written(part.seq_key, part.first_seq, part.end_seq)
                ctx.producer_ids.confirm(part.physical)
            elif pr.error_code not in _MAYBE_WRITTEN or not part.confirmed:
                ctx.producer_ids.note_refused(part.seq_key, part.first_seq)
                if pr.error_code == ErrorCode.out_of_order_sequence_number:
                    log.info("producer %s/%s %s/%s: %s answered OUT_OF_ORDER_SEQUENCE_NUMBER for sequence %s",
                             *part.seq_key, part.seg.cluster, part.first_seq)
        out[(part.topic, part.partition)] = {
            "error_code": pr.error_code,
            "base_offset": part.seg.to_logical(pr.base_offset) if pr.base_offset >= 0 else pr.base_offset,
            # fields absent from older versions are simply left out (build() drops what a version lacks)
            "log_append_time": getattr(pr, "log_append_time", None),
            "log_start_offset": _logical_start(part, getattr(pr, "log_start_offset", -1)),
            "record_errors": getattr(pr, "record_errors", ()), "error_message": getattr(pr, "error_message", None),
        }
    return out


# Broker errors after which the leader may hold the batch (acks=all replication timed out): not a gap once
# the broker checks the id's sequences (a resend of it is then deduplicated, a later batch refused by the
# broker). Before that, the batch is refused from the proxy's side too: the client resends it first, and the
# broker deduplicates that resend against the state the batch left if it was written after all.
_MAYBE_WRITTEN = frozenset({ErrorCode.request_timed_out, ErrorCode.not_enough_replicas_after_append})


def _logical_start(part: _Part, physical_start: int) -> int:
    """Log start in logical space: inside the active segment when older data expired, else the chain's start."""
    if physical_start < 0:
        return physical_start
    first = part.chain.segments[0]
    if len(part.chain.segments) == 1 or physical_start > part.seg.phys_start:
        return part.seg.to_logical(max(physical_start, part.seg.phys_start))
    return first.logical_base
