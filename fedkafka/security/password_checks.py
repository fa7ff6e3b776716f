"""PLAIN's password checks, off the event loop, served fairly between clients (docs/DESIGN.md §11).

A check is one PBKDF2 (SCRAM-SHA-512 at 8192 iterations: 2-25 ms of CPU). Run on the event loop, ~200 attempts
a second from one client would stall every connection of the process, before any of them is authenticated.
Checks run on a few threads of their own instead (hashlib.pbkdf2_hmac releases the GIL while it hashes): at
most `workers` at once, the others wait, so a flood of logins queues rather than spawns threads. One check at
most per client connection waits (the SASL handler waits for its check behind a barrier: the connection's next
request is not read meanwhile), and connections are capped (--max-connections).

Who waits behind whom is what keeps a login possible during a flood:
- checks are counted and served by client network (`client_group`): an IPv4 address, an IPv6 address's /64 (a
  host picks any address of its /64 at will), so one host cannot count as many clients;
- the threads take the networks in turn, one check each (round robin between per-network queues, each in
  arrival order): a login waits for about one check per network with checks waiting, not for every check
  queued, so a few flooding addresses hold up a login by a few checks, not by `per_client` each;
- one network has at most `per_client` checks queued or running;
- a check that would not end within `patience_s` (under the SASL handler's wait, which would drop it) is not
  queued: when it comes, the work of the checks running and of those ahead of it (`ahead`), shared among the
  threads, then its own, is counted against the patience. A network's only check is behind one check per
  network, so a new client is refused only when more networks wait than the pool serves in that time; a
  network's further checks are counted behind every check waiting, which bounds the queue at about twice that.
  A check with nothing ahead of it and a thread free is always queued (it starts at once: waiting cannot make it
  end sooner), whatever its estimate.
A check's work is estimated from its own credential: the time per PBKDF2 iteration measured for its mechanism
(a moving average of the checks run) times the credential's iterations, so a 1,000,000-iteration credential (an
unknown user's login is checked against the view's costliest) does not price an 8192-iteration login out. Each
measured check counts its wall-clock time (what the handler waits for, with the machine's load in it), but at
most `_SAMPLE_CAP` times the estimate (at least its thread's CPU time): a check paused mid-way (a VM pause,
SIGSTOP) moves the estimate by a step, not by its pause. As a check with nothing ahead is always run, an
estimate too high comes down with the next checks; refusals only happen while checks run, and measure.
`submit` raises `Refused` for the full share and the late check, with the reason (no secret in it), and when the
pool needs a thread for the check and none can start (a limit on threads or memory): nothing of the check stays
queued or counted.
"""

from __future__ import annotations

import collections
import ipaddress
import threading
import time
from concurrent.futures import Future

from fedkafka.security import scram
from fedkafka.view.model import ScramCredential

WORKERS = 2  # checks running at once, per process
# checks one client network may have queued or running at once (~0.1-0.8 s of the pool's work): room for many
# clients behind one NAT address logging in at once; the others are served in turn with it all the same
PER_CLIENT = 64
# a check expected to end later than this is refused when it comes: under the SASL handler's wait for it (~5.5 s,
# proxy/handlers/sasl.py PLAIN_LOOKS), after which a check still queued would be dropped
PATIENCE_S = 4.5
# the cost of one check of scram.DEFAULT_ITERATIONS until one is measured (SCRAM-SHA-512 at 8192 iterations on a
# loaded core): each mechanism's time per iteration starts at this / DEFAULT_ITERATIONS, then is a moving average
CHECK_COST_S = 0.025
_COST_WEIGHT = 0.1  # of each measured check in the moving average
# a measured check counts as at most this many times its estimate: its wall-clock time has the machine's load in
# it (2-15 times its CPU time on a loaded box), and may have a pause (a VM's, SIGSTOP) that says nothing of the
# next checks; with the weight, one check raises the estimate by 30% at most
_SAMPLE_CAP = 4.0
IDLE_S = 60.0  # a pool thread with nothing to do for this long ends (the next check starts one again)


class Refused(Exception):
    """A check not queued; the message says why (a client network, counts: no secret)."""


