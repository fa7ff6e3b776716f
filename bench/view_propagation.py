"""View propagation: 50 real subscribers long-polling a real controller over HTTP on loopback.

200 successive view changes; for each, the time from the change request being sent (an upper bound of
the commit) to the last of the 50 subscribers holding that view. Subscribers (2 processes of 25) follow
`GET /v1/view/stream` (BENCH_MODE=longpoll: `GET /v1/view?after=`),
each registers as a proxy and heartbeats with the version it applied, as real proxies do.
Prints p50/p99 (target p99 <= 200 ms; the article reports about 1 s) and writes bench/results/.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from scratch import scratch_dir

SUBSCRIBERS, CHANGES = 50, 200
PROCESSES = int(os.environ.get("BENCH_SUBSCRIBER_PROCESSES", "2"))
MODE = os.environ.get("BENCH_MODE", "stream")
TOKEN = "bench-token"


class RawHttp:
    """Minimal HTTP/1.1 keep-alive client on asyncio streams: a subscriber this light leaves the CPU
    to the controller (the thing measured) on a 2-core machine shared with everything else."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    async def connect(self) -> RawHttp:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    def send(self, method: str, path: str, body: bytes = b"", extra: str = "") -> None:
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                          f"{extra}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                          + body)

    async def head(self) -> tuple[int, dict[str, str]]:
        status = int((await self.reader.readline()).split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    async def request(self, method: str, path: str, body: bytes = b"", extra: str = "") -> tuple[int, bytes]:
        self.send(method, path, body, extra)
        status, headers = await self.head()
        if headers.get("transfer-encoding") == "chunked":
            return status, b"".join([c async for c in self.chunks()])
        return status, await self.reader.readexactly(int(headers.get("content-length", 0)))

    async def chunks(self):
        while size := int((await self.reader.readline()).strip(), 16):
            data = await self.reader.readexactly(size)
            await self.reader.readexactly(2)
            yield data
        await self.reader.readexactly(2)


async def subscriber_process(url: str, first: int, count: int) -> None:
    host, port = url.split("//")[1].split(":")

    async def one(i: int) -> None:
        ctl, stream = await RawHttp(host, int(port)).connect(), await RawHttp(host, int(port)).connect()
        _, body = await ctl.request("POST", "/v1/proxies", json.dumps({
            "instance_id": f"bench-{i}", "host": "127.0.0.1", "port": 20000 + i, "role": "both",
            "pool": "bench", "member_secret": True}).encode())
        registered = json.loads(body)
        node_id = registered["node_id"]
        secret = f"X-Fedkafka-Member-Secret: {registered['member_secret']}\r\n"  # its heartbeats present it
        version = json.loads((await ctl.request("GET", "/v1/view"))[1])["version"]
        print(f"ready {i} {version}", flush=True)

        async def applied(view: bytes) -> None:
            nonlocal version
            version = json.loads(view)["version"]  # "applied": parsed the full view
            print(f"applied {i} {version} {time.time():.6f}", flush=True)
            await ctl.request("POST", f"/v1/proxies/{node_id}/heartbeat",
                              json.dumps({"applied_version": version}).encode(), secret)

        if MODE == "stream":
            stream.send("GET", f"/v1/view/stream?after={version}")
            await stream.head()
            pending = b""
            async for chunk in stream.chunks():
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        await applied(line)
        while True:
            status, view = await stream.request("GET", f"/v1/view?after={version}&wait_ms=20000")
            if status == 200:
                await applied(view)

    await asyncio.gather(*(one(i) for i in range(first, first + count)))


def main() -> None:
    from fedkafka.kafka.cluster import free_port

    with scratch_dir("fedkafka-bench-") as tmp:
        (tmp / "token").write_text(TOKEN)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        ctl = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db", f"sqlite:///{tmp}/c.db",
                                "--listen", f"127.0.0.1:{port}", "--token-file", str(tmp / "token"),
                                "--scan-interval", "3600", "--lease-ms", "60000"], stderr=subprocess.DEVNULL)
        subs: list[subprocess.Popen] = []
        try:
            api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            _wait(lambda: _ok(api, "/v1/status"), 30)
            api.put("/v1/clusters/b1", json={"bootstrap": "127.0.0.1:9"}).raise_for_status()
            applied: dict[int, dict[int, float]] = {}  # subscriber -> version -> first time seen
            ready: set[int] = set()
            lock = threading.Lock()
            per = SUBSCRIBERS // PROCESSES
            for k in range(PROCESSES):
                p = subprocess.Popen([sys.executable, __file__, "--subscribe", url, str(k * per), str(per)],
                                     stdout=subprocess.PIPE, text=True)
                subs.append(p)
                threading.Thread(target=_reader, args=(p, applied, ready, lock), daemon=True).start()
            _wait(lambda: len(ready) == SUBSCRIBERS, 60)
            _wait(lambda: len(api.get("/v1/view").json()["proxies"]) == SUBSCRIBERS, 30)
            time.sleep(0.5)
            latencies, commits, firsts = [], [], []
            for n in range(CHANGES):
                state = "read_only" if n % 2 == 0 else "active"
                sent = time.time()
                res = api.post("/v1/clusters/b1/state", json={"state": state})
                res.raise_for_status()
                acked = time.time()
                version = api.get("/v1/view").json()["version"]

                def all_have(v=version):
                    with lock:
                        return all(any(x >= v for x in seen) for seen in applied.values()) and \
                            len(applied) == SUBSCRIBERS

                _wait(all_have, 10)
                with lock:
                    got = [min(t for x, t in seen.items() if x >= version) for seen in applied.values()]
                latencies.append((max(got) - sent) * 1000)
                commits.append((acked - sent) * 1000)
                firsts.append((min(got) - sent) * 1000)
            latencies.sort()
            p50 = statistics.median(latencies)
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            result = {"subscribers": SUBSCRIBERS, "changes": CHANGES, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                      "max_ms": round(latencies[-1], 2), "target_p99_ms": 200, "article_ms": 1000,
                      "change_request_p50_ms": round(statistics.median(commits), 2),
                      "first_subscriber_p50_ms": round(statistics.median(firsts), 2),
                      "subscriber_processes": PROCESSES, "mode": MODE, "loadavg_1m": os.getloadavg()[0],
                      "cpus": os.cpu_count()}
            print(f"view propagation ({MODE}), {SUBSCRIBERS} subscribers, {CHANGES} changes: "
                  f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                  f"max {latencies[-1]:.1f} ms")
            print(f"  breakdown (p50): change request answered {result['change_request_p50_ms']} ms, first subscriber "
                  f"{result['first_subscriber_p50_ms']} ms; load {result['loadavg_1m']:.1f} on {os.cpu_count()} CPUs")
            print(f"  p99 vs target 200 ms: {p99 / 200:.2f}x   p99 vs the article's ~1 s: {p99 / 1000:.3f}x "
                  f"({1000 / p99:.0f}x faster)")
            out = Path(__file__).parent / "results"
            out.mkdir(exist_ok=True)
            (out / f"view_propagation_{MODE}.json").write_text(json.dumps(result, indent=2))
        finally:
            for p in subs:
                p.kill()
                p.wait()
            ctl.terminate()
            ctl.wait(30)


def _reader(p: subprocess.Popen, applied, ready, lock) -> None:
    for line in p.stdout:
        parts = line.split()
        with lock:
            if parts[0] == "ready":
                ready.add(int(parts[1]))
                applied.setdefault(int(parts[1]), {})
            elif parts[0] == "applied":
                applied[int(parts[1])].setdefault(int(parts[2]), float(parts[3]))


def _ok(api: httpx.Client, path: str) -> bool:
    try:
        return api.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met in time")
        time.sleep(0.002)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--subscribe":
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        asyncio.run(subscriber_process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        main()
