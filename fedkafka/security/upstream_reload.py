"""The brokers' credentials (`--upstream-config`) rotated without a restart: a restarted proxy moves its clients to
a sibling (docs/DESIGN.md §4.2), so the proxy loads the file again when it changes, as it renews its own TLS
certificate (`server_tls.ServerTls`, whose file stamps this reuses).

`UpstreamFile.for_cluster` gives each NEW upstream connection its settings; at most every `recheck_s` seconds it
first stats the config file and the files it names (ssl.ca.location, ssl.certificate.location, ssl.key.location).
When one changed, the file is loaded and checked as at start (`load_upstream_config`: an unknown property, a
password in a file others may read are refused), the TLS files are loaded into one client context per cluster, and
a cluster's security.protocol may not change (the view's bootstrap addresses are those of one broker listener).
The proxy's SIGHUP calls `reload()`, which does the same at once. Upstream connections already open keep the
login they made (a Kafka broker keeps an authenticated connection too, until its `connections.max.reauth.ms`
ends it; the proxy replaces such a connection before then, and the new one logs in with the new settings).

A reload that fails changes nothing: the settings loaded before keep serving new connections, one WARNING line
names the file and why (never a password), and the next change of the files is tried again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fedkafka.security.server_tls import FileStamp, file_stamp
from fedkafka.security.upstream import UpstreamConfig, UpstreamConfigError, UpstreamSecurity, load_upstream_config

log = logging.getLogger(__name__)
RECHECK_S = 5.0  # as the client-facing TLS files (`TlsFiles.recheck_s`)


class UpstreamFile:
    """The upstream config new upstream connections get (`for_cluster`), loaded again when its files change.

    The file is loaded here, as it is now: a `--workers` worker started again hours after its parent read the
    file must not log in with the parent's first settings (docs/DESIGN.md §11). `config` (the file as the CLI
    loaded it at the proxy's start) serves only when the file cannot be loaded now, with one WARNING line; its
    TLS contexts are made then, and one that cannot be made raises UpstreamConfigError."""

    def __init__(self, path: Path, config: UpstreamConfig, clock: Callable[[], float] = time.monotonic,
                 recheck_s: float = RECHECK_S) -> None:
        self.path = path
        self._clock, self.recheck_s = clock, recheck_s
        self._next_check = clock() + recheck_s
        self.reloads = 0  # configs loaded since start (not counting the first)
        self.failures = 0  # loads that kept the settings loaded before (or those of the proxy's start)
        self.config = config
        self._seen: dict[Path, FileStamp] = {}  # the files watched, as they were when last loaded (or tried)
        loaded = self._load("at start")
        self.config = loaded if loaded is not None else with_contexts(config)

    def for_cluster(self, cluster: str) -> UpstreamSecurity:
        """A new connection's settings; the files are looked at first when `recheck_s` has passed."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.recheck_s
            self.check()
        return self.config.for_cluster(cluster)

    def check(self) -> bool:
        """Load the file again if it (or a file it names) changed since last loaded or tried; whether new settings
        now serve."""
        return _stamps(self._seen) != self._seen and self._reload("its files changed")

    def reload(self) -> bool:
        """Load the file again now, changed or not (SIGHUP); whether that worked."""
        return self._reload("SIGHUP")

    def _reload(self, why: str) -> bool:
        config = self._load(why)
        if config is None:
            return False
        self.config = config
        self.reloads += 1
        log.info("upstream config %s reloaded (%s): new upstream connections use %s; open ones keep their login",
                 self.path, why, config.default.describe())
        return True

    def _load(self, why: str) -> UpstreamConfig | None:
        """The file loaded and checked now, or None (one WARNING line) when it cannot be used. The files watched
        are stat'ed before reading (a write that goes on after it is another change, tried again); after a
        failure they include those the new file names, so writing one it names later is a change too."""
        stamps = {self.path: file_stamp(self.path)}  # first: a write after it, even before the lenient read, is seen
        stamps |= _stamps([*_named_files(self.config), *_locations(self.path)])
        try:
            config = with_contexts(load_upstream_config(self.path))
            _check_protocols(self.config, config)
        except Exception as e:  # whatever it is, new connections go on with the settings they had
            self._seen = stamps
            self.failures += 1
            reason = str(e) if isinstance(e, UpstreamConfigError) else f"it cannot be used ({type(e).__name__})"
            kept = "loaded at the proxy's start" if why == "at start" else "loaded before"
            log.warning("upstream config %s not reloaded (%s): %s; the settings %s (%s) still serve new upstream "
                        "connections, tried again when the files change", self.path, why, reason, kept,
                        self.config.default.describe())
            return None
        self._seen = {p: stamps[p] if p in stamps else file_stamp(p) for p in (self.path, *_named_files(config))}
        return config


def _stamps(paths: Iterable[Path]) -> dict[Path, FileStamp]:
    return {p: file_stamp(p) for p in paths}


def _locations(path: Path) -> list[Path]:
    """The files the config file names (its `*.location` values, the clusters' too), read leniently: a file
    that cannot be loaded still says which files to watch for the next try."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: nested deeper than the parser recurses
        return []
    if not isinstance(doc, dict):
        return []
    clusters = doc.get("clusters")
    sections = [doc, *(clusters.values() if isinstance(clusters, dict) else ())]
    return [Path(value) for section in sections if isinstance(section, dict)
            for key, value in section.items() if key.endswith(".location") and isinstance(value, str)]


def with_contexts(config: UpstreamConfig) -> UpstreamConfig:
    """`config` with each TLS cluster's client context made from its files now; UpstreamConfigError naming the
    files (not their contents) when one cannot be made (a key that does not match the certificate, a file half
    written)."""
    return UpstreamConfig(_with_context(config.default, "the upstream config"),
                          {cid: _with_context(sec, f"cluster {cid}") for cid, sec in config.clusters.items()})


def _with_context(security: UpstreamSecurity, where: str) -> UpstreamSecurity:
    if not security.tls:
        return security
    try:
        context = dataclasses.replace(security, context=None).ssl_context()
    except (ssl.SSLError, OSError) as e:
        files = ", ".join(str(p) for p in (security.ssl_ca, security.ssl_cert, security.ssl_key) if p is not None)
        reason = (e.reason or "SSL error") if isinstance(e, ssl.SSLError) else (e.strerror or type(e).__name__)
        raise UpstreamConfigError(f"{where}: the TLS files ({files}) cannot be used: {reason}") from None
    return dataclasses.replace(security, context=context)


def _check_protocols(old: UpstreamConfig, new: UpstreamConfig) -> None:
    """A cluster's security.protocol stays as at start: its brokers' addresses (the view's bootstrap, the
    metadata they answer) are those of the listener of that protocol."""
    for cluster in ("", *old.clusters, *new.clusters):
        was, now = old.for_cluster(cluster).protocol, new.for_cluster(cluster).protocol
        if was != now:
            where = f"cluster {cluster}" if cluster else "the upstream config"
            raise UpstreamConfigError(f"{where}: security.protocol {now} differs from {was}, which the brokers' "
                                      f"addresses are for (restart the proxy to change it)")


def _named_files(config: UpstreamConfig) -> list[Path]:
    files: list[Path] = []
    for security in (config.default, *config.clusters.values()):
        for path in (security.ssl_ca, security.ssl_cert, security.ssl_key):
            if path is not None and path not in files:
                files.append(path)
    return files
