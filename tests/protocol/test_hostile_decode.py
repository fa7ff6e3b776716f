"""Frames that lie about their lengths are refused with DecodeError, never by the process dying.

kio's native reader sizes an array from its declared count before reading it; a failed allocation in native
code aborts the process (SIGABRT), which no `except` catches. So each frame is decoded in a child process
that must live on having seen the frame refused. One child decodes the frames one after another (an interpreter
and kio are started once, not per frame), reporting each as it goes; a frame that kills it is the one it did not
report, and the frames after it go to a fresh child. The child's address space is capped at 4 GiB, so a declared
2^31-element legacy array (16 GiB of pointers) aborts there as it would on a smaller machine.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from fedkafka.protocol import codec, consumer_protocol


def outcome(kind, frame):
    if kind in ("subscription", "assignment"):
        rename = getattr(consumer_protocol, f"rename_{kind}")
        same = rename(frame, lambda t: "x" + t) == frame  # not decodable: passed through unchanged
        return "refused" if same else "renamed a frame that lies about its lengths"
    try:
        if kind == "request":
            codec.decode_request(frame)
        else:
            codec.decode_response(codec.response_type(*map(int, kind.split("/"))), frame)
    except codec.DecodeError as e:
        print(e, file=sys.stderr)
        return "refused"
    return "decoded a frame that lies about its lengths"


for name, kind, frame in json.load(sys.stdin):
    print(name, outcome(kind, bytes.fromhex(frame)), flush=True)
"""


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def header(api_key: int, version: int, flexible: bool) -> bytes:
    """Request header v1/v2 with a null client id."""
    return struct.pack(">hhih", api_key, version, 7, -1) + (b"\x00" if flexible else b"")


HUGE_COMPACT = uvarint(2**32)  # 2^32 - 1 elements
HUGE_LEGACY = struct.pack(">i", 2**31 - 1)
FETCH_V12_FIXED = struct.pack(">iiiibii", -1, 500, 1, 1 << 20, 0, 0, -1)

FRAMES = {
    # a client's Metadata v12 naming 2^32 - 1 topics (the abort seen in production: 34 GB asked for)
    "metadata-topics": ("request", header(3, 12, True) + HUGE_COMPACT),
    # Produce v3 (not flexible): 2^31 - 1 topics
    "produce-topics": ("request", header(0, 3, False) + struct.pack(">hhi", -1, 1, 5000) + HUGE_LEGACY),
    # a lie nested inside a well-formed topic of a Fetch v12
    "fetch-partitions": ("request", header(1, 12, True) + FETCH_V12_FIXED + uvarint(2) + uvarint(2) + b"t"
                         + HUGE_COMPACT),
    # tagged fields: a count, and one field's size, past the end
    "header-tag-count": ("request", struct.pack(">hhih", 3, 12, 7, -1) + HUGE_COMPACT),
    "header-tag-size": ("request", struct.pack(">hhih", 3, 12, 7, -1) + uvarint(1) + uvarint(0) + HUGE_COMPACT),
    # a compact string claiming 4 GB
    "client-software-name": ("request", header(18, 3, True) + HUGE_COMPACT),
    # a broker's answer: Metadata v12 response listing 2^32 - 1 brokers
    "metadata-response-brokers": ("3/12", struct.pack(">ib", 7, 0) + struct.pack(">i", 0) + HUGE_COMPACT),
    # consumer-protocol bytes one group member sends, which the coordinator hands to every other member
    "subscription-topics": ("subscription", struct.pack(">h", 1) + HUGE_LEGACY),
    "subscription-owned": ("subscription", struct.pack(">h", 1) + struct.pack(">i", 1) + struct.pack(">h", 1)
                           + b"t" + struct.pack(">i", -1) + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"
                           + HUGE_LEGACY),
    "assignment-partitions": ("assignment", struct.pack(">h", 3) + struct.pack(">i", 1) + struct.pack(">h", 1)
                              + b"t" + HUGE_LEGACY),
}


def decode_in_children(names: list[str]) -> dict[str, str]:
    """Each frame's outcome ("refused" or what went wrong): decoded in a child until one kills it, whose exit
    and stderr are its outcome; the frames after it go to a fresh child."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    outcomes: dict[str, str] = {}
    while names:
        frames = json.dumps([(name, FRAMES[name][0], FRAMES[name][1].hex()) for name in names])
        child = subprocess.run([sys.executable, "-c", CHILD], input=frames, capture_output=True, text=True,
                               env=env, check=False)
        reported = dict(line.split(" ", 1) for line in child.stdout.splitlines())
        outcomes.update(reported)
        names = names[len(reported):]
        if names:  # the first one not reported killed the child
            outcomes[names.pop(0)] = f"child exited with {child.returncode}: {child.stderr[-2000:]}"
    return outcomes


@pytest.fixture(scope="module")
def outcomes() -> dict[str, str]:
    return decode_in_children(sorted(FRAMES))


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_a_frame_that_lies_about_a_length_is_refused_not_fatal(outcomes, name):
    assert outcomes[name] == "refused"
