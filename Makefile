# The two commands of the README: `make up` (a local federation + demo) and `make test` (the whole suite).
# Both install what they need: a virtualenv in .venv, the project, and Apache Kafka's jars (Maven Central,
# cached in ~/.cache/fedkafka). Java 17+ and Maven are installed with apt-get when missing and running as root.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedkafka-installed
CLUSTERS ?= 2
PYTEST_ARGS ?=

.PHONY: up up-local down status demo test lint bench clean install lock

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	@touch $@

# The bundle itself provisions the local federation: playbooks/site.yml on inventory/local (ansible.cfg's
# default), services under supervisord, state in /tmp/fedkafka-ansible; the playbook describes it for the
# CLI in .fedkafka/ansible.json, so `fedkafka local status|demo` and the admin commands find it.
ANSIBLE := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-playbook

up: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	$(ANSIBLE) playbooks/site.yml
	$(BIN)/fedkafka local demo

down:
	@if [ -x $(BIN)/ansible-playbook ]; then $(ANSIBLE) playbooks/teardown.yml; fi
	@if [ -x $(BIN)/fedkafka ]; then $(BIN)/fedkafka local down; else echo "nothing to stop (no $(VENV))"; fi

# The federation on 8 real hosts: network namespaces with their own address and sshd (scripts/multihost.py,
# needs root), site.yml over SSH, then .fedkafka/multihost.json says where clients bootstrap. docs/OPERATIONS.md.
.PHONY: up-multihost down-multihost test-multihost
MULTIHOST := $(BIN)/python scripts/multihost.py

up-multihost: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	$(MULTIHOST) up
	$(ANSIBLE) -i $${FEDKAFKA_HOSTS_ROOT:-/tmp/fedkafka-hosts}/inventory.yml playbooks/site.yml
	$(MULTIHOST) describe

down-multihost:
	@if [ -x $(BIN)/python ]; then $(MULTIHOST) down; else python3 scripts/multihost.py down; fi

# Hosts up, site.yml twice (changed=0), produce and consume through the name service, hosts down (~8 min).
test-multihost: $(STAMP)
	FEDKAFKA_MULTIHOST=1 $(BIN)/pytest -m multihost tests/ansible/test_multihost.py $(PYTEST_ARGS)

# The same federation without Ansible: `fedkafka local up` runs each service as a plain daemon.
up-local: $(STAMP)
	$(BIN)/fedkafka local up --clusters $(CLUSTERS)
	$(BIN)/fedkafka local demo

status: $(STAMP)
	$(BIN)/fedkafka local status

test: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; print('Kafka', ensure_kafka().version)"
	$(BIN)/ruff check fedkafka tests bench library module_utils doc_fragments
	$(BIN)/lint-imports
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint -q roles playbooks awx
	$(BIN)/pytest $(PYTEST_ARGS)

# The tests that need no JVM, Kafka broker, PostgreSQL or Ansible run (well under a minute): markers in pyproject.toml.
.PHONY: test-unit
test-unit: $(STAMP)
	$(BIN)/pytest -m "not integration and not ansible" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check fedkafka tests bench library module_utils doc_fragments
	$(BIN)/lint-imports
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint roles playbooks awx

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Re-resolve the lock from pyproject.toml in a scratch virtualenv (after changing a dependency), then `make install`.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q -e '.[dev]'
	{ sed -n '1,3p' constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^fedkafka'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv

clean: down
	rm -rf $(VENV) .fedkafka .pytest_cache .ruff_cache
