"""Reviewer rv4: the service manager's stop timeout for the proxy vs the proxy's own clean stop (merge 21ac0da).

`ProxyServer.stop` waits up to SHUTDOWN_GRACE_S (30 s) for its client connections, then for writes still out until
WRITES_END_WAIT_S after the earlier of the grace's end and 5 s after the last connection (`_writes_ended`), then up
to DEREGISTER_TIMEOUT_S for the deregistration: up to 37 s. The proxy role installs it with the
common role's `fedkafka_service_stop_timeout`, default 30 s (supervisord `stopwaitsecs`, systemd `TimeoutStopSec`),
after which the proxy is SIGKILLed: a stop that used its grace is killed before it deregisters (and before it logs
why not), so `rolling_restart.yml` gets the lease wait and the move hold the merge set out to remove, and the
`not deregistering: ...` lines docs/OPERATIONS.md tells operators to read never appear. Not a loss (a killed proxy
holds its fence as before; its saved deadline is 0 or its old one, both safe), a timing gap."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from fedkafka.proxy.core.server import SHUTDOWN_GRACE_S, WRITES_END_WAIT_S
from fedkafka.proxy.view_source import DEREGISTER_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]


def _proxy_service_stop_timeout() -> float:
    """The stop timeout the proxy role's service is installed with: its own var (a number, or (fixrv4) one of the
    proxy role's variables, read from its defaults), else the common role's default."""
    tasks = yaml.safe_load((ROOT / "roles/fedkafka_proxy/tasks/main.yml").read_text())
    service = next(t for t in tasks if t.get("ansible.builtin.include_role", {}).get("tasks_from") == "service")
    chosen = service.get("vars", {}).get("fedkafka_service_stop_timeout")
    if isinstance(chosen, str) and (named := re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", chosen)):
        defaults = yaml.safe_load((ROOT / "roles/fedkafka_proxy/defaults/main.yml").read_text())
        chosen = defaults[named.group(1)]
    if chosen is not None:
        return float(chosen)
    specs = yaml.safe_load((ROOT / "roles/fedkafka_common/meta/argument_specs.yml").read_text())
    options = next(spec["options"] for spec in specs["argument_specs"].values()
                   if "fedkafka_service_stop_timeout" in spec.get("options", {}))
    return float(options["fedkafka_service_stop_timeout"]["default"])


def test_the_proxy_service_is_not_killed_before_its_clean_stop_can_deregister():
    longest_clean_stop = SHUTDOWN_GRACE_S + WRITES_END_WAIT_S + DEREGISTER_TIMEOUT_S
    assert _proxy_service_stop_timeout() > longest_clean_stop
