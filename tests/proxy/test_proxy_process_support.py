"""ProxyProcess returns only once every port the proxy was told to open accepts connections: the CI failure this
reproduces was a SASL test connecting to its --listener while only --listen was up."""

from __future__ import annotations

import socket
import sys

from fedkafka.view.model import View
from proxy.support import ProxyProcess, free_port

# Stands in for the proxy: opens --listen at once and the extra listener a moment later, as a loaded machine may.
LATE_LISTENER = """
import socket, sys, time
first, second = socket.socket(), socket.socket()
first.bind(("127.0.0.1", int(sys.argv[2].rsplit(":", 1)[1]))); first.listen()
time.sleep(1.5)
second.bind(("127.0.0.1", int(sys.argv[4].rsplit(":", 1)[1]))); second.listen()
time.sleep(60)
"""


def test_every_listener_named_on_the_command_line_accepts_before_the_process_is_handed_over(tmp_path):
    extra_port = free_port()
    proxy = ProxyProcess(tmp_path, View(version=1), extra=("--listener", f"SASL_PLAINTEXT://127.0.0.1:{extra_port}"))
    proxy.cmd = [sys.executable, "-c", LATE_LISTENER, "--listen", f"127.0.0.1:{proxy.port}",
                 "--listener", f"SASL_PLAINTEXT://127.0.0.1:{extra_port}"]
    with proxy, socket.socket() as client:
        assert client.connect_ex(("127.0.0.1", extra_port)) == 0


def test_the_ports_waited_for_are_listen_every_listener_and_the_admin_listener(tmp_path):
    extra = ("--listener", "SSL://127.0.0.1:9001", "--listener", "SASL_SSL://127.0.0.1:9002",
             "--admin-listen", "0.0.0.0:9003")
    proxy = ProxyProcess(tmp_path, View(version=1), extra=extra)
    assert proxy.ports() == [proxy.port, 9001, 9002, 9003]
