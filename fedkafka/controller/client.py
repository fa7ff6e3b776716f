"""A small httpx client for the controller's admin API (used by the CLI)."""

from __future__ import annotations

import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

import httpx

from fedkafka.controllers import (
    ACTIVE_HEADER,
    CA_FILE_ENV,
    TAKEOVER_FIRST_PAUSE_S,
    TAKEOVER_MAX_PAUSE_S,
    ControllerList,
    RoundWalk,
    TokenFileRefused,
    not_active_words,
    read_token,
    takeover_under_way,
    tls_verify,
    token_problem,
    what_they_said,
)

# how long the client waits for a held move's publish or roll-back: longer than the controller may take before it
# commits (held.REPAIR_DEADLINE_S, 60 s: past it the request is refused, nothing changed), so neither happens after
# the client stopped waiting for its answer, barring a commit that hangs; a repeat answers the repaired move anyway
REPAIR_TIMEOUT_S = 90.0


class AdminError(RuntimeError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def locate(url: str | None = None, token_file: Path | None = None, state_root: Path | None = None) -> tuple[str, str]:
    """Controller URL and token: explicit options, then FEDKAFKA_CONTROLLER_URL / FEDKAFKA_TOKEN, then the
    local federation's state files (`.fedkafka/state.json` or `ansible.json`, key services.controller)."""
    url = url or os.environ.get("FEDKAFKA_CONTROLLER_URL")
    token = None
    if token_file is not None:
        token = _read_token(token_file)
    elif os.environ.get("FEDKAFKA_TOKEN"):
        token = _checked_token(os.environ["FEDKAFKA_TOKEN"].strip(), "$FEDKAFKA_TOKEN")
    if url and token:
        return url, token
    svc = _local_controller(state_root or Path(os.environ.get("FEDKAFKA_STATE_DIR", ".fedkafka")))
    if svc:
        url = url or svc.get("url")
        if token is None and svc.get("token_file"):
            token = _read_token(Path(svc["token_file"]))
    if not url or not token:
        raise AdminError("no controller: pass --controller and --token-file, set FEDKAFKA_CONTROLLER_URL and "
                         "FEDKAFKA_TOKEN, or run `fedkafka local up`")
    return url, token


def _read_token(path: Path) -> str:
    try:
        return read_token(path)
    except OSError as e:
        raise AdminError(f"cannot read token file {path}: {e}") from None
    except TokenFileRefused as refused:
        raise AdminError(f"the token file {refused}") from None


def _checked_token(token: str, where: str) -> str:
    """`token`, unless the controller's rule refuses it (`token_problem`): refused here, naming `where` it came from
    and never the token (httpx would refuse its header at the first request, quoting it)."""
    problem = token_problem(token)
    if problem is not None:
        raise AdminError(f"the {where} {problem}")
    return token


def _local_controller(root: Path) -> dict | None:
    """The local federation's controller: started by `fedkafka local up` (state.json) or by the Ansible
    bundle on inventory/local (ansible.json). Several (`local up --controllers N`): every URL, comma-separated."""
    for name in ("state.json", "ansible.json"):
        try:
            services = json.loads((root / name).read_text()).get("services", {})
            svc = services.get("controller")
            several = services.get("controllers") or []
        except (OSError, ValueError, AttributeError):
            continue
        if several:
            return {**several[0], "url": ",".join(c["url"] for c in several)}
        if svc:
            return svc
    return None


# raised before any byte of the request left: it can go to the next controller, whatever it asks. Anything else
# (a read timed out, a connection lost, even a write that failed half way) may follow a request the controller read
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError, httpx.UnsupportedProtocol)
_READS = frozenset({"GET", "HEAD"})  # change nothing: asked again of the next controller after any failure


def _unanswered(method: str, path: str, url: str, error: httpx.HTTPError, repeatable: bool) -> str:
    """What the operator is told of a request other than a read sent to `url` and left without an answer."""
    said = f"{method} {path}: no answer from the controller at {url} ({_reason(error)})"
    if repeatable:
        return (f"{said}; it may have been carried out: run the same command again (a repeat answers what was done, "
                f"or does it)")
    return f"{said}; it may have been carried out: check before repeating it"


def _not_active(resp: httpx.Response) -> bool:
    """A standby's 503, or one taking over or that lost its row: it names the active controller (or none)."""
    return resp.status_code == 503 and ACTIVE_HEADER in resp.headers


