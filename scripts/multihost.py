#!/usr/bin/env python3
"""Real hosts on one machine: Linux network namespaces, each with its own address and sshd.

    multihost.py up [--hosts 9]   create the hosts, start their sshd, make the release venv, write the inventory
    multihost.py describe          write .fedkafka/multihost.json (after site.yml converged)
    multihost.py venv DIR          make another release venv (running this checkout), e.g. for upgrade.yml
    multihost.py down              kill every process of every host, delete namespaces and links

Hosts are namespaces fkmh-host1..N joined by the bridge fkmh0 in the root namespace (198.18.77.1/24, in the
benchmarking range 198.18.0.0/15; the namespaces get no default route, so nothing leaves this /24).
Namespaces share the filesystem: each host keeps its state under <root>/<host>/. Needs root.
The inventory (<root>/inventory.yml) lays a federation out over 9 hosts (see `federation_layout`; the 9th holds
the spare cluster c3 for scale_up.yml): Ansible reaches every host over SSH, as root, with a key and known_hosts
of the harness's own. The hosts run this checkout from a release venv (`make_release_venv`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("FEDKAFKA_HOSTS_ROOT", "/tmp/fedkafka-hosts"))
PREFIX = "fkmh"
BRIDGE = f"{PREFIX}0"
SUBNET = "198.18.77"  # /24 in 198.18.0.0/15; .1 is the root namespace's end of the bridge
BRIDGE_ADDR = f"{SUBNET}.1"
SSHD = "/usr/sbin/sshd"
MIN_HOSTS = 9
POOLS = {"pproxy": "produce", "cproxy": "consume"}
# client.id prefix -> pool (site.yml sets them on the controller); other client ids get the empty pool "default".
# `fedkafka check` names its producers fedkafka-checker-p<N> and its consumers fedkafka-checker: the longest
# matching prefix wins, so the two checker rules split them.
CLIENT_RULES = {"producers": ("producer", POOLS["pproxy"]), "consumers": ("consumer", POOLS["cproxy"]),
                "checker-producers": ("fedkafka-checker-p", POOLS["pproxy"]),
                "checker-consumers": ("fedkafka-checker", POOLS["cproxy"])}
COORDINATION = "c2"  # as in the local inventory: c1 can then be decommissioned
SPARE = "c3"  # on its own host, added by scale_up.yml -e cluster=c3
KAFKA_HEAP = os.environ.get("FEDKAFKA_HOSTS_KAFKA_HEAP", "320m")  # 6 brokers on a small shared machine


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def host_name(i: int) -> str:
    return f"host{i}"


def netns(i: int) -> str:
    return f"{PREFIX}-{host_name(i)}"


def host_addr(i: int) -> str:
    return f"{SUBNET}.{10 + i}"


# --- hosts ---------------------------------------------------------------------------------------------------

def ensure_sshd() -> None:
    if not Path(SSHD).exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "openssh-server"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir


def ensure_client_key() -> Path:
    key = ROOT / "id_ed25519"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fedkafka-multihost", "-f", str(key))
    shutil.copyfile(f"{key}.pub", ROOT / "authorized_keys")
    return key


def create_bridge() -> None:
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")


def create_host(i: int) -> None:
    ns, veth = netns(i), f"{PREFIX}-h{i}"
    if ns in sh("ip", "netns", "list").stdout.split():
        return
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", veth, "master", BRIDGE, "up")
    inside = ("ip", "netns", "exec", ns)
    sh(*inside, "ip", "link", "set", "lo", "up")
    sh(*inside, "ip", "addr", "add", f"{host_addr(i)}/24", "dev", "eth0")
    sh(*inside, "ip", "link", "set", "eth0", "up")


def sshd_config(i: int, ssh_dir: Path) -> str:
    return "\n".join([
        f"ListenAddress {host_addr(i)}:22",
        f"HostKey {ssh_dir}/ssh_host_ed25519_key",
        f"PidFile {ssh_dir}/sshd.pid",
        f"AuthorizedKeysFile {ROOT}/authorized_keys",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the key files live under /tmp
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "Subsystem sftp internal-sftp",
        "",
    ])


def start_sshd(i: int) -> str:
    """Starts the host's sshd (once); returns its known_hosts line."""
    ssh_dir = ROOT / host_name(i) / "ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    host_key = ssh_dir / "ssh_host_ed25519_key"
    if not host_key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host_name(i), "-f", str(host_key))
    (ssh_dir / "sshd_config").write_text(sshd_config(i, ssh_dir))
    if not sshd_running(i):
        sh("ip", "netns", "exec", netns(i), SSHD, "-f", str(ssh_dir / "sshd_config"))
    key_type, public_key = Path(f"{host_key}.pub").read_text().split()[:2]
    return f"{host_addr(i)} {key_type} {public_key}"


