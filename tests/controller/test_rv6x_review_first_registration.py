"""Review rv6x of merge 4e0cd1a: two first registrations that make the same member row at once.

`register_proxy` reads the member row FOR UPDATE (`_proxy_row`) and makes it when there is none. On PostgreSQL a
row that does not exist yet locks nothing: two registrations both find none and both INSERT it; the unique index
makes the second wait for the first and then refuse it, at `_proxy_row`'s flush. The registration loop retries
only an IntegrityError raised by the commit (`_commit_registration`), so that one escapes as a 500. The ordinary
case: a fresh node's `--workers N` all start at once, and workers 1..N-1 each make the node's row (worker 0's)
when worker 0 has not registered yet (docs/DESIGN.md §4.10). SQLite serializes both whole (BEGIN IMMEDIATE).

The interleaving is forced: right before the main thread's first INSERT of the node's row, worker 2 registers in
another thread (on PostgreSQL it commits at once; on SQLite it waits for the write lock, then commits after)."""

from __future__ import annotations

import threading

from sqlalchemy import event

from fedkafka.controller.models import ProxyRow

NODE = "h:9092"


def _register(ctl, worker: int) -> dict:
    return ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1", worker=worker)


def test_workers_making_the_node_row_at_once_both_register(make_api):
    ctl = make_api().controller
    main = threading.get_ident()
    other: dict = {}
    thread = threading.Thread(target=lambda: other.setdefault("answer", _register_or_error(ctl, 2)))

    def before_flush(session, _context, _instances):
        making_node_row = any(isinstance(o, ProxyRow) and o.instance_id == NODE for o in session.new)
        if making_node_row and threading.get_ident() == main and not thread.is_alive() and "answer" not in other:
            thread.start()
            # PostgreSQL: it commits the node row now; SQLite: it waits for our write lock (join returns first)
            thread.join(timeout=5 if session.get_bind().dialect.name == "postgresql" else 0.5)

    event.listen(ctl.session, "before_flush", before_flush)
    try:
        first = _register_or_error(ctl, 1)
    finally:
        thread.join()
        event.remove(ctl.session, "before_flush", before_flush)
    second = other["answer"]
    assert not isinstance(first, Exception), f"worker 1's registration failed: {first!r}"
    assert not isinstance(second, Exception), f"worker 2's registration failed: {second!r}"
    assert first["node_id"] == second["node_id"]
    with ctl.session() as s:
        rows = s.query(ProxyRow).filter(ProxyRow.instance_id.in_([NODE, f"{NODE}/w1", f"{NODE}/w2"])).count()
    assert rows == 3


def _register_or_error(ctl, worker: int) -> dict | Exception:
    try:
        return _register(ctl, worker)
    except Exception as e:  # the test reports which registration failed, and how
        return e
