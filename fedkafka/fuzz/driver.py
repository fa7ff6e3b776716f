"""Sending: one asyncio task per fuzz connection, a recorder of recent sends, and health probes.

A connection is reused until the peer closes it, so a lie can follow valid traffic on the same socket.
Every answer must carry the correlation id of its request, in order; a request left unanswered for
`answer_timeout` seconds (three times that for JoinGroup and SyncGroup) is counted per api, kept for the
corpus, and its connection dropped.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import struct
import time
from dataclasses import dataclass, field

from fedkafka.fuzz.generator import Generator, Send

MAX_ANSWER = 64 * 1024 * 1024


@dataclass
class Record:
    """One send as kept for the corpus: enough to replay it."""

    seq: int
    target: str
    mode: str
    api: str
    desc: str
    data: bytes
    sent_at: float
    outcome: str = "in-flight"
    done_at: float | None = None
    is_suspect: bool = False

    def suspect(self, died_at: float) -> bool:
        """Still in flight when the process died, or ended unanswered within the second before."""
        return self.done_at is None or (self.outcome != "answered" and self.done_at >= died_at - 1.0)

    def to_dict(self) -> dict:
        return {"seq": self.seq, "target": self.target, "mode": self.mode, "api": self.api, "desc": self.desc,
                "outcome": self.outcome, "suspect": self.is_suspect, "data_b64": base64.b64encode(self.data).decode()}

    @classmethod
    def from_dict(cls, d: dict) -> Record:
        return cls(d["seq"], d["target"], d["mode"], d.get("api", ""), d.get("desc", ""),
                   base64.b64decode(d["data_b64"]), 0.0, d.get("outcome", ""))


@dataclass
class Stats:
    frames: int = 0
    sends: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    unanswered_by_api: collections.Counter = field(default_factory=collections.Counter)
    unanswered_samples: list[str] = field(default_factory=list)
    hangs: list[Record] = field(default_factory=list)  # unanswered sends, kept whole for the corpus
    # well-formed requests (lies only inside record batches or consumer-protocol bytes) answered by a close;
    # the report leaves out those closed while a process was down or restarting
    dropped: list[Record] = field(default_factory=list)
    slowest_by_api: dict[str, float] = field(default_factory=dict)
    mismatched: list[str] = field(default_factory=list)
    connect_failures: int = 0
    per_target: collections.Counter = field(default_factory=collections.Counter)


class Recorder:
    """The last sends per target (with what is still in flight), so a crash can name its suspects."""

    def __init__(self, keep: int = 16):
        self.keep = keep
        self.seq = 0
        self.recent: dict[str, collections.deque[Record]] = collections.defaultdict(
            lambda: collections.deque(maxlen=keep))

    def sent(self, target: str, send: Send) -> Record:
        self.seq += 1
        rec = Record(self.seq, target, send.mode, send.api, send.desc, send.data, time.monotonic())
        self.recent[target].append(rec)
        return rec

    def suspects(self, targets: list[str], died_at: float) -> list[Record]:
        """The last sends to `targets`, oldest first; `is_suspect` marks the ones that may have killed."""
        found = sorted((r for t in targets for r in self.recent[t]), key=lambda r: r.seq)
        for rec in found:
            rec.is_suspect = rec.suspect(died_at)
        return found


class KafkaWorker:
    """One fuzz connection to one Kafka endpoint."""

    def __init__(self, target: str, address: tuple[str, int], gen: Generator, recorder: Recorder, stats: Stats,
                 answer_timeout: float = 5.0):
        self.target, self.address, self.gen = target, address, gen
        self.recorder, self.stats, self.answer_timeout = recorder, stats, answer_timeout
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def run(self, budget: Budget) -> None:
        try:
            while budget.open():
                send = self.gen.next()
                if not await self._connect():
                    continue
                if not budget.take(send.frames):
                    break
                rec = self.recorder.sent(self.target, send)
                self.stats.sends += 1
                self.stats.frames += send.frames
                self.stats.per_target[self.target] += send.frames
                rec.outcome = await self._exchange(send)
                rec.done_at = time.monotonic()
                if rec.outcome == "closed" and send.wellformed and not send.closes:
                    self._dropped(send, rec)
                self.stats.outcomes[rec.outcome] += 1
        finally:
            self._drop()

    def _dropped(self, send: Send, rec: Record) -> None:
        if len(self.stats.dropped) < 5000:
            self.stats.dropped.append(rec)

    async def _connect(self) -> bool:
        if self.conn is not None:
            return True
        try:
            self.conn = await asyncio.wait_for(asyncio.open_connection(*self.address), 3)
            return True
        except (OSError, TimeoutError):
            self.stats.connect_failures += 1
            await asyncio.sleep(0.2)
            return False

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn[1].close()
        self.conn = None

    async def _exchange(self, send: Send) -> str:
        assert self.conn is not None  # run() connects before each exchange
        reader, writer = self.conn
        try:
            await self._write(writer, send)
            if send.closes:
                outcome = await self._expect_close(reader)
                self._drop()
                return outcome
            for corr in send.corrs:
                outcome = await self._answer(reader, corr, send)
                if outcome != "answered":
                    self._drop()
                    return outcome
            return "answered"
        except (ConnectionError, OSError):
            self._drop()
            return "closed"

    async def _write(self, writer: asyncio.StreamWriter, send: Send) -> None:
        data = send.data
        if send.mode == "slow":  # partial writes: a few bytes at a time
            step = max(1, len(data) // 8)
            for i in range(0, len(data), step):
                writer.write(data[i:i + step])
                await writer.drain()
                await asyncio.sleep(0.005)
        elif send.mode == "slowloris":  # the size prefix and a little, a pause, then the rest
            writer.write(data[:6])
            await writer.drain()
            await asyncio.sleep(1.0)
            writer.write(data[6:])
        else:
            writer.write(data)
        await writer.drain()
        if send.mode == "truncated":
            writer.write_eof()

    async def _expect_close(self, reader: asyncio.StreamReader) -> str:
        """After a send the peer should close (or, for acks=0, simply not answer)."""
        try:
            data = await asyncio.wait_for(reader.read(1 << 16), 2.0)
        except TimeoutError:
            return "no-answer"
        return "answered" if data else "closed"

    async def _answer(self, reader: asyncio.StreamReader, corr: int | None, send: Send) -> str:
        started = time.monotonic()
        # JoinGroup and SyncGroup wait for the group's rebalance (the frames ask for 6-10 s) before answering
        timeout = self.answer_timeout * (3 if send.api.split("/")[0] in ("11", "14") else 1)
        try:
            head = await asyncio.wait_for(reader.readexactly(4), timeout)
            (size,) = struct.unpack(">i", head)
            if size < 4 or size > MAX_ANSWER:
                return "bad-answer-size"
            body = await asyncio.wait_for(reader.readexactly(size), timeout)
        except TimeoutError:
            self.stats.unanswered_by_api[send.api] += 1
            if len(self.stats.unanswered_samples) < 30:
                self.stats.unanswered_samples.append(f"{self.target} {send.api} {send.mode}: {send.desc}"[:300])
            if len(self.stats.hangs) < 20:
                self.stats.hangs.append(Record(0, self.target, send.mode, send.api, send.desc, send.data, started,
                                               "timeout"))
            return "timeout"
        except asyncio.IncompleteReadError:
            return "closed"
        took = time.monotonic() - started
        if took > self.stats.slowest_by_api.get(send.api, 0.0):
            self.stats.slowest_by_api[send.api] = round(took, 3)
        (got,) = struct.unpack_from(">i", body)
        if corr is not None and got != corr:
            if len(self.stats.mismatched) < 20:
                self.stats.mismatched.append(f"{self.target} {send.api}: sent {corr}, answered {got}")
            return "mismatch"
        return "answered"


class Budget:
    """Frames left to send (None: unlimited) until the deadline."""

    def __init__(self, frames: int | None, deadline: float):
        self.left, self.deadline = frames, deadline

    def open(self) -> bool:
        return time.monotonic() < self.deadline and (self.left is None or self.left > 0)

    def take(self, frames: int) -> bool:
        """Whether `frames` more may go (a burst that would overshoot the budget is not sent)."""
        if not self.open() or (self.left is not None and frames > self.left):
            return False
        if self.left is not None:
            self.left -= frames
        return True


async def probe_kafka(address: tuple[str, int], probe_frames: list[bytes], timeout: float = 5.0) -> str | None:
    """None when every probe request is answered on a fresh connection within `timeout`; else why not."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
        for frame in probe_frames:
            writer.write(frame)
            await writer.drain()
            (size,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), timeout))
            await asyncio.wait_for(reader.readexactly(size), timeout)
        return None
    except TimeoutError:
        return "timeout"
    except (OSError, asyncio.IncompleteReadError, struct.error) as exc:
        return type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
