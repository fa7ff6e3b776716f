"""Documentation of the options of the fedkafka modules that start a controller workflow and may follow it to
its end (WAIT_ARGUMENT_SPEC in module_utils/fedkafka_api.py). Modules name it with
`extends_documentation_fragment: [fedkafka_api, fedkafka_wait]`; a module may restate an option's description
(its own text wins, the type and default stay these)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  wait:
    description: Wait until the workflow finished.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait.
      - The default covers the controller's ack timeout (its C(--fence-ms) + 45 s, 945 s by default), the longest a
        move waits for a proxy's previous fence after an unclean restart.
    type: int
    default: 1800
"""
