"""The fuzz harness's own correctness: valid frames are exactly what kio writes, lies land where they claim,
the stream is deterministic per seed, and crash files replay what was sent."""

from __future__ import annotations

import io
import json
import random
import socket
import struct
import subprocess
import sys

import pytest
from kio.serial import entity_writer

from fedkafka.fuzz import generator, mutate, records
from fedkafka.fuzz.driver import Budget, Record, Recorder
from fedkafka.fuzz.environment import Service
from fedkafka.fuzz.frames import Values, build_frame, request_schema
from fedkafka.fuzz.generator import Generator, Send
from fedkafka.fuzz.httpfuzz import WRITES, HttpGenerator
from fedkafka.fuzz.tokens import DATA, LEN, Tok, serialize, uvarint
from fedkafka.kafka.cluster import free_port
from fedkafka.protocol import codec, consumer_protocol
from fedkafka.protocol.records import crc_ok, iter_batches

# What a proxy of role `both` implements (handlers' API_KEYS), Produce from v0 as advertised.
TABLE = {0: (0, 12), 1: (4, 12), 2: (1, 8), 3: (1, 12), 8: (2, 9), 9: (1, 9), 10: (0, 6), 11: (0, 9), 12: (0, 4),
         13: (0, 5), 14: (0, 5), 15: (0, 6), 16: (0, 5), 18: (0, 4), 22: (0, 5), 23: (2, 4), 32: (1, 4), 42: (0, 2),
         47: (0, 0), 60: (0, 1)}
VALUES = Values(topics={"fuzz-a": 4, "fuzz-b": 1}, groups=["g1", "g2"], client_ids=["fuzz-p"])
ALL_VERSIONS = [(k, v) for k, (lo, hi) in TABLE.items() for v in range(lo, hi + 1) if request_schema(k, v)]


def kio_bytes(payload: bytes) -> bytes:
    header, body = codec.decode_request(payload)
    buf = io.BytesIO()
    entity_writer(type(header))(buf, header)
    entity_writer(type(body))(buf, body)
    return buf.getvalue()


@pytest.mark.parametrize(("api_key", "version"), ALL_VERSIONS)
def test_valid_frames_are_byte_for_byte_what_kio_writes(api_key, version):
    for seed in range(12):
        frame = build_frame(random.Random(seed), api_key, version, seed, VALUES)
        payload = frame.payload()
        assert kio_bytes(payload) == payload
        assert codec.peek_header(payload) == (api_key, version, seed)


def test_valid_produce_carries_real_batches_and_join_group_real_subscriptions():
    produce = build_frame(random.Random(3), 0, 9, 1, VALUES)
    _, body = codec.decode_request(produce.payload())
    for topic in body.topic_data:
        assert topic.name in VALUES.topics or topic.name in ("", "no-such-topic", "x" * 300, "__consumer_offsets",
                                                             "a/b", "ü")
        for part in topic.partition_data:
            assert [crc_ok(part.records, h) for h in iter_batches(part.records)] == [True] * len(
                list(iter_batches(part.records)))
    join = build_frame(random.Random(4), 11, 9, 1, VALUES)
    _, body = codec.decode_request(join.payload())
    for protocol in body.protocols:  # the proxy's own decoder understands it (and renames its topics)
        renamed = consumer_protocol.rename_subscription(protocol.metadata, lambda t: "shadow-" + t)
        assert renamed != protocol.metadata or b"\x00\x00\x00\x00" in protocol.metadata


def test_a_length_lie_changes_only_that_token():
    frame = build_frame(random.Random(1), 3, 12, 1, VALUES)  # Metadata v12: compact topic array
    before = frame.payload()
    count = next(t for t in frame.body if t.path == "topics#")
    count.value = 10**10 + 1
    after = frame.payload()
    assert uvarint(10**10 + 1) in after and len(after) == len(before) - 1 + len(uvarint(10**10 + 1))


def test_mutations_describe_a_change_and_leave_valid_frames_alone():
    rng = random.Random(7)
    changed = 0
    for i in range(300):
        frame = build_frame(rng, *rng.choice(ALL_VERSIONS), i, VALUES)
        before = frame.payload()
        what = mutate.mutate_tokens(rng, frame.body)
        assert what
        changed += frame.payload() != before
    assert changed > 280  # a lie may rarely equal the truth (a random number drawn equal)


def test_uvarint_and_overlong_encodings():
    assert uvarint(0) == b"\x00" and uvarint(300) == b"\xac\x02"
    tokens = [Tok(LEN, "uvarint", 5, "x")]
    assert mutate.overlong_varint(random.Random(2), tokens)
    raw = serialize(tokens)
    assert len(raw) > 1 and raw[0] & 0x80  # still a varint prefix, longer than needed (or unterminated)


def test_record_batch_lies_keep_or_break_the_crc_as_described():
    valid = records.valid_batch(random.Random(1), 3)
    (header,) = iter_batches(valid)
    assert header.record_count == 3 and crc_ok(valid, header)
    rng = random.Random(5)
    kinds = {records.batches(rng, True)[1].split(" ")[0] for _ in range(200)}
    assert {"second-batch", "truncated", "stale"} <= kinds


