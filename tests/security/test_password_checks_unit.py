"""The password check pool's order and bounds (security/password_checks.py): a login during a flood of junk logins
from a few client networks waits for one check of each, not for all their checks; an IPv6 host is one network
(its /64); a check that would wait past the SASL handler's patience is refused when it comes, queuing nothing, but
a check that would start at once is not, whatever the estimate; a check is priced at its own credential's
iterations, and a pause during one moves the estimate by a step. The checks are held back and recorded, not timed:
the order they ran in, and what was admitted, is what is asserted."""

from __future__ import annotations

import threading
import time

import pytest

from fedkafka.security import password_checks, scram
from fedkafka.security.password_checks import PasswordChecks, client_group

from .sasl_plans import BLOCKER, JUNK, failing_starts


class Recorded:
    """scram.password_matches replaced: a check of BLOCKER holds the pool's thread until `release`, the
    others record their password (the order they ran in) and fail; a JUNK check whose password starts with
    "paused" first sleeps PAUSE_S (wall-clock time without CPU, as a VM pause or SIGSTOP); a check of any other
    credential runs the real PBKDF2."""

    PAUSE_S = 1.0

    def __init__(self, password_matches):
        self.password_matches = password_matches
        self.gate = threading.Event()
        self.holding = threading.Event()
        self.ran: list[str] = []

    def __call__(self, credential, password: str) -> bool:
        if credential is BLOCKER:
            self.holding.set()
            return self.gate.wait(60)
        self.ran.append(password)
        if credential is not JUNK:
            return self.password_matches(credential, password)
        if password.startswith("paused"):
            time.sleep(self.PAUSE_S)
        return False

    def hold(self, pool: PasswordChecks) -> None:
        """The pool's one thread busy (until `release`): what is submitted meanwhile waits in its queues."""
        pool.submit(BLOCKER, "blocker", "198.51.100.1")
        assert self.holding.wait(60)  # taken from the queue: ahead of nothing

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def recorded(monkeypatch):
    checks = Recorded(scram.password_matches)
    monkeypatch.setattr(scram, "password_matches", checks)
    yield checks
    checks.release()


def _one_thread_pool() -> PasswordChecks:
    pool = PasswordChecks(workers=1)
    pool.cost_s = 0.0  # the order is tested here, not the bound on the wait (test_a_check_that_would_wait_...)
    return pool


def _flood(pool: PasswordChecks, addresses: list[str], per_address: int) -> list:
    return [pool.submit(JUNK, f"junk {address} {i}", address)
            for address in addresses for i in range(per_address)]


def test_a_login_waits_for_one_check_per_flooding_address_not_for_all_their_checks(recorded):
    """The review's scenario: 8 addresses with their 64 checks each queued (the most one address may have), then
    one login from another address. Served first come first served it waited for all 512; in turns it waits for
    one check of each of the 8."""
    pool = _one_thread_pool()
    recorded.hold(pool)
    flood = _flood(pool, [f"10.0.0.{a}" for a in range(8)], pool.per_client)
    login = pool.submit(JUNK, "login", "192.0.2.1")
    recorded.release()
    assert login.result(60) is False
    assert all(f.result(60) is False for f in flood)
    assert recorded.ran.index("login") == 8  # one check of each flooding address ran before it
    assert len(recorded.ran) == 8 * 64 + 1


def test_the_addresses_take_turns_one_check_each(recorded):
    pool = _one_thread_pool()
    recorded.hold(pool)
    checks = _flood(pool, ["10.0.0.1"], 3) + _flood(pool, ["10.0.0.2"], 1) + _flood(pool, ["10.0.0.3"], 2)
    recorded.release()
    assert all(c.result(60) is False for c in checks)
    assert recorded.ran == ["junk 10.0.0.1 0", "junk 10.0.0.2 0", "junk 10.0.0.3 0", "junk 10.0.0.1 1",
                            "junk 10.0.0.3 1", "junk 10.0.0.1 2"]


@pytest.mark.parametrize(("host", "group"), [
    ("10.0.0.1", "10.0.0.1"),
    ("::ffff:10.0.0.1", "10.0.0.1"),  # IPv4 on a dual-stack listener
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("/run/fedkafka.sock", "/run/fedkafka.sock"),
    ("", ""),
])
def test_checks_are_counted_by_ipv4_address_and_ipv6_slash_64(host, group):
    assert client_group(host) == group


