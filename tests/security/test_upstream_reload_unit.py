"""The brokers' credentials rotated without a restart (`security.upstream_reload.UpstreamFile`): a NEW upstream
connection logs in with the file as it is now (checked by a stand-in broker that records the PLAIN login, and by
a TLS server that records the client certificate presented); a file that cannot be loaded keeps the settings
loaded before with one WARNING line that never holds a password; SIGHUP (`ProxyServer.reload_files`) loads at once.
The recheck interval is a fake clock: no assertion depends on time."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import ssl
import struct
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kio.schema.errors import ErrorCode
from kio.static.primitive import i64Timedelta

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.security import pki as _pki
from fedkafka.security.upstream import load_upstream_config
from fedkafka.security.upstream_reload import UpstreamFile
from fedkafka.view.model import ProxyRole

OLD, NEW = "Old-pw-7f3a9c", "New-pw-2b8e41"


class PlainBroker:
    """Answers SaslHandshake (PLAIN) and SaslAuthenticate: accepts `users`, records each login (user, password)."""

    def __init__(self, users: dict[str, str]):
        self.users = users
        self.logins: list[tuple[str, str, bool]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                header, request = codec.decode_request(await reader.readexactly(size))
                key, version = request.__api_key__, request.__version__
                if key == 17:
                    body = {"error_code": ErrorCode.none, "mechanisms": ["PLAIN"]}
                else:  # 36
                    _, user, password = bytes(request.auth_bytes).decode().split("\0")
                    ok = self.users.get(user) == password
                    self.logins.append((user, password, ok))
                    body = {"error_code": ErrorCode.none if ok else ErrorCode.sasl_authentication_failed,
                            "error_message": None if ok else "Authentication failed", "auth_bytes": b"",
                            "session_lifetime": i64Timedelta(datetime.timedelta(0))}
                writer.write(codec.encode_response(build(codec.response_schema(key, version), body),
                                                   header.correlation_id))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, password: str, user: str = "fedkafka", **extra: str) -> None:
    path.write_text(json.dumps({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                                "sasl.username": user, "sasl.password": password} | extra))
    path.chmod(0o600)


def _rewrite(path: Path, write) -> None:
    """A new file in place of the old one (a new inode, as Ansible's copy and an editor's save make)."""
    tmp = path.with_suffix(".new")
    write(tmp)
    tmp.replace(path)


async def _login(pool: UpstreamPool, port: int, slot: int) -> None:
    conn = await pool.get("127.0.0.1", port, slot, "c1")  # a new slot: a new connection, a new login
    conn.close()


def _run(broker: PlainBroker, test) -> None:
    async def main():
        server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
        try:
            await test(server.sockets[0].getsockname()[1])
        finally:
            server.close()
    asyncio.run(main())


def test_a_new_connection_logs_in_with_the_rewritten_password_once_the_recheck_is_due(tmp_path):
    path = tmp_path / "upstream.json"
    _write(path, OLD)
    clock = Clock()
    source = UpstreamFile(path, load_upstream_config(path), clock=clock)
    broker = PlainBroker({"fedkafka": OLD})

    async def test(port):
        pool = UpstreamPool(upstream=source)
        await _login(pool, port, 0)
        _rewrite(path, lambda p: _write(p, NEW))
        broker.users["fedkafka"] = NEW  # the brokers changed the principal's password first
        with pytest.raises(ConnectionError, match="authentication refused"):
            await _login(pool, port, 1)  # recheck not due yet: the file is not looked at
        clock.now += source.recheck_s  # due: the new file is read before the connection is made
        await _login(pool, port, 2)
        pool.close()
    _run(broker, test)
    assert broker.logins == [("fedkafka", OLD, True), ("fedkafka", OLD, False), ("fedkafka", NEW, True)]
    assert source.reloads == 1


@pytest.mark.parametrize("bad", ["not json", "unknown property", "readable by others", "protocol changed",
                                 "missing file"])
def test_a_file_that_cannot_be_loaded_keeps_the_old_login_with_one_warning_without_the_password(tmp_path, caplog,
                                                                                                bad):
    path = tmp_path / "upstream.json"
    _write(path, OLD)
    clock = Clock()
    source = UpstreamFile(path, load_upstream_config(path), clock=clock)
    writers = {
        "not json": lambda p: p.write_text('{"sasl.password": "' + NEW),  # half written
        "unknown property": lambda p: _write(p, NEW, **{"sasl.jaas.config": "x"}),
        "readable by others": lambda p: (_write(p, NEW), p.chmod(0o644)),
        "protocol changed": lambda p: _write(p, NEW, **{"security.protocol": "SASL_SSL"}),
        "missing file": lambda p: _write(p, NEW, **{"ssl.ca.location": str(tmp_path / "nowhere.pem")}),
    }
    _rewrite(path, writers[bad])
    broker = PlainBroker({"fedkafka": OLD})

    async def test(port):
        pool = UpstreamPool(upstream=source)
        for slot in range(3):  # three new connections, two rechecks due: the same change is tried once
            clock.now += source.recheck_s
            await _login(pool, port, slot)
        pool.close()
    with caplog.at_level(logging.WARNING, "fedkafka.security.upstream_reload"):
        _run(broker, test)
    assert broker.logins == [("fedkafka", OLD, True)] * 3
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and f"upstream config {path} not reloaded" in lines[0], lines
    assert "still serve" in lines[0] and NEW not in lines[0] and OLD not in lines[0]
    assert source.failures == 1 and source.reloads == 0

    _rewrite(path, lambda p: _write(p, NEW))  # the next change is tried again, and loads
    broker.users["fedkafka"] = NEW
    broker.logins.clear()

    async def fixed(port):
        pool = UpstreamPool(upstream=source)
        clock.now += source.recheck_s
        await _login(pool, port, 0)
        pool.close()
    _run(broker, fixed)
    assert broker.logins == [("fedkafka", NEW, True)]


def test_sighup_loads_the_file_at_once_without_waiting_for_the_recheck(tmp_path, caplog):
    path = tmp_path / "upstream.json"
    _write(path, OLD)
    server = ProxyServer(ProxyConfig(role=ProxyRole.BOTH, host="127.0.0.1", port=0, advertised_host="127.0.0.1",
                                     view_file=tmp_path / "view.json", upstream=load_upstream_config(path),
                                     upstream_file=path))
    assert isinstance(server.upstream, UpstreamFile) and server.pool.upstream is server.upstream
    server.upstream._clock = lambda: 0.0  # the recheck never due: only SIGHUP reads the file  # type: ignore
    _rewrite(path, lambda p: _write(p, NEW, user="fedkafka-2"))
    broker = PlainBroker({"fedkafka-2": NEW})

    async def test(port):
        server.reload_files()  # what the SIGHUP handler calls (serve())
        await _login(server.pool, port, 0)
        server.pool.close()
    with caplog.at_level(logging.INFO, "fedkafka.security.upstream_reload"):
        _run(broker, test)
    assert broker.logins == [("fedkafka-2", NEW, True)]
    assert any("reloaded (SIGHUP)" in r.getMessage() and "user 'fedkafka-2'" in r.getMessage()
               for r in caplog.records)
    assert all(NEW not in r.getMessage() for r in caplog.records)


# -- the client certificate ----------------------------------------------------------------------------------

class CertRecorder:
    """A TLS server that requires a client certificate of `ca` and records each one's CN."""

    def __init__(self, ctx: ssl.SSLContext):
        self.ctx = ctx
        self.names: list[str] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        from cryptography import x509
        cert = x509.load_der_x509_certificate(der)
        self.names.append(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        writer.close()


def _client_one_over_tls(tmp_path: Path):
    """A CA (ca.pem), client-one's certificate and key (client.pem, client.key), a TLS server context that asks
    for a client certificate, and upstream.json naming them. Returns those paths, the client certificate writer,
    the server context and the config's path."""
    ca_key, ca_cert = _pki.make_ca("upstream-ca")
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    _pki.write_cert(ca_cert, ca)
    client = _client_writer(ca_key, ca_cert)
    client("client-one", cert, key)
    path = tmp_path / "upstream.json"
    _write_ssl(path, ca, cert, key)
    return ca, cert, key, client, _server_context(ca_key, ca_cert, ca, tmp_path), path


def test_a_new_connection_presents_the_renewed_client_certificate_and_a_mismatched_key_keeps_the_old(tmp_path,
                                                                                                     caplog):
    _, cert, key, client, server_ctx, path = _client_one_over_tls(tmp_path)
    source = UpstreamFile(path, load_upstream_config(path), clock=lambda: 0.0)
    recorder = CertRecorder(server_ctx)
    with caplog.at_level(logging.WARNING, "fedkafka.security.upstream_reload"):
        asyncio.run(_connections(recorder, source, cert, key, client))
    assert recorder.names == ["client-one", "client-two", "client-two"]
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "cannot be used" in lines[0] and str(cert) in lines[0], lines


async def _connect_after_each(recorder: CertRecorder, source: UpstreamFile, steps) -> None:
    """A TLS server that records each client certificate it is shown; after each step, one new connection of the
    pool (a new slot), waited for until the server's side of the handshake recorded it."""
    server = await asyncio.start_server(recorder.serve, "127.0.0.1", 0, ssl=recorder.ctx)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(upstream=source)
    try:
        for slot, step in enumerate(steps):
            step()
            conn = await pool.get("127.0.0.1", port, slot, "c1")  # a new slot: a new connection
            while len(recorder.names) <= slot:  # the server's side of the handshake recorded it
                await asyncio.sleep(0.01)
            conn.close()
    finally:
        pool.close()
        server.close()


def _client_writer(ca_key, ca_cert):
    """Writes a client certificate (CN `cn`) signed by the CA, and its key, at the given paths."""
    def client(cn: str, cert_path: Path, key_path: Path) -> None:
        leaf_key, leaf = _pki.make_leaf(ca_key, ca_cert, cn, ExtendedKeyUsageOID.CLIENT_AUTH)
        _pki.write_cert(leaf, cert_path)
        _pki.write_private_key(leaf_key, key_path)
    return client


def _write_ssl(target: Path, ca: Path, cert: Path, key: Path) -> None:
    """An upstream config for TLS with a client certificate."""
    target.write_text(json.dumps({"security.protocol": "SSL", "ssl.ca.location": str(ca),
                                  "ssl.certificate.location": str(cert), "ssl.key.location": str(key)}))


async def _connections(recorder, source: UpstreamFile, cert: Path, key: Path, client) -> None:
    def renew() -> None:  # certificate and key at the same paths, then SIGHUP
        client("client-two", cert, key)
        assert source.reload()

    def mismatch() -> None:  # a key written without its certificate: refused, client-two still presented
        client("client-three", cert.with_suffix(".other"), key)
        assert not source.reload()
    await _connect_after_each(recorder, source, [lambda: None, renew, mismatch])


# -- review s32-rv4: defects found in the merge 94c45b4 (each fails on that merge) -------------------------------

def test_a_worker_restarted_after_a_rotation_logs_in_with_the_file_as_it_is_now(tmp_path):
    """`--workers`: the parent loaded the file at its start and hands that config to every worker it starts, also
    to one it starts again hours later (`WorkerSupervisor._start`). The file was rotated meanwhile (the running
    workers reloaded it on SIGHUP, the parent does not); the restarted worker must log in with the file as it is,
    not with the parent's first settings, and not wait for another change of the file to notice."""
    from fedkafka.proxy.core.server import _worker_config

    path = tmp_path / "upstream.json"
    _write(path, OLD)
    parent = ProxyConfig(role=ProxyRole.BOTH, host="127.0.0.1", port=0, advertised_host="127.0.0.1",
                         view_file=tmp_path / "view.json", upstream=load_upstream_config(path), upstream_file=path,
                         workers=2)
    _rewrite(path, lambda p: _write(p, NEW))  # rotated: the brokers know only the new password now
    broker = PlainBroker({"fedkafka": NEW})
    worker = ProxyServer(_worker_config(parent, 1))  # what the restarted worker process builds (`_run_one`)
    assert isinstance(worker.upstream, UpstreamFile)
    worker.upstream._clock = lambda: 0.0  # no recheck due: what it logs in with is what it started with  # type: ignore

    async def test(port):
        with contextlib.suppress(ConnectionError):  # refused: the assertion below names the login made
            await _login(worker.pool, port, 0)
        worker.pool.close()
    _run(broker, test)
    assert broker.logins == [("fedkafka", NEW, True)]


def test_a_reload_refused_for_a_missing_named_file_is_tried_again_once_that_file_is_written(tmp_path, caplog):
    """A client certificate rotated to new paths (a rotation the role reloads): the file names the new certificate
    and key before they are in place (written by another task, or the key after the certificate). The reload is
    refused with one WARNING that says it is "tried again when the files change"; once the named files are
    written, the next recheck must load them: the files stat'ed are those of the new file, not only the old ones."""
    ca, _, _, client, server_ctx, path = _client_one_over_tls(tmp_path)
    new_cert, new_key = tmp_path / "client-2.pem", tmp_path / "client-2.key"
    clock = Clock()
    source = UpstreamFile(path, load_upstream_config(path), clock=clock)
    recorder = CertRecorder(server_ctx)

    def point_at_new_paths() -> None:
        _rewrite(path, lambda p: _write_ssl(p, ca, new_cert, new_key))  # the files it names: not written yet
        clock.now += source.recheck_s  # a recheck due before each new connection

    def write_named_files() -> None:
        client("client-two", new_cert, new_key)
        clock.now += source.recheck_s

    with caplog.at_level(logging.WARNING, "fedkafka.security.upstream_reload"):
        asyncio.run(_connect_after_each(recorder, source, [point_at_new_paths, write_named_files]))
    assert [r for r in caplog.records if r.levelno == logging.WARNING], "the first reload is refused"
    assert recorder.names == ["client-one", "client-two"]


def _server_context(ca_key, ca_cert, ca: Path, tmp_path: Path) -> ssl.SSLContext:
    server_key, server_cert = _pki.make_leaf(ca_key, ca_cert, "localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                                             _pki.LOOPBACK_SANS)
    _pki.write_cert(server_cert, tmp_path / "server.pem")
    _pki.write_private_key(server_key, tmp_path / "server.key")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    server_ctx.load_cert_chain(str(tmp_path / "server.pem"), str(tmp_path / "server.key"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    return server_ctx


def test_the_chmod_600_the_warning_asks_for_is_picked_up_by_the_next_recheck(tmp_path, caplog):
    """The WARNING for a rotated file others may read says "chmod 600 it" and "tried again when the files
    change"; a chmod changes neither the file's inode, size nor mtime. Once the operator did what the line says,
    the next new connection (recheck due) must log in with the new password, without a SIGHUP."""
    path = tmp_path / "upstream.json"
    _write(path, OLD)
    clock = Clock()
    source = UpstreamFile(path, load_upstream_config(path), clock=clock)
    _rewrite(path, lambda p: (_write(p, NEW), p.chmod(0o644)))
    broker = PlainBroker({"fedkafka": OLD})

    async def test(port):
        pool = UpstreamPool(upstream=source)
        clock.now += source.recheck_s
        await _login(pool, port, 0)  # refused file: the old password still serves
        path.chmod(0o600)  # what the WARNING asks for
        broker.users["fedkafka"] = NEW
        clock.now += source.recheck_s
        with contextlib.suppress(ConnectionError):  # refused: the assertion below names the login made
            await _login(pool, port, 1)
        pool.close()
    with caplog.at_level(logging.WARNING, "fedkafka.security.upstream_reload"):
        _run(broker, test)
    assert any("chmod 600 it" in r.getMessage() for r in caplog.records)
    assert broker.logins == [("fedkafka", OLD, True), ("fedkafka", NEW, True)]


def test_a_reloaded_password_that_the_brokers_refuse_is_logged_although_the_old_one_was_refused_too(tmp_path,
                                                                                                   caplog):
    """docs/OPERATIONS.md's in-place rotation: the password is changed on the brokers first (the proxy's new
    logins are refused: one ERROR line), then in the file, then SIGHUP. A file with a typo in the new password
    loads (INFO "reloaded"), and every login is still refused: that must show as an ERROR line after the reload,
    not be taken for the line already logged before it (the broker's message is the same for both passwords)."""
    from fedkafka.proxy.core import upstream as upstream_module

    upstream_module._last_auth_failure.clear()
    path = tmp_path / "upstream.json"
    _write(path, OLD)
    source = UpstreamFile(path, load_upstream_config(path), clock=lambda: 0.0)
    broker = PlainBroker({"fedkafka": NEW})  # the brokers changed the principal's password first

    async def test(port):
        pool = UpstreamPool(upstream=source)
        with pytest.raises(ConnectionError):
            await _login(pool, port, 0)
        _rewrite(path, lambda p: _write(p, NEW + "-typo"))
        assert source.reload()  # SIGHUP: it loads, the INFO line says so
        with pytest.raises(ConnectionError):
            await _login(pool, port, 1)
        pool.close()
    with caplog.at_level(logging.INFO):
        _run(broker, test)
    upstream_module._last_auth_failure.clear()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    reloaded = next(i for i, (_, m) in enumerate(messages) if "reloaded (SIGHUP)" in m)
    assert [m for level, m in messages[:reloaded] if level == logging.ERROR and "SASL authentication" in m]
    after = [m for level, m in messages[reloaded:] if level == logging.ERROR and "SASL authentication" in m]
    assert len(after) == 1, messages
    assert all(NEW not in m for _, m in messages)


def test_a_worker_restarted_after_a_certificate_moved_to_new_paths_starts_and_presents_the_new_one(tmp_path):
    """The same restart after a client certificate rotated to new paths, the old files deleted once every proxy
    reloaded: the parent's first settings name files that are gone, so the restarted worker must not be built
    from them (it would fail to start, and be started again and again by its parent)."""
    from fedkafka.proxy.core.server import _worker_config

    ca_key, ca_cert = _pki.make_ca("upstream-ca")
    ca, path = tmp_path / "ca.pem", tmp_path / "upstream.json"
    _pki.write_cert(ca_cert, ca)

    def client(cn: str, stem: str) -> None:
        _client_writer(ca_key, ca_cert)(cn, tmp_path / f"{stem}.pem", tmp_path / f"{stem}.key")

    def config(stem: str, target: Path) -> None:
        _write_ssl(target, ca, tmp_path / f"{stem}.pem", tmp_path / f"{stem}.key")
    client("client-one", "client-1")
    config("client-1", path)
    parent = ProxyConfig(role=ProxyRole.BOTH, host="127.0.0.1", port=0, advertised_host="127.0.0.1",
                         view_file=tmp_path / "view.json", upstream=load_upstream_config(path), upstream_file=path,
                         workers=2)
    client("client-two", "client-2")
    _rewrite(path, lambda p: config("client-2", p))
    for old in ("client-1.pem", "client-1.key"):
        (tmp_path / old).unlink()
    recorder = CertRecorder(_server_context(ca_key, ca_cert, ca, tmp_path))
    worker = ProxyServer(_worker_config(parent, 1))

    async def main():
        server = await asyncio.start_server(recorder.serve, "127.0.0.1", 0, ssl=recorder.ctx)
        try:
            conn = await worker.pool.get("127.0.0.1", server.sockets[0].getsockname()[1], 0, "c1")
            while not recorder.names:
                await asyncio.sleep(0.01)
            conn.close()
        finally:
            worker.pool.close()
            server.close()
    asyncio.run(main())
    assert recorder.names == ["client-two"]


# -- s32-fixrv4 ------------------------------------------------------------------------------------------------

def test_a_worker_started_while_the_file_cannot_be_loaded_logs_in_with_the_parents_settings_and_warns(tmp_path,
                                                                                                      caplog):
    """The file is half written (or refused) just when a worker starts again: the worker starts with the
    settings its parent loaded (one WARNING line, no password), and loads the file at its next change."""
    from fedkafka.proxy.core.server import _worker_config

    path = tmp_path / "upstream.json"
    _write(path, OLD)
    parent = ProxyConfig(role=ProxyRole.BOTH, host="127.0.0.1", port=0, advertised_host="127.0.0.1",
                         view_file=tmp_path / "view.json", upstream=load_upstream_config(path), upstream_file=path,
                         workers=2)
    _rewrite(path, lambda p: p.write_text('{"sasl.password": "' + NEW))  # half written
    with caplog.at_level(logging.WARNING, "fedkafka.security.upstream_reload"):
        worker = ProxyServer(_worker_config(parent, 1))
    assert isinstance(worker.upstream, UpstreamFile) and worker.upstream.failures == 1
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "loaded at the proxy's start" in lines[0] and NEW not in lines[0], lines
    source = worker.upstream
    source._clock = lambda: 0.0  # no recheck due but the one called below  # type: ignore[method-assign]
    broker = PlainBroker({"fedkafka": OLD})

    async def test(port):
        await _login(worker.pool, port, 0)
        _rewrite(path, lambda p: _write(p, NEW))  # written completely: the next recheck loads it
        broker.users["fedkafka"] = NEW
        assert source.check()
        await _login(worker.pool, port, 1)
        worker.pool.close()
    _run(broker, test)
    assert broker.logins == [("fedkafka", OLD, True), ("fedkafka", NEW, True)]


def test_the_metrics_count_the_reloads_and_the_refused_loads_of_the_upstream_config(tmp_path):
    from fedkafka.proxy.core.metrics import ProxyMetrics

    path = tmp_path / "upstream.json"
    _write(path, OLD)
    server = ProxyServer(ProxyConfig(role=ProxyRole.BOTH, host="127.0.0.1", port=0, advertised_host="127.0.0.1",
                                     view_file=tmp_path / "view.json", upstream=load_upstream_config(path),
                                     upstream_file=path))
    metrics = ProxyMetrics(server)
    _rewrite(path, lambda p: _write(p, NEW, **{"sasl.jaas.config": "x"}))
    server.reload_files()
    _rewrite(path, lambda p: _write(p, NEW))
    server.reload_files()
    server.reload_files()
    text = metrics.render().decode()
    assert "fedkafka_proxy_upstream_config_reload_failures_total 1.0" in text
    assert "fedkafka_proxy_upstream_config_reloads_total 2.0" in text