def test_the_stream_is_deterministic_per_seed_and_worker():
    def stream(seed, worker):
        gen = Generator(seed, worker, TABLE, VALUES)
        return [gen.next().data for _ in range(300)]

    assert stream(9, 0) == stream(9, 0)
    assert stream(9, 0) != stream(9, 1) != stream(10, 0)


def test_the_stream_has_every_mode_and_framing_lies_are_real():
    gen = Generator(1, 0, TABLE, VALUES)
    sends = [gen.next() for _ in range(2000)]
    assert {s.mode for s in sends} == {"frame", "pipeline", "slow", "slowloris", "garbage", "truncated", "oversize"}
    for send in sends:
        size = struct.unpack_from(">i", send.data)[0]
        if send.mode == "oversize":
            assert size < 0 or size > 100 * 1024 * 1024
        elif send.mode == "truncated":
            assert size > len(send.data) - 4
        elif send.mode in ("frame", "slow", "slowloris", "garbage"):
            assert size == len(send.data) - 4
    apis = {s.api.split("/")[0] for s in sends if s.api}
    assert apis == {str(k) for k in TABLE}


def test_http_writes_with_the_real_token_never_carry_a_valid_body():
    gen = HttpGenerator(3, 0, "secret-token")
    for _ in range(3000):
        req = gen.next("127.0.0.1:1")
        if req.auth == "valid" and req.method in WRITES:
            assert "body=plausible" not in req.desc
            assert req.method != "DELETE" or req.path.startswith("/v1/topics/nx-")
            assert "producer-id-blocks" not in req.path  # allocates ids: a write without a body


def test_crash_files_keep_the_bytes_and_mark_suspects(tmp_path):
    recorder = Recorder(keep=4)
    sends = [Send("frame", bytes([i]) * 10, [i], f"send {i}", "3/12") for i in range(6)]
    recs = [recorder.sent("pproxy", s) for s in sends]
    for rec in recs[:-1]:
        rec.outcome, rec.done_at = "answered", 0.0
    kept = recorder.suspects(["pproxy"], died_at=100.0)
    assert [r.seq for r in kept] == [3, 4, 5, 6] and [r.is_suspect for r in kept] == [False, False, False, True]
    path = tmp_path / "crash.json"
    path.write_text(json.dumps([r.to_dict() for r in kept]))
    again = [Record.from_dict(d) for d in json.loads(path.read_text())]
    assert [r.data for r in again] == [s.data for s in sends[2:]]


def test_the_frame_budget_counts_every_frame_of_a_burst_and_never_overshoots():
    budget = Budget(frames=10, deadline=float("inf"))
    assert budget.take(8) and not budget.take(3) and budget.take(2)
    assert not budget.open() and not budget.take(1)
    unlimited = Budget(frames=None, deadline=float("inf"))
    assert all(unlimited.take(5) for _ in range(1000))
    assert not Budget(frames=None, deadline=0.0).open()


def test_a_valid_batch_written_directly_is_the_token_walk_s_batch():
    """The fast path draws and writes exactly what the token path does, so seeds replay the same streams."""
    for seed in range(300):
        fast, slow = random.Random(seed), random.Random(seed)
        count = [None, 1, 3][seed % 3]
        expected = records.seal(records.batch_tokens(slow, count or slow.choice([1, 1, 2, 5])))
        assert records.valid_batch(fast, count) == expected
        assert fast.getstate() == slow.getstate()


def test_an_acks_of_zero_made_by_shifted_bytes_expects_no_answer():
    """The acks token still says 1, but the string length before it now swallows its bytes, and the proxy
    reads acks=0 from the ones after: no answer is due (the harness used to wait 5 s and report a hang)."""
    frame = build_frame(random.Random(1), 0, 3, 1, VALUES)
    tokens = frame.body
    at = next(i for i, t in enumerate(tokens) if t.path == "acks")
    tokens[at].value = 1
    assert generator._expects_answer(frame)
    tokens[0].value = 2  # transactional_id#: -1 (null) -> 2 bytes, the acks field's ("\x00\x01")
    tokens.insert(at + 1, Tok(DATA, "raw", b"\x00\x00", "inserted"))
    assert not generator._expects_answer(frame)


def test_a_service_is_up_only_when_every_port_it_serves_listens(tmp_path):
    """The name service opens its Kafka port before its HTTP one: a run that probed HTTP once the Kafka port
    answered found it refused (CI, 0.3 s into a fuzz run)."""
    first, second = free_port(), free_port()
    script = ("import socket, time\n"
              f"a = socket.create_server(('127.0.0.1', {first}))\n"
              "time.sleep(1.0)\n"
              f"b = socket.create_server(('127.0.0.1', {second}))\n"
              "time.sleep(60)\n")
    svc = Service("two-ports", [], first, tmp_path / "log", extra_ports=(second,))
    svc.proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        svc.wait_listening()
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", second)) == 0
    finally:
        svc.proc.kill()
        svc.proc.wait()
