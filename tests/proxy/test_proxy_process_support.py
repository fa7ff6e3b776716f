"""ProxyProcess returns only once every port the proxy was told to open accepts connections: the CI failure this
reproduces was a SASL test connecting to its --listener while only --listen was up."""

from __future__ import annotations

import socket
import sys

import pytest

from fedkafka.view.model import View
from proxy.support import ProxyProcess, free_port, listen_addresses

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


def test_listener_addresses_are_read_in_every_form_the_cli_takes_and_port_0_is_not_waited_for(tmp_path):
    """`--flag=value` as well as `--flag value`, IPv6 hosts in brackets, and a port 0 (the kernel picks it: nothing
    on the command line says which, so it is left out rather than waited for in vain)."""
    cmd = ["fedkafka", "proxy", "--listen=127.0.0.1:9000", "--listener", "SSL://[::1]:9001",
           "--listener=SASL_SSL://[::]:9002", "--listener", "PLAINTEXT://127.0.0.1:0", "--admin-listen=[::1]:0",
           "--admin-listen", "0.0.0.0:9003", "--view-file", "v.json"]
    assert listen_addresses(cmd) == [("127.0.0.1", 9000), ("::1", 9001), ("::", 9002), ("0.0.0.0", 9003)]
    proxy = ProxyProcess(tmp_path, View(version=1))
    proxy.cmd = cmd
    assert proxy.ports() == [9000, 9001, 9002, 9003]


def test_a_process_listening_on_ipv6_loopback_is_waited_for_there(tmp_path):
    """A listener on [::1] is asked on ::1 (127.0.0.1 would never accept)."""
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        port = probe.getsockname()[1]
    proxy = ProxyProcess(tmp_path, View(version=1))
    proxy.cmd = [sys.executable, "-c", IPV6_LISTENER, f"--listen=[::1]:{port}"]
    with proxy, socket.socket(socket.AF_INET6) as client:
        assert client.connect_ex(("::1", port)) == 0


IPV6_LISTENER = """
import socket, sys, time
s = socket.socket(socket.AF_INET6)
s.bind(("::1", int(sys.argv[1].rsplit(":", 1)[1]))); s.listen()
time.sleep(60)
"""