def sshd_running(i: int) -> bool:
    pid_file = ROOT / host_name(i) / "ssh" / "sshd.pid"
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def wait_for_ssh(key: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for i in range(1, count + 1):
        while True:
            probe = subprocess.run(["ssh", *ssh_options(key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
                                    f"root@{host_addr(i)}", "true"], capture_output=True, text=True)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"sshd of {host_name(i)} ({host_addr(i)}) does not answer: {probe.stderr.strip()}")
            time.sleep(0.3)


def ssh_options(key: Path) -> list[str]:
    return ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={ROOT}/known_hosts",
            "-o", "StrictHostKeyChecking=yes"]


# --- the federation's inventory ---------------------------------------------------------------------------

def federation_layout() -> dict[str, tuple[int, str, dict]]:
    """inventory host -> (namespace host number, group, host vars). One broker per host; the services
    without much load share host7 and host8, one of each proxy role per host so either host can go; the
    spare cluster c3 (one broker: a scale-up target, not a replicated cluster) has host9 to itself."""
    layout: dict[str, tuple[int, str, dict]] = {}
    for c, first_host in (("c1", 1), ("c2", 4)):
        for n in range(1, 4):
            layout[f"{c}-broker{n}"] = (first_host + n - 1, f"kafka_{c}", {"kafka_broker_node_id": n})
    layout[f"{SPARE}-broker1"] = (9, f"kafka_{SPARE}", {"kafka_broker_node_id": 1})
    layout["controller"] = (7, "fedkafka_controller", {})
    layout["nameservice"] = (7, "fedkafka_nameservice", {})
    for n, host in ((1, 7), (2, 8)):
        layout[f"pproxy{n}"] = (host, "fedkafka_pproxies", {})
        layout[f"cproxy{n}"] = (host, "fedkafka_cproxies", {})
    return layout


