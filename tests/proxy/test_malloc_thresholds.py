"""The proxy pins glibc's malloc thresholds (server.pin_malloc_thresholds): megabyte buffers made and freed one
after another, as a fetch answer's moved record sets are, come from the heap instead of from fresh pages that
fault in one by one (counted as the process' minor page faults, not timed)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from fedkafka.proxy.core.server import pin_malloc_thresholds

ROUNDS = 100
COPIES = """
import sys
from pathlib import Path

from fedkafka.proxy.core.server import pin_malloc_thresholds

def faults():
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[7])

if sys.argv[1] == "pinned":
    assert pin_malloc_thresholds()
src = bytes(1 << 20)
before = faults()
for i in range({rounds}):
    a = bytearray(src)
    b = bytearray(src[: (1 << 20) - 4096 * (i % 7)])
    del a, b
print(faults() - before)
"""


def page_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", COPIES.format(rounds=ROUNDS), mode], env=env, check=True,
                         capture_output=True, text=True)
    return int(out.stdout)


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt and /proc only")
def test_megabyte_buffers_reuse_the_heap_once_pinned():
    pages_per_round = 2 * (1 << 20) // 4096  # two 1 MiB buffers a round, if each came from fresh pages
    assert page_faults("pinned") < ROUNDS * pages_per_round // 10
    assert page_faults("default") > ROUNDS * pages_per_round // 2  # what the proxy paid before


def test_an_operators_malloc_setting_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert pin_malloc_thresholds() is False
