"""The upstream frame reader (`upstream.FrameProtocol`): every frame whole and in order, however the bytes
arrive; an oversize frame or a connection cut inside a frame ends the connection with a reason."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import tracemalloc

import pytest
from example_counts import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedkafka.protocol import records
from fedkafka.protocol.framing import FrameError
from fedkafka.proxy.core.limits import ByteBudget
from fedkafka.proxy.core.upstream import FrameProtocol, UpstreamConnection

# a large frame's buffer comes from records.frame_buffer: every test here runs with its pure-Python code
# (zero-filled) and its compiled twin (uninitialised) (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("records_implementation")


class _SmallStaging(FrameProtocol):
    STAGING_BYTES = 64  # frames above 60 bytes take the own-buffer path


class _Transport:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


def _reader(max_bytes: int = 1 << 20) -> tuple[FrameProtocol, list[bytes], list[BaseException]]:
    frames: list[bytes] = []
    lost: list[BaseException] = []
    proto = _SmallStaging(lambda f: frames.append(bytes(f)), lost.append, max_bytes)
    proto.connection_made(_Transport())
    return proto, frames, lost


def _arrive(proto: FrameProtocol, data: bytes, cuts: list[int]) -> None:
    """As the event loop does: read into the protocol's buffer, never more than it offers, split at `cuts`."""
    pieces, last = [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts} | {len(data)}):
        pieces.append(data[last:cut])
        last = cut
    for piece in pieces:
        while piece:
            buf = proto.get_buffer(-1)
            assert len(buf) > 0
            n = min(len(buf), len(piece))
            buf[:n] = piece[:n]
            proto.buffer_updated(n)
            piece = piece[n:]


def _framed(payloads: list[bytes]) -> bytes:
    return b"".join(struct.pack(">i", len(p)) + p for p in payloads)


@settings(max_examples=examples(200), deadline=None)
@given(payloads=st.lists(st.binary(min_size=4, max_size=300), max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20))
def test_every_frame_arrives_whole_and_in_order_however_the_bytes_are_split(payloads, cuts):
    proto, frames, lost = _reader()
    _arrive(proto, _framed(payloads), cuts)
    assert frames == payloads
    assert lost == []


def test_a_frame_larger_than_the_staging_buffer_is_read_into_its_own_buffer_between_small_ones():
    proto, frames, lost = _reader()
    payloads = [b"a" * 10, bytes(range(256)) * 40, b"b" * 5, b"c" * 61, b"d" * 4]
    _arrive(proto, _framed(payloads), [3, 17, 100, 9000, 10260])
    assert frames == payloads and lost == []


def test_staged_bytes_are_moved_without_a_copy_of_them_on_the_side():
    """A partial frame at the end of the full staging buffer moved to its front, and a large frame's staged head
    moved into its own buffer, are each one move: no buffer of their size is allocated on the way (a bytearray
    slice assignment copies a value that is not a bytearray first, bench/README.md "Native costs"). Counted with
    tracemalloc, not timed."""
    frames: list[bytes] = []
    proto = FrameProtocol(frames.append, lambda e: None)
    proto.connection_made(_Transport())
    staging = FrameProtocol.STAGING_BYTES
    first, partial, large = b"a" * 150_000, b"b" * 120_000, b"c" * (2 * staging)
    data = _framed([first, partial, large])
    _arrive(proto, data[:staging], [])  # `first` delivered, `partial` cut at the staging buffer's end
    rest = len(first) + 4 + len(partial) + 4 - staging
    _, end = _traced(proto, [])  # full: the unread tail (~106 000 bytes) moves to the front
    assert end < 4096
    _arrive(proto, data[staging:staging + rest], [])  # `partial` delivered: nothing staged
    head = data[staging + rest:staging + rest + 4 + 100_000]  # `large`'s size and first 100 000 bytes
    got, end = _traced(proto, [head])
    own = len(large)
    assert got == len(head)
    assert end < own + 4096  # its own buffer (when traced), and no copy of the head
    _arrive(proto, data[staging + rest + len(head):], [])
    assert frames == [first, partial, large]