def inventory(key: Path, venv: Path, modules_python: Path | None = None) -> dict:
    """`venv`: the release venv the hosts run fedkafka from; `modules_python`: the Python Ansible runs modules
    with (a venv with Ansible's own needs; default the release venv's)."""
    layout = federation_layout()
    groups: dict[str, dict] = {}
    for name, (i, group, extra) in layout.items():
        hostvars = {"ansible_host": host_addr(i), "fedkafka_state_dir": f"{ROOT}/{host_name(i)}/{name}", **extra}
        groups.setdefault(group, {})[name] = hostvars
    controller_addr = host_addr(layout["controller"][0])
    ssh_args = " ".join(ssh_options(key)[2:])  # the key has its own variable
    return {"all": {
        "vars": {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": str(modules_python or venv / "bin" / "python"),
            # One virtualenv for every host (the namespaces share the filesystem): no pip install per host.
            # upgrade.yml -e fedkafka_venv=<another release venv> rolls the hosts onto another one.
            "fedkafka_venv": str(venv),
            "fedkafka_install_source": "present",
            "fedkafka_service_manager": "supervisord",
            "fedkafka_api_token": "{{ lookup('ansible.builtin.file', '" + f"{ROOT}/api-token" + "') }}",
            "fedkafka_controller_listen_host": controller_addr,
            "fedkafka_controller_port": 8780,
            "fedkafka_controller_url": f"http://{controller_addr}:8780",
            "fedkafka_nameservice_listen_host": host_addr(layout["nameservice"][0]),
            "fedkafka_nameservice_port": 9092,
            "fedkafka_nameservice_http_port": 8781,
            "fedkafka_coordination_cluster": COORDINATION,
            "fedkafka_topics": [{"name": "demo", "partitions": 6}],
            "fedkafka_client_rules": [{"name": name, "match": "prefix", "pattern": prefix, "pool": pool}
                                      for name, (prefix, pool) in CLIENT_RULES.items()],
        },
        "children": {
            "kafka_brokers": {
                "vars": {"kafka_broker_listen_host": "{{ ansible_host }}",
                         # in hostvars, not only the role default: vars/federation.yml reads it for bootstrap
                         "kafka_broker_advertised_host": "{{ ansible_host }}", "kafka_broker_heap": KAFKA_HEAP,
                         "kafka_broker_port": 9092, "kafka_broker_controller_port": 9093},
                "children": {g: {"vars": {"kafka_broker_cluster": g.removeprefix("kafka_")}, "hosts": groups[g]}
                             for g in ("kafka_c1", "kafka_c2")},
            },
            # Known to the inventory, provisioned by scale_up.yml -e cluster=c3 (same broker settings).
            "kafka_spare": {
                "vars": {"kafka_broker_listen_host": "{{ ansible_host }}",
                         "kafka_broker_advertised_host": "{{ ansible_host }}", "kafka_broker_heap": KAFKA_HEAP,
                         "kafka_broker_port": 9092, "kafka_broker_controller_port": 9093},
                "children": {f"kafka_{SPARE}": {"vars": {"kafka_broker_cluster": SPARE},
                                                "hosts": groups[f"kafka_{SPARE}"]}},
            },
            "fedkafka_controller": {"hosts": groups["fedkafka_controller"]},
            "fedkafka_nameservice": {"hosts": groups["fedkafka_nameservice"]},
            "fedkafka_proxies": {
                "vars": {"fedkafka_proxy_listen_host": "{{ ansible_host }}", "fedkafka_proxy_workers": 1},
                # A proxy's Metadata names leaders of its own side only, so a client must land on a proxy
                # of the side it uses: one pool per role, picked by client.id (fedkafka_client_rules).
                "children": {
                    group: {"vars": {"fedkafka_proxy_role": role, "fedkafka_proxy_port": port,
                                     "fedkafka_proxy_pool": POOLS[role]}, "hosts": groups[group]}
                    for group, role, port in (("fedkafka_pproxies", "pproxy", 9192),
                                              ("fedkafka_cproxies", "cproxy", 9292))
                },
            },
        },
    }}


def write_inventory(key: Path, venv: Path | None = None) -> Path:
    token = ROOT / "api-token"
    if not token.exists():
        token.write_text(secrets.token_urlsafe(30))
        token.chmod(0o600)
    path = ROOT / "inventory.yml"
    # JSON is YAML: no YAML library needed to write it.
    path.write_text(json.dumps(inventory(key, venv or Path(sys.prefix), Path(sys.executable)), indent=2) + "\n")
    return path


# --- release venvs -------------------------------------------------------------------------------------------