def _reason(error: httpx.HTTPError) -> str:
    """A failure as the operator reads it: httpx's words, but for a request the HTTP library refused to send
    (LocalProtocolError), whose words quote the header it refused: the token's (`_ask_each` raises that one)."""
    if isinstance(error, httpx.LocalProtocolError):
        return "the HTTP library refused to send it (LocalProtocolError: a header it cannot carry, such as a token " \
               "with a line break)"
    return str(error) or type(error).__name__


class AdminClient:
    """`url` may list several controllers (comma-separated): a request goes to the active one (a standby answers
    503 naming it; an unreachable one is skipped), each at most once. A request other than a read that was sent and
    got no answer is not sent again: the controller may have carried it out, and the error says so. During a
    failover (every controller 503: one taking over, standbys that do not know the active one yet) a request is
    asked again after short pauses, for at most `timeout` seconds in all (`_send`)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0, transport: httpx.BaseTransport | None = None):
        self.controllers = ControllerList(url)
        self._takeover_wait = timeout
        try:
            verify = tls_verify()
        except (OSError, ssl.SSLError) as e:
            raise AdminError(f"cannot read ${CA_FILE_ENV}: {e}") from None
        # only the wait for a repair's answer is longer: connecting, sending, a free connection: the usual timeout
        self._repair_timeout = httpx.Timeout(timeout, read=max(timeout, REPAIR_TIMEOUT_S))
        self._http = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {token}"}, verify=verify,
                                  transport=transport)

    @property
    def url(self) -> str:
        return self.controllers.current

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, method: str, path: str, body: Any, params: dict | None, timeout: Any,
              repeatable: bool) -> httpx.Response:
        """Rounds of `_ask_each`: while none answers as the active controller and what they said shows a takeover
        under way (`takeover_under_way`), again after a short pause, within the client's timeout in all. A 503 from
        the gate or from a controller that lost its row commits nothing, so even a write is safe to send again.
        When none answered as the active one, the error names each controller asked and what it said (503 if one
        answered, None if none did): the last one's answer alone hid why the others did not take the request."""
        deadline = time.monotonic() + self._takeover_wait
        pause = TAKEOVER_FIRST_PAUSE_S
        while True:
            said: dict[str, str | None] = {}  # url -> the active controller its 503 named; None: no answer
            told: dict[str, str] = {}  # url -> what it said, for the operator
            resp = self._ask_each(method, path, body, params, timeout, repeatable, said, told)
            if resp is not None:
                return resp  # the active controller's answer
            status = 503 if any(named is not None for named in said.values()) else None
            if not takeover_under_way(said):
                raise AdminError(f"{method} {path}: no active controller answered ({what_they_said(told)})", status)
            if time.monotonic() + pause > deadline:
                raise AdminError(f"{method} {path}: no controller took over within {self._takeover_wait:g}s "
                                 f"({what_they_said(told)})", 503)
            time.sleep(pause)
            pause = min(2 * pause, TAKEOVER_MAX_PAUSE_S)
            # the next round starts at the one taking over, if any
            self.controllers.current = next((url for url, named in said.items() if (named or "").rstrip("/") == url),
                                            self.controllers.current)

    def _ask_each(self, method: str, path: str, body: Any, params: dict | None, timeout: Any, repeatable: bool,
                  said: dict[str, str | None], told: dict[str, str]) -> httpx.Response | None:
        """One round (`RoundWalk`): the current controller, then the active one a standby names or the next one,
        each at most once. The active controller's answer, else None; `said` records the active one each named (None:
        no answer), `told` what each said. A request other than a read sent and left unanswered raises at once."""
        walk = RoundWalk(self.controllers)
        while (url := walk.next()) is not None:
            try:
                resp = self._http.request(method, url + path, json=body, params=params, timeout=timeout)
            except httpx.LocalProtocolError as e:  # refused before sending, and by every controller alike
                raise AdminError(f"{method} {path}: not sent to {url}: {_reason(e)}") from None
            except httpx.HTTPError as e:
                if not isinstance(e, _NOT_SENT) and method not in _READS:
                    # sent, maybe carried out: never sent again behind the operator
                    before = f" (asked before it: {what_they_said(told)})" if told else ""
                    raise AdminError(_unanswered(method, path, url, e, repeatable) + before) from None
                said[url] = None
                told[url] = f"{'unreachable' if isinstance(e, _NOT_SENT) else 'did not answer'} ({_reason(e)})"
                walk.failed(url, e)
                continue
            if not _not_active(resp):
                return resp
            said[url] = hint = resp.headers[ACTIVE_HEADER]
            told[url] = not_active_words(url, hint)
            walk.failed(url, hint=hint)  # a standby: ask the active one it names
        return None

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                timeout: Any = httpx.USE_CLIENT_DEFAULT, repeatable: bool = False) -> Any:
        """`repeatable`: the route answers a repeat of a request it carried out with what was done (a held move's
        publish and roll-back), so a request left unanswered is safe to run again; said so when it is."""
        resp = self._answered(method, path, body, params, timeout, repeatable)
        return None if resp.status_code == 204 or not resp.content else resp.json()

    def _answered(self, method: str, path: str, body: Any, params: dict | None, timeout: Any,
                  repeatable: bool) -> httpx.Response:
        """The active controller's answer; an error answer (4xx, 5xx) raised as AdminError with its detail."""
        resp = self._send(method, path, body, params, timeout, repeatable)
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except (ValueError, AttributeError):
                detail = resp.text
            raise AdminError(f"{method} {path}: HTTP {resp.status_code}: {detail}", resp.status_code)
        return resp

    def metrics(self) -> str:
        """The active controller's /metrics (Prometheus text), asked with the token and CA of every other route: a
        controller run with --metrics-token-required answers it only to a token (401 without)."""
        return self._answered("GET", "/metrics", None, None, httpx.USE_CLIENT_DEFAULT, False).text

    # the admin API, one method per route
    def clusters(self) -> list[dict]:
        return self.request("GET", "/v1/clusters")

    def put_cluster(self, cluster_id: str, bootstrap: str, coordination: bool | None = None) -> dict:
        body: dict[str, Any] = {"bootstrap": bootstrap}
        if coordination is not None:
            body["coordination"] = coordination
        return self.request("PUT", f"/v1/clusters/{cluster_id}", body)

    def set_cluster_state(self, cluster_id: str, state: str) -> dict:
        return self.request("POST", f"/v1/clusters/{cluster_id}/state", {"state": state})

    def topics(self) -> list[dict]:
        return self.request("GET", "/v1/topics")

    def topic(self, name: str) -> dict:
        return self.request("GET", f"/v1/topics/{name}")

    def put_topic(self, name: str, partitions: int, placement: str = "blocks", config: dict | None = None) -> dict:
        return self.request("PUT", f"/v1/topics/{name}",
                            {"partitions": partitions, "placement": placement, "config": config or {}})

    def delete_topic(self, name: str) -> None:
        self.request("DELETE", f"/v1/topics/{name}")

    def view(self) -> dict:
        return self.request("GET", "/v1/view")

    def status(self) -> dict:
        return self.request("GET", "/v1/status")

    def put_rule(self, name: str, match: str, pattern: str, pool: str) -> dict:
        return self.request("PUT", f"/v1/client-rules/{name}", {"match": match, "pattern": pattern, "pool": pool})

    def delete_rule(self, name: str) -> None:
        self.request("DELETE", f"/v1/client-rules/{name}")

    def rules(self) -> list[dict]:
        return self.request("GET", "/v1/client-rules")

    def put_user(self, name: str, credentials: list[dict]) -> dict:
        return self.request("PUT", f"/v1/users/{name}", {"credentials": credentials})

    def users(self) -> list[dict]:
        return self.request("GET", "/v1/users")

    def create_acls(self, bindings: list[dict]) -> dict:
        return self.request("POST", "/v1/acls", {"acls": bindings})

    def acls(self, **acl_filter) -> list[dict]:
        return self.request("GET", "/v1/acls", params={k: v for k, v in acl_filter.items() if v is not None})

    def delete_acls(self, **acl_filter) -> dict:
        return self.request("POST", "/v1/acls/delete", {k: v for k, v in acl_filter.items() if v is not None})

    def delete_user(self, name: str) -> None:
        self.request("DELETE", f"/v1/users/{name}")

    def moves(self, state: str | None = None) -> list[dict]:
        return self.request("GET", "/v1/moves", params={"state": state} if state else None)

    def publish_move(self, move_id: int, seal: int, target_start: int, force: bool = False) -> dict:
        """Waits REPAIR_TIMEOUT_S for its answer, past the controller's deadline; repeated with the same seal and
        target start after the move was published (an answer lost), it answers the published move."""
        return self.request("POST", f"/v1/moves/{move_id}/publish",
                            {"seal": seal, "target_start": target_start, "force": force}, timeout=self._repair_timeout,
                            repeatable=True)

    def roll_back_move(self, move_id: int, nothing_was_published: bool = False) -> dict:
        """Waits REPAIR_TIMEOUT_S for its answer, past the controller's deadline; repeated after the move was rolled
        back (an answer lost), it answers the rolled-back move."""
        return self.request("POST", f"/v1/moves/{move_id}/roll-back", {"nothing_was_published": nothing_was_published},
                            timeout=self._repair_timeout, repeatable=True)
