"""A whole federation on this machine: the state behind `fedkafka local up|down|status|demo`.

Everything started here is a daemon (its own session, not tied to the CLI process); the pids and
addresses live in `<state dir>/state.json` so a later `down` or `status` finds them. The state dir is
`$FEDKAFKA_STATE_DIR` or `./.fedkafka` (gitignored).

A federation provisioned by the Ansible bundle (`make up`: playbooks/site.yml on inventory/local) is
described in `<state dir>/ansible.json`, written by the playbooks. Its clusters and services are read
like our own (status, demo, the CLI's controller discovery) but never started, stopped or rewritten
here: supervisord runs them and `make down` (playbooks/teardown.yml) stops them.

`local up --security sasl_ssl` (remembered in the state as `security`) secures every hop: the brokers require
SASL_SSL and authorize only the federation's service user, the controller and the proxies log in to them with
an upstream config file, and the proxies and the name service add a SASL_SSL listener with authorization on
(fedkafka.local_security holds the certificates, passwords and client files).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedkafka.controllers import TokenFileRefused, read_token
from fedkafka.kafka.cluster import ClusterError, LocalKafkaCluster, kill_group, pid_alive, port_open, stop_clusters
from fedkafka.kafka.dist import KafkaDist, ensure_kafka
from fedkafka.local_security import DEMO_USER, PLAINTEXT, SASL_SSL, LocalSecurity, demo_acl_bindings, write_secret_file


def state_dir() -> Path:
    return Path(os.environ.get("FEDKAFKA_STATE_DIR") or Path.cwd() / ".fedkafka").resolve()


@dataclass
class LocalState:
    root: Path
    clusters: list[LocalKafkaCluster] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)  # name -> {pid, ...addresses}; "proxies" -> a list
    security: str = PLAINTEXT  # or SASL_SSL: how `local up` first brought this federation up

    @property
    def secured(self) -> bool:
        return self.security == SASL_SSL

    @property
    def local_security(self) -> LocalSecurity:
        return LocalSecurity(self.root)

    @property
    def path(self) -> Path:
        return self.root / "state.json"

    @property
    def provisioned_path(self) -> Path:
        return self.root / "ansible.json"

    @property
    def provisioned(self) -> bool:
        """True when the Ansible bundle provisioned (part of) this federation."""
        return any(c.managed_by for c in self.clusters) or any(_managed(s) for s in self.services.values())

    @classmethod
    def load(cls, root: Path | None = None) -> LocalState:
        root = root or state_dir()
        state = cls(root=root)
        # Our own clusters first: one `local add-cluster` started keeps its entry (and `save` keeps it) even when
        # the playbooks describe a cluster of the same name (an inventory's spare c3 nothing runs yet).
        for path, managed_by in ((state.path, None), (state.provisioned_path, "ansible")):
            if not path.exists():
                continue
            data = json.loads(path.read_text())
            if not managed_by:
                state.security = data.get("security", PLAINTEXT)
            names = {c.name for c in state.clusters}
            for doc in data.get("clusters", []):
                cluster = LocalKafkaCluster.from_dict({**doc, "managed_by": managed_by or doc.get("managed_by")})
                if cluster.name not in names:
                    state.clusters.append(cluster)
            for name, svc in data.get("services", {}).items():
                if managed_by:  # the provisioned services win, as before: a stale own entry must not be signalled
                    state.services[name] = [{**s, "managed_by": managed_by} for s in svc] if isinstance(svc, list) \
                        else {**svc, "managed_by": managed_by}
                else:
                    state.services.setdefault(name, svc)
        # A secured state's brokers get their listener (its passwords) only when started or checked (`_launch`):
        # status and down need no secret, and must still stop everything if security/secrets.json is gone.
        return state

    def save(self) -> None:
        """Write what this CLI runs itself; provisioned entries stay in the playbooks' file."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        own = {name: svc for name, svc in self.services.items() if not _managed(svc)}
        tmp.write_text(json.dumps({"security": self.security,
                                   "clusters": [c.to_dict() for c in self.clusters if not c.managed_by],
                                   "services": own}, indent=2))
        tmp.replace(self.path)

    def cluster(self, cluster_id: str) -> LocalKafkaCluster | None:
        return next((c for c in self.clusters if c.name == cluster_id), None)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "state_dir": str(self.root),
            "security": self.security,
            "clusters": [{"id": c.name, "bootstrap": c.bootstrap, "running": c.running, "pid": c.pid,
                          "start_seconds": c.start_seconds, "managed_by": c.managed_by,
                          "brokers": [{"node_id": b.node_id, "bootstrap": b.bootstrap, "port": b.port, "pid": b.pid,
                                       "internal_port": b.internal_port, "controller_port": b.controller_port,
                                       "controller": b.is_controller, "running": b.running} for b in c.brokers]}
                         for c in self.clusters],
        }
        for name, svc in self.services.items():
            doc[name] = {**svc, "running": _service_running(svc)} if isinstance(svc, dict) else [
                {**s, "running": _service_running(s)} for s in svc]
        doc["controllers"] = [_controller_status(c) for c in controllers(self)]
        return doc


