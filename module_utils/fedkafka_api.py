"""Shared code of the fedkafka modules: the controller's admin API over Ansible's own `open_url`.

Modules import it as `ansible.module_utils.fedkafka_api` (ansible.cfg: module_utils = module_utils).
"""

from __future__ import annotations

import json
import re
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

# Options every fedkafka module takes; the token never shows in logs or diffs. controller_url is a list: every
# controller on the database (a comma-separated string is split by Ansible).
API_ARGUMENT_SPEC = {
    "controller_url": {"type": "list", "elements": "str", "required": True, "aliases": ["url"]},
    "token": {"type": "str", "required": True, "no_log": True},
    "validate_certs": {"type": "bool", "default": True},
    "ca_path": {"type": "path"},
    "request_timeout": {"type": "float", "default": 30.0},
}

# Options of the modules that start a workflow (doc fragment fedkafka_wait): follow it to its end, for so long
# (past the controller's ack timeout, --fence-ms + 45 s: a move may wait out a restarted proxy's previous fence).
WAIT_ARGUMENT_SPEC = {
    "wait": {"type": "bool", "default": True},
    "timeout": {"type": "int", "default": 1800},
}

# What a standby answers every /v1/ request with: 503 and this header naming the active controller
# (docs/DESIGN.md §3.6; the same rule as fedkafka/controllers.py, which modules cannot import).
ACTIVE_HEADER = "x-fedkafka-active"
# During a failover every controller answers 503 for seconds (a lease, then the takeover): a request is asked again
# after these pauses, doubling, within request_timeout in all (FedkafkaApi.request)
TAKEOVER_FIRST_PAUSE_S = 0.25
TAKEOVER_MAX_PAUSE_S = 2.0
_READS = frozenset({"GET", "HEAD"})  # change nothing: asked again of the next controller when left unanswered
_URL = re.compile(r"^https?://[^/\s,]+(/[^\s,]*)?$")


class BadControllerUrl(ValueError):
    pass


def controller_urls(value) -> list[str]:
    """The controllers' base URLs from a list or a comma-separated string; BadControllerUrl names the bad one."""
    items = value.split(",") if isinstance(value, str) else [u for v in value or [] for u in str(v).split(",")]
    urls = [u.strip().rstrip("/") for u in items if u.strip()]
    if not urls:
        raise BadControllerUrl(f"controller_url names no controller (got {value!r}): give the base URL of each "
                               "controller, e.g. http://10.0.0.5:8780,http://10.0.0.6:8780")
    bad = [u for u in urls if not _URL.match(u)]
    if bad:
        raise BadControllerUrl(f"controller_url {bad[0]!r} is not a controller's base URL (http(s)://host:port); "
                               f"got {value!r}")
    if len(set(urls)) != len(urls):
        raise BadControllerUrl(f"controller_url lists a controller twice: {value!r}")
    return urls


def _token_problem(token: str) -> str | None:
    """Why `token` (stripped of its ends) cannot be a controller token, or None; never quotes it. The controller's
    rule (fedkafka/controllers.py `token_problem`, which modules cannot import): printable ASCII without whitespace
    inside, all a `Bearer` header carries whole (http.client refuses a line break in a header, quoting the header)."""
    if not token:
        return "is empty"
    if not all("!" <= char <= "~" for char in token):
        return ("holds a line break, a blank or a character other than printable ASCII inside: a token is one word of "
                "printable ASCII")
    return None


class ApiError(Exception):
    """The controller answered with an error status, or could not be reached."""

    def __init__(self, message: str, status: int | None = None, body: object = None):
        super().__init__(message)
        self.status = status
        self.body = body


class BadToken(ApiError):
    """The token cannot be sent (`_token_problem`): refused before any request, the token not quoted."""


