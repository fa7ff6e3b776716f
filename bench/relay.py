"""A bare TCP relay on uvloop with no Kafka in it: the floor any proxy pays for one more hop on this machine.

The benches' `--relay` side: the broker gets a second listener advertised at the relay's port
(`relay_listener`), so a client bootstrapped at the relay sends all its traffic (metadata, produce, fetch)
through it, and the relay's process CPU and the client's throughput beside direct say what a proxy that does
no Kafka work at all costs and reaches. Each relay runs in its own process (`start_relay`), so its CPU is counted
apart as a proxy's is.

    python bench/relay.py LISTEN_PORT TARGET_PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import uvloop

from fedkafka.kafka.cluster import LocalBroker


class _Pipe(asyncio.Protocol):
    """One direction of the bare relay: bytes written on to the peer as they come (held until the peer is
    connected), reading paused while the peer's transport is full."""

    def __init__(self, peer: _Pipe | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self.early: list[bytes] = []  # what came before the peer was connected

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def connection_lost(self, exc) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


def serve_relay(listen: int, target: int) -> None:
    """A TCP relay on uvloop with no Kafka in it (the proxy's floor): each client connection piped to `target`."""
    connecting: set[asyncio.Task] = set()

    async def connect(down: _Pipe) -> None:
        up = _Pipe(down)
        try:
            await asyncio.get_running_loop().create_connection(lambda: up, "127.0.0.1", target)
        except OSError:  # the target is not up (a readiness probe before the broker listens): drop the client
            assert down.transport is not None
            down.transport.close()
            return
        assert up.transport is not None and down.transport is not None
        if down.transport.is_closing():  # the client went while this connected (a readiness probe): no one to relay
            up.transport.close()
            return
        down.peer = up
        up.transport.writelines(down.early)
        down.early.clear()

    class _Accepted(_Pipe):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            task = asyncio.ensure_future(connect(self))
            connecting.add(task)
            task.add_done_callback(connecting.discard)

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Accepted, "127.0.0.1", listen)
        await server.serve_forever()

    uvloop.run(serve())


@contextlib.contextmanager
def relay_listener(relay_port: int, broker_port: int) -> Iterator[None]:
    """Brokers started inside get a second listener on `broker_port`, advertised at `relay_port`: a client
    bootstrapped at the relay is told the relay's address for the broker, so all its traffic goes through it."""
    plain = LocalBroker.config

    def config(self) -> dict[str, str]:
        cfg = plain(self)
        cfg["listeners"] += f",RELAY://127.0.0.1:{broker_port}"
        cfg["advertised.listeners"] += f",RELAY://127.0.0.1:{relay_port}"
        cfg["listener.security.protocol.map"] += ",RELAY:PLAINTEXT"
        return cfg

    LocalBroker.config = config  # type: ignore[method-assign]
    try:
        yield
    finally:
        LocalBroker.config = plain  # type: ignore[method-assign]


def start_relay(listen: int, target: int) -> tuple[subprocess.Popen, str]:
    """This file as a process relaying `listen` to `target`, once it accepts connections; its address. Start it
    after the broker (whose relay listener is `target`); stop it with `stop_relay`."""
    proc = subprocess.Popen([sys.executable, __file__, str(listen), str(target)])
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", listen)) == 0:
                return proc, f"127.0.0.1:{listen}"
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_relay(proc)  # the caller has no handle on it yet: it would outlive the run
    raise SystemExit(f"relay on port {listen} did not start")


def stop_relay(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(20)


if __name__ == "__main__":
    serve_relay(int(sys.argv[1]), int(sys.argv[2]))
