"""The Produce lane's compiled request step (`records.read_lane_request`, rust/fedkafka_speedups/src/lane.rs) against
the Python lane it short-cuts: over generated requests, the same frames to the broker, the same answers to the client
and the same requests left to the generic path, whether the step runs (the compiled twin of revision 7) or not (pure
Python); and the step taking what it must take, and nothing it must not.

The stand-in broker, view and dispatcher are test_produce_lane.py's."""

from __future__ import annotations

import pytest
from example_counts import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol.test_produce_frames import kio_request
from protocol.test_records_twins import using

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.core.observe import NULL_OBSERVER
from fedkafka.proxy.handlers import produce as produce_handler
from fedkafka.security.acl import AclBinding, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session
from proxy.test_produce_lane import PID, Broker, answers_of, batch, broker_answers, ok, proxy, run, scripted, view

pytestmark = pytest.mark.skipif(
    not rec.compiled_available() or rec._load_compiled().REVISION < rec._LANE_READ_REVISION,  # type: ignore[union-attr]
    reason="the compiled twin of revision 7 (read_lane_request) is not built")


def records_of(kind: str, n: int) -> bytes | None:
    """A partition's record set: what the lane forwards (plain, corrupt: its CRC is the broker's to check), what
    only the Python lane or the generic path may take (idempotent, transactional, none, malformed, two batches)."""
    if kind == "plain":
        return batch(n)
    if kind == "corrupt_crc":
        corrupt = bytearray(batch(n))
        corrupt[-1] ^= 0x01
        return bytes(corrupt)
    if kind == "idempotent":
        return batch(n, producer_id=PID, epoch=0, seq=0)
    if kind == "transactional":
        b = bytearray(batch(n, producer_id=PID, epoch=0, seq=0))
        b[22] |= 0x10  # attributes' transactional bit (its CRC is then wrong too: refused either way)
        return bytes(b)
    if kind == "none":
        return None
    if kind == "truncated":
        return batch(n)[:-3]
    return batch(n) + batch(n)  # two batches


KINDS = ["plain"] * 6 + ["idempotent"] * 3 + ["corrupt_crc", "transactional", "none", "truncated", "two"]


@st.composite
def requests(draw) -> bytes:
    """A client's Produce frame: mostly what a plain producer sends (one or two partitions of topic t), sometimes a
    partition or topic entry the lane leaves (another cluster's p2, an unknown partition or topic, a partition named
    twice, an entry of no partition), a batch it leaves, a transactional id or acks it does not take."""
    version = draw(st.integers(3, 12))
    acks = draw(st.sampled_from([-1, -1, 1, 1, 0, 2]))
    txn = draw(st.sampled_from([None] * 9 + ["tx"]))
    topics = []
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(["t"] * 5 + ["nope"]))
        indexes = draw(st.lists(st.sampled_from([0, 0, 1, 1, 2, 7]), min_size=0 if draw(st.integers(0, 9)) == 0
                                else 1, max_size=2))
        topics.append((name, [(i, records_of(draw(st.sampled_from(KINDS)), draw(st.integers(1, 3))))
                              for i in indexes]))
    timeout_ms = draw(st.sampled_from([0, 30_000, 200_000]))
    return codec.encode_request(kio_request(version, txn, acks, timeout_ms, topics), 5, "app")[4:]


async def twice(request: bytes, session: Session | None = None, authorization: bool = False, acls=(), answers=None,
                metrics: bool = True):
    """The request sent twice through one dispatcher (the first fills the route cache the compiled step reads): the
    broker's frames (sorted: a request of two clusters is two calls, answered in either order), both answers, and
    per request whether the lane took it and whether the compiled step read it. `answers`: the broker's, by
    physical partition (test_produce_lane.py's `broker_answers`; None: every write accepted). `metrics`: False, the
    dispatcher without a metrics observer (NULL_OBSERVER, the proxy's without an admin listener), which the lane
    does not call: the compiled step's request then has its topics read only for an answer other than a Written."""
    broker = await Broker(ok if answers is None else scripted(answers)).start()
    d = await proxy(view(acls=acls), broker, authorization=authorization)
    if not metrics:
        d.observer = NULL_OBSERVER
    d.producer_ids.store_physical(PID, 0, "c1", 555, 2)
    try:
        answers, counts = [], []
        for _ in range(2):
            before = (d.lane.taken, d.lane.compiled)
            answer = await (await d.start(request, 0, session))
            answers.append(bytes(answer) if isinstance(answer, (bytes, bytearray, memoryview)) else
                           (type(answer).__name__, str(answer)))  # None (acks=0) or a CloseConnection
            counts.append((d.lane.taken - before[0], d.lane.compiled - before[1]))
        return sorted(broker.frames), answers, counts
    finally:
        broker.close()


