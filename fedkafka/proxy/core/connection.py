"""One task pair per client connection: a reader that dispatches in order, a writer that answers in order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

from fedkafka.protocol import codec
from fedkafka.protocol.framing import DEFAULT_MAX_FRAME_BYTES, FrameError, read_frame
from fedkafka.proxy.core.dispatch import Dispatcher, ProtocolViolation

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64  # per connection; the reader waits when the writer lags (backpressure)
_slots = itertools.count()


class ClientConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dispatcher: Dispatcher,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self.reader, self.writer, self.dispatcher = reader, writer, dispatcher
        self.max_frame_bytes = max_frame_bytes
        self.slot = next(_slots)
        self.peer = writer.get_extra_info("peername")
        self._responses: asyncio.Queue = asyncio.Queue(MAX_IN_FLIGHT)
        self._read_task: asyncio.Task | None = None

    async def run(self) -> None:
        write_task = asyncio.create_task(self._write_loop())
        self._read_task = asyncio.create_task(self._read_loop())
        with contextlib.suppress(asyncio.CancelledError):  # stop_reading(): still answer what was read
            await self._read_task
        await self._responses.put(None)
        await write_task
        self.writer.close()

    def stop_reading(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await read_frame(self.reader, self.max_frame_bytes)
                if frame is None:
                    return
                await self._responses.put(await self.dispatcher.start(frame, self.slot))
        except (FrameError, ProtocolViolation, codec.DecodeError) as e:
            log.warning("closing client %s: %s", self.peer, e)
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("closing client %s after an internal error", self.peer)

    async def _write_loop(self) -> None:
        broken = False
        while True:
            pending = await self._responses.get()
            if pending is None:
                return
            try:
                frame = await pending
            except Exception:
                log.exception("request from %s failed; closing", self.peer)
                broken = True
                self.stop_reading()
                continue
            if frame is None or broken:
                continue
            try:
                self.writer.write(frame)
                await self.writer.drain()
            except (ConnectionError, OSError):
                broken = True
                self.stop_reading()
