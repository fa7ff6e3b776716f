"""The SASL handler's plans in unit tests: PLAIN's password check (on a pool thread) and a failed authentication's
delay are barrier plans of no upstream calls, which the core runs after their delay_s."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

from fedkafka.proxy.plan import Plan
from fedkafka.security import scram

# credentials for checks whose scram.password_matches a test replaces: made up (no PBKDF2 to make them), priced by
# the pool as a real one of 4096 iterations (the tests' views' credentials; half a check of the pool's `cost_s`, which
# is of scram.DEFAULT_ITERATIONS); BLOCKER's check is the one a test holds the pool's thread with
BLOCKER = scram.made_up_credential("blocker", b"tests", scram.MIN_ITERATIONS)
JUNK = scram.made_up_credential("junk", b"tests", scram.MIN_ITERATIONS)


def answered(reply, sleep=time.sleep, delays: list[float] | None = None):
    """The answer a handler's reply ends in, its plans run as the core runs them (`sleep` waits each delay_s;
    `delays` collects them)."""
    while isinstance(reply, Plan):
        assert reply.barrier and not reply.calls
        if delays is not None:
            delays.append(reply.delay_s)
        sleep(reply.delay_s)
        reply = reply.finish([])
    return reply


class InlineChecks:
    """Password checks done in the caller's thread, finished when submitted: the handler's first look finds the
    answer, so tests with injected clocks need not sleep."""

    per_client = 64

    def submit(self, credential, password: str, client: str = "") -> Future[bool]:
        done: Future[bool] = Future()
        done.set_result(scram.password_matches(credential, password))
        return done


def no_sleep(_seconds: float) -> None:
    pass


def failing_starts(monkeypatch, failures: int) -> None:
    """threading.Thread.start replaced: the pool's first `failures` thread starts raise as CPython's does under a
    limit on threads or memory; the others, and every other thread's, start."""
    start = threading.Thread.start
    left = [failures]

    def failing(thread: threading.Thread) -> None:
        if left[0] and thread.name.startswith("fedkafka-password-check"):
            left[0] -= 1
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", failing)