def _controller_status(svc: dict[str, Any]) -> dict[str, Any]:
    running = _service_running(svc)
    health = controller_health(svc["url"]) if running and svc.get("url") else None
    return {"url": svc.get("url"), "pid": svc.get("pid"), "running": running,
            "active": bool(health and health.get("active")), "role": (health or {}).get("role")}


def _managed(svc: dict | list) -> bool:
    return any(s.get("managed_by") for s in (svc if isinstance(svc, list) else [svc]))


def _service_running(svc: dict[str, Any]) -> bool:
    if svc.get("managed_by"):  # supervisord restarts it under new pids: ask its port
        return bool(svc.get("port")) and port_open("127.0.0.1", int(svc["port"]))
    return pid_alive(svc.get("pid"))


def choose_security(state: LocalState, requested: str | None) -> str:
    """`local up --security`: none given keeps the federation's mode (plaintext for a new one); another mode than
    the one it was brought up with is refused (its brokers, users and clients would not match)."""
    if requested is not None and requested != state.security:
        if any(not c.managed_by for c in state.clusters) or any(not _managed(s) for s in state.services.values()):
            raise RuntimeError(f"this federation runs with --security {state.security}; `fedkafka local down "
                               f"--purge` first to start over with --security {requested}")
        state.security = requested
    if state.secured:
        state.local_security.ensure()
    return state.security


def up_clusters(state: LocalState, count: int, brokers: int | None = None) -> list[LocalKafkaCluster]:
    """Ensure clusters c1..cN run (restarting dead brokers from their data dirs, on the same ports).

    `brokers` per new cluster (default 1); an existing cluster keeps the number it was created with.
    """
    dist = ensure_kafka()
    clusters = [_launch(state, f"c{i}", dist, brokers) for i in range(1, count + 1)]
    resume_clusters(state, dist)  # and the ones add-cluster started: the view may name them
    for cluster in clusters:
        cluster.wait_ready()
    state.save()
    return clusters


def resume_clusters(state: LocalState, dist: KafkaDist | None = None) -> list[LocalKafkaCluster]:
    """Start again, on their ports and data dirs, the clusters this CLI started (add-cluster's too) that are
    not running. The federation's view still names a cluster `down` stopped: the next `up` (`make up` or
    `local up`) must bring it back, or clients of its partitions find no broker at all."""
    stopped = [c for c in state.clusters if not c.managed_by and not c.running]
    for cluster in stopped:
        dist = dist or ensure_kafka()
        _launch(state, cluster.name, dist, None)
    for cluster in stopped:
        cluster.wait_ready()
    state.save()
    return stopped


def add_cluster(state: LocalState, name: str | None = None, brokers: int | None = None) -> LocalKafkaCluster:
    """Start one more local cluster (the next free id cN unless named) of `brokers` nodes (default: as many as
    the first cluster has, so a replicated federation stays replicated)."""
    if name is None:
        taken = {c.name for c in state.clusters}
        name = next(f"c{i}" for i in range(1, 1000) if f"c{i}" not in taken)
    if brokers is None and state.clusters:
        brokers = state.clusters[0].broker_count
    cluster = _launch(state, name, ensure_kafka(), brokers)
    cluster.wait_ready()
    state.save()
    return cluster


