"""The view cache's lock, held for a proxy process's life, and the member secret saved beside it: a single-process
proxy restarted after a crash or kill -9 proves its previous run's exit on this host, so the controller waits the
grace after the restart, not the previous run's fence (docs/DESIGN.md §4.9, F4 "proved by the view cache's lock")."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time

from fedkafka.controller.models import ProxyRow
from fedkafka.controllers import PREDECESSOR_SECRET_HEADER, PREDECESSOR_SEPARATOR
from fedkafka.proxy.view_cache import ViewCache
from proxy.exit_proof_helpers import (
    INSTANCE,
    _lease_lapsed,
    _predecessor_fence,
    _release,
    _run,
    _secret_on_disk,
    _source,
    _state,
)
from proxy.support import ROOT

# a process that takes the cache's lock, saves its secret, says so, and lives until killed
_HOLDER = """
import sys, time
from pathlib import Path
from fedkafka.proxy.view_cache import ViewCache
cache = ViewCache(Path(sys.argv[1]), sys.argv[2])
assert cache.lock_for_life()
cache.swap_secret(sys.argv[3])
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_opener_in_this_process_finds_the_lock_held(tmp_path):
    first, second = (ViewCache(tmp_path / "view.json", INSTANCE) for _ in range(2))
    try:
        assert first.lock_for_life()
        assert not second.lock_for_life()  # flock: one open file description each, so it conflicts in-process too
        assert second._lock_fd is None
    finally:
        _release(first)
    assert second.lock_for_life()
    _release(second)


def test_a_killed_holders_lock_is_free_and_its_secret_is_read(tmp_path):
    """Held by a live process: not taken. Once it was killed (SIGKILL, no cleanup of its own), taken, and the secret
    it saved is the one read; ours replaces it, mode 0600 (a member secret: whoever reads it may renew the member)."""
    path = tmp_path / "view.json"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), INSTANCE, "killed-secret"],
                              stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        cache = ViewCache(path, INSTANCE)
        assert not cache.lock_for_life()  # another live process holds it
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        assert cache.lock_for_life()
        try:
            assert cache.swap_secret("our-secret") == ["killed-secret"]
            assert _secret_on_disk(path) == "our-secret"
            for saved in (cache.secret_path, cache.lock_path):
                assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        finally:
            _release(cache)
    finally:
        with contextlib.suppress(ProcessLookupError):
            holder.kill()
        holder.wait(30)


def test_another_instances_or_a_damaged_secret_is_not_read(tmp_path):
    path = tmp_path / "view.json"
    other = ViewCache(path, "127.0.0.1:9093")
    assert other.lock_for_life()
    other.swap_secret("the-other-instances")
    _release(other)
    cache = ViewCache(path, INSTANCE)
    assert cache.lock_for_life()
    try:
        assert cache.swap_secret("ours") == []  # another member's secret vouches for nothing of ours
        cache.secret_path.write_text("{not json")
        assert cache.swap_secret("ours again") == []
        assert _secret_on_disk(path) == "ours again"
    finally:
        _release(cache)



def test_a_secret_file_nested_deeper_than_the_json_parser_is_damaged_not_raised(tmp_path, caplog):
    """A hand-made secret file nested past the parser's recursion limit: read as damaged (one warning, no secret
    vouched for), and ours saved over it; it raised RecursionError out of the proxy's start."""
    path = tmp_path / "view.json"
    cache = ViewCache(path, INSTANCE)
    assert cache.lock_for_life()
    try:
        cache.secret_path.write_text("[" * 100_000 + "]" * 100_000)
        assert cache.swap_secret("ours") == []
        assert _secret_on_disk(path) == "ours"
        assert "not used (damaged" in caplog.text
    finally:
        _release(cache)

# -- the proxy's controller link, against the controller's real app in process (ASGI) ------------------------------

