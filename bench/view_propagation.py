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
import tempfile
import threading
import time
from pathlib import Path

import httpx

SUBSCRIBERS, CHANGES = 50, 200
PROCESSES = int(os.environ.get("BENCH_SUBSCRIBER_PROCESSES", "2"))
MODE = os.environ.get("BENCH_MODE", "stream")
TOKEN = "bench-token"


async def subscriber_process(url: str, first: int, count: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=count * 2 + 4, max_keepalive_connections=count * 2 + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http:
        async def one(i: int) -> None:
            reg = (await http.post("/v1/proxies", json={"instance_id": f"bench-{i}", "host": "127.0.0.1",
                                                        "port": 20000 + i, "role": "both", "pool": "bench"})).json()
            version = (await http.get("/v1/view")).json()["version"]
            print(f"ready {i} {version}", flush=True)
            async def applied(body: bytes) -> None:
                nonlocal version
                version = json.loads(body)["version"]  # "applied": parsed the full view
                print(f"applied {i} {version} {time.time():.6f}", flush=True)
                await http.post(f"/v1/proxies/{reg['node_id']}/heartbeat", json={"applied_version": version})

            if MODE == "stream":
                async with http.stream("GET", "/v1/view/stream", params={"after": version}) as resp:
                    async for line in resp.aiter_lines():
                        if line.strip():
                            await applied(line.encode())
            while True:
                resp = await http.get("/v1/view", params={"after": version, "wait_ms": 20000})
                if resp.status_code != 204:
                    await applied(resp.content)

        await asyncio.gather(*(one(i) for i in range(first, first + count)))


def main() -> None:
    from fedkafka.kafka.cluster import free_port

    tmp = Path(tempfile.mkdtemp(prefix="fedkafka-bench-"))
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
