# The two commands of the README: `make up` (a local federation + demo) and `make test` (the whole suite).
# Both install what they need: a virtualenv in .venv, the project, and Apache Kafka's jars (Maven Central,
# cached in ~/.cache/fedkafka). Java 17+ and Maven are installed with apt-get when missing and running as root.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedkafka-installed
CLUSTERS ?= 2
# Brokers per physical cluster (`make up BROKERS=3`: 3 replicas, min.insync.replicas 2); unset = 1.
BROKERS ?=
PYTEST_ARGS ?=

.PHONY: up up-local down status demo test lint bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	@scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	@touch $@

# The bundle itself provisions the local federation: playbooks/site.yml on inventory/local (ansible.cfg's
# default), services under supervisord, state in /tmp/fedkafka-ansible; the playbook describes it for the
# CLI in .fedkafka/ansible.json, so `fedkafka local status|demo` and the admin commands find it.
ANSIBLE := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-playbook

up: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	$(ANSIBLE) playbooks/site.yml $(if $(BROKERS),-e fedkafka_local_brokers=$(BROKERS))
	$(BIN)/fedkafka local demo

down:
	@if [ -x $(BIN)/ansible-playbook ]; then $(ANSIBLE) playbooks/teardown.yml; fi
	@if [ -x $(BIN)/fedkafka ]; then $(BIN)/fedkafka local down; else echo "nothing to stop (no $(VENV))"; fi

# The same federation without Ansible: `fedkafka local up` runs each service as a plain daemon.
up-local: $(STAMP)
	$(BIN)/fedkafka local up --clusters $(CLUSTERS) $(if $(BROKERS),--brokers $(BROKERS))
	$(BIN)/fedkafka local demo

status: $(STAMP)
	$(BIN)/fedkafka local status

test: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; print('Kafka', ensure_kafka().version)"
	$(BIN)/ruff check fedkafka tests bench library module_utils doc_fragments
	$(BIN)/lint-imports
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint -q roles playbooks awx
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check fedkafka tests bench library module_utils doc_fragments
	$(BIN)/lint-imports
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint roles playbooks awx

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: down
	rm -rf $(VENV) .fedkafka .pytest_cache .ruff_cache