def test_one_ipv6_host_cannot_count_as_many_clients(recorded):
    """64 checks from 64 addresses of one /64 fill that network's share: a 65th address of it is refused; they
    all take one turn between them, so a login from elsewhere waits for one of their checks, not 64."""
    pool = _one_thread_pool()
    recorded.hold(pool)
    flood = _flood(pool, [f"2001:db8:1:2::{a:x}" for a in range(1, pool.per_client + 1)], 1)
    with pytest.raises(password_checks.Refused, match=r"client 2001:db8:1:2::/64 has 64 password checks"):
        pool.submit(JUNK, "one more", "2001:db8:1:2:ffff::1")
    assert pool.held("2001:db8:1:2::abcd") == 64
    login = pool.submit(JUNK, "login", "2001:db8:1:3::1")  # another /64
    recorded.release()
    assert login.result(60) is False and all(f.result(60) is False for f in flood)
    assert recorded.ran.index("login") == 1 and "one more" not in recorded.ran


def test_a_check_that_would_wait_past_the_patience_is_refused_at_once(recorded):
    """One thread, 0.25 s a check, 1 s of patience: a check with 3 checks ahead (0.25 s for the one running, 0.75
    s for those ahead, 0.25 s its own) would end too late. A new address is behind one check per address; an
    address's further check is behind every check waiting. A refused check is not queued (nothing to drop later,
    nothing counted); once the queue drains the same address is served."""
    pool = PasswordChecks(workers=1, patience_s=1.0, cost_s=0.5)  # 0.25 s a check of JUNK
    recorded.hold(pool)
    queued = _flood(pool, ["10.0.0.1", "10.0.0.2", "10.0.0.3"], 1)
    assert pool.ahead("10.0.0.4") == 3 and pool.ahead("10.0.0.1") == 3
    with pytest.raises(password_checks.Refused, match=r"3 password checks of 3 client networks wait ahead"):
        pool.submit(JUNK, "too late", "10.0.0.4")
    with pytest.raises(password_checks.Refused, match=r"3 password checks of 3 client networks wait ahead"):
        pool.submit(JUNK, "too late", "10.0.0.1")
    assert pool.held("10.0.0.4") == 0 and pool.held("10.0.0.1") == 1
    recorded.release()
    assert all(c.result(60) is False for c in queued)
    assert pool.submit(JUNK, "retried", "10.0.0.4").result(60) is False
    assert "too late" not in recorded.ran


def test_the_checks_ahead_of_a_new_address_are_its_turn_not_the_whole_queue(recorded):
    """Three addresses with 20 checks each waiting: a new address is 3 checks from its turn, and admitted with a
    patience that 60 checks would exceed; a further check of a flooding address is behind all 60 and refused."""
    pool = PasswordChecks(workers=1, patience_s=60.0, cost_s=0.2)  # 0.1 s a check of JUNK
    recorded.hold(pool)
    flood = [pool.submit(JUNK, f"junk {i}", f"10.0.0.{i % 3}") for i in range(60)]
    pool.patience_s = 1.0
    assert pool.ahead("192.0.2.1") == 3 and pool.ahead("10.0.0.1") == 60
    login = pool.submit(JUNK, "login", "192.0.2.1")
    with pytest.raises(password_checks.Refused):
        pool.submit(JUNK, "junk more", "10.0.0.1")
    recorded.release()
    assert login.result(60) is False and all(f.result(60) is False for f in flood)
    assert recorded.ran.index("login") == 3


def test_an_idle_pool_runs_a_check_whatever_its_estimate_and_the_estimate_comes_down(recorded):
    """The review's lock-out: an estimate over the patience (after unknown users' logins against a 1,000,000-
    iteration credential, or a check paused for 22 s) refused every check, even on an idle pool, and only checks
    that ran could lower it, so it stayed: every later PLAIN login of the process was refused. A check with nothing
    ahead and a thread free starts at once: it is run whatever its estimate, and the checks run bring the estimate
    down until a login behind a running check is admitted again."""
    pool = PasswordChecks(workers=1, patience_s=1.0, cost_s=100.0)  # 50 s a check of JUNK: 100 times too long
    for i in range(80):
        assert pool.held("192.0.2.1") == 0 and pool.ahead("192.0.2.1") == 0
        assert pool.submit(JUNK, f"alone {i}", "192.0.2.1").result(60) is False
    assert pool.check_s(JUNK) < 0.25  # each ran in a moment: 0.9**80 of the estimate is left
    recorded.hold(pool)
    login = pool.submit(JUNK, "login", "192.0.2.2")  # behind the check running: priced as measured now
    recorded.release()
    assert login.result(60) is False and recorded.ran[-1] == "login" and len(recorded.ran) == 81


