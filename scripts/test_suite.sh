#!/usr/bin/env bash
# `make test`'s pytest part, in two runs: on every core with pytest-xdist, the unit tests (no JVM, broker, database
# server, service process or Ansible run; free ports and tmp_path only) and the tests marked every_core (Ansible
# runs that start no service, controller tests on their worker's own PostgreSQL: tests/conftest.py); then the other
# integration and Ansible tests one at a time (they start brokers, controllers and playbooks that a second core
# keeps busy already).
# Both runs always happen, so one failure report covers the whole suite. A run that collects nothing (exit 5)
# is fine only when the other ran tests: `make test PYTEST_ARGS=tests/launcher` may hold no unit test.
set -uo pipefail
bin="$1"
shift

"$bin/pytest" -m "(not integration and not ansible) or every_core" -n auto "$@"
unit=$?
"$bin/pytest" -m "(integration or ansible) and not every_core" "$@"
rest=$?

no_tests=5
if [ "$unit" -eq "$no_tests" ] && [ "$rest" -eq "$no_tests" ]; then exit "$no_tests"; fi
if [ "$unit" -eq "$no_tests" ]; then unit=0; fi
if [ "$rest" -eq "$no_tests" ]; then rest=0; fi
if [ "$unit" -ne 0 ]; then exit "$unit"; fi
exit "$rest"