def _launch(state: LocalState, name: str, dist: KafkaDist, brokers: int | None) -> LocalKafkaCluster:
    cluster = state.cluster(name)
    if cluster is None:
        cluster = LocalKafkaCluster(name=name, data_dir=state.root / "kafka" / name, broker_count=brokers or 1)
        state.clusters.append(cluster)
    elif brokers is not None and brokers != cluster.broker_count:
        # A formatted quorum does not grow or shrink here: that would be a reassignment, not a restart.
        raise ClusterError(f"cluster {name} was created with {cluster.broker_count} broker(s), not {brokers}; "
                           "`fedkafka local down --purge` first to start over with another number")
    if state.secured and cluster.sasl_ssl is None and not cluster.managed_by:  # started and checked with it
        cluster.sasl_ssl = state.local_security.broker_listener()
    if not cluster.running:
        cluster.start(dist, owned=False)
        state.save()  # record the pid at once: a failed wait must still be cleaned up by `down`
    return cluster


def start_service(state: LocalState, name: str, args: list[str], **info: Any) -> dict[str, Any]:
    """Launch `fedkafka <args>` as a daemon logging to <state>/logs/<name>.log; recorded in the state."""
    import subprocess
    import sys

    logs = state.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=state.root)
    svc = {"pid": proc.pid, "log": str(log_path), "args": args, **info}
    return svc


def wait_until(check, what: str, timeout: float = 30.0, svc: dict[str, Any] | None = None) -> None:
    """Poll `check()` until it returns truthy; fail with the service's log tail when it dies or times out."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if svc is not None and not pid_alive(svc.get("pid")):
            raise RuntimeError(f"{what}: the process exited\n{_tail(svc)}")
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready within {timeout}s ({last})\n{_tail(svc) if svc else ''}")


def _tail(svc: dict[str, Any], lines: int = 20) -> str:
    path = Path(svc.get("log", ""))
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def stop_service(svc: dict[str, Any], timeout: float = 15.0) -> None:
    pid = svc.get("pid")
    if not pid_alive(pid):
        return
    kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        kill_group(pid, signal.SIGKILL)


def down(state: LocalState, purge: bool = False) -> None:
    """Stop services, then clusters; with `purge`, also delete the state dir's data."""
    # Reverse start order: clients' entry points first, the controller last, so no proxy runs
    # without its controller while stopping.
    order = ["nameservice", "proxies", "controller", "controllers", "postgres"]
    for name in sorted(state.services, key=lambda n: order.index(n) if n in order else -1):
        svc = state.services[name]
        for s in svc if isinstance(svc, list) else [svc]:
            if name == "postgres":
                stop_postgres(s)
            elif not s.get("managed_by"):
                stop_service(s)
    pg_data = (state.services.get("postgres") or {}).get("data")
    state.services = {name: svc for name, svc in state.services.items() if _managed(svc)}
    stop_clusters(state.clusters)  # every broker at once, under one deadline
    state.save()
    if purge:
        import shutil

        if pg_data and not Path(pg_data).is_relative_to(state.root):  # root ran it from /tmp
            shutil.rmtree(Path(pg_data).parent, ignore_errors=True)
        for path in state.root.iterdir() if state.root.is_dir() else []:
            if path == state.provisioned_path:  # the playbooks' record: teardown.yml removes it
                continue
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


# -- a local PostgreSQL for several controllers --------------------------------------------------------
def _pg_bindir() -> Path:
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("several controllers need PostgreSQL: no /usr/lib/postgresql/*/bin/initdb "
                           "(apt-get install postgresql)")
    return Path(found[-1]).parent