def test_a_check_paused_mid_way_raises_the_estimate_by_a_step_not_by_its_pause(recorded):
    """A check measured at 1 s of wall-clock time (a pause: no CPU meanwhile) against an estimate of 0.05 s: taken
    as it was (the moving average went from 0.05 to 0.145 s), the next check behind a running one, and even one
    on an idle pool, was refused with a patience of 0.2 s. It counts as at most 4 times the estimate."""
    pool = PasswordChecks(workers=1, patience_s=0.2, cost_s=0.1)  # 0.05 s a check of JUNK
    assert pool.submit(JUNK, "paused", "192.0.2.1").result(60) is False
    assert pool.cost_s <= 0.1 * 1.3 + 1e-9  # one step of the moving average towards 4 times the estimate
    recorded.hold(pool)  # on an idle pool
    login = pool.submit(JUNK, "login", "192.0.2.2")  # ~0.065 s running, then its own ~0.065 s
    recorded.release()
    assert login.result(60) is False and recorded.ran == ["paused", "login"]


def test_checks_of_a_costly_credential_do_not_price_a_cheap_login_out(recorded):
    """Unknown users' logins are checked against the view's costliest credential (the controller accepts up to
    1,000,000 iterations): measured as the cost of any check, three of them at 200,000 iterations priced every
    later login at theirs, and a 4096-iteration login behind three networks' checks was refused with a patience
    of 0.3 s. Measured per iteration, each check is priced at its own credential's iterations."""
    pool = PasswordChecks(workers=1, patience_s=0.3)
    costly = scram.made_up_credential("nobody", b"tests", 200_000)  # real PBKDF2: 0.1-2 s a check here
    for i in range(3):  # one at a time, each on an idle pool
        assert pool.submit(costly, f"guess {i}", f"203.0.113.{i}").result(120) is False
    assert pool.check_s(JUNK) * 200_000 / 4096 == pytest.approx(pool.check_s(costly))
    recorded.hold(pool)
    waiting = _flood(pool, ["10.0.0.1", "10.0.0.2", "10.0.0.3"], 1)
    login = pool.submit(JUNK, "login", "192.0.2.1")
    recorded.release()
    assert login.result(60) is False and all(w.result(60) is False for w in waiting)
    assert recorded.ran[3:] == ["junk 10.0.0.1 0", "junk 10.0.0.2 0", "junk 10.0.0.3 0", "login"]


def test_a_cancelled_check_leaves_its_queue_and_its_count(recorded):
    """The SASL handler cancels a check it gave up on: it is no longer counted against its address, no longer
    ahead of anyone, and never runs."""
    pool = _one_thread_pool()
    recorded.hold(pool)
    dropped = _flood(pool, ["10.0.0.1"], 2)
    kept = pool.submit(JUNK, "kept", "10.0.0.2")
    assert pool.ahead("192.0.2.1") == 2
    assert all(c.cancel() for c in dropped)
    assert pool.held("10.0.0.1") == 0 and pool.ahead("192.0.2.1") == 1 and pool.ahead("10.0.0.2") == 1
    recorded.release()
    assert kept.result(60) is False and recorded.ran == ["kept"]


def test_a_thread_that_cannot_start_refuses_its_check_and_the_next_check_starts_one(recorded, monkeypatch):
    """The pool needs a thread for a check and none can start: the check is Refused (the login closed for a retry),
    nothing of it stays queued or counted, and the pool does not count the thread it has not got. Counted, every
    later check of a one-thread pool waited for a thread that never came."""
    failing_starts(monkeypatch, 1)
    pool = _one_thread_pool()
    with pytest.raises(password_checks.Refused, match=r"no thread for the password check: can't start new thread"):
        pool.submit(JUNK, "refused", "10.0.0.1")
    assert pool.held("10.0.0.1") == 0 and pool.ahead("10.0.0.2") == 0 and pool.ahead("10.0.0.1") == 0
    assert pool.submit(JUNK, "later", "10.0.0.2").result(60) is False
    assert pool.submit(JUNK, "retried", "10.0.0.1").result(60) is False
    assert recorded.ran == ["later", "retried"] and pool.held("10.0.0.1") == pool.held("10.0.0.2") == 0


def test_a_second_thread_that_cannot_start_refuses_only_its_check(recorded, monkeypatch):
    """Two threads at most, one busy, checks of other networks waiting: the check that needed the second thread is
    refused and leaves the queue as it was; the busy thread serves the others, and a later check starts the
    second thread."""
    pool = PasswordChecks(workers=2)
    pool.cost_s = 0.0
    recorded.hold(pool)
    failing_starts(monkeypatch, 1)
    with pytest.raises(password_checks.Refused, match=r"no thread for the password check"):
        pool.submit(JUNK, "refused", "10.0.0.1")
    assert pool.held("10.0.0.1") == 0 and pool.ahead("10.0.0.2") == 0
    waiting = pool.submit(JUNK, "waiting", "10.0.0.2")  # starts the second thread
    assert waiting.result(60) is False and recorded.ran == ["waiting"]
    recorded.release()
    assert pool.submit(JUNK, "after", "10.0.0.1").result(60) is False
    assert recorded.ran == ["waiting", "after"]