def make_release_venv(path: Path) -> Path:
    """A virtualenv that runs this checkout: its own interpreter and scripts (fedkafka, supervisord,
    supervisorctl), the code from REPO and the dependencies from the harness's venv (a .pth file; no pip,
    the hosts have no route to an index). The hosts' services run from it, so they run the checkout that
    started the harness, and a second one gives upgrade.yml a real change of binaries to roll out."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    sh(str(base), "-m", "venv", "--without-pip", str(path))
    site = next((path / "lib").glob("python3*/site-packages"))
    deps = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    # REPO first: a .pth line is appended to sys.path as is (the deps' own editable .pth files are not read).
    (site / "fedkafka-release.pth").write_text(f"{REPO}\n{deps}\n")
    scripts = {"fedkafka": "fedkafka.cli", "supervisord": "supervisor.supervisord",
               "supervisorctl": "supervisor.supervisorctl"}
    for name, module in scripts.items():
        script = path / "bin" / name
        script.write_text(f"#!{path}/bin/python\nimport sys\nfrom {module} import main\nsys.exit(main())\n")
        script.chmod(0o755)
    return path


# --- commands --------------------------------------------------------------------------------------------

def up(count: int) -> None:
    if count < MIN_HOSTS:
        raise SystemExit(f"the federation layout needs {MIN_HOSTS} hosts (got --hosts {count})")
    ensure_sshd()
    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / "hosts").write_text(str(count))
    key = ensure_client_key()
    create_bridge()
    known_hosts = []
    for i in range(1, count + 1):
        create_host(i)
        known_hosts.append(start_sshd(i))
    (ROOT / "known_hosts").write_text("\n".join(known_hosts) + "\n")
    wait_for_ssh(key, count)
    venv = ROOT / "venvs" / "release-1"
    if not (venv / "bin" / "fedkafka").exists():
        make_release_venv(venv)
    print(f"{count} hosts up ({host_addr(1)}..{host_addr(count)}); inventory: {write_inventory(key, venv)}")


def describe() -> None:
    layout = federation_layout()
    state = {
        "bootstrap": f"{host_addr(layout['nameservice'][0])}:9092",
        "inventory": str(ROOT / "inventory.yml"),
        "controller": f"http://{host_addr(layout['controller'][0])}:8780",
        "token_file": str(ROOT / "api-token"),
        "hosts": {host_name(i): host_addr(i) for i in sorted({i for i, _, _ in layout.values()})},
    }
    state["client_rules"] = {f"{prefix}*": pool for prefix, pool in CLIENT_RULES.values()}
    out = REPO / ".fedkafka" / "multihost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(state, indent=2) + "\n")
    print(f"clients bootstrap at {state['bootstrap']} ({out})")


def our_namespaces() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines()
            if line.startswith(f"{PREFIX}-")]


def namespace_pids(namespaces: list[str]) -> list[int]:
    return [int(p) for ns in namespaces for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]


def kill_namespaces(namespaces: list[str]) -> None:
    """SIGTERM every process of the namespaces at once (sshd, supervisord, JVMs, proxies), SIGKILL what remains."""
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        for pid in namespace_pids(namespaces):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while namespace_pids(namespaces) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not namespace_pids(namespaces):
            return


def down() -> None:
    namespaces = our_namespaces()
    kill_namespaces(namespaces)
    for ns in namespaces:
        sh("ip", "netns", "del", ns, check=False)  # deleting the namespace deletes its veth pair
    sh("ip", "link", "del", BRIDGE, check=False)
    (REPO / ".fedkafka" / "multihost.json").unlink(missing_ok=True)
    shutil.rmtree(ROOT, ignore_errors=True)
    print("multihost: no host left")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up").add_argument("--hosts", type=int, default=MIN_HOSTS)
    sub.add_parser("describe")
    sub.add_parser("venv").add_argument("path", type=Path)
    sub.add_parser("down")
    args = parser.parse_args()
    if args.command == "venv":
        print(make_release_venv(args.path.resolve()))
        return
    if os.geteuid() != 0:
        raise SystemExit("multihost.py needs root (network namespaces, sshd)")
    {"up": lambda: up(args.hosts), "describe": describe, "down": down}[args.command]()


if __name__ == "__main__":
    main()