def _traced(proto: FrameProtocol, pieces: list[bytes]) -> tuple[int, int]:
    """Bytes read into the protocol's buffers, each piece in one read, and the peak bytes allocated meanwhile."""
    tracemalloc.start()
    try:
        got = 0
        buf = proto.get_buffer(-1)
        for piece in pieces:
            buf[:len(piece)] = piece  # a view's slice assignment: one copy, nothing allocated
            proto.buffer_updated(len(piece))
            got += len(piece)
            buf = proto.get_buffer(-1)
        del buf
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_oversize_frame_ends_the_connection_before_its_body_is_read():
    proto, frames, lost = _reader(max_bytes=1000)
    _arrive(proto, _framed([b"ok!!"]) + struct.pack(">i", 1001), [])
    assert frames == [b"ok!!"]
    assert len(lost) == 1 and isinstance(lost[0], FrameError) and "1001" in str(lost[0])
    assert proto.transport.aborted


def test_a_connection_cut_inside_a_frame_is_named_as_such():
    proto, frames, lost = _reader()
    _arrive(proto, _framed([b"x" * 100])[:50], [])
    proto.connection_lost(None)
    assert frames == [] and isinstance(lost[0], FrameError)


def test_a_clean_close_between_frames_is_reported_once():
    proto, frames, lost = _reader()
    _arrive(proto, _framed([b"done"]), [])
    proto.connection_lost(None)
    proto.connection_lost(None)
    assert frames == [b"done"] and len(lost) == 1 and isinstance(lost[0], ConnectionError)


def test_a_handler_that_refuses_a_frame_ends_the_connection_with_its_reason():
    lost: list[BaseException] = []

    def refuse(_frame):
        raise ConnectionError("unexpected correlation id 7")

    proto = FrameProtocol(refuse, lost.append)
    proto.connection_made(_Transport())
    _arrive(proto, _framed([b"1234", b"5678"]), [])
    assert [str(e) for e in lost] == ["unexpected correlation id 7"] and proto.transport.aborted


def test_frames_reach_a_real_socket_reader_through_the_event_loop():
    """The same reader under the real event loop, over a real socket, a large frame among small ones."""
    payloads = [b"s" * 8, bytes(range(256)) * 4000, b"t" * 8]

    async def main():
        got: list[bytes] = []
        done = asyncio.get_running_loop().create_future()

        async def serve(_reader, writer):
            writer.write(_framed(payloads))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await asyncio.get_running_loop().create_connection(
            lambda: FrameProtocol(lambda f: got.append(bytes(f)), lambda r: done.set_result(r)), "127.0.0.1", port)
        reason = await done
        transport.close()
        server.close()
        return got, reason

    got, reason = asyncio.run(main())
    assert got == payloads and isinstance(reason, ConnectionError)


# frames above _SmallStaging's 60 bytes drawn as often as those below (st.binary alone seldom draws one that long)
_small_or_large = st.one_of(st.binary(min_size=4, max_size=60),
                            st.integers(61, 400).flatmap(lambda n: st.binary(min_size=n, max_size=n)))


@settings(max_examples=examples(100), deadline=None)
@given(payloads=st.lists(_small_or_large, min_size=1, max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
       keep=st.integers(min_value=0, max_value=3500))
@example(payloads=[b"x" * 100], cuts=[64], keep=103)  # a large frame's last byte never arrives
def test_bytes_a_large_frame_buffer_held_before_never_reach_a_frame_or_a_reason(payloads, cuts, keep):
    """records.frame_buffer may hand out memory holding an earlier answer's bytes: with every such buffer full of
    0xA5 first, the frames delivered are exactly the bytes received, and a connection cut inside a large frame
    delivers nothing of it."""
    def poisoned(size: int) -> bytearray:
        assert size > _SmallStaging.STAGING_BYTES - 4  # small frames never get their own buffer
        return bytearray(b"\xa5" * size)

    data = _framed(payloads)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "frame_buffer", poisoned)
        proto, frames, lost = _reader()
        _arrive(proto, data[:keep], cuts)
        proto.connection_lost(None)
    whole = [p for p, end in zip(payloads, _frame_ends(payloads), strict=True) if end <= keep]
    assert frames == whole
    assert len(lost) == 1 and b"\xa5" not in str(lost[0]).encode()


