"""The saved produce deadline (`PATH.fence`) names the lock it was saved under, as the saved secret does: only a
holder of that same lock produces from it (fix of review s32-rv3; docs/DESIGN.md §4.9 F4). A next lock holder
vouches for the lock's earlier holders only, so any other process that could produce under the row's fence would
outlive the vouching. And a saved secret no controller takes is not shown."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

from fedkafka.proxy.view_cache import ViewCache
from fedkafka.view.model import View
from proxy.exit_proof_helpers import _saved_by_a_lockless_process

INSTANCE = "127.0.0.1:9092"
FAR = time.time() + 900


def _exit(cache: ViewCache) -> None:
    """What the kernel does at the process's exit: the lock's descriptor closed (tests only)."""
    assert cache._lock_fd is not None
    os.close(cache._lock_fd)
    cache._lock_fd = None


def _saved_by_an_exited_holder(path, produce_until: float = FAR) -> None:
    writer = ViewCache(path, INSTANCE)
    writer.save_view(View(version=7), node_id=3)
    assert writer.lock_for_life()
    writer.save_fence(produce_until)
    _exit(writer)


def _deadline_for_next_holder(path) -> float:
    reader = ViewCache(path, INSTANCE)
    assert reader.lock_for_life()
    try:
        saved = reader.load()
        assert saved is not None
        return saved.produce_until
    finally:
        _exit(reader)


def test_the_next_holder_of_the_same_lock_produces_from_the_saved_deadline(tmp_path):
    path = tmp_path / "view.json"
    _saved_by_an_exited_holder(path)
    assert _deadline_for_next_holder(path) == FAR


def test_a_process_without_the_lock_gets_no_deadline(tmp_path, caplog):
    """The writer still runs (its lock held): a second process on the cache serves the view, consume only."""
    path = tmp_path / "view.json"
    writer = ViewCache(path, INSTANCE)
    writer.save_view(View(version=7), node_id=3)
    assert writer.lock_for_life()
    writer.save_fence(FAR)
    second = ViewCache(path, INSTANCE)
    assert not second.lock_for_life()
    with caplog.at_level(logging.WARNING, logger="fedkafka.proxy.view_cache"):
        saved = second.load()
    _exit(writer)
    assert saved is not None and saved.view.version == 7 and saved.produce_until == 0.0
    assert [r.getMessage() for r in caplog.records] == [
        f"produce deadline {path}.fence not used: this process does not hold the view cache's lock; produce "
        "refused until a controller renews"]


def test_a_copy_of_the_state_dir_gets_no_deadline(tmp_path):
    """The copy's lock is another file (another inode): its holder never was the original's."""
    original, copy = tmp_path / "old", tmp_path / "new"
    _saved_by_an_exited_holder(original / "view.json")
    shutil.copytree(original, copy)
    assert _deadline_for_next_holder(copy / "view.json") == 0.0
    assert _deadline_for_next_holder(original / "view.json") == FAR


def test_a_deadline_saved_before_a_reboot_gives_none(tmp_path, monkeypatch):
    boot_id = tmp_path / "boot_id"
    monkeypatch.setattr("fedkafka.proxy.view_cache.BOOT_ID_PATH", boot_id)
    path = tmp_path / "view.json"
    boot_id.write_text("boot-1\n")
    _saved_by_an_exited_holder(path)
    boot_id.write_text("boot-2\n")
    assert _deadline_for_next_holder(path) == 0.0


def test_a_fence_file_of_a_release_that_named_no_lock_gives_none(tmp_path, caplog):
    path = tmp_path / "view.json"
    _saved_by_an_exited_holder(path)
    path.with_name("view.json.fence").write_text(json.dumps({"instance_id": INSTANCE, "produce_until": FAR}))
    with caplog.at_level(logging.WARNING, logger="fedkafka.proxy.view_cache"):
        assert _deadline_for_next_holder(path) == 0.0
    assert "a release that named no lock" in caplog.text


def test_a_deadline_saved_by_a_process_without_the_lock_gives_none(tmp_path):
    """A process that never held the lock (it failed to take it) and saved a renewal: no holder vouches for it."""
    path = tmp_path / "view.json"
    _saved_by_a_lockless_process(path, FAR)
    assert _deadline_for_next_holder(path) == 0.0


def test_a_saved_secret_no_controller_takes_is_dropped(tmp_path, caplog):
    """A hand-edited secret file (not url-safe base64, or longer than 256): shown, every registration would be
    refused (422); dropped with a warning, the usable ones still shown."""
    path = tmp_path / "view.json"
    first = ViewCache(path, INSTANCE)
    assert first.lock_for_life()
    first.swap_secret("usable_secret-1")
    body = json.loads(first.secret_path.read_text())
    body["earlier_secrets"] = ["not base64!", "x" * 257, "usable_secret-0", 12]
    first.secret_path.write_text(json.dumps(body))
    _exit(first)
    second = ViewCache(path, INSTANCE)
    assert second.lock_for_life()
    with caplog.at_level(logging.WARNING, logger="fedkafka.proxy.view_cache"):
        shown = second.swap_secret("usable_secret-2")
    _exit(second)
    assert shown == ["usable_secret-1", "usable_secret-0"]
    assert caplog.text.count("a saved secret not used") == 3


def test_only_an_absent_fence_or_one_saved_under_the_lock_held_lets_a_parents_word_be_shown(tmp_path):
    """`fence_only_our_locks` (rv7): the `--workers` parent's word is shown only when no live process can produce
    from a saved deadline: no fence, or one naming the lock we hold (its holders have exited)."""
    path = tmp_path / "view.json"
    fresh = ViewCache(path, INSTANCE)
    assert fresh.lock_for_life() and fresh.fence_only_our_locks()  # no fence saved yet
    _exit(fresh)
    _saved_by_an_exited_holder(path)
    same_lock = ViewCache(path, INSTANCE)
    assert same_lock.lock_for_life() and same_lock.fence_only_our_locks()
    os.unlink(same_lock.lock_path)  # removed under its live holder and made again: another inode (the old one held)
    new_lock = ViewCache(path, INSTANCE)
    assert new_lock.lock_for_life() and not new_lock.fence_only_our_locks()
    _exit(same_lock)
    lockless = ViewCache(path, INSTANCE)
    lockless.save_fence(FAR)  # a writer that held no lock (it may be alive)
    assert not new_lock.fence_only_our_locks()
    new_lock.fence_path.write_text("{damaged")
    assert not new_lock.fence_only_our_locks()
    _exit(new_lock)
