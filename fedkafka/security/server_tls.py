"""A TLS listener's server context, made again from its files when they change: a renewed certificate is served
without a restart (a restarted proxy moves its clients to a sibling, docs/DESIGN.md §4.2), as a Kafka broker
reconfigures `ssl.keystore` dynamically.

The proxy and the name service hand `ServerTls` to `tls_accept.Accepting`, which asks `current()` for each new
connection's handshake. At most every `TlsFiles.recheck_s` seconds that stats the certificate, key and CA files; when
one changed (its inode, size or mtime), a new context is made from them and serves the handshakes after it. The
services' SIGHUP calls `reload()`, which does the same at once. Connections already open keep the context (and
certificate) of their own handshake.

A renewal that fails (a file missing or unreadable, a key that does not match the certificate, a file half written,
a certificate outside its validity period: a stale backup, as Kafka's dynamic keystore update refuses one) changes
nothing: the old context keeps serving, one WARNING line says why, and the next change of the files (the rest of
the write, the key written after the certificate) is tried again; a certificate not valid yet is also tried again
once it is. At start a certificate outside its validity period is served, as before this module (one WARNING line):
a listener that cannot start would not serve the clients that do not verify it either.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from fedkafka.security.listeners import EncryptedKey, TlsFiles

log = logging.getLogger(__name__)
KNOWN_REASONS = {"KEY_VALUES_MISMATCH": "the key does not match the certificate (not both written yet?)"}

# (device, inode, size, mtime, ctime in ns) of each file, None for one that cannot be stat'ed
FileStamp = tuple[int, int, int, int, int] | None  # see file_stamp
Stamp = tuple[FileStamp, ...]


class ServerTls:
    """The server context new TLS handshakes get (`current()`), and the certificate it serves (`serial`,
    `expires`: seconds since the epoch). Made from `files` at once: a certificate that cannot be loaded at start
    raises, as before."""

    def __init__(self, files: TlsFiles, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.files = files
        self._clock = clock
        self._wall = wall  # what certificates' validity periods are compared with
        self._seen = self._stamp()  # the files as they were when last loaded (or tried)
        self._retry_at: float | None = None  # when a certificate refused as not valid yet becomes valid
        self.context, leaf = self._load()
        self.serial, self.expires = leaf.serial_number, leaf.not_valid_after_utc.timestamp()
        try:
            _check_validity(leaf, wall())
        except NotValidNow as e:  # served all the same, as before renewals: only verifying clients refuse it
            log.warning("TLS certificate %s: %s; it serves all the same (verifying clients refuse it)", files.cert, e)
        self._next_check = clock() + files.recheck_s
        self.renewals = 0  # certificates loaded since start (not counting the first)
        self.failures = 0  # renewals that kept the old certificate

    def current(self) -> ssl.SSLContext:
        """The context for a new handshake; the files are looked at first when `recheck_s` has passed."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.files.recheck_s
            self.check()
        return self.context

    def check(self) -> bool:
        """Load the files again if they changed since they were last loaded or tried; whether a new certificate
        now serves."""
        stamp = self._stamp()
        if stamp != self._seen:
            return self._renew(stamp, "its files changed")
        if self._retry_at is not None and self._wall() >= self._retry_at:
            return self._renew(stamp, "its certificate became valid")
        return False

    def reload(self) -> bool:
        """Load the files again now, changed or not (SIGHUP); whether that worked."""
        return self._renew(self._stamp(), "SIGHUP")

    def _renew(self, stamp: Stamp, why: str) -> bool:
        self._seen = stamp  # taken before reading: a write that goes on after it is another change, tried again
        self._retry_at = None
        try:
            context, leaf = self._load()
            _check_validity(leaf, self._wall())
        except Exception as e:  # whatever it is, the listener goes on with the certificate it has
            self.failures += 1
            if isinstance(e, NotValidNow) and e.starts is not None:
                self._retry_at = e.starts
            log.warning("TLS certificate %s not renewed (%s): %s; certificate serial %x (valid until %s) still "
                        "serves, tried again when the files change%s", self.files.cert, why, _reason(e),
                        self.serial, _utc(self.expires),
                        f" or at {_utc(self._retry_at)}" if self._retry_at is not None else "")
            return False
        was = self.serial
        self.context, self.serial, self.expires = context, leaf.serial_number, leaf.not_valid_after_utc.timestamp()
        self.renewals += 1
        log.info("TLS certificate %s renewed (%s): serial %x valid until %s now serves new connections (was serial "
                 "%x)", self.files.cert, why, self.serial, _utc(self.expires), was)
        return True

    def _load(self) -> tuple[ssl.SSLContext, x509.Certificate]:
        """A new server context from the files, and the certificate it serves (the chain's first)."""
        assert self.files.cert is not None
        for path in (self.files.key, self.files.ca):  # OpenSSL's error would not say which file is missing
            if path is not None and not path.is_file():
                raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
        leaf = x509.load_pem_x509_certificate(self.files.cert.read_bytes())
        return self.files.server_context(), leaf

    def _stamp(self) -> Stamp:
        return tuple(file_stamp(p) for p in (self.files.cert, self.files.key, self.files.ca))


class NotValidNow(Exception):
    """The certificate's validity period does not hold the present: no verifying client would take it."""

    def __init__(self, message: str, starts: float | None):
        super().__init__(message)
        self.starts = starts  # when it becomes valid; None for one that expired


def _check_validity(leaf: x509.Certificate, now: float) -> None:
    starts, ends = leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()
    if now > ends:
        raise NotValidNow(f"the certificate (serial {leaf.serial_number:x}) expired at {_utc(ends)}", None)
    if now < starts:
        raise NotValidNow(f"the certificate (serial {leaf.serial_number:x}) is not valid before {_utc(starts)}",
                          starts)


def file_stamp(path: Path | None) -> FileStamp:
    """What tells a changed file: a new inode (a file replaced), size, mtime, and ctime, which a chmod or chown
    changes too (the "chmod 600 it" a refused upstream config asks for makes it loadable: tried again)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a path with a NUL character (a damaged config names it): no file
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _reason(error: Exception) -> str:
    """What went wrong, from OpenSSL's or the OS's message (a file name at most: never the files' contents)."""
    if isinstance(error, ssl.SSLError):
        reason = error.reason or "SSL error"
        return KNOWN_REASONS.get(reason, f"{reason} ({error.library or 'ssl'})")
    if isinstance(error, OSError):
        return f"{error.strerror or type(error).__name__}: {error.filename}"
    if isinstance(error, (EncryptedKey, NotValidNow)):
        return str(error)
    if isinstance(error, ValueError):
        return "the certificate file holds no complete PEM certificate (half written?)"
    return f"the certificate cannot be used ({type(error).__name__})"


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