def of_a_producer_id(request: bytes) -> bool:
    """Whether a partition of the request holds a batch of a producer id (the compiled step leaves those)."""
    for t in rec.read_produce_request(request).topic_data:
        for pd in t.partition_data:
            try:
                if rec.produce_batch(pd.records).producer_id >= 0:
                    return True
            except rec.RecordsError:
                continue
    return False


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])  # sockets, loaded
@given(requests(), broker_answers(), st.booleans())
def test_the_compiled_steps_write_the_python_lane_s_frames_and_answers_and_leave_what_it_leaves(request, answers,
                                                                                                   metrics):
    """Both steps: the request's (`read_lane_request`) and the answer's (`lane_written`: the broker's answers drawn,
    errors, offsets below p2's segment (physical 10, logical 50) and answers left out among them), with a metrics
    observer and without (the lane then asks the compiled step's request for its topics only to translate an answer)."""
    with using("python"):
        python = run(lambda: twice(request, answers=answers, metrics=metrics))
    with using("compiled"):
        compiled = run(lambda: twice(request, answers=answers, metrics=metrics))
    assert compiled[:2] == python[:2]
    assert [taken for taken, _ in compiled[2]] == [taken for taken, _ in python[2]]  # the lane took the same
    assert [read for _, read in python[2]] == [0, 0]
    # the compiled step read the second request exactly when the lane took it and it is of no producer id (the
    # first: a miss in the empty table)
    assert [read for _, read in compiled[2]] == [0, int(python[2][1][0] == 1 and not of_a_producer_id(request))]


def test_the_compiled_step_reads_a_plain_request_once_its_routes_are_cached():
    request = codec.encode_request(kio_request(9, None, -1, 5000, [("t", [(0, batch(3)), (1, batch(2))])]), 5,
                                   "app")[4:]
    with using("compiled"):
        frames, answers, counts = run(lambda: twice(request))
    assert counts == [(1, 0), (1, 1)]  # the first read in Python (a miss), the second by the compiled step
    assert answers[0] == answers[1] and answers_of(answers[1]) == {0: (0, 100, 0, None), 1: (0, 101, 0, None)}
    assert frames[0] == frames[1] and len(frames) == 2


def test_an_idempotent_request_is_left_to_the_python_lane_which_rewrites_its_producer_id():
    """The compiled step takes no batch of a producer id, even with its partition's route cached: the Python lane (or
    the handler) rewrites it to the physical id (555) and does the producer's bookkeeping."""
    request = codec.encode_request(kio_request(9, None, -1, 5000, [("t", [(0, records_of("idempotent", 2))])]), 5,
                                   "app")[4:]
    with using("compiled"):
        frames, answers, counts = run(lambda: twice(request))
    assert [read for _, read in counts] == [0, 0] and len(frames) == 2
    assert [answers_of(a)[0][:2] for a in answers] == [(0, 100), (0, 100)]
    assert [rec.produce_batch(rec.read_produce_request(f).topic_data[0].partition_data[0].records).producer_id
            for f in frames] == [555, 555]


def test_with_authorization_the_compiled_step_reads_nothing_and_the_acls_decide():
    """The table holds no principal's routes: with authorization every request goes the Python lane, whose routes
    are the principal's (test_produce_lane.py's test_acls_and_the_principal_decide_each_route)."""
    acls = [AclBinding(ResourceType.TOPIC, "t", PatternType.LITERAL, "User:w", "*", Operation.WRITE, Permission.ALLOW)]
    request = codec.encode_request(kio_request(9, None, -1, 5000, [("t", [(0, batch())])]), 5, "app")[4:]
    writer = Session(principal="User:w", host="10.0.0.1")
    with using("compiled"):
        frames, answers, counts = run(lambda: twice(request, writer, True, acls))
    assert counts == [(1, 0), (1, 0)] and len(frames) == 2 and answers_of(answers[1])[0][:2] == (0, 100)


