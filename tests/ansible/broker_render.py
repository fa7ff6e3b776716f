"""Render the kafka_broker role's server.properties on localhost through ansible-playbook, with the role's
defaults (and fedkafka_common's) and the variables given, without running the role."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

# A play on localhost with the role's defaults and vars (and fedkafka_common's), without running the role: the
# tests add the role's task files or templates they exercise under its `tasks:`.
ROLE_VARS_PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {root}/roles/fedkafka_common/defaults/main.yml
    - {root}/roles/kafka_broker/defaults/main.yml
    - {root}/roles/kafka_broker/vars/main.yml
  tasks:
"""

# The whole role on localhost.
ROLE_PLAY = """
- hosts: localhost
  gather_facts: true
  gather_subset: [min]
  roles:
    - role: kafka_broker
"""

RENDER = ROLE_VARS_PLAY + """    - name: Render server.properties as the role does
      ansible.builtin.template:
        src: {root}/roles/kafka_broker/templates/server.properties.j2
        dest: {out}
        mode: "0600"
"""

# What the role sets before it renders (the resolve task's facts), fixed here.
FACTS = {"kafka_broker_cluster": "c1", "kafka_broker_cluster_id": "JuP7wOzCRjGZbCrYmd8CIg",
         "fedkafka_state_dir": "/var/lib/fedkafka", "kafka_broker_listen_host": "10.0.0.5", "kafka_broker_port": 9092,
         "kafka_broker_controller_port": 9093}


def render_server_properties(tmp_path: Path, given: dict) -> tuple[subprocess.CompletedProcess, str | None]:
    """(the run, the rendered file or None when the run failed)."""
    out = tmp_path / "server.properties"
    book = tmp_path / "render.yml"
    book.write_text(RENDER.format(root=ROOT, out=out))
    extra = tmp_path / "vars.json"
    extra.touch(mode=0o600)
    extra.write_text(json.dumps({**FACTS, **given}))
    proc = subprocess.run([PLAYBOOK, str(book), "-e", f"@{extra}", "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    extra.unlink()
    return proc, out.read_text() if proc.returncode == 0 else None
