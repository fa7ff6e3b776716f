"""Review rvsec: host ACLs against clients that came through the name service (failing on main when written).

The name service relays a client's whole connection to a proxy (docs/DESIGN.md §3.4: it reads the first request
header and then pumps bytes both ways), from its own address, and tells the proxy nothing of the client's. The
proxy's session host, which every ACL's host is matched against (security/acl.py, Kafka's
`clientAddress().getHostAddress()`), is then the name service's address: a DENY for the client's host does not
apply to it, and an ALLOW for the name service's host grants every relayed client. A real ProxyServer with
authorization and a real NameServiceServer in this event loop, no broker: DescribeAcls is answered from the view.

Fixed (branch fixs2): the name service sends a PROXY v2 header naming the client (`proxy_header=True`,
`--send-proxy-header`) and the proxy trusts it from the name service's address (`proxy_header_from`,
`--proxy-header-from`); tests/security/test_proxy_header.py covers the rest.
"""

from __future__ import annotations

import asyncio
import json
import struct

from kio.schema.describe_acls.v3.request import DescribeAclsRequest
from kio.schema.describe_acls.v3.response import DescribeAclsResponse
from kio.schema.errors import ErrorCode

from fedkafka.nameservice.resolver import ProxyAddress, StaticResolver
from fedkafka.nameservice.server import NameServiceServer
from fedkafka.protocol import codec
from fedkafka.proxy.core.limits import Limits
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.security.acl import AclBinding, Operation, PatternType, Permission, ResourceType
from fedkafka.view.model import ProxyRole, View

GUARD_S = 20.0  # only against a hang
CLIENT_HOST = "127.0.0.2"  # the client's own address (loopback: any 127/8 address is local)
NAMESERVICE_HOST = "127.0.0.1"  # where the name service connects to the proxy from: its PROXY header is trusted
ANONYMOUS = "User:ANONYMOUS"


def _acls() -> tuple[AclBinding, ...]:
    """Anyone may describe the cluster (list ACLs), except from CLIENT_HOST."""
    cluster = (ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL, ANONYMOUS)
    return (AclBinding(*cluster, "*", Operation.DESCRIBE, Permission.ALLOW),
            AclBinding(*cluster, CLIENT_HOST, Operation.DESCRIBE, Permission.DENY))


def _describe_acls_frame() -> bytes:
    return codec.encode_request(DescribeAclsRequest(
        resource_type_filter=1, resource_name_filter=None, pattern_type_filter=1, principal_filter=None,
        host_filter=None, operation=1, permission_type=1), 7, client_id="rvsec")


async def _describe_acls_error(port: int) -> ErrorCode:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(CLIENT_HOST, 0))
    try:
        writer.write(_describe_acls_frame())
        async with asyncio.timeout(GUARD_S):
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            frame = await reader.readexactly(size)
        _header, body = codec.decode_response(DescribeAclsResponse, frame)
        return body.error_code
    finally:
        writer.close()
        await writer.wait_closed()


def test_a_deny_for_the_clients_host_holds_when_it_comes_through_the_name_service(tmp_path):
    async def scenario():
        view_file = tmp_path / "view.json"
        view_file.write_text(json.dumps(View(version=1, acls=_acls()).to_dict()))
        proxy = ProxyServer(ProxyConfig(role=ProxyRole.BOTH, host="127.0.0.1", port=0, advertised_host="127.0.0.1",
                                        view_file=view_file, limits=Limits(), authorization=True,
                                        proxy_header_from=(NAMESERVICE_HOST,)))
        await proxy.start()
        nameservice = NameServiceServer(StaticResolver([ProxyAddress(0, "127.0.0.1", 0)]), proxy_header=True)
        try:
            port = proxy.server.sockets[0].getsockname()[1]
            nameservice.resolver = StaticResolver([ProxyAddress(0, "127.0.0.1", port)])
            _host, ns_port = await nameservice.start("127.0.0.1", 0)
            direct = await _describe_acls_error(port)
            relayed = await _describe_acls_error(ns_port)
            await asyncio.sleep(0.2)  # the relay sees the client's EOF and ends before the name service closes
        finally:
            await nameservice.close()
            proxy.server.close()
            for conn in list(proxy.connections):
                conn.stop_reading()
            await proxy.supervisor.stop()
            proxy.pool.close()
        return direct, relayed

    direct, relayed = asyncio.run(scenario())
    assert direct == ErrorCode.cluster_authorization_failed  # straight to the proxy: denied from CLIENT_HOST
    assert relayed == ErrorCode.cluster_authorization_failed  # the same client through the name service
