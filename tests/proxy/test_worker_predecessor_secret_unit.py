"""The --workers parent draws each worker's member secret and passes the previous process's to the worker it starts
again only once that process exited: the controller then need not wait for the exited process's fence before the new
one's ack counts (docs/DESIGN.md §4.9 F4, §4.10)."""

from __future__ import annotations

from fedkafka.proxy.core.server import ProxyConfig, WorkerSupervisor
from fedkafka.view.model import ProxyRole


class _Started:
    """Stands in for a spawned worker process: records the config it was given."""

    def __init__(self, target, args, daemon, name):
        self.config = args[0]
        self.exitcode: int | None = None
        self.pid = 4242

    def start(self) -> None:
        pass

    def is_alive(self) -> bool:
        return self.exitcode is None


def test_a_restarted_worker_gets_its_exited_predecessors_secret_and_a_new_one(monkeypatch):
    supervisor = WorkerSupervisor(ProxyConfig(ProxyRole.PPROXY, "127.0.0.1", 9092, "127.0.0.1", workers=2,
                                              controller="http://c:1"))
    monkeypatch.setattr(supervisor.ctx, "Process", _Started)
    supervisor._start(0)
    supervisor._start(1)
    first = {i: supervisor.children[i].config.member_secrets for i in (0, 1)}
    assert first[0][1] is None and first[1][1] is None  # a first start vouches for no one
    assert first[0][0] != first[1][0]
    supervisor._restart_exited()  # both alive: none started again
    assert {i: supervisor.children[i].config.member_secrets for i in (0, 1)} == first
    supervisor.children[1].exitcode = -9
    supervisor._restart_exited()  # seen exited: due after its backoff
    supervisor.due[1] = 0.0
    supervisor._restart_exited()
    own, exited = supervisor.children[1].config.member_secrets
    assert exited == first[1][0] and own not in (first[1][0], first[0][0])
    assert supervisor.children[0].config.member_secrets == first[0]  # the live sibling's is untouched
