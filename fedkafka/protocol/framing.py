"""Length-prefixed frames with a hard size limit (Kafka's `socket.request.max.bytes`)."""

from __future__ import annotations

import asyncio
import struct

# Kafka's socket.request.max.bytes is 100 MiB; a default client's largest request is a ~1 MB produce
# (librdkafka message.max.bytes, Java max.request.size), so 16 MiB is ample and costs far less per connection.
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

_SIZE = struct.Struct(">i")


class FrameError(Exception):
    """The peer sent something that is not a frame we accept; the connection must be closed."""


async def read_frame(reader: asyncio.StreamReader, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes | None:
    """Next frame's payload (without the size prefix), or None on a clean end of stream.

    Raises FrameError for an oversize, negative or truncated frame: checked *before* reading the body,
    so a frame that claims 2 GB costs nothing.
    """
    try:
        prefix = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise FrameError(f"truncated size prefix ({len(e.partial)} of 4 bytes)") from None
    (size,) = _SIZE.unpack(prefix)
    if size < 0 or size > max_bytes:
        raise FrameError(f"frame size {size} outside 0..{max_bytes}")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as e:
        raise FrameError(f"truncated frame ({len(e.partial)} of {size} bytes)") from None


def with_size_prefix(payload: bytes | bytearray | memoryview) -> bytes:
    return _SIZE.pack(len(payload)) + bytes(payload)


def size_prefix(length: int) -> bytes:
    return _SIZE.pack(length)
