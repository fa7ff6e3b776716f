"""Raw HTTP/1.1 against the controller's admin API and the name service's HTTP endpoint.

Random methods, paths (the real routes with hostile parameters, and made-up ones), headers (no token,
wrong tokens, lying Content-Length, huge header lines), and bodies (not JSON, deep nesting, wrong types,
oversize). With the real token a request never changes state: writes get bodies that cannot validate and
deletes name topics that do not exist, so any 2xx on a write is a finding ("accepted"), as is any 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field

ROUTES = ["/v1/view", "/v1/view/stream", "/v1/proxies", "/v1/proxies/{n}/heartbeat", "/v1/producer-id-blocks",
          "/v1/clusters", "/v1/clusters/{s}", "/v1/clusters/{s}/state", "/v1/topics", "/v1/topics/{s}",
          "/v1/client-rules", "/v1/client-rules/{s}", "/v1/workflows", "/v1/workflows/{n}", "/v1/status",
          "/healthz", "/metrics", "/", "/docs", "/openapi.json", "/v1", "/v2/x", "/v1/topics/{s}/../../clusters"]
WRITES = {"POST", "PUT", "DELETE", "PATCH"}
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "BREW", ""]


@dataclass
class HttpStats:
    requests: int = 0
    status: dict[str, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    accepted_writes: list[str] = field(default_factory=list)
    unauthenticated_ok: list[str] = field(default_factory=list)
    unanswered: int = 0

    def count(self, key: str) -> None:
        self.status[key] = self.status.get(key, 0) + 1


@dataclass
class HttpRequest:
    data: bytes
    method: str
    path: str
    auth: str  # "valid" | "none" | "bad"
    desc: str


class HttpGenerator:
    def __init__(self, seed: int | str, worker: int, token: str):
        self.rng = random.Random(f"{seed}:http:{worker}")
        self.token = token

    def next(self, host: str) -> HttpRequest:
        rng = self.rng
        method = rng.choice(METHODS)
        path = self._path()
        auth = rng.choice(["valid", "valid", "none", "bad", "bad"])
        headers = [f"Host: {host}"]
        if auth == "valid":
            headers.append(f"Authorization: Bearer {self.token}")
        elif auth == "bad":
            headers.append("Authorization: " + rng.choice([
                "Bearer ", "Bearer x", f"Bearer {self.token}x", f"Bearer {self.token[:-1]}", "Basic Zm9vOmJhcg==",
                f"bearer  {self.token}", "Bearer " + "A" * 8000, f"Bearer {self.token}\x00"]))
        if method in WRITES and auth == "valid":  # never a real change: bodies that cannot validate, no real names
            path = path.replace("/v1/topics/", "/v1/topics/nx-")
            body, what = self._invalid_body()
            if method == "DELETE" and not path.startswith("/v1/topics/nx-"):
                method = "GET"
            if path.split("?")[0].rstrip("/") == "/v1/producer-id-blocks":  # the only write without a body
                method = "GET"
        else:
            body, what = self._any_body()
        headers += self._headers(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
        return HttpRequest(head.encode("utf-8", "surrogateescape") + body, method, path, auth,
                           f"{method} {path[:80]} auth={auth} body={what}")

    def _path(self) -> str:
        rng = self.rng
        route = rng.choice(ROUTES)
        route = route.replace("{n}", rng.choice(["1", "0", "-1", "99999999999999999999999", "abc", "1e3", "%00"]))
        route = route.replace("{s}", rng.choice(["c1", "x", "%2e%2e", "a" * 3000, "%ff%fe", "ü", "..", "a%2Fb", ""]))
        if rng.random() < 0.3:
            route += "?" + rng.choice(["after=-1", "after=1&wait_ms=3000", "wait_ms=-5", "after=x",
                                       "after=99999999999999999999", "delta=maybe", "client_id=" + "c" * 5000,
                                       "keepalive_ms=1", "a=%zz", "&&&=="])
        return route

    def _headers(self, body_len: int) -> list[str]:
        rng = self.rng
        out = []
        ctype = rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded",
                            "multipart/form-data; boundary=x", None])
        if ctype:
            out.append(f"Content-Type: {ctype}")
        length = rng.choices([body_len, body_len + 10, max(0, body_len - 1), 10**12, -1, None],
                             weights=[80, 4, 4, 3, 3, 6])[0]
        if length is not None:
            out.append(f"Content-Length: {length}")
        if rng.random() < 0.05:
            out.append("X-Big: " + "b" * rng.choice([10_000, 100_000]))
        if rng.random() < 0.03:
            out.append("Transfer-Encoding: chunked")
        return out

    def _invalid_body(self) -> tuple[bytes, str]:
        rng = self.rng
        choice = rng.choice(["none", "garbage", "array", "empty-object", "wrong-types", "deep", "big"])
        if choice == "none":
            return b"", "none"
        if choice == "garbage":
            return rng.randbytes(rng.choice([1, 20, 500])), "garbage"
        if choice == "array":
            return b"[1, 2, 3]", "array"
        if choice == "empty-object":
            return b"{}", "{}"
        if choice == "wrong-types":  # every known body field, each with a type no model accepts
            bad = {k: rng.choice([[1], {"a": 1}, None]) for k in ("bootstrap", "state", "partitions", "instance_id",
                   "host", "port", "role", "applied_version", "match", "pattern", "pool", "kind", "cluster")}
            return json.dumps(bad).encode(), "wrong-types"
        if choice == "deep":
            depth = rng.choice([100, 10_000, 100_000])
            return b"[" * depth + b"]" * depth, f"nested {depth}"
        size = rng.choice([1 << 20, 8 << 20])
        return b'{"x": "' + b"a" * size + b'"', f"unterminated {size}"

    def _any_body(self) -> tuple[bytes, str]:
        if self.rng.random() < 0.5:
            return self._invalid_body()
        body = {"bootstrap": "127.0.0.1:1", "partitions": self.rng.choice([1, -1, 10**9]), "kind": "scale-up",
                "cluster": "nx", "instance_id": "fuzz", "host": "h", "port": 1, "role": "both", "applied_version": 1}
        return json.dumps(body).encode(), "plausible"


async def http_exchange(address: tuple[str, int], req: HttpRequest, timeout: float = 10.0) -> str:
    """The status code of the answer ("closed", "timeout" otherwise). Sends the whole request, reads the status."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
        writer.write(req.data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            return "closed"
        parts = line.split()
        return parts[1].decode() if len(parts) >= 2 and parts[1].isdigit() else "garbled"
    except TimeoutError:
        return "timeout"
    except (OSError, ValueError, asyncio.LimitOverrunError):
        return "closed"
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()


class HttpWorker:
    def __init__(self, targets: dict[str, tuple[str, int]], gen: HttpGenerator, stats: HttpStats, recorder,
                 rate: float):
        self.targets, self.gen, self.stats, self.recorder, self.rate = targets, gen, stats, recorder, rate

    async def run(self, budget_alive) -> None:
        names = sorted(self.targets)
        while budget_alive():
            started = time.monotonic()
            target = self.gen.rng.choice(names)
            address = self.targets[target]
            req = self.gen.next(f"{address[0]}:{address[1]}")
            rec = self.recorder.sent(target, _AsSend(req))
            status = await http_exchange(address, req)
            rec.outcome = status
            self._judge(target, req, status)
            await asyncio.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def _judge(self, target: str, req: HttpRequest, status: str) -> None:
        st = self.stats
        st.requests += 1
        st.count(f"{target}:{status}")
        if status == "timeout":
            st.unanswered += 1
        if not status.isdigit():
            return
        code = int(status)
        if code >= 500 and len(st.server_errors) < 50:
            st.server_errors.append(f"{target} {code} {req.desc}")
        protected = target == "controller" and req.path.startswith("/v1")
        if 200 <= code < 300 and req.method in WRITES and req.auth == "valid" and len(st.accepted_writes) < 50:
            st.accepted_writes.append(f"{target} {code} {req.desc}")
        if 200 <= code < 300 and protected and req.auth != "valid" and len(st.unauthenticated_ok) < 50:
            st.unauthenticated_ok.append(f"{target} {code} {req.desc}")


@dataclass
class _AsSend:
    """An HTTP request in the recorder's terms (mode http, the raw bytes)."""

    req: HttpRequest

    @property
    def mode(self) -> str:
        return "http"

    @property
    def api(self) -> str:
        return f"{self.req.method} {self.req.path[:60]}"

    @property
    def desc(self) -> str:
        return self.req.desc

    @property
    def data(self) -> bytes:
        return self.req.data