def test_a_restart_after_its_previous_run_exited_shows_that_runs_secret_saved_before_it_registered(tmp_path):
    """The first run saves its secret before its registration goes out (a registration whose answer is lost may be
    committed); its exit releases the lock; the next run shows that secret as its predecessor's, so the controller
    records the previous run's fence as ending at the registration, not 15 minutes on (the old code showed none)."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        first, sent = _source(app, path)
        await first.start(_state())
        assert [(h.get(PREDECESSOR_SECRET_HEADER), saved) for h, saved in sent.registrations] == \
            [(None, first.own_secret)]  # saved before it went out; no previous run to vouch for
        _release(first.cache)  # the first run exits (a crash: it neither deregisters nor renews)
        _lease_lapsed(ctl)
        second, sent = _source(app, path)
        before = time.time()
        await second.start(_state())
        after = time.time()
        assert [(h.get(PREDECESSOR_SECRET_HEADER), saved) for h, saved in sent.registrations] == \
            [(first.own_secret, second.own_secret)]
        assert before <= _predecessor_fence(ctl) <= after  # not the first run's fence, FENCE_MS from its start
        _release(second.cache)
        for source in (first, second):
            await source.client.aclose()

    _run(tmp_path, body)


def test_a_start_while_the_lock_is_held_vouches_for_no_one_and_saves_nothing(tmp_path):
    """A second process on the same cache while the first is alive (stopped, cut off): no predecessor shown, the
    secret file left as the live holder wrote it; the takeover waits the live one's fence."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        first, _ = _source(app, path)
        await first.start(_state())
        with ctl.session() as s:
            first_fence = s.query(ProxyRow).filter_by(instance_id=INSTANCE).one().fence_expires
        _lease_lapsed(ctl)
        second, sent = _source(app, path)
        await second.start(_state())
        assert [(h.get(PREDECESSOR_SECRET_HEADER), saved) for h, saved in sent.registrations] == \
            [(None, first.own_secret)]
        assert _predecessor_fence(ctl) == first_fence
        _release(first.cache)
        for source in (first, second):
            await source.client.aclose()

    _run(tmp_path, body)


def test_a_workers_parent_keeps_its_word_beside_the_saved_secret(tmp_path):
    """A --workers parent that saw the previous worker exit names its secret: shown first, the saved one beside it
    (the same unless that worker died before saving it: then the row may hold the saved one; review s32-rv3); ours
    is saved all the same."""
    path = tmp_path / "view.json"
    saved = ViewCache(path, INSTANCE)
    assert saved.lock_for_life()
    saved.swap_secret("an-older-process" * 3)
    _release(saved)

    async def body(ctl, app) -> None:
        own, parents = "drawn-by-the-parent" * 3, "the-exited-worker" * 3
        source, sent = _source(app, path, secrets=(own, parents))
        await source.start(_state())
        assert [(h.get(PREDECESSOR_SECRET_HEADER), saved) for h, saved in sent.registrations] == [
            (f"{parents}{PREDECESSOR_SEPARATOR}{'an-older-process' * 3}", own)]
        _release(source.cache)
        await source.client.aclose()

    _run(tmp_path, body)


def test_a_lock_file_that_cannot_be_used_starts_the_proxy_as_before(tmp_path, caplog):
    """The lock file unusable (here a directory in its place; a read-only disk or permissions alike): one warning,
    no predecessor shown, the registration goes on."""
    path = tmp_path / "view.json"
    path.with_name("view.json.lock").mkdir()

    async def body(ctl, app) -> None:
        source, sent = _source(app, path)
        await source.start(_state())
        assert source.member_id is not None
        assert [h.get(PREDECESSOR_SECRET_HEADER) for h, _ in sent.registrations] == [None]
        await source.client.aclose()

    _run(tmp_path, body)
    assert [r.getMessage() for r in caplog.records if "not provable" in r.getMessage()] == [
        f"exit of this proxy's previous run not provable ({path}.lock, IsADirectoryError: [Errno 21] Is a directory: "
        f"'{path}.lock'): a move waits for its fence"]


