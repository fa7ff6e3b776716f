"""A federation the Ansible bundle runs (`make up`) is read from ansible.json, never stopped or rewritten
by `fedkafka local`; its services count as running when their ports answer (supervisord owns the pids)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from fedkafka import local
from fedkafka.controller.client import locate


def listening() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def write_provisioned(root, controller_port: int, token_file) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ansible.json").write_text(json.dumps({
        "clusters": [{"id": "c1", "bootstrap": f"127.0.0.1:{controller_port}", "port": controller_port,
                      "controller_port": 1, "data_dir": str(root / "c1"), "pid": None}],
        "services": {"controller": {"port": controller_port, "url": f"http://127.0.0.1:{controller_port}",
                                    "token_file": str(token_file)},
                     "proxies": [{"port": 9, "bootstrap": "127.0.0.1:9", "role": "both"}]}}))


def test_provisioned_entries_are_read_checked_by_port_and_never_saved_or_stopped(tmp_path):
    server, port = listening()
    token = tmp_path / "token"
    token.write_text("secret\n")
    root = tmp_path / "state"
    write_provisioned(root, port, token)
    (root / "state.json").write_text(json.dumps({"clusters": [], "services": {}}))
    try:
        state = local.LocalState.load(root)
        assert state.provisioned and [c.name for c in state.clusters] == ["c1"]
        status = state.status()
        assert status["clusters"][0]["running"] and status["controller"]["running"]  # the port answers
        assert not status["proxies"][0]["running"]  # port 9: nothing listens
        assert locate(state_root=root) == (f"http://127.0.0.1:{port}", "secret")  # admin commands find it

        local.down(state, purge=True)  # stops and purges only what `fedkafka local` started
        assert json.loads((root / "ansible.json").read_text())["services"]["controller"]["port"] == port
        assert local.LocalState.load(root).status()["controller"]["running"]
        state.save()
        own = json.loads((root / "state.json").read_text())
        assert own == {"security": "plaintext", "clusters": [], "services": {}}
    finally:
        server.close()


def test_local_up_refuses_a_checkout_ansible_provisioned(tmp_path):
    root = tmp_path / "state"
    write_provisioned(root, 1, tmp_path / "token")
    proc = subprocess.run([sys.executable, "-m", "fedkafka.cli", "local", "up"], capture_output=True, text=True,
                          env={"FEDKAFKA_STATE_DIR": str(root), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
                          timeout=60)
    assert proc.returncode == 1
    assert "provisioned by Ansible" in proc.stderr and "make down" in proc.stderr, proc.stderr


def test_a_cluster_the_cli_added_keeps_its_entry_beside_a_provisioned_one_of_the_same_name(tmp_path):
    """`local add-cluster` beside a `make up` federation started c3; the playbooks described the inventory's spare
    c3 too. Loading preferred the playbooks' entry, and the next `save` dropped the running c3 from state.json:
    `make down` then left its broker running and `make up` no longer found it."""
    root = tmp_path / "state"
    write_provisioned(root, 1, tmp_path / "token")
    provisioned = json.loads((root / "ansible.json").read_text())
    provisioned["clusters"].append({"id": "c3", "bootstrap": "127.0.0.1:39031", "port": 39031, "controller_port": 2,
                                    "data_dir": str(root / "spare-c3"), "pid": None})
    (root / "ansible.json").write_text(json.dumps(provisioned))
    added = {"id": "c3", "bootstrap": "127.0.0.1:48415", "port": 48415, "controller_port": 48416,
             "data_dir": str(root / "kafka" / "c3"), "pid": 4242}
    (root / "state.json").write_text(json.dumps({"clusters": [added], "services": {}}))

    state = local.LocalState.load(root)
    c3 = state.cluster("c3")
    assert c3 is not None and (c3.bootstrap, c3.managed_by) == ("127.0.0.1:48415", None)
    state.save()
    assert [c["bootstrap"] for c in json.loads((root / "state.json").read_text())["clusters"]] == ["127.0.0.1:48415"]


def test_a_provisioned_service_wins_over_a_stale_own_entry_of_the_same_name(tmp_path):
    root = tmp_path / "state"
    write_provisioned(root, 4242, tmp_path / "token")
    stale = {"controller": {"pid": 999_999, "port": 1, "url": "http://127.0.0.1:1"}}  # an earlier `local up`'s
    (root / "state.json").write_text(json.dumps({"clusters": [], "services": stale}))
    controller = local.LocalState.load(root).services["controller"]
    assert controller["port"] == 4242 and controller["managed_by"] == "ansible" and "pid" not in controller
