"""PLAIN's password checks, off the event loop (docs/DESIGN.md §11).

A check is one PBKDF2 (SCRAM-SHA-512 at 8192 iterations: 2-5 ms of CPU). Run on the event loop, ~200 attempts
a second from one client would stall every connection of the process, before any of them is authenticated.
Checks run on a few threads of their own instead (hashlib.pbkdf2_hmac releases the GIL while it hashes): at
most `workers` at once, the others wait in the pool's queue, so a flood of logins queues rather than spawns
threads. The queue holds at most one check per client connection (the SASL handler waits for its check behind
a barrier: the connection's next request is not read meanwhile), connections are capped (--max-connections),
and one client address holds at most `per_client` checks queued or running: the rest of its logins are refused
(the handler closes their connections for a retry), so one address cannot fill the queue ahead of the others.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from fedkafka.security import scram
from fedkafka.view.model import ScramCredential

WORKERS = 2  # checks running at once, per process
# checks one client address may have queued or running at once (~0.1-0.3 s of the pool's work): room for many
# clients behind one NAT address logging in at once, too little for one address to hold up everyone else
PER_CLIENT = 64


class PasswordChecks:
    def __init__(self, workers: int = WORKERS, per_client: int = PER_CLIENT):
        self.workers = workers
        self.per_client = per_client
        self._pool: ThreadPoolExecutor | None = None  # made at the first check: after a worker process forked
        self._held: collections.Counter[str] = collections.Counter()  # client address -> checks not done yet
        self._lock = threading.Lock()  # a check's end is counted on the pool's thread

    def submit(self, credential: ScramCredential, password: str, client: str = "") -> Future[bool] | None:
        """`scram.password_matches` on a pool thread; None: `client` (its address) already has `per_client`
        checks queued or running, this one is not queued."""
        with self._lock:
            if self._held[client] >= self.per_client:
                return None
            self._held[client] += 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fedkafka-password-check")
        check = self._pool.submit(scram.password_matches, credential, password)
        check.add_done_callback(lambda _check: self._done(client))  # run, failed or cancelled (dropped)
        return check

    def held(self, client: str) -> int:
        """Checks of `client` queued or running."""
        with self._lock:
            return self._held[client]

    def _done(self, client: str) -> None:
        with self._lock:
            self._held[client] -= 1
            if self._held[client] <= 0:
                del self._held[client]


SHARED = PasswordChecks()  # the process's pool, which every session uses unless given another
