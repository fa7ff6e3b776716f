"""Review rvsec: an IPv6 client's host as ACLs match it differs from Kafka's (failing on main when written).

Kafka matches an ACL's host against `clientAddress().getHostAddress()`, which Java writes uncompressed
(`0:0:0:0:0:0:0:1`), so Kafka's ACLs for IPv6 hosts are written that way. The proxy's session host is Python's
peername (`::1`, server.py `_session`): a DENY for an IPv6 host written as Kafka needs it (taken over from a Kafka
cluster, or written by an operator who knows Kafka) is never matched, and the client it names is let through.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import pytest
from kio.schema.describe_acls.v3.response import DescribeAclsResponse
from kio.schema.errors import ErrorCode

from fedkafka.protocol import codec
from fedkafka.proxy.core.limits import Limits
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.security.acl import AclBinding, Operation, PatternType, Permission, ResourceType
from fedkafka.view.model import ProxyRole, View

from .test_rvsec_nameservice_host_acl import _describe_acls_frame

GUARD_S = 20.0  # only against a hang
KAFKA_IPV6_LOOPBACK = "0:0:0:0:0:0:0:1"  # InetAddress.getByName("::1").getHostAddress()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_a_deny_for_an_ipv6_host_written_as_kafka_writes_it_holds(tmp_path):
    cluster = (ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL, "User:ANONYMOUS")
    acls = (AclBinding(*cluster, "*", Operation.DESCRIBE, Permission.ALLOW),
            AclBinding(*cluster, KAFKA_IPV6_LOOPBACK, Operation.DESCRIBE, Permission.DENY))

    async def scenario() -> ErrorCode:
        view_file = tmp_path / "view.json"
        view_file.write_text(json.dumps(View(version=1, acls=acls).to_dict()))
        proxy = ProxyServer(ProxyConfig(role=ProxyRole.BOTH, host="::1", port=0, advertised_host="::1",
                                        view_file=view_file, limits=Limits(), authorization=True))
        await proxy.start()
        try:
            port = proxy.server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("::1", port)
            writer.write(_describe_acls_frame())
            async with asyncio.timeout(GUARD_S):
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                frame = await reader.readexactly(size)
            writer.close()
            return codec.decode_response(DescribeAclsResponse, frame)[1].error_code
        finally:
            proxy.server.close()
            for conn in list(proxy.connections):
                conn.stop_reading()
            await proxy.supervisor.stop()
            proxy.pool.close()

    assert asyncio.run(scenario()) == ErrorCode.cluster_authorization_failed
