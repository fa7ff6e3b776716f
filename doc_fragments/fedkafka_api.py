"""Documentation of the options every controller-facing fedkafka module takes (API_ARGUMENT_SPEC in
module_utils/fedkafka_api.py). Modules name it with `extends_documentation_fragment: [fedkafka_api]`;
ansible.cfg's doc_fragment_plugins points Ansible here."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  controller_url:
    description: Base URL of the fedkafka controller, e.g. C(http://127.0.0.1:8780).
    type: str
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
  request_timeout:
    description: Seconds for one HTTP request.
    type: float
    default: 30
"""