def _frame_ends(payloads: list[bytes]) -> list[int]:
    ends, at = [], 0
    for p in payloads:
        at += 4 + len(p)
        ends.append(at)
    return ends


def test_a_large_answer_is_charged_to_the_process_budget_while_it_arrives_and_given_back_when_delivered_or_lost():
    """From its size prefix (its buffer is allocated then) until it was handed on, or dropped with its connection,
    a large broker answer is held by nothing a client connection charges: the process' budget holds it."""
    budget = ByteBudget(1 << 20)
    sizes: list[int] = []
    proto = _SmallStaging(lambda f: sizes.append(budget.used), lambda _reason: None, 1 << 20, budget)
    proto.connection_made(_Transport())
    frame = _framed([b"x" * 1000])
    _arrive(proto, frame[:500], [])
    assert budget.used == 1000  # the whole buffer, allocated at once
    _arrive(proto, frame[500:] + _framed([b"small"]), [])
    assert sizes == [1000, 0] and budget.used == 0  # charged while handed on, then not (the answer is)
    _arrive(proto, frame[:500], [])
    assert budget.used == 1000
    proto.connection_lost(None)
    assert budget.used == 0


ANSWER_BYTES = 4 << 20
UNSENT_BYTES = 64 << 20  # far more than both sockets' buffers hold: most of it stays in the transport


async def _closed_while_the_broker_stops_reading() -> tuple[int, bool, int]:
    """A broker that started a large answer, then stopped reading its socket; the proxy's connection to it has
    requests it could not write yet and is closed (a request timed out, a drain, shutdown). Returns what stays
    charged, whether the connection was reported lost, and how many bytes the broker got once it read again."""
    loop = asyncio.get_running_loop()
    broker_side = loop.create_future()

    async def broker(reader, writer):
        writer.write(struct.pack(">i", ANSWER_BYTES) + b"\0" * (300 * 1024))  # the answer's start, no more
        await writer.drain()
        broker_side.set_result((reader, writer))

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    budget = ByteBudget(1 << 30)
    conn = UpstreamConnection("127.0.0.1", server.sockets[0].getsockname()[1], "broker", budget=budget)
    await conn.connect()
    reader, writer = await broker_side
    while not budget.used:  # the large answer arrives: charged from its buffer's allocation
        await asyncio.sleep(0.01)
    conn._transport.write(b"r" * UNSENT_BYTES)  # requests the broker does not read (yet)
    conn.close()
    for _ in range(50):
        await asyncio.sleep(0.01)
    charged, lost = budget.used, conn.closed and conn._transport.is_closing()
    received = 0
    with contextlib.suppress(ConnectionError):  # the broker reads again: what reaches it after the close
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):
            received += len(chunk)
    writer.transport.abort()
    server.close()
    return charged, lost, received


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_closed_connection_gives_back_its_half_read_answer_and_sends_none_of_its_failed_requests(loop):
    """close() used to stop reading and call connection_lost only once the write buffer was written: with a broker
    that does not read, the half-read answer stayed charged (and allocated) for good, and the requests whose calls
    had already failed would still reach the broker whenever it read again, after a retry elsewhere."""
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    charged, lost, received = run(_closed_while_the_broker_stops_reading())
    assert charged == 0 and lost
    assert received < UNSENT_BYTES // 2  # what the kernel had taken before the close, at most