def _as_postgres_user() -> list[str]:
    """initdb and the server refuse to run as root: run them as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def up_postgres(state: LocalState) -> dict[str, Any]:
    """A PostgreSQL of this federation (data under the state dir, or /tmp when root, where the server's own
    user can reach it) on a port kept across restarts, with the database `fedkafka`."""
    import subprocess
    import tempfile

    svc = dict(state.services.get("postgres") or {})
    if svc and pid_alive(svc.get("pid")):
        return svc
    bindir = Path(svc["bindir"]) if svc.get("bindir") else _pg_bindir()
    if not svc.get("data"):
        parent = Path(tempfile.mkdtemp(prefix="fedkafka-pg-")) if os.geteuid() == 0 else state.root
        svc["data"] = str(parent / "postgres")
        if os.geteuid() == 0:
            import shutil

            shutil.chown(parent, "postgres")
    data = Path(svc["data"])
    svc.update(bindir=str(bindir), port=svc.get("port") or _service_port(state, "postgres"))
    if not (data / "PG_VERSION").exists():
        subprocess.run([*_as_postgres_user(), str(bindir / "initdb"), "-D", str(data), "-U", "fedkafka",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*_as_postgres_user(), str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data.parent / "pg.log"),
                    "-w", "-o", f"-p {svc['port']} -k {data} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    svc["pid"] = int((data / "postmaster.pid").read_text().split()[0])
    svc["url"] = f"postgresql+psycopg://fedkafka@127.0.0.1:{svc['port']}/fedkafka"
    _create_database(svc["port"])
    state.services["postgres"] = svc
    state.save()
    return svc


def _create_database(port: int) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://fedkafka@127.0.0.1:{port}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'fedkafka'").fetchone() is None:
            conn.execute('CREATE DATABASE "fedkafka"')


def stop_postgres(svc: dict[str, Any]) -> None:
    import subprocess

    if svc.get("data") and pid_alive(svc.get("pid")):
        subprocess.run([*_as_postgres_user(), str(Path(svc["bindir"]) / "pg_ctl"), "-D", svc["data"], "-m", "fast",
                        "-w", "stop"], check=False, capture_output=True)


# -- federation services ---------------------------------------------------------------------------
def _service_port(state: LocalState, name: str, key: str = "port") -> int:
    """A service keeps its port across restarts, so clients' bootstrap addresses stay valid."""
    from fedkafka.kafka.cluster import free_port

    old = state.services.get(name)
    return old[key] if isinstance(old, dict) and key in old else free_port()


ROUTING_TOKEN = "routing.token"


def _controller_token(state: LocalState, name: str = "controller.token") -> Path:
    """The operator token's file, or (`routing.token`) the name service's: it may only read the client routing."""
    import secrets

    path = state.root / name
    if not path.exists():  # created 0600: never on disk with the umask's mode
        write_secret_file(path, secrets.token_urlsafe(24) + "\n")
    return path


def controllers(state: LocalState) -> list[dict[str, Any]]:
    """Every local controller: one (SQLite) or several on a local PostgreSQL (`local up --controllers N`)."""
    several = state.services.get("controllers")
    if several:
        return list(several)
    one = state.services.get("controller")
    return [one] if one else []


def controller_urls(state: LocalState) -> str:
    """What proxies, the name service and the CLI are given: every controller URL, comma-separated."""
    return ",".join(c["url"] for c in controllers(state))


def controller_health(url: str) -> dict[str, Any] | None:
    import httpx

    try:
        resp = httpx.get(url + "/healthz", timeout=2)
        return resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def controller_api(state: LocalState):
    """An httpx client for the admin API of the active local controller."""
    import httpx

    ctls = controllers(state)
    if not ctls:
        raise RuntimeError("no local controller: run `fedkafka local up` first")
    url = next((c["url"] for c in ctls if _holds_leader_row(controller_health(c["url"]) or {})), ctls[0]["url"])
    try:
        token = read_token(Path(ctls[0]["token_file"]))
    except (OSError, TokenFileRefused) as e:  # a RuntimeError: `local up` and `local demo` say it in one line
        raise RuntimeError(f"the local controller's token file: {e}") from None
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _holds_leader_row(health: dict[str, Any]) -> bool:
    """A controller's /healthz says it is the active one, or taking over (it answers once it serves the database's
    view: the one to wait for, not a standby, docs/DESIGN.md §3.6)."""
    return bool(health.get("active")) or health.get("role") == "taking_over"