@st.composite
def lane_answers(draw):
    """A lane request of one partition (`produce.LaneProduce`) and its broker's answer frame."""
    version = draw(st.integers(3, 12))
    phys_start = draw(st.sampled_from([0, 0, 10]))
    delta = draw(st.sampled_from([0, 40, 2**63 - 20]))  # the last moves most offsets past an int64
    shift = (delta, phys_start, draw(st.none() | st.integers(0, 60)))
    upstream = produce_handler.LaneProduce(
        version, 30_000, (rec.ProduceTopicData("phys", (rec.ProducePartitionData(3, b""),)),),
        draw(st.integers(0, 2**31 - 1)), draw(st.sampled_from(["t", "a-topic.named_so"])), draw(st.integers(0, 9)),
        shift)
    answer = rec.ProducePartitionAnswer(
        draw(st.sampled_from([3, 3, 3, 4])), draw(st.sampled_from([0, 0, 0, 6, 3])),
        draw(st.sampled_from([-1, 0, 5, 10, 12, 2**40])), draw(st.sampled_from([-1, 1_700_000_000_000])),
        draw(st.sampled_from([-1, 0, 10, 11])),
        tuple(draw(st.lists(st.tuples(st.integers(0, 3), st.none() | st.text(max_size=4)), max_size=1))),
        draw(st.none() | st.text(max_size=6)))
    topic = draw(st.sampled_from(["phys", "phys", "other"]))
    frame = rec.produce_response_frame(version, 77, ((topic, (answer,)),), draw(st.sampled_from([0, 250])))
    return upstream, frame[4:], answer, topic


def usual(upstream, answer: rec.ProducePartitionAnswer, topic: str) -> bool:
    """Whether the compiled answer step must take the answer: the one partition's, offsets that fit an int64 once
    moved, not below the segment's logical base when the segment starts past 0, and no record errors in a flexible
    answer (those are read in Python)."""
    delta, phys_start, chain_base = upstream.shift
    base, start = answer.base_offset, answer.log_start_offset
    moved_base = base + delta if base >= 0 else base
    moved_start = start if start < 0 else (chain_base if chain_base is not None and start <= phys_start
                                           else max(start, phys_start) + delta)
    return topic == "phys" and answer.index == 3 and not (upstream.version >= 9 and answer.record_errors) and \
        moved_base < 2**63 and moved_start < 2**63 and (phys_start == 0 or moved_base >= phys_start + delta)


@settings(max_examples=examples(300), deadline=None)
@given(lane_answers())
def test_the_compiled_answer_step_answers_as_the_python_code_and_takes_the_usual_answer(case):
    upstream, frame, answer, topic = case
    with using("python"):
        python = upstream.read_response(frame)
    with using("compiled"):
        written = rec.lane_written(frame, upstream, produce_handler.Written)
        compiled = upstream.read_response(frame)
    assert type(compiled) is type(python)
    if isinstance(python, produce_handler.Written):
        assert (compiled.frame, compiled.error_code) == (python.frame, python.error_code)
    else:
        assert compiled == python and written is None
    taken = usual(upstream, answer, topic)
    assert (written is not None) == taken
    if taken:
        assert (written.frame, written.error_code) == (python.frame, python.error_code)


def cached_table():
    """The compiled step's route table as the lane fills it for `view()`'s t/0, t/1 (c1) and t/2 (c2)."""
    table = rec.lane_routes()
    for index in range(3):
        route = produce_handler.lane_route(view(), True, "t", index)
        table.insert("t", index, route, route.seg.topic, route.seg.partition)  # type: ignore[union-attr]
    return table


def request_fields(request) -> tuple:
    return (request.version, request.correlation_id, request.client_id, request.transactional_id, request.acks,
            request.timeout_ms, [(t.name, [(p.index, bytes(p.records)) for p in t.partition_data])
                                 for t in request.topic_data])


@pytest.mark.skipif(rec._lazy_lane is None, reason="the compiled twin of revision 8 (a LaneRequest) is not built")
@settings(max_examples=examples(300), deadline=None)
@given(requests(), st.sampled_from([None, 100_000, 3]))
def test_the_compiled_step_s_lazy_request_reads_the_request_the_full_step_makes(request, max_elements):
    """`read_lane_request(lazy=True)` (the lane's without a metrics observer): the same routes and broker request as
    the full step, and for a request of one partition a `LaneRequest` whose fields, and topics read from the frame
    when asked for, are the `ProduceRequestFrame`'s of the full step and of `read_produce_request` (within the same
    element limit)."""
    table = cached_table()
    full = rec.read_lane_request(request, max_elements, table, produce_handler.LANE_UPSTREAM)
    lazy = rec.read_lane_request(request, max_elements, table, produce_handler.LANE_UPSTREAM, True)
    assert (lazy is None) == (full is None)
    if full is None or lazy is None:
        return
    one = sum(len(t.partition_data) for t in full[0].topic_data) == 1  # lazy for one partition only
    assert type(lazy[0]) is (rec.LaneRequest if one else rec.ProduceRequestFrame)
    assert type(full[0]) is rec.ProduceRequestFrame
    assert lazy[1:] == full[1:]
    assert request_fields(lazy[0]) == request_fields(full[0]) == \
        request_fields(rec.read_produce_request(request, max_elements))
    assert lazy[0] == full[0] and full[0] == lazy[0] and lazy[0].topic_data is lazy[0].topic_data  # read once