class FedkafkaApi:
    """A small client of the admin API: one method per call the modules make.

    Several controllers may share the database: a request goes to the current one; a standby (503 naming the
    active one) sends it to the one it names, an unreachable one to the next in the list, each tried at most once
    per round; during a failover, rounds again within `timeout` (`request`). `base` is the controller that answered
    last (the next request starts there)."""

    def __init__(self, controller_url, token: str, validate_certs: bool = True, timeout: float = 30.0,
                 ca_path: str | None = None):
        self.urls = controller_urls(controller_url)
        self.base = self.urls[0]
        problem = _token_problem((token or "").strip())
        if problem is not None:
            raise BadToken(f"token {problem}")
        self.token = token.strip()
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout

    @classmethod
    def from_module(cls, module) -> FedkafkaApi:
        """The client of the module's controller_url; a bad URL list fails the module with a clear message."""
        p = module.params
        try:
            return cls(p["controller_url"], p["token"], p["validate_certs"], p["request_timeout"], p.get("ca_path"))
        except (BadControllerUrl, BadToken) as exc:
            module.fail_json(msg=str(exc))

    def request(self, method: str, path: str, body: object = None, ok_missing: bool = False):
        """JSON in, JSON out. Returns None for 204, and for 404 when ok_missing.

        When no controller answered as the active one but what they said shows a takeover under way (one taking
        over, a standby that does not know the active one yet, or one naming a listed controller that did not
        answer as active: it died, its leader row not expired yet), the request is asked again after a short
        pause, for at most `timeout` seconds in all. A 503 from the gate commits nothing, so a write is safe to
        send again. Unreachable controllers only, or a standby naming one not listed, fail at once."""
        data = json.dumps(body) if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + self.timeout
        pause, waited = TAKEOVER_FIRST_PAUSE_S, False
        while True:
            tried: dict[str, tuple[str, str | None]] = {}  # url -> (why it did not answer as active, who it named)
            try:
                return self._ask_each(method, path, data, headers, ok_missing, tried)
            except _NoActive:
                pass
            if not takeover_under_way({url: named for url, (_, named) in tried.items()}):
                break
            if time.monotonic() + pause > deadline:
                waited = True
                break
            time.sleep(pause)
            pause = min(pause * 2, TAKEOVER_MAX_PAUSE_S)
            self.base = next((url for url, (_, named) in tried.items() if named == url), self.base)
        after = f"; none did within request_timeout ({self.timeout:g}s) of waiting for a takeover" if waited else ""
        raise ApiError(f"{method} {path}: no active controller answered ({_what_they_said(tried)}){after}")

    def _ask_each(self, method: str, path: str, data, headers: dict, ok_missing: bool, tried: dict):
        """One round: each controller at most once, following the active one a standby names; _NoActive when
        none answered as the active one (`tried` says what each said). A read left unanswered goes on to the next
        controller; any other request is not sent again (it may have been carried out): ApiError at once."""
        while len(tried) < len(self.urls):
            try:
                return self._send(method, path, data, headers, ok_missing)
            except _Standby as standby:
                named = standby.active.rstrip("/")
                tried[self.base] = (_not_active(self.base, standby.active), named)
                self._next(named, tried)
            except URLError as exc:  # not sent (urllib wraps only the sending's failures): the next controller
                tried[self.base] = (f"unreachable ({exc.reason})", None)
                self._next(None, tried)
            except _NoAnswer as exc:
                if method not in _READS:
                    before = f" (asked before it: {_what_they_said(tried)})" if tried else ""
                    raise ApiError(f"{method} {path}: no answer from the controller at {self.base} ({exc}); it may "
                                   f"have been carried out: check before repeating it{before}") from None
                tried[self.base] = (f"did not answer ({exc})", None)
                self._next(None, tried)
        raise _NoActive()

    def _send(self, method: str, path: str, data, headers: dict, ok_missing: bool):
        try:
            resp = open_url(self.base + path, method=method, data=data, headers=headers,
                            validate_certs=self.validate_certs, ca_path=self.ca_path, timeout=self.timeout)
            raw = resp.read()
            if getattr(resp, "status", 200) == 204 or not raw:
                return None
            return json.loads(raw)
        except HTTPError as exc:
            active = exc.headers.get(ACTIVE_HEADER) if exc.code == 503 and exc.headers is not None else None
            if active is not None:  # "" too: a standby that does not know the active one yet
                raise _Standby(active) from None
            if exc.code == 404 and ok_missing:
                return None
            detail = _error_detail(exc)
            raise ApiError(f"{method} {path}: HTTP {exc.code}: {detail}", status=exc.code, body=detail) from None
        except URLError:
            raise
        except OSError as exc:  # sent (urllib raises the answer's failures as they are): timed out, connection lost
            raise _NoAnswer(str(exc) or type(exc).__name__) from None
        except json.JSONDecodeError as exc:
            raise ApiError(f"{method} {path}: {exc}") from None
        except ValueError as exc:  # http.client refused to send: its words quote the header refused (the token's)
            why = f"{type(exc).__name__}: a header it cannot carry, such as a token with a line break"
            said = f"not sent to {self.base}: the HTTP library refused to send it ({why})"
            raise ApiError(f"{method} {path}: {said}") from None

    def _next(self, active: str | None, tried: dict) -> None:
        """The controller to ask next: the active one a standby named, if listed and not tried yet, else the next
        one in the list not tried yet."""
        active = (active or "").rstrip("/")
        if active in self.urls and active not in tried:
            self.base = active
            return
        i = self.urls.index(self.base)
        self.base = next((u for u in self.urls[i + 1:] + self.urls[:i] if u not in tried), self.base)

    # --- calls of the admin API (contract in docs/OPERATIONS.md) ---
    def status(self):
        return self.request("GET", "/v1/status")

    def clusters(self):
        return self.request("GET", "/v1/clusters")

    def cluster(self, cluster_id: str):
        return next((c for c in self.clusters() or [] if c.get("id") == cluster_id), None)

    def put_cluster(self, cluster_id: str, bootstrap: str, coordination: bool | None):
        body = {"bootstrap": bootstrap}
        if coordination is not None:
            body["coordination"] = coordination
        return self.request("PUT", f"/v1/clusters/{cluster_id}", body)

    def set_cluster_state(self, cluster_id: str, state: str):
        return self.request("POST", f"/v1/clusters/{cluster_id}/state", {"state": state})

    def topics(self):
        return self.request("GET", "/v1/topics")

    def topic(self, name: str):
        return self.request("GET", f"/v1/topics/{name}", ok_missing=True)

    def put_topic(self, name: str, partitions: int, placement: str, config: dict):
        return self.request("PUT", f"/v1/topics/{name}",
                            {"partitions": partitions, "placement": placement, "config": config})

    def delete_topic(self, name: str):
        return self.request("DELETE", f"/v1/topics/{name}", ok_missing=True)

    def client_rules(self):
        return self.request("GET", "/v1/client-rules")

    def put_client_rule(self, name: str, match: str, pattern: str, pool: str):
        return self.request("PUT", f"/v1/client-rules/{name}", {"match": match, "pattern": pattern, "pool": pool})

    def start_workflow(self, kind: str, cluster: str, strategy: str | None = None, drain: bool | None = None,
                       bootstrap: str | None = None, dry_run: bool = False, unclean: bool = False):
        """Start a workflow run, or with dry_run only ask for its plan (nothing is done; see can_dry_run)."""
        body = {"kind": kind, "cluster": cluster}
        if unclean:
            body["unclean"] = True
        if strategy is not None:
            body["strategy"] = strategy
        if drain is not None:
            body["drain"] = drain
        if bootstrap:
            body["bootstrap"] = bootstrap
        return self.request("POST", "/v1/workflows" + ("?dry_run=true" if dry_run else ""), body)

    def can_dry_run(self) -> bool:
        """Whether the controller plans workflows without running them. One that cannot would ignore
        ?dry_run=true and start the run, so check mode must ask first."""
        return "workflow_dry_run" in ((self.status() or {}).get("api_features") or [])

    def workflows(self):
        return self.request("GET", "/v1/workflows")

    def workflow(self, workflow_id):
        return self.request("GET", f"/v1/workflows/{workflow_id}")

    def wait_until(self, probe, timeout: float, interval: float = 0.5, what: str = "condition"):
        """Call probe() until it returns a truthy value; raise ApiError after timeout seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = probe()
                if last:
                    return last
            except ApiError as exc:  # the controller may still be starting
                last = exc
            if time.monotonic() >= deadline:
                raise ApiError(f"timed out after {timeout}s waiting for {what} (last: {last})")
            time.sleep(interval)


def _not_active(url: str, active: str) -> str:
    """Why `url` did not answer as the active controller: a standby names the active one; one naming itself holds
    the leader row but is taking over (it answers once it serves the database's view, docs/DESIGN.md §3.6)."""
    if active.rstrip("/") == url:
        return "is taking over"
    return f"stands by (active: {active or 'not known yet'})"


def _what_they_said(tried: dict) -> str:
    """Each controller asked and what it said, in the order asked (url -> (what it said, whom it named)): the whole
    round, not only the last answer. The same words as the CLI's (fedkafka/controllers.py `what_they_said`); never
    the token."""
    return "; ".join(f"{url} {said}" for url, (said, _) in tried.items())


def takeover_under_way(said: dict) -> bool:
    """Whether the controllers' answers (url -> the active one it named, None when it did not answer) show a
    failover in progress: one holds the leader row and is taking over (it names itself), a standby does not know the
    active one yet (names none), or names a listed one that did not answer as active (gone, its row not expired).
    The same rule as fedkafka/controllers.py's `takeover_under_way` (the CLI's), which modules cannot import."""
    return any(named is not None and (named in ("", url) or named in said) for url, named in said.items())


class _NoActive(Exception):
    pass


class _NoAnswer(Exception):
    """A request sent and left without an answer (timed out, the connection lost): it may have been carried out."""


class _Standby(Exception):
    def __init__(self, active: str):
        super().__init__(active)
        self.active = active


def plan_of(module, api: FedkafkaApi, kind: str, cluster: str, **params):
    """The controller's dry-run plan of a workflow, or None from a controller that cannot plan this kind (it
    predates the dry run, or plans only other kinds: 422), with a warning. A refusal (404, 409, ...) raises."""
    if not api.can_dry_run():
        module.warn("the controller has no workflow dry run (upgrade it): the plan is an estimate")
        return None
    try:
        return api.start_workflow(kind, cluster, dry_run=True, **params) or {}
    except ApiError as exc:
        if exc.status != 422 or "dry run" not in str(exc.body):
            raise
        module.warn(f"the controller cannot plan a {kind} (upgrade it): {exc.body}; the plan is an estimate")
        return None


def wait_for_run(api: FedkafkaApi, run: dict, timeout: float, what: str) -> dict:
    """Follow a workflow run until it is done; ApiError saying why when it failed or took longer than timeout."""
    if run.get("state") != "running" or run.get("id") is None:
        return run

    def finished():
        wf = api.workflow(run["id"]) or {}
        if wf.get("state") == "failed":
            raise RunFailed(f"{what} failed (workflow {run['id']}): {wf.get('error') or wf}", wf)
        return wf if wf.get("state") == "done" else None

    return api.wait_until(finished, timeout, interval=0.5, what=f"{what} (workflow {run['id']})")


class RunFailed(Exception):
    """A workflow run ended in failure (not an API error: wait_until must not retry it)."""

    def __init__(self, message: str, run: dict):
        super().__init__(message)
        self.run = run


def read_or_predict(module, read):
    """read(); but in check mode an unreachable controller (a first run: nothing deployed yet) means
    "nothing exists yet", so --check still predicts the whole plan instead of failing."""
    try:
        return read()
    except ApiError as exc:
        if module.check_mode and exc.status is None:
            module.warn(f"check mode: {exc}; predicting as if nothing were registered yet")
            return None
        raise


def move_lines(moves) -> list[str]:
    """A workflow's planned or done moves as diff lines (the same words in check mode and in the run)."""
    lines = []
    for m in moves or []:
        if "partitions_added" in m:
            lines.append(f"{m['topic']}: +{m['partitions_added']} partitions on {m['to']}")
        else:
            lines.append(f"{m['topic']}/{m['partition']}: {m['from']} -> {m['to']}")
    return lines


def _error_detail(exc: HTTPError) -> str:
    try:
        raw = exc.read()
        body = json.loads(raw)
        detail = body.get("detail", body) if isinstance(body, dict) else body
        return detail if isinstance(detail, str) else json.dumps(detail)
    except Exception:  # not JSON: the reason phrase is all there is
        return str(exc.reason)
