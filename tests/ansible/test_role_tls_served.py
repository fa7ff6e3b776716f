"""After the proxy or name service role wrote a new TLS certificate, it checks that the listener serves it and
restarts only a process that does not (roles/fedkafka_common/tasks/tls_served.yml, library/fedkafka_tls_served.py).

The listener is real TLS on loopback, served from a thread here: either with `ServerTls` (as a proxy of this
version, which loads changed files by itself) or with the context it started with (as a process of a version before
that, which never does). The task file runs in the real ansible-playbook; the service manager is a stand-in
`supervisorctl` that logs what it is asked and, on `restart`, makes the listener a fresh process that reads the
files at start."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ansible_harness import ROOT
from ansible_harness import run_module as run
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedkafka.security import pki
from fedkafka.security.listeners import TlsFiles
from fedkafka.security.server_tls import ServerTls

PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


class Certs:
    """A CA and a server certificate and key in `directory`, issued again by `renew`."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert = pki.make_ca("served-ca")
        self.cert, self.key = directory / "server.pem", directory / "server.key"
        self.renew()

    def renew(self) -> None:
        key, cert = pki.make_leaf(self.ca_key, self.ca_cert, "localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                                  pki.LOOPBACK_SANS)
        for path, write in ((self.cert, lambda p: pki.write_cert(cert, p)),
                            (self.key, lambda p: pki.write_private_key(key, p))):
            tmp = path.with_name(path.name + ".new")
            write(tmp)
            tmp.replace(path)


class Listener:
    """A TLS listener on a free loopback port: `reloads` looks at its files on every handshake (ServerTls, as this
    version); otherwise it keeps the context it started with until `restart()` starts it again on the files."""

    def __init__(self, certs: Certs, reloads: bool):
        self.reloads = reloads
        self.tls = ServerTls(TlsFiles(cert=certs.cert, key=certs.key, recheck_s=0))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def restart(self) -> None:
        self.tls = ServerTls(self.tls.files)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            ctx = self.tls.current() if self.reloads else self.tls.context
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone does not)
        self.sock.close()
        self.thread.join()


@pytest.mark.parametrize("reloads", [True, False], ids=["this-version", "before-reload"])
def test_the_module_says_whether_the_listener_serves_the_certificate_now_in_the_file(tmp_path, reloads):
    certs = Certs(tmp_path)
    with Listener(certs, reloads) as listener:
        args = {"host": "0.0.0.0", "port": listener.port, "cert": str(certs.cert), "timeout": 1}
        failed, before = run("fedkafka_tls_served", args)
        assert not failed and before["serving"] and not before["changed"], before
        certs.renew()
        failed, after = run("fedkafka_tls_served", args)
        assert not failed and not after["changed"]
        assert after["serving"] is reloads, after
        assert after["expected"] != before["expected"] and after["served"] == (
            after["expected"] if reloads else before["expected"]), after
        listener.restart()
        failed, restarted = run("fedkafka_tls_served", args)
        assert restarted["serving"], restarted


def test_the_module_reports_a_listener_that_is_not_there(tmp_path):
    certs = Certs(tmp_path)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    failed, result = run("fedkafka_tls_served", {"port": port, "cert": str(certs.cert), "timeout": 0})
    assert not failed and not result["serving"] and result["served"] == ""
    assert "no handshake with 127.0.0.1:" in result["msg"], result


PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {root}/roles/fedkafka_common/defaults/main.yml
  tasks:
    - name: What the proxy role does after writing a new certificate
      ansible.builtin.include_tasks: {root}/roles/fedkafka_common/tasks/tls_served.yml
"""

SUPERVISORCTL = """#!/bin/sh
# a stand-in for supervisorctl: logs what it is asked; `restart` starts the listener again (a file the test watches)
echo "$*" >> {log}
case "$*" in
  *" status "*) echo "proxy                            RUNNING   pid 4242, uptime 1:00:00" ;;
  *" restart "*) touch {restarted}; while [ -e {restarted} ]; do sleep 0.05; done; echo "proxy: started" ;;
esac
"""


def run_tasks(tmp_path: Path, listener: Listener, certs: Certs, check: bool) -> tuple[subprocess.CompletedProcess,
                                                                                          list[str]]:
    """tls_served.yml in ansible-playbook, its supervisorctl the stand-in above; its output and what it was asked."""
    venv, log, restarted = tmp_path / "venv", tmp_path / "supervisorctl.log", tmp_path / "restarted"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    ctl = venv / "bin" / "supervisorctl"
    ctl.write_text(SUPERVISORCTL.format(log=log, restarted=restarted))
    ctl.chmod(0o755)
    book = tmp_path / "play.yml"
    book.write_text(PLAY.format(root=ROOT))
    given = {"fedkafka_service_name": "proxy", "fedkafka_service_manager": "supervisord",
             "fedkafka_venv": str(venv), "fedkafka_state_dir": str(tmp_path / "state"),
             "fedkafka_tls_cert": str(certs.cert), "fedkafka_tls_served_host": "127.0.0.1",
             "fedkafka_tls_served_port": listener.port, "fedkafka_service_port": listener.port}
    stop = threading.Event()

    def restarter():  # the service manager's restart: a new process, which reads the files at start
        while not stop.wait(0.05):
            if restarted.exists():
                listener.restart()
                restarted.unlink()

    watcher = threading.Thread(target=restarter, daemon=True)
    watcher.start()
    try:
        proc = subprocess.run([PLAYBOOK, str(book), "-e", json.dumps(given), "-e", "ansible_connection=local",
                               "-e", f"ansible_python_interpreter={sys.executable}", *(["--check"] if check else [])],
                              cwd=ROOT, capture_output=True, text=True, timeout=180)
    finally:
        stop.set()
        watcher.join()
    return proc, log.read_text().splitlines() if log.exists() else []


def recap(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[proc.stdout.rindex("PLAY RECAP"):]


@pytest.mark.ansible
def test_a_proxy_that_loads_the_new_certificate_is_not_restarted(tmp_path):
    certs = Certs(tmp_path / "tls")
    with Listener(certs, reloads=True) as listener:
        certs.renew()
        proc, asked = run_tasks(tmp_path, listener, certs, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert asked == [] and "changed=0" in recap(proc), recap(proc)


@pytest.mark.ansible
def test_a_proxy_too_old_to_load_the_new_certificate_is_restarted_and_then_serves_it(tmp_path):
    certs = Certs(tmp_path / "tls")
    with Listener(certs, reloads=False) as listener:
        certs.renew()
        proc, asked = run_tasks(tmp_path, listener, certs, check=False)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert [a.split()[-2:] for a in asked] == [["status", "proxy"], ["restart", "proxy"]], asked
        assert "changed=1" in recap(proc), recap(proc)
        _failed, now = run("fedkafka_tls_served", {"port": listener.port, "cert": str(certs.cert), "timeout": 0})
        assert now["serving"], now


@pytest.mark.ansible
def test_check_mode_says_what_the_run_checks_and_asks_nothing(tmp_path):
    certs = Certs(tmp_path / "tls")
    with Listener(certs, reloads=False) as listener:
        proc, asked = run_tasks(tmp_path, listener, certs, check=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = " ".join(proc.stdout.split())
    assert f"the run checks that 127.0.0.1:{listener.port} serves the certificate written to {certs.cert}" in out
    assert asked == [] and "changed=0" in recap(proc), recap(proc)