# -- the secret names the lock it was saved under (review s32-rv1): boot id, lock file's device and inode ---------
def _saved_and_released(path, secret: str) -> None:
    """A process that took the lock at `path`, saved `secret`, and exited."""
    cache = ViewCache(path, INSTANCE)
    assert cache.lock_for_life()
    cache.swap_secret(secret)
    _release(cache)


def _swap_released(path, secret: str) -> list[str]:
    cache = ViewCache(path, INSTANCE)
    assert cache.lock_for_life()
    try:
        return cache.swap_secret(secret)
    finally:
        _release(cache)


def test_a_secret_saved_before_a_reboot_vouches_for_no_one(tmp_path, monkeypatch, caplog):
    """Another boot id (the host rebooted, or the state dir came from another machine: indistinguishable): the
    writer's exit is not proved by our lock, so nothing is shown (the cost: a restart after a reboot waits the
    previous run's fence, docs/OPERATIONS.md)."""
    boot_id = tmp_path / "boot_id"
    monkeypatch.setattr("fedkafka.proxy.view_cache.BOOT_ID_PATH", boot_id)
    path = tmp_path / "view.json"
    boot_id.write_text("boot-1\n")
    _saved_and_released(path, "before-the-reboot")
    boot_id.write_text("boot-2\n")
    with caplog.at_level("WARNING", logger="fedkafka.proxy.view_cache"):
        assert _swap_released(path, "after-the-reboot") == []
    assert "written under another lock or boot" in caplog.text
    assert _swap_released(path, "the-next") == ["after-the-reboot"]  # same boot, same lock file: vouched for


def test_an_unreadable_boot_id_vouches_for_no_one(tmp_path, monkeypatch):
    monkeypatch.setattr("fedkafka.proxy.view_cache.BOOT_ID_PATH", tmp_path / "no-such-boot-id")
    path = tmp_path / "view.json"
    _saved_and_released(path, "first")
    assert _swap_released(path, "second") == []
    assert _secret_on_disk(path) == "second"


def test_earlier_secrets_are_kept_until_a_registration_is_answered_at_most_four(tmp_path):
    """Runs that exited before any registration of theirs was answered each leave their secret beside the next
    one's (the row may hold any of them): newest first, at most 4. Once a run's registration is answered
    (`confirm_secret`), its own secret alone is saved."""
    path = tmp_path / "view.json"
    shown = [_swap_released(path, f"run-{n}") for n in range(6)]
    assert shown == [[], ["run-0"], ["run-1", "run-0"], ["run-2", "run-1", "run-0"],
                     ["run-3", "run-2", "run-1", "run-0"], ["run-4", "run-3", "run-2", "run-1"]]
    confirmed = ViewCache(path, INSTANCE)
    assert confirmed.lock_for_life()
    assert confirmed.swap_secret("registered") == ["run-5", "run-4", "run-3", "run-2"]
    assert confirmed.secret_unconfirmed
    confirmed.confirm_secret()
    assert not confirmed.secret_unconfirmed
    _release(confirmed)
    assert _swap_released(path, "next") == ["registered"]


def test_a_registered_restart_saves_its_own_secret_alone(tmp_path):
    """The proxy confirms its secret once a registration of its own is answered: the earlier run's is dropped."""
    path = tmp_path / "view.json"
    _saved_and_released(path, "an-exited-run" * 3)

    async def body(ctl, app) -> None:
        source, sent = _source(app, path)
        await source.start(_state())
        assert [h.get(PREDECESSOR_SECRET_HEADER) for h, _ in sent.registrations] == ["an-exited-run" * 3]
        on_disk = json.loads(source.cache.secret_path.read_text())
        _release(source.cache)
        await source.client.aclose()
        assert (on_disk["member_secret"], on_disk["earlier_secrets"]) == (source.own_secret, [])

    _run(tmp_path, body)
