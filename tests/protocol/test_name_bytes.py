"""records._name_bytes keeps the encoded topic names and client ids it writes; clients choose those names (an
answer echoes the names of topics that do not exist), so what it keeps must stay bounded and useful."""

from __future__ import annotations

import pytest

from fedkafka.protocol import records


@pytest.fixture(autouse=True)
def _empty_cache():
    records._NAMES.clear()
    yield
    records._NAMES.clear()


@pytest.mark.parametrize("flexible", [False, True])
def test_a_name_is_written_the_same_whether_kept_or_not(flexible):
    for name in ["orders", None, "x" * 249, "y" * 300, "é" * 10]:
        assert records._name_bytes(name, flexible) == records._string_bytes(name, flexible)
        assert records._name_bytes(name, flexible) == records._string_bytes(name, flexible)  # kept, if it is


def test_a_name_no_topic_can_have_is_not_kept():
    """A client naming a 256 KiB topic in every request would otherwise fill the process with them."""
    records._name_bytes("t" * 262_144, True)
    records._name_bytes("t" * 250, True)
    kept = [len(name) for name, _ in records._NAMES]  # lengths: a failure must not print 256 KiB names
    assert kept == []
    records._name_bytes("t" * 249, True)
    assert [len(name) for name, _ in records._NAMES] == [249]


def test_names_invented_by_the_thousand_do_not_keep_a_real_name_out():
    for n in range(records._MAX_NAMES + 10):
        records._name_bytes(f"invented-{n}", True)
    assert len(records._NAMES) <= records._MAX_NAMES
    records._name_bytes("orders", True)
    assert ("orders", True) in records._NAMES
