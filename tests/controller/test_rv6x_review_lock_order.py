"""Review rv6x of merge 4e0cd1a: the order in which a registration and a heartbeat batch lock member rows.

A registration of worker i > 0 locks its node's row (worker 0's: `_refuse_takeover`, FOR UPDATE), then its own
row (`_proxy_row`, FOR UPDATE, new in 4e0cd1a; before, its UPDATE at the commit). A heartbeat batch
(`flush_heartbeats`) UPDATEs its renewals in the order they were taken: the worker's row, then the node's, if
worker i heartbeat first. On PostgreSQL the two then wait for each other; the server breaks the deadlock by
aborting one: the batch (every heartbeat in it answered 503) or the registration (a 500, not retried). SQLite
serializes both whole (BEGIN IMMEDIATE), so both go through.

Forced interleaving: the registration has locked the node's row; the batch (worker 1's renewal, then worker 0's)
runs in another thread and locks worker 1's row; the registration goes on to lock worker 1's row."""

from __future__ import annotations

import threading

NODE = "h:9092"


def _register(ctl, worker: int) -> dict:
    return ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1", worker=worker)


def _pending_renewals(ctl, member_ids: list[int]) -> None:
    """Renewals of `member_ids` taken in that order and not yet written (their batch is flushed by the test)."""
    flush = ctl.flush_heartbeats
    ctl.flush_heartbeats = lambda: None
    try:
        for member_id in member_ids:
            ctl.renew_lease(member_id, 0, {}, None)
    finally:
        ctl.flush_heartbeats = flush


def test_a_heartbeat_batch_and_a_worker_registration_both_go_through(make_api):
    ctl = make_api().controller
    node = _register(ctl, 0)
    worker = _register(ctl, 1)
    _pending_renewals(ctl, [worker["member_id"], node["member_id"]])
    outcome: dict = {}

    def flush() -> None:
        try:
            ctl.flush_heartbeats()
            outcome["flush"] = "written"
        except Exception as e:  # reported by the assertion below
            outcome["flush"] = e

    batch = threading.Thread(target=flush)
    refuse_takeover = ctl._refuse_takeover

    def then_flush(s, *args):
        refuse_takeover(s, *args)  # the node's row is locked now
        if not batch.is_alive() and "flush" not in outcome:
            batch.start()
            batch.join(timeout=2)  # PostgreSQL: it locks worker 1's row, then waits for the node's; SQLite: waits

    ctl._refuse_takeover = then_flush
    try:
        registered: dict | Exception = _register(ctl, 1)
    except Exception as e:  # reported by the assertion below
        registered = e
    finally:
        batch.join()
    assert not isinstance(registered, Exception), f"worker 1's registration failed: {registered!r}"
    assert outcome["flush"] == "written", f"the heartbeat batch failed: {outcome['flush']!r}"
    assert registered["member_id"] == worker["member_id"]
