#!/usr/bin/python
"""Ansible module: a client.id -> proxy pool rule of the fedkafka name service (idempotent, check mode predicts)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fedkafka_client_rule
short_description: Set a client.id rule of a fedkafka federation's name service
description:
  - Talks to the fedkafka controller's admin API (C(GET /v1/client-rules), C(PUT /v1/client-rules/{name})).
  - The name service sends a client whose C(client.id) the rule matches to a proxy of O(pool); a client no rule
    matches goes to pool C(default).
  - Idempotent. A rule with the same match, pattern and pool is left alone and reported unchanged.
  - One rule per match and pattern. If another rule name holds them, the module fails naming it (in check mode too);
    set that rule to change its pool, or delete it first (C(fedkafka client-rule delete NAME)).
  - Check mode reads the current rules and reports the change the run would make; C(--diff) shows the rule before
    and after. The token is never logged nor shown in a diff.
version_added: "0.1.0"
options:
  name:
    description: Name of the rule (its key; setting it again replaces its match, pattern and pool).
    type: str
    required: true
  match:
    description: How O(pattern) is compared with a client's C(client.id).
    type: str
    choices: [exact, prefix]
    default: prefix
  pattern:
    description: The C(client.id), or its prefix with O(match=prefix).
    type: str
    required: true
  pool:
    description: The proxy pool the matching clients are sent to.
    type: str
    required: true
extends_documentation_fragment: [fedkafka_api]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - fedkafka
"""

EXAMPLES = r"""
- name: Send the billing clients to the proxies of pool "billing"
  fedkafka_client_rule:
    controller_url: http://10.0.0.5:8780,http://10.0.0.6:8780
    token: "{{ fedkafka_api_token }}"
    name: billing
    match: prefix
    pattern: billing-
    pool: billing
"""

RETURN = r"""
rule:
  description: The rule after the run (in check mode, the rule the run would set).
  type: dict
  returned: always
  sample: {"name": "billing", "match": "prefix", "pattern": "billing-", "pool": "billing"}
previous:
  description: The rule before the run; empty when there was none.
  type: dict
  returned: always
  sample: {"name": "billing", "match": "prefix", "pattern": "billing-", "pool": "default"}
actions:
  description: What the run did (or would do).
  type: list
  elements: str
  returned: always
  sample: ["set rule billing: prefix billing- -> pool billing (was: prefix billing- -> pool default)"]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.fedkafka_api import (  # noqa: E402
    API_ARGUMENT_SPEC,
    ApiError,
    FedkafkaApi,
    read_or_predict,
)

RULE_FIELDS = ("name", "match", "pattern", "pool")


def rule_of(rule: dict | None) -> dict:
    """The fields of a rule that the module sets ({} for none)."""
    return {k: str(rule[k]) for k in RULE_FIELDS if k in rule} if rule else {}


def describe(rule: dict) -> str:
    return f"{rule['match']} {rule['pattern']} -> pool {rule['pool']}"


def plan(current: dict, wanted: dict) -> list[str]:
    if current == wanted:
        return []
    was = f" (was: {describe(current)})" if current else " (new)"
    return [f"set rule {wanted['name']}: {describe(wanted)}{was}"]


def holder_of(rules: list[dict], wanted: dict) -> str | None:
    """The name of another rule with the wanted match and pattern: the controller refuses a second one (409)."""
    return next((str(r["name"]) for r in rules if r.get("name") != wanted["name"]
                 and (r.get("match"), r.get("pattern")) == (wanted["match"], wanted["pattern"])), None)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **API_ARGUMENT_SPEC,
            "name": {"type": "str", "required": True},
            "match": {"type": "str", "default": "prefix", "choices": ["exact", "prefix"]},
            "pattern": {"type": "str", "required": True},
            "pool": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    empty = [k for k in ("name", "pattern", "pool") if not p[k]]
    if empty:
        module.fail_json(msg=f"{', '.join(empty)} must not be empty")
    wanted = {k: p[k] for k in RULE_FIELDS}
    api = FedkafkaApi.from_module(module)
    try:
        rules = read_or_predict(module, api.client_rules) or []
        current = rule_of(next((r for r in rules if r.get("name") == p["name"]), None))
        holder = holder_of(rules, wanted)
        if holder is not None:  # check mode too: the run would get the controller's 409
            module.fail_json(msg=f"client rule {holder!r} already has match {p['match']} pattern {p['pattern']!r}: "
                                 f"set that rule to change its pool, or delete it first "
                                 f"(fedkafka client-rule delete {holder})", holder=holder)
        actions = plan(current, wanted)
        diff = {"before": current, "after": wanted}
        if module.check_mode or not actions:
            module.exit_json(changed=bool(actions), actions=actions, rule=wanted, previous=current, diff=diff)
        answer = api.put_client_rule(p["name"], p["match"], p["pattern"], p["pool"]) or {}
        rule = rule_of(answer.get("rule")) or wanted
        module.exit_json(changed=bool(answer.get("changed", True)), actions=actions, rule=rule, previous=current,
                         diff={"before": current, "after": rule})
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)


if __name__ == "__main__":
    main()
