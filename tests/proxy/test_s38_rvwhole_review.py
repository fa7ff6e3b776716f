"""Whole-diff review of session 38 (25bf2893..d41ab6b0): bench/relay.py kept the upstream connection of a client that
closed before it was connected (start_relay's own readiness probe leaked one broker connection a relay)."""

from __future__ import annotations

import selectors
import socket
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_relay_closes_the_upstream_of_a_client_gone_before_it_was_connected():
    sys.path.insert(0, str(BENCH))
    try:
        import relay
    finally:
        sys.path.remove(str(BENCH))
    target = socket.create_server(("127.0.0.1", 0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = s.getsockname()[1]
    proc, _addr = relay.start_relay(listen, target.getsockname()[1])  # its probe: connect, close at once
    try:
        for _ in range(20):  # more clients that go before the relay connected them
            with socket.create_connection(("127.0.0.1", listen)):
                pass
        target.settimeout(10)
        upstreams = []
        try:
            while True:
                conn, _ = target.accept()
                upstreams.append(conn)
                target.settimeout(2)
        except TimeoutError:
            pass
        assert upstreams, "the relay connected nothing upstream"
        ended: set[socket.socket] = set()
        with selectors.DefaultSelector() as sel:
            for conn in upstreams:
                sel.register(conn, selectors.EVENT_READ)
            # a bound on the wait for every EOF, not a timing assertion: a leaked connection never ends
            while len(ended) < len(upstreams) and (ready := sel.select(timeout=10)):
                for key, _ in ready:
                    if key.fileobj.recv(1) == b"":
                        sel.unregister(key.fileobj)
                        ended.add(key.fileobj)
        for conn in upstreams:
            conn.close()
        left_open = len(upstreams) - len(ended)
        assert left_open == 0, f"{left_open} of {len(upstreams)} upstream connections left open by the relay"
    finally:
        relay.stop_relay(proc)
        target.close()
