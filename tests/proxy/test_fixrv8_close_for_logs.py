"""fixrv8 (rv8's nit): `UpstreamPool.close_for` logs why it closes a connection, a lent (dedicated) one too."""

from __future__ import annotations

import logging

from fedkafka.proxy.core.upstream import UpstreamPool


class _LentConnection:
    label = "broker-1 127.0.0.1:9092"

    def __init__(self, future: object):
        self.future, self.closed = future, False

    def owns(self, future: object) -> bool:
        return future is self.future

    def close(self) -> None:
        self.closed = True


def test_closing_a_lent_connection_logs_the_reason(caplog):
    pool, call = UpstreamPool(), object()
    conn = _LentConnection(call)
    pool._lent.add(conn)  # type: ignore[arg-type]
    pool.release = pool._lent.discard  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.WARNING, logger="fedkafka.proxy.core.upstream"):
        pool.close_for(call, "the drain closes an abandoned write's connection")  # type: ignore[arg-type]
    assert conn.closed and conn not in pool._lent
    assert "closing upstream broker-1 127.0.0.1:9092 (dedicated): the drain closes an abandoned write's connection" \
        in caplog.text
