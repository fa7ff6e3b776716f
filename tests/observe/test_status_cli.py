"""`fedkafka status` against a real controller and a real proxy: healthy, then a proxy that never acks the view
(--check exits 3 and names it), and a proxy admin address that does not answer."""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import pytest
from proxy.support import ROOT, free_port

from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.view.model import ProxyRole
from observe.support import TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a controller process and CLI processes


async def fedkafka_status(url: str, token_file, *args: str) -> tuple[int, dict]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fedkafka.cli", "status", "--json", "--controller", url, "--token-file", str(token_file),
        *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert out, err.decode()
    return proc.returncode, json.loads(out)


def test_status_summarises_health_from_the_same_signals(controller, tmp_path):
    token_file = tmp_path / "status-token"
    token_file.write_text(TOKEN)

    async def scenario():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=sock.getsockname()[1],
                                         advertised_host="127.0.0.1", controller=controller, token=TOKEN,
                                         admin_listen=("127.0.0.1", 0)))
        await server.start(sock)
        admin = f"127.0.0.1:{server.admin.port}"
        try:
            for _ in range(120):  # its first ack comes with its first heartbeat (a third of the lease)
                code, doc = await fedkafka_status(controller, token_file, "--check", "--proxy-admin", admin)
                if code == 0:
                    break
                await asyncio.sleep(0.5)
            assert (code, doc["health"]["issues"]) == (0, [])
            assert doc["health"]["signals"]["proxies"][admin]["applied_version"] == doc["view_version"]

            import httpx
            async with httpx.AsyncClient(base_url=controller, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
                silent = (await api.post("/v1/proxies", json={"instance_id": "silent", "host": "10.9.9.9",
                                                              "port": 9092, "role": "pproxy"})).json()["node_id"]
            dead = f"127.0.0.1:{free_port()}"
            code, doc = await fedkafka_status(controller, token_file, "--check", "--proxy-admin", dead)
            assert code == 3
            issues = doc["health"]["issues"]
            assert any(i.startswith(f"proxy {silent} (10.9.9.9:9092) acked view 0") for i in issues), issues
            assert any(i.startswith(f"proxy {dead} did not answer") for i in issues), issues
            assert TOKEN not in json.dumps(doc)
        finally:
            await server.stop()
            sock.close()

    asyncio.run(scenario())
