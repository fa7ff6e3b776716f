"""A PLAIN login through a real proxy process while junk logins from 8 other client addresses have their password
checks queued (loopback: 127.0.0.2-9 are other addresses to the proxy). First come first served, the login waited
for all of them (512 checks, at 65536 iterations ~70 ms each on two threads: ~18 s, past the handler's ~5.5 s
wait), and was closed unanswered; served in turn by address, it waits for about one check of each and succeeds."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_authenticate.v2.response import SaslAuthenticateResponse
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
from proxy.support import ProxyProcess, free_port

from fedkafka.protocol import codec
from fedkafka.security import scram
from fedkafka.view.model import View

pytestmark = [pytest.mark.integration]

PASSWORD = "Flood-" + uuid.uuid4().hex
ITERATIONS = 65536  # a costly check: the flood's queue is long in time, not only in checks
ADDRESSES = [f"127.0.0.{a}" for a in range(2, 10)]
PER_ADDRESS = 64  # password_checks.PER_CLIENT: the most one address may have queued


async def _frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        size = int.from_bytes(await reader.readexactly(4), "big")
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None  # closed by the proxy


async def _log_in(port: int, source: str, user: str, password: str):
    """A connection from `source` with its SaslHandshake and PLAIN SaslAuthenticate sent; its handshake answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(codec.encode_request(SaslHandshakeRequest(mechanism="PLAIN"), 1) +
                 codec.encode_request(SaslAuthenticateRequest(auth_bytes=f"\0{user}\0{password}".encode()), 2))
    assert await asyncio.wait_for(_frame(reader), 60) is not None
    return reader, writer


async def _scenario(port: int) -> SaslAuthenticateResponse | None:
    flood = await asyncio.gather(*(_log_in(port, source, "mallory", f"guess-{i}")
                                   for source in ADDRESSES for i in range(PER_ADDRESS)))
    try:
        reader, writer = await _log_in(port, "127.0.0.1", "alice", PASSWORD)
        frame = await asyncio.wait_for(_frame(reader), 60)
        writer.close()
        return None if frame is None else codec.decode_response(SaslAuthenticateResponse, frame)[1]
    finally:
        for _reader, flooding in flood:
            flooding.close()


def test_a_plain_login_succeeds_while_a_few_addresses_flood_the_password_checks(tmp_path):
    port = free_port()
    view = View(version=1, credentials=tuple(scram.make_credential("alice", m, PASSWORD, iterations=ITERATIONS)
                                             for m in ("SCRAM-SHA-256", "SCRAM-SHA-512")))
    with ProxyProcess(tmp_path, view, extra=("--listener", f"SASL_PLAINTEXT://127.0.0.1:{port}")) as proxy:
        answer = asyncio.run(_scenario(port))
        output = proxy.output()
    assert answer is not None, output[-3000:]  # not closed unanswered behind the flood's checks
    assert answer.error_code == ErrorCode.none
    assert PASSWORD not in output and "guess-" not in output
