"""Test clients that heartbeat like a proxy: each remembers the member secret a registration through it answered
and presents it on that member's heartbeats (fedkafka/proxy/view_source.py does the same). For the tests written
before member secrets, whose heartbeats are about leases and acks, not about who may send them; a test that sets
the header itself keeps its own (tests/controller/test_member_secret.py)."""

from __future__ import annotations

import re
from typing import TypeVar

import httpx

from fedkafka.controllers import MEMBER_SECRET_HEADER

_HEARTBEAT = re.compile(r"/v1/proxies/(\d+)/heartbeat")
ClientType = TypeVar("ClientType", bound=httpx.Client)
_SECRETS: dict[int, str] = {}  # member id -> the secret its latest registration (in any of the test's clients) got


def _present(request: httpx.Request) -> None:
    match = _HEARTBEAT.fullmatch(request.url.path)
    if match and MEMBER_SECRET_HEADER not in request.headers and int(match[1]) in _SECRETS:
        request.headers[MEMBER_SECRET_HEADER] = _SECRETS[int(match[1])]


def _remember(response: httpx.Response) -> None:
    if response.request.method == "POST" and response.request.url.path == "/v1/proxies" and response.is_success:
        response.read()
        body = response.json()
        if body.get("member_secret"):
            _SECRETS[int(body["member_id"])] = body["member_secret"]
        else:  # registered without one (an earlier test's member of that id had one): present none, as a proxy
            _SECRETS.pop(int(body["member_id"]), None)


def heartbeating_like_a_proxy(client: ClientType) -> ClientType:
    client.event_hooks = {"request": [*client.event_hooks["request"], _present],
                          "response": [*client.event_hooks["response"], _remember]}
    return client