def coordination_cluster(state: LocalState) -> str:
    """c2 when there are two or more clusters, as in the Ansible local inventory: the coordination
    cluster cannot be decommissioned (no groups migration yet), and c1 is the one the README retires."""
    names = {c.name for c in state.clusters}
    return "c2" if "c2" in names else "c1"


def up_controller(state: LocalState, count: int = 1) -> list[dict[str, Any]]:
    """One controller on SQLite, or `count` on a local PostgreSQL (one active, the others standing by)."""
    if count > 1 or state.services.get("controllers"):
        ctls = _up_controllers(state, max(count, len(state.services.get("controllers") or [])))
    else:
        ctls = [_up_single_controller(state)]
    with controller_api(state) as api:
        wait_until(lambda: api.get("/v1/status").status_code == 200, "an active controller", svc=ctls[0])
        coordination = coordination_cluster(state)
        for cluster in state.clusters:  # in name order: placement follows registration order
            resp = api.put(f"/v1/clusters/{cluster.name}",
                           json={"bootstrap": cluster.bootstrap, "coordination": cluster.name == coordination})
            resp.raise_for_status()
        if state.secured:
            _ensure_demo_user(state, api)
    return ctls


def _upstream_args(state: LocalState) -> list[str]:
    """How the controller and the proxies log in to secured brokers: a 0600 file, never the password itself."""
    return ["--upstream-config", str(state.local_security.upstream_config)] if state.secured else []


def _ensure_demo_user(state: LocalState, api) -> None:
    """The demo user's SCRAM credentials (hashes only) and its ACLs in the config database, once: a later `up`
    leaves a user that exists alone (a password its owner changed, ACLs they deleted, the view's version)."""
    have = api.get(f"/v1/users/{DEMO_USER}")
    if have.status_code != 404:
        have.raise_for_status()
        return
    api.put(f"/v1/users/{DEMO_USER}", json={"credentials": state.local_security.demo_credentials()}
            ).raise_for_status()
    api.post("/v1/acls", json={"acls": demo_acl_bindings()}).raise_for_status()


def _up_controllers(state: LocalState, count: int) -> list[dict[str, Any]]:
    if state.services.get("controller"):
        raise RuntimeError("this federation runs one controller on SQLite; `fedkafka local down --purge` first "
                           "to start over with several on PostgreSQL")
    from fedkafka.kafka.cluster import free_port

    db = up_postgres(state)["url"]
    token_file, routing_file = _controller_token(state), _controller_token(state, ROUTING_TOKEN)
    ctls = [c for c in state.services.get("controllers", []) if isinstance(c, dict)]
    while len(ctls) < count:
        ctls.append({"port": free_port()})
    for i, old in enumerate(ctls[:count]):
        if pid_alive(old.get("pid")):
            continue
        port, url = old["port"], f"http://127.0.0.1:{old['port']}"
        ctls[i] = start_service(state, f"controller-{i + 1}", [
            "controller", "--db", db, "--listen", f"127.0.0.1:{port}", "--advertise-url", url, "--token-file",
            str(token_file), "--routing-token-file", str(routing_file), "--scan-interval", "2",
            *_upstream_args(state)], port=port, url=url, token_file=str(token_file),
            routing_token_file=str(routing_file), db=db)
    state.services["controllers"] = ctls[:count]
    state.save()
    for svc in ctls[:count]:
        wait_until(lambda svc=svc: controller_health(svc["url"]) is not None, f"controller {svc['url']}", svc=svc)
    return ctls[:count]


def _up_single_controller(state: LocalState) -> dict[str, Any]:
    svc = state.services.get("controller")
    if not (svc and pid_alive(svc.get("pid"))):
        port = _service_port(state, "controller")
        token_file, routing_file = _controller_token(state), _controller_token(state, ROUTING_TOKEN)
        db = f"sqlite:///{state.root / 'controller.db'}"
        svc = start_service(state, "controller", ["controller", "--db", db, "--listen", f"127.0.0.1:{port}",
                                                  "--token-file", str(token_file), "--routing-token-file",
                                                  str(routing_file), "--scan-interval", "2", *_upstream_args(state)],
                            port=port, url=f"http://127.0.0.1:{port}", token_file=str(token_file),
                            routing_token_file=str(routing_file), db=db)
        state.services["controller"] = svc
        state.save()
    return svc


