"""One active controller per config database (docs/DESIGN.md §3.6).

Controllers compete for one row, `controller_leader`: the holder renews it every lease/3; another takes it
over by compare-and-set once it has expired (or at once when it names this controller's own URL: this process
holds that port, so the holder that wrote it is gone), with a new term. Only the active controller runs the
background loops and the workflows and answers `/v1/`; a standby answers 503 naming the active one
(`StandbyGate`), so proxies, the name service and the CLI move on to it. A controller starts as a standby
(`Controller(standby=True)`): it serves the stored view and writes nothing, not even a view, until it holds the row;
holding it, it takes writes only once `on_active` has served the database's view and composed it (the gate answers
503 until then, naming it).

Split brain is fenced in the database: every move transition re-reads the row in its own transaction,
locked (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite serializes writers and refuses a write on a stale
snapshot), and gives up unless this controller still holds it (`check`). A takeover therefore orders
against every move write: those before it count, those after it fail. A controller that finds it lost the
row (or cannot renew it for a whole lease) stops at once: it executes itself again and comes back as a
standby, so no thread of the old term goes on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from fedkafka.controller.models import LeaderRow
from fedkafka.controllers import ACTIVE_HEADER

log = logging.getLogger(__name__)

# a controller's role, as `/healthz` (`role`) and the metrics say it (`Controller.role`): only an ACTIVE one takes
# writes; one TAKING_OVER holds the leader row but answers `/v1/` 503 until it serves the database's view
ACTIVE, TAKING_OVER, STANDBY = "active", "taking_over", "standby"


class NotLeader(RuntimeError):
    """This controller no longer holds the leader row: whatever it was about to commit must not count. `active`: the
    controller that holds it, when known; the API's 503 names it (or none) in ACTIVE_HEADER, like the gate's, so the
    clients move on rather than take the 503 as the active controller's own answer."""

    def __init__(self, message: str, active: str | None = None):
        super().__init__(message)
        self.active = active


class RoundLog:
    """How a background loop (the scans, the lease check, the workflow sweeper, auto-failover) logs a round that
    failed. NotLeader (another controller took the row; this one notices within a lease/3 and restarts as a
    standby): one WARNING line, no traceback, once per loop until this controller's leadership changes (a new
    term). Any other error keeps its traceback, every round."""

    def __init__(self, logger: logging.Logger, loop: str, leadership: Callable[[], Leadership | None]):
        self.logger, self.loop, self.leadership = logger, loop, leadership
        self._warned_term: int | None = None  # the term this loop last said it lost

    def failed(self, error: Exception) -> None:
        if not isinstance(error, NotLeader):
            self.logger.error("%s failed", self.loop, exc_info=error)
            return
        lead = self.leadership()
        term = lead.term if lead is not None else 0
        if term != self._warned_term:
            self._warned_term = term
            self.logger.warning("%s: not the active controller any more (%s); its rounds write nothing until it "
                                "restarts as a standby", self.loop, error)


class Leadership:
    def __init__(self, session_factory, url: str, lease_s: float, *, owns_url: bool = False):
        self.session = session_factory
        self.url = url
        self.holder = f"{url}#{uuid.uuid4().hex[:12]}"
        self.lease_s = lease_s
        self.owns_url = owns_url  # this process bound the port of `url`: a row naming it is a dead holder's
        self.term = 0
        self.active = False
        self.active_url: str | None = None
        self._renewed = 0.0  # wall clock of the last renewal that committed

    def try_acquire(self) -> bool:
        """Renew the row if we hold it, take it if it expired (or names our own URL); False if another holds it."""
        now = time.time()
        with self.session() as s:
            row = s.execute(select(LeaderRow).where(LeaderRow.id == 1).with_for_update()).scalar_one_or_none()
            if row is None:
                row = LeaderRow(id=1, holder=self.holder, url=self.url, term=1, expires=now + self.lease_s)
                s.add(row)
            elif row.holder == self.holder:
                row.expires = now + self.lease_s
            elif row.expires < now or (self.owns_url and row.url == self.url):
                row.holder, row.url, row.term, row.expires = self.holder, self.url, row.term + 1, now + self.lease_s
            else:
                self.active_url = row.url
                return False
            try:
                s.commit()
            except IntegrityError:  # another controller inserted the first row at the same moment
                return False
            self.term, self.active_url, self._renewed = row.term, self.url, now
            return True

    def check(self, s) -> None:
        """Inside a write transaction: raise NotLeader unless we still hold the row (locked until commit)."""
        if not self.active:
            raise NotLeader("this controller is a standby", self.active_url)
        row = s.execute(select(LeaderRow).where(LeaderRow.id == 1).with_for_update()).scalar_one_or_none()
        if row is None or row.holder != self.holder:
            raise NotLeader(f"another controller took over ({row.url if row else 'nobody'})", row.url if row else None)

    def run(self, stop: threading.Event, on_active: Callable[[], None], on_lost: Callable[[str], None]) -> None:
        """Compete until stopped: `on_active` once the row is ours, `on_lost` when it is not any more."""
        while not stop.is_set():
            try:
                held = self.try_acquire()
            except SQLAlchemyError as e:
                log.warning("leader row not renewed: %s", type(e).__name__)
                held = None
            if held and not self.active:
                self.active = True
                log.info("active controller (term %d) at %s", self.term, self.url)
                try:
                    on_active()
                except NotLeader as e:  # taken again meanwhile: nothing to debug
                    log.warning("taking over failed: %s", e)
                    on_lost(f"taking over failed: {e}")
                except Exception as e:  # half started: start over rather than act half active
                    log.exception("taking over failed")
                    on_lost(f"taking over failed: {type(e).__name__}")
            elif self.active and held is False:
                on_lost(f"another controller ({self.active_url}) took over")
            elif self.active and held is None and time.time() > self._renewed + self.lease_s:
                on_lost("the leader row could not be renewed for a whole lease")
            stop.wait(self.lease_s / 3 if self.active else min(1.0, self.lease_s / 3))

    def status(self) -> dict:
        return {"active": self.active, "url": self.url, "active_url": self.active_url, "term": self.term}


def restart_as_standby(reason: str) -> None:
    """Stop every thread of this term at once: execute the same command again (the new process starts as a
    standby and waits for its database)."""
    log.error("no longer the active controller: %s; restarting as a standby", reason)
    logging.shutdown()
    os.environ["FEDKAFKA_CONTROLLER_RESTARTED"] = "1"
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


class StandbyGate:
    """ASGI: a standby answers every `/v1/` request 503, naming the active controller (body and header). So does a
    controller taking over (`active`, but `took_over()` not yet: its `on_active` has not served the database's view
    and composed it), naming itself: the clients retry, none is answered from the view it loaded as a standby."""

    def __init__(self, app, *, leadership: Leadership | None, took_over: Callable[[], bool] = lambda: True):
        self.app, self.leadership, self.took_over = app, leadership, took_over

    async def __call__(self, scope, receive, send) -> None:
        lead = self.leadership
        if (scope["type"] != "http" or lead is None or (lead.active and self.took_over())
                or not scope["path"].startswith("/v1/")):
            return await self.app(scope, receive, send)
        active = lead.active_url or ""
        detail = (f"controller {active} is taking over: it answers once it serves the database's view" if lead.active
                  else f"standby controller; the active one is {active or 'not known yet'}")
        body = json.dumps({"detail": detail, "active": active}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (ACTIVE_HEADER.encode(), active.encode())]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