def client_group(host: str) -> str:
    """The client network checks are counted and served by: an IPv4 address (also when IPv4-mapped in IPv6), an
    IPv6 address's /64; anything else (a Unix socket's name, "") as it is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


_Check = tuple[Future[bool], ScramCredential, str, float]  # the check's estimated work (s) last


class PasswordChecks:
    def __init__(self, workers: int = WORKERS, per_client: int = PER_CLIENT, patience_s: float = PATIENCE_S,
                 cost_s: float = CHECK_COST_S):
        self.workers = workers
        self.per_client = per_client
        self.patience_s = patience_s
        # mechanism -> one PBKDF2 iteration's time: a moving average of the measured checks
        self._iteration_s = dict.fromkeys(scram.MECHANISMS, cost_s / scram.DEFAULT_ITERATIONS)
        self._queues: dict[str, collections.deque[_Check]] = {}  # client network -> its checks waiting, in order
        self._turns: collections.deque[str] = collections.deque()  # networks with checks waiting, next served first
        self._held: collections.Counter[str] = collections.Counter()  # client network -> checks not done yet
        self._threads = 0  # started at the first checks (after a worker process forked); each ends when idle
        self._busy = 0  # threads running a check (the others wait for one, or are starting)
        self._queued = 0  # checks waiting
        self._queued_s = 0.0  # their estimated work
        self._running_s = 0.0  # the estimated work of the checks running
        self._lock = threading.Lock()  # a check's end is counted on a pool thread
        self._waiting = threading.Condition(self._lock)  # a check queued, for an idle thread

    @property
    def cost_s(self) -> float:
        """The estimated time of a SCRAM-SHA-512 check of scram.DEFAULT_ITERATIONS; set, every mechanism's time
        per iteration becomes this / DEFAULT_ITERATIONS (until checks are measured)."""
        with self._lock:
            return self._iteration_s["SCRAM-SHA-512"] * scram.DEFAULT_ITERATIONS

    @cost_s.setter
    def cost_s(self, cost_s: float) -> None:
        with self._lock:
            for mechanism in self._iteration_s:
                self._iteration_s[mechanism] = cost_s / scram.DEFAULT_ITERATIONS

    def check_s(self, credential: ScramCredential) -> float:
        """The estimated time of a check of `credential`: its mechanism's measured time per iteration times its
        iterations."""
        with self._lock:
            return self._check_s(credential)

    def _check_s(self, credential: ScramCredential) -> float:
        per_iteration = self._iteration_s.get(credential.mechanism, self._iteration_s["SCRAM-SHA-512"])
        return per_iteration * credential.iterations

    def submit(self, credential: ScramCredential, password: str, client: str = "") -> Future[bool]:
        """`scram.password_matches` on a pool thread, in `client`'s (its address's) network's turn. Raises
        Refused, queuing nothing, when the network has `per_client` checks queued or running already, when the
        check would not end within `patience_s`, or when the thread it needs cannot start."""
        group = client_group(client)
        check: Future[bool] = Future()
        with self._lock:
            cost_s = self._check_s(credential)
            self._admit(group, cost_s)
            self._held[group] += 1
            queue = self._queues.setdefault(group, collections.deque())
            queue.append((check, credential, password, cost_s))
            if len(queue) == 1:
                self._turns.append(group)
            self._queued += 1
            self._queued_s += cost_s
            if self._threads < self.workers and self._queued > self._threads - self._busy:  # none idle for it
                self._start_thread(group, check)
            self._waiting.notify()
        check.add_done_callback(lambda done: self._done(group, done))  # run, failed or cancelled (dropped)
        return check

    def _start_thread(self, group: str, check: Future[bool]) -> None:
        """One more pool thread for `check`, just queued. Under the lock, so that no thread takes the check before
        the start is known to have failed: started, the thread waits for the lock before it looks for a check.
        A thread that cannot start ("can't start new thread": a limit on threads or memory) is not counted, and
        the check is unqueued and uncounted and Refused (its login closed for a retry); the next check tries to
        start a thread again. Counted as started while still failing, every later check would wait for a thread
        that never comes."""
        self._threads += 1
        try:
            threading.Thread(target=self._work, name=f"fedkafka-password-check_{self._threads}", daemon=True).start()
        except Exception as e:  # RuntimeError ("can't start new thread"), MemoryError
            self._threads -= 1
            self._unqueue(group, check)
            self._uncount(group)
            raise Refused(f"no thread for the password check: {e}") from e

    def held(self, client: str) -> int:
        """Checks of `client`'s network queued or running."""
        with self._lock:
            return self._held[client_group(client)]

    def ahead(self, client: str) -> int:
        """Checks waiting counted ahead of a new one of `client`'s network: for the network's only one, one of each
        network with checks waiting (its place in the turns); behind checks of its own, every check waiting (its
        place moves back as networks come, one round at a time: counting them all bounds the checks waiting at
        about twice what the pool runs in `patience_s`)."""
        with self._lock:
            return self._ahead(client_group(client))

    def _ahead(self, group: str) -> int:
        return self._queued if group in self._queues else len(self._turns)

    def _admit(self, group: str, cost_s: float) -> None:
        """Raises Refused if `group` has its share, or if a check of `cost_s` would end after the patience: the
        work running and ahead of it shared among the threads, then its own. Nothing ahead and a thread free, it
        starts at once: admitted whatever its estimate. Under the lock."""
        held = self._held[group]
        if held >= self.per_client:
            raise Refused(f"client {group} has {held} password checks queued or running")
        ahead = self._ahead(group)
        if ahead == 0 and self._busy < self.workers:
            return
        # a new network's check is behind one check per network: priced at the mean of the checks waiting
        ahead_s = self._queued_s if ahead == self._queued else ahead * self._queued_s / self._queued
        ends_s = (self._running_s + ahead_s) / self.workers + cost_s
        if ends_s > self.patience_s:
            raise Refused(f"{ahead} password checks of {len(self._queues)} client networks wait ahead, {self._busy} "
                          f"run (~{ends_s:.1f} s until this one would end, over {self.patience_s:g} s)")

    def _work(self) -> None:
        while True:
            with self._lock:
                check = self._take()
            if check is None:
                return
            future, credential, password, cost_s = check
            took = None  # cancelled after it was taken from its queue: not run
            if future.set_running_or_notify_cancel():
                began, began_cpu = time.perf_counter(), time.thread_time()
                try:
                    future.set_result(scram.password_matches(credential, password))
                except Exception as e:
                    future.set_exception(e)
                took = (time.perf_counter() - began, time.thread_time() - began_cpu)
            with self._lock:
                self._busy -= 1
                self._running_s = self._running_s - cost_s if self._busy else 0.0
                if took is not None:
                    self._measured(credential, *took)

    def _measured(self, credential: ScramCredential, wall_s: float, cpu_s: float) -> None:
        """A check of `credential` took `wall_s` (`cpu_s` of its thread's CPU): its mechanism's time per iteration
        moves towards it, counted at most _SAMPLE_CAP times the estimate, at least its CPU time. Under the lock."""
        mechanism, iterations = credential.mechanism, max(credential.iterations, 1)
        if mechanism not in self._iteration_s:
            return
        estimate = self._iteration_s[mechanism]
        sample = max(cpu_s / iterations, min(wall_s / iterations, _SAMPLE_CAP * estimate))
        self._iteration_s[mechanism] = estimate + (sample - estimate) * _COST_WEIGHT

    def _take(self) -> _Check | None:
        """The next check, waiting up to IDLE_S for one; None: none came, the thread ends. Under the lock."""
        check = self._next()
        if check is None:
            self._waiting.wait(IDLE_S)
            check = self._next()
        if check is None:
            self._threads -= 1
        else:
            self._busy += 1
        return check

    def _next(self) -> _Check | None:
        """The first check of the network whose turn it is; the network goes to the back of the turns."""
        if not self._turns:
            return None
        group = self._turns.popleft()
        queue = self._queues[group]
        check = queue.popleft()
        self._queued -= 1
        self._queued_s = self._queued_s - check[3] if self._queued else 0.0
        self._running_s += check[3]
        if queue:
            self._turns.append(group)
        else:
            del self._queues[group]
        return check

    def _done(self, group: str, check: Future[bool]) -> None:
        with self._lock:
            self._uncount(group)
            if check.cancelled():
                self._unqueue(group, check)

    def _uncount(self, group: str) -> None:
        """One check of `group` no longer queued or running. Under the lock."""
        self._held[group] -= 1
        if self._held[group] <= 0:
            del self._held[group]

    def _unqueue(self, group: str, check: Future[bool]) -> None:
        """`check` out of its network's queue if it still waits there (not taken by a thread). Under the lock."""
        queue = self._queues.get(group)
        if queue is None:
            return
        for i, (waiting, _credential, _password, cost_s) in enumerate(queue):
            if waiting is check:
                del queue[i]
                self._queued -= 1
                self._queued_s = self._queued_s - cost_s if self._queued else 0.0
                break
        if not queue:
            del self._queues[group]
            self._turns.remove(group)


SHARED = PasswordChecks()  # the process's pool, which every session uses unless given another
