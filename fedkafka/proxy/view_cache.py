"""The proxy's last applied view on disk, so a proxy (re)started while no controller answers still serves
(static stability, docs/DESIGN.md §4.7, §4.9).

Two files, each replaced atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves the
old or the new content, never a torn one:

- `PATH`: the view (with its version and federation id), the proxy's node id and instance id, and the
  controller URLs it came from. Written after a view is applied and drained and *before* the proxy acks it to
  the controller, so the saved version is at least every version the controller was told this proxy applied.
  Each save has an id of its own (`view_save_id`), which the deadline saved after it names.
- `PATH.fence`: until when (wall clock) the controller allowed this proxy to produce, written after each
  renewal, with the identity of the lock its writer held (as `PATH.secret`; none when it held none). A lower
  bound of the deadline the controller counts for this proxy (docs/DESIGN.md §4.9): a proxy started from the
  cache produces only until then, and only consumes after it until a controller answers. Only a process holding
  that same lock may produce from it (F4: the lock's holders are the only processes a next holder vouches for
  besides the registered ones); any other (the lock not taken, a copy of the state dir, a reboot, a file naming
  no lock) starts with no deadline. Used only beside the view save it names: another process's save since (an exiting
  holder's, a lockless one's: maybe an older view than its writer acked) leaves it unused; its writer's own later save
  saves it again naming that save (§4.9 F4 "Taken late").

Beside them, for proving a previous process's exit on this host (docs/DESIGN.md §4.9, F4):

- `PATH.lock`: locked (`flock`, exclusive) by the proxy process for the rest of its life once it takes it (at its
  start, or, when a live process held it then, once that one has exited: docs/DESIGN.md §4.9 F4 "Taken late"),
  released by the kernel only when it exits (a crash and kill -9 included). Taking it proves that every process that
  held it before has exited.
- `PATH.secret`: the member secret of the process holding the lock, written once it holds the lock and before it
  sends its first registration, with the identity of that lock: the kernel's boot id and the lock file's device
  and inode. The next holder reads it only under the same identity (the same lock file, on the same running
  kernel: an inode is not reused while its holder has it open): then the secret of a process that has exited. A
  copy or move of the state dir, a lock file removed under its holder, or a reboot: not read. The secrets of
  earlier holders whose registration was never answered stay beside it (at most MAX_PREDECESSOR_SECRETS), until
  one of this process's registrations is answered.

A file that cannot be used (unreadable, damaged, another instance's, saved under none of the controllers the
proxy now follows) is ignored with one warning: the proxy starts as without a cache. A fence file that cannot
be used counts as no deadline: produce refused until a controller renews (never "may produce").
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedkafka.controllers import MAX_PREDECESSOR_SECRETS, MAX_SECRET_LENGTH
from fedkafka.view.model import View

log = logging.getLogger(__name__)

# the running kernel's id, new at each boot: with a lock file's device and inode, names one held lock (`swap_secret`)
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
# a member secret a controller takes (url-safe base64, as `secrets.token_urlsafe` draws): a hand-edited secret file
# must not make every registration answered 422
_SECRET_FORM = re.compile(r"[A-Za-z0-9_-]+={0,2}")


@dataclass(frozen=True, slots=True)
class SavedView:
    view: View
    node_id: int
    produce_until: float  # wall-clock seconds; 0 when no deadline was saved


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a reader (or a restart after a crash) sees the old or the new bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power loss
    finally:
        os.close(dir_fd)


class ViewCache:
    def __init__(self, path: Path, instance_id: str):
        self.path = path
        self.fence_path = path.with_name(path.name + ".fence")
        self.lock_path = path.with_name(path.name + ".lock")
        self.secret_path = path.with_name(path.name + ".secret")
        self.instance_id = instance_id
        # one deadline write at a time, none after `end_fence`: a renewal's save still running in its thread when
        # the proxy deregisters (its task cancelled, the thread not) must not write a live deadline after the 0
        self._fence_lock = threading.Lock()
        self._fence_ended = False
        self._lock_fd: int | None = None  # `lock_for_life`'s, never closed
        self._own_secret: str | None = None  # saved by `swap_secret` with earlier ones, until `confirm_secret`
        # the id of this process's last view save that surely landed (None: none, or the last one failed): each
        # deadline saved names it, and is used only beside that very save (`_produce_until`: §4.9 F4 "Taken late")
        self.view_save_id: str | None = None
        # the deadline this process last wrote and the lock it wrote it under (None: none, or that write failed):
        # saved again naming each later view save of ours (`_follow_view_save`)
        self._own_fence: tuple[float, dict[str, Any] | None] | None = None

    def lock_for_life(self) -> bool:
        """Take `PATH.lock` for the rest of this process's life: True once held, False when another live process holds
        it (OSError when the file cannot be opened or locked). The descriptor is never closed: the kernel releases
        the lock only when the process exits, however it ends. Opened close-on-exec, so no program this process
        starts inherits it (a `--workers` parent spawns its workers by fork and exec, and never opens their locks)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        self._lock_fd = fd  # held until exit, on purpose: closing it would let the next process vouch for us
        return True

    @property
    def holds_lock(self) -> bool:
        """`lock_for_life` took `PATH.lock`: every earlier holder of this lock file has exited."""
        return self._lock_fd is not None

    def fence_only_our_locks(self) -> bool:
        """With `PATH.lock` held: True when no live process can produce from a deadline saved here, as far as this
        host can tell: `PATH.fence` is absent, or names the lock we hold (only its holders produce from it,
        `_produce_until`, and they have exited). False when it names another lock (the lock file removed and made
        again: a live process may hold the old one and produce from the deadline), no lock (saved by a process
        that held none, which may be alive), another instance, or cannot be read: then a `--workers` parent's word
        for the dead worker must not be shown (docs/DESIGN.md §4.9 F4)."""
        try:
            body = json.loads(self.fence_path.read_bytes())
        except FileNotFoundError:
            return True
        except (OSError, ValueError, RecursionError):
            return False
        identity = self._lock_identity()
        return (identity is not None and isinstance(body, dict) and body.get("instance_id") == self.instance_id
                and body.get("lock") == identity)

    def swap_secret(self, own_secret: str) -> list[str]:
        """With `PATH.lock` held (`lock_for_life`): the member secrets of the lock's previous holders (none if there
        are none, or the file is damaged, another instance's, or written under another lock or boot): the last one
        whose registration was answered first (the row's likeliest holder), then the newest of those never
        answered. Then `own_secret` saved before them (mode 0600), each earlier one kept until `confirm_secret`: a
        restart that exits before its registration commits does not hide the run before it, which the controller's
        row still holds; the answered one always kept, at most MAX_PREDECESSOR_SECRETS in all. Raises OSError when
        it cannot be read or written (the caller then presents no predecessor: simpler, and never unsafe, as
        presenting none only makes a move wait the previous process's whole fence)."""
        identity = self._lock_identity()
        answered, unanswered = self._saved_secrets(identity)
        self._write_secrets(identity, answered, [own_secret, *unanswered])
        self._own_secret = own_secret
        return _as_shown([answered, *unanswered])

    @property
    def secret_unconfirmed(self) -> bool:
        """`swap_secret` saved ours with earlier ones, and `confirm_secret` has not saved it alone yet."""
        return self._own_secret is not None

    def confirm_secret(self) -> None:
        """A registration of ours was answered: the controller's row holds our secret, so the earlier ones kept by
        `swap_secret` name nothing a restart must show. Saved alone, as the answered one (kept by the next runs'
        `swap_secret` until one of theirs is answered). Raises OSError (the earlier ones stay: they are exited
        processes' all the same)."""
        if self._own_secret is not None:
            self._write_secrets(self._lock_identity(), self._own_secret, [self._own_secret])
            self._own_secret = None

    def _lock_identity(self) -> dict[str, Any] | None:
        """Which lock this process holds: the running kernel's boot id, and the held lock file's device and inode.
        Equal ones are the same file on the same running kernel: an inode is not reused while a process holds it
        open, so a secret saved under them was saved by a holder of the lock we took, which has exited. None (no
        secret vouched for) when the boot id cannot be read or no lock is held."""
        if self._lock_fd is None:
            return None
        try:
            boot_id = BOOT_ID_PATH.read_text().strip()
        except OSError:
            return None
        st = os.fstat(self._lock_fd)
        return {"boot_id": boot_id, "dev": st.st_dev, "ino": st.st_ino} if boot_id else None

    def _write_secrets(self, identity: dict[str, Any] | None, answered: str | None, unanswered: list[str]) -> None:
        """`unanswered`: newest first, ours first; `answered` is kept whatever comes after it, so of the others only
        as many as fit beside it (MAX_PREDECESSOR_SECRETS in all: what a registration may show)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = unanswered[:MAX_PREDECESSOR_SECRETS - (answered is not None and answered != unanswered[0])]
        body = {"instance_id": self.instance_id, "lock": identity, "member_secret": kept[0],
                "earlier_secrets": kept[1:], "answered_secret": answered}
        write_atomically(self.secret_path, json.dumps(body).encode())

    def _saved_secrets(self, identity: dict[str, Any] | None) -> tuple[str | None, list[str]]:
        """The saved secrets of exited holders of our lock: the answered one (None: none saved), and the others,
        newest first."""
        try:
            body = json.loads(self.secret_path.read_bytes())
        except FileNotFoundError:
            return None, []
        except (ValueError, RecursionError) as e:  # nested past the parser's limit: damaged too, never a crash
            log.warning("member secret file %s not used (damaged: %s)", self.secret_path, type(e).__name__)
            return None, []
        if not isinstance(body, dict) or body.get("instance_id") != self.instance_id:
            return None, []
        if identity is None or body.get("lock") != identity:
            log.warning("member secret file %s not used (written under another lock or boot, or this kernel's boot "
                        "id is unreadable): its writer's exit is not proved, so a move waits for its fence",
                        self.secret_path)
            return None, []
        earlier = body.get("earlier_secrets")
        newest_first = (body.get("member_secret"), *(earlier if isinstance(earlier, list) else ()))
        saved = [self._usable_secret(s) for s in newest_first]
        answered = self._usable_secret(body.get("answered_secret"))
        return answered, [s for s in dict.fromkeys(saved) if s is not None and s != answered]

    def _usable_secret(self, secret: Any) -> str | None:
        """`secret` if a controller takes it (url-safe base64, 1 to MAX_SECRET_LENGTH characters), else None, with
        a warning when there was one (a hand-edited file: shown, the controller would refuse every registration)."""
        if secret is None or (isinstance(secret, str) and 0 < len(secret) <= MAX_SECRET_LENGTH
                              and _SECRET_FORM.fullmatch(secret)):
            return secret
        log.warning("member secret file %s: a saved secret not used (not url-safe base64 of 1 to %d characters)",
                    self.secret_path, MAX_SECRET_LENGTH)
        return None

    def save_view(self, view: View, node_id: int, controllers: Sequence[str] = ()) -> None:
        """`controllers`: the URLs of the controllers the view came from (the federation, offline: `load`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_id = secrets.token_hex(8)
        body = {"instance_id": self.instance_id, "node_id": node_id, "version": view.version,
                "controllers": list(controllers), "saved_at": time.time(), "save": save_id, "view": view.to_dict()}
        self.view_save_id = None  # a failed write may have landed or not: no deadline names it
        write_atomically(self.path, json.dumps(body, separators=(",", ":")).encode())
        self.view_save_id = save_id
        self._follow_view_save()

    def _follow_view_save(self) -> None:
        """Our view save landed: the deadline we last wrote under the lock we hold, saved again (the same one) naming
        it, else a restart could not use it until our next renewal (after a view change: maybe never, cut off from
        the controller). Sound: this save is our newest, at least every view we acked, as the one it named before;
        the deadline is not moved forward (docs/DESIGN.md §4.9 F4 "Taken late" (5)). None when we wrote none, wrote
        it under no lock or another, ended it (`end_fence`), or it has passed. Not written, it names the save before
        (unused beside this one): only logged, the view landed."""
        with self._fence_lock:
            own, identity = self._own_fence, self._lock_identity()
            if self._fence_ended or own is None or identity is None or own[1] != identity or own[0] <= time.time():
                return
            try:
                self._write_fence(own[0])
            except OSError as e:
                log.warning("produce deadline %s not saved again beside our view save (unused until the next "
                            "renewal): %s", self.fence_path, e)

    def save_fence(self, produce_until: float) -> None:
        with self._fence_lock:
            if not self._fence_ended:
                self._write_fence(produce_until)

    def end_fence(self) -> float:
        """Deadline 0 on disk, for good: this process saves no other (it is deregistering, docs/DESIGN.md §4.9 F5:
        a restart must not produce under the saved view on a deadline the controller no longer counts). Raises
        OSError when it could not be written: then the proxy must not deregister. Returns the deadline it replaced,
        for `restore_fence` when the deregistration surely was not committed."""
        with self._fence_lock:
            previous = self._produce_until(any_save=True)
            self._write_fence(0.0)
            self._fence_ended = True
            return previous

    def restore_fence(self, produce_until: float) -> None:
        """Put back the deadline `end_fence` replaced: the deregistration was surely not committed (never sent, or
        refused), so the controller still counts this member until that deadline (a restart while no controller
        answers serves the saved view, §4.7)."""
        with self._fence_lock:
            self._write_fence(produce_until)

    def _write_fence(self, produce_until: float) -> None:
        """Saved with the identity of the lock we hold (None: none): only a holder of that lock produces from it;
        and with the id of our last view save: used only beside that save, never beside a view another process
        (or an earlier holder) saved over it (docs/DESIGN.md §4.9 F4 "Taken late")."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        identity = self._lock_identity()
        body = {"instance_id": self.instance_id, "lock": identity, "view_save": self.view_save_id,
                "produce_until": produce_until}
        self._own_fence = None  # a failed write may have landed or not
        write_atomically(self.fence_path, json.dumps(body).encode())
        self._own_fence = (produce_until, identity)

    def load(self, controllers: Sequence[str] = ()) -> SavedView | None:
        """The saved view, or None (with one warning, unless there is no file) when it is unreadable or damaged,
        another instance wrote it, or it was saved under none of `controllers` (another federation's view:
        its clusters, topics and node id, and a version the new controllers would take for commits they lost)."""
        try:
            body = json.loads(self.path.read_bytes())
            saved = self._parse(body)
        except FileNotFoundError:
            return None
        except Exception as e:  # the one boundary: whatever the damage, start as without a cache
            log.warning("saved view %s not used (damaged: %s: %s); starting as without it", self.path,
                        type(e).__name__, e)
            return None
        if saved is None:
            log.warning("saved view %s not used: written by instance %r, not %r", self.path,
                        body.get("instance_id"), self.instance_id)
            return None
        saved_under = body.get("controllers") or []
        if controllers and saved_under and not set(saved_under) & set(controllers):
            log.warning("saved view %s not used: saved under controllers %s, another federation than %s; "
                        "waiting for a controller", self.path, ", ".join(saved_under), ", ".join(controllers))
            return None
        return saved

    def _parse(self, body: Any) -> SavedView | None:
        """The saved view in `body`, None when another instance wrote it; raises on any damage."""
        if not isinstance(body, dict) or not isinstance(body.get("view"), dict):
            raise ValueError("not a saved view object")
        if body.get("instance_id") != self.instance_id:
            return None
        view = View.from_dict(body["view"])
        if view.version != body["version"]:
            raise ValueError(f"version {body['version']} names view {view.version}")
        if not isinstance(body.get("controllers", []), list):
            raise ValueError("controllers is not a list")
        return SavedView(view=view, node_id=int(body["node_id"]),
                         produce_until=self._produce_until(warn=True, beside_save=body.get("save")))

    def _produce_until(self, warn: bool = False, beside_save: str | None = None, any_save: bool = False) -> float:
        """The saved produce deadline; 0 (produce refused until a controller renews: docs/DESIGN.md §4.9, F5) when
        there is none, it is damaged, another instance wrote it, it was saved under another lock than the one we
        hold (or we hold none: §4.9 F4, a next holder of the lock vouches for its holders only), or it names another
        view save than `beside_save`, the saved view's (unless `any_save`: `end_fence`'s own deadline, put back by
        `restore_fence`): its writer may have acked a newer view than the one saved over its own (§4.9 F4 "Taken
        late"). `warn`: say why a deadline is not used (once, at `load`)."""
        try:
            body = json.loads(self.fence_path.read_bytes())
            if isinstance(body, dict) and body.get("instance_id") == self.instance_id:
                until = float(body["produce_until"])
                if not math.isfinite(until) or until <= 0:
                    return 0.0
                identity = self._lock_identity()
                beside_its_view = any_save or (beside_save is not None and body.get("view_save") == beside_save)
                if identity is not None and body.get("lock") == identity and beside_its_view:
                    return until
                if warn:
                    log.warning("produce deadline %s not used: %s; produce refused until a controller renews",
                                self.fence_path, "this process does not hold the view cache's lock"
                                if identity is None else "saved by a process that held no lock (a second "
                                "process on this view cache, or a release that named no lock)"
                                if body.get("lock") is None else "saved under another lock or boot (a copy of "
                                "the state dir, a reboot)" if body.get("lock") != identity else "saved beside "
                                "another view save than the one on disk (another process saved its view since, "
                                "or its writer's save after it landed, and the deadline was not saved again)")
        except FileNotFoundError:
            pass
        except Exception as e:  # a damaged deadline is no deadline, never a crash
            log.warning("produce deadline %s not used (damaged: %s); produce refused until a controller renews",
                        self.fence_path, type(e).__name__)
        return 0.0


def _as_shown(shown: list[str | None]) -> list[str]:
    """The secrets in `shown`, once each, at most MAX_PREDECESSOR_SECRETS (what a registration may show)."""
    return [s for s in dict.fromkeys(shown) if s is not None][:MAX_PREDECESSOR_SECRETS]
