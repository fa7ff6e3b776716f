"""PLAIN's password checks, off the event loop (docs/DESIGN.md §11).

A check is one PBKDF2 (SCRAM-SHA-512 at 8192 iterations: 2-5 ms of CPU). Run on the event loop, ~200 attempts
a second from one client would stall every connection of the process, before any of them is authenticated.
Checks run on a few threads of their own instead (hashlib.pbkdf2_hmac releases the GIL while it hashes): at
most `workers` at once, the others wait in the pool's queue, so a flood of logins queues rather than spawns
threads. The queue holds at most one check per client connection (the SASL handler waits for its check behind
a barrier: the connection's next request is not read meanwhile), and connections are capped (--max-connections).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from fedkafka.security import scram
from fedkafka.view.model import ScramCredential

WORKERS = 2  # checks running at once, per process


class PasswordChecks:
    def __init__(self, workers: int = WORKERS):
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None  # made at the first check: after a worker process forked

    def submit(self, credential: ScramCredential, password: str) -> Future[bool]:
        """`scram.password_matches` on a pool thread."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fedkafka-password-check")
        return self._pool.submit(scram.password_matches, credential, password)


SHARED = PasswordChecks()  # the process's pool, which every session uses unless given another