def up_proxies(state: LocalState, count: int, role: str = "both") -> list[dict[str, Any]]:
    from fedkafka.kafka.cluster import free_port

    controller = {"url": controller_urls(state), "token_file": controllers(state)[0]["token_file"]}
    proxies = [p for p in state.services.get("proxies", []) if isinstance(p, dict)]
    while len(proxies) < count:
        proxies.append({"port": free_port()})
    for i, old in enumerate(proxies[:count]):
        if pid_alive(old.get("pid")):
            continue
        port = old["port"]
        secured = _secured_listener(state, old, authorization=True) if state.secured else {}
        proxies[i] = start_service(state, f"proxy-{i + 1}", [
            "proxy", "--role", role, "--listen", f"127.0.0.1:{port}", "--controller", controller["url"],
            "--token-file", controller["token_file"],
            "--view-cache", str(state.root / "proxies" / f"proxy-{i + 1}.view.json"), *secured.pop("args", [])],
            port=port, bootstrap=f"127.0.0.1:{port}", role=role, **secured)
    state.services["proxies"] = proxies[:count]
    state.save()
    with controller_api(state) as api:
        def all_registered() -> bool:
            view = api.get("/v1/view").json()
            return {p["port"] for p in view["proxies"]} >= {p["port"] for p in proxies[:count]}
        wait_until(all_registered, "proxies registered with the controller", svc=proxies[0])
    return proxies[:count]


def nameservice_token_file(state: LocalState) -> str:
    """The routing token's file when every controller was started with it, else the operator token's: a
    federation brought up by an older fedkafka keeps its running controllers, which know no routing token."""
    ctls = controllers(state)
    if all(c.get("routing_token_file") for c in ctls):
        return str(ctls[0]["routing_token_file"])
    return str(ctls[0]["token_file"])


def up_nameservice(state: LocalState) -> dict[str, Any]:
    svc = state.services.get("nameservice")
    if not (svc and pid_alive(svc.get("pid"))):
        port = _service_port(state, "nameservice")
        http_port = _service_port(state, "nameservice", "http_port")
        controller = {"url": controller_urls(state), "token_file": nameservice_token_file(state)}
        secured = _secured_listener(state, svc or {}, authorization=False) if state.secured else {}
        svc = start_service(state, "nameservice", [
            "nameservice", "--listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{http_port}",
            "--controller", controller["url"], "--token-file", controller["token_file"], *secured.pop("args", [])],
            port=port, http_port=http_port, bootstrap=f"127.0.0.1:{port}", http=f"http://127.0.0.1:{http_port}",
            **secured)
        state.services["nameservice"] = svc
        state.save()
    import httpx

    wait_until(lambda: httpx.get(svc["http"] + "/healthz", timeout=1).status_code == 200, "name service", svc=svc)
    return svc


def _secured_listener(state: LocalState, old: dict[str, Any], authorization: bool) -> dict[str, Any]:
    """A SASL_SSL listener beside the PLAINTEXT one (on the port it had before, so client files stay valid):
    its flags under "args", its port and bootstrap for the state. The proxies also log in to the brokers and
    enforce the ACLs; the name service only hands out the proxies' SASL_SSL listeners to SASL_SSL clients."""
    from fedkafka.kafka.cluster import free_port

    sasl_port = old.get("sasl_port") or free_port()
    args = ["--listener", f"SASL_SSL://127.0.0.1:{sasl_port}", *state.local_security.tls_args()]
    if authorization:
        args += ["--authorization", *_upstream_args(state)]
    return {"args": args, "sasl_port": sasl_port, "sasl_ssl_bootstrap": f"127.0.0.1:{sasl_port}"}


def write_client_files(state: LocalState) -> dict[str, Path]:
    """The demo user's client settings, pointing at the name service's SASL_SSL listener."""
    return state.local_security.write_client_files(state.services["nameservice"]["sasl_ssl_bootstrap"])
