"""Documentation of the options every controller-facing fedkafka module takes (API_ARGUMENT_SPEC in
module_utils/fedkafka_api.py). Modules name it with `extends_documentation_fragment: [fedkafka_api]`;
ansible.cfg's doc_fragment_plugins points Ansible here."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  controller_url:
    description:
      - Base URL of each fedkafka controller on the config database, as a list or comma-separated, e.g.
        C(http://10.0.0.5:8780,http://10.0.0.6:8780); one is enough with a single controller.
      - Requests go to the active controller. A standby answers 503 naming the active one, which is asked next;
        a controller that does not answer is skipped for the next in the list (each at most once per round).
      - During a controller failover (none answers as active, but one is taking over, a standby does not know the
        active one yet, or names a listed one that does not answer) the request is asked again after short pauses,
        for at most O(request_timeout) seconds in all; a task fails at once only when nothing shows a takeover
        under way (no controller answers, or a standby names one not listed).
      - An entry that is not C(http(s)://host[:port]), or a list naming none, fails the task with a message.
    type: list
    elements: str
    required: true
    aliases: [url]
  token:
    description: API token (C(Authorization Bearer)); never logged or shown in a diff.
    type: str
    required: true
  validate_certs:
    description: Verify the controller's TLS certificate.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA the controller's HTTPS certificate chains to (the controller's C(--ssl-cert)).
      - Unset, the system's CAs. The playbooks give C(fedkafka_controller_ca_file).
    type: path
  request_timeout:
    description:
      - Seconds for one HTTP request.
      - Also how long, in all, a request waits for a controller failover to finish (see O(controller_url)).
    type: float
    default: 30
"""
