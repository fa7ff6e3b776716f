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

.PHONY: up up-local down status demo test lint bench fuzz clean install lock soak-replicated

install: $(STAMP)

# The compiled twin of fedkafka/protocol/records.py (pyo3): built from source into the virtualenv when cargo 1.85+
# is present (a build that fails stops the install); without it fedkafka runs the same code in pure Python.
SPEEDUPS := rust/fedkafka_speedups
SPEEDUPS_WHEELS := $(SPEEDUPS)/target/wheels

$(STAMP): pyproject.toml constraints.txt $(SPEEDUPS)/Cargo.toml $(SPEEDUPS)/Cargo.lock $(wildcard $(SPEEDUPS)/src/*.rs)
	@scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	@if command -v cargo >/dev/null 2>&1 && \
	    cargo --version | awk '{split($$2, v, "."); exit !(v[1] > 1 || v[2] >= 85)}'; then \
	  rm -rf $(SPEEDUPS_WHEELS) && \
	  $(BIN)/maturin build --release --locked --interpreter $(BIN)/python \
	    --manifest-path $(SPEEDUPS)/Cargo.toml --out $(SPEEDUPS_WHEELS) && \
	  $(BIN)/python -m pip install -q --no-deps --force-reinstall $(SPEEDUPS_WHEELS)/*.whl; \
	else $(BIN)/python -m pip uninstall -q -y fedkafka-speedups >/dev/null 2>&1; \
	  echo "no cargo 1.85+: fedkafka_speedups not built (an earlier build removed), records.py runs pure Python"; fi
	@touch $@

# The bundle itself provisions the local federation: playbooks/site.yml on inventory/local (ansible.cfg's
# default), services under supervisord, state in /tmp/fedkafka-ansible; the playbook describes it for the
# CLI in .fedkafka/ansible.json, so `fedkafka local status|demo` and the admin commands find it.
ANSIBLE := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-playbook

up: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	$(BIN)/fedkafka local resume  # clusters `fedkafka local add-cluster` started before a `make down`
	$(ANSIBLE) playbooks/site.yml $(if $(BROKERS),-e fedkafka_local_brokers=$(BROKERS))
	$(BIN)/fedkafka local demo

down:
	@if [ -x $(BIN)/ansible-playbook ]; then $(ANSIBLE) playbooks/teardown.yml; fi
	@if [ -x $(BIN)/fedkafka ]; then $(BIN)/fedkafka local down; else echo "nothing to stop (no $(VENV))"; fi

# The federation on 9 real hosts (8 + the spare cluster c3's): network namespaces with their own address and sshd (scripts/multihost.py,
# needs root), site.yml over SSH, then .fedkafka/multihost.json says where clients bootstrap. docs/OPERATIONS.md.
.PHONY: up-multihost down-multihost test-multihost test-replicated test-apps test-security test-failover test-molecule \
	test-ansible-heavy test-scenarios
MULTIHOST := $(BIN)/python scripts/multihost.py

up-multihost: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	$(MULTIHOST) up
	$(ANSIBLE) -i $${FEDKAFKA_HOSTS_ROOT:-/tmp/fedkafka-hosts}/inventory.yml playbooks/site.yml
	$(MULTIHOST) describe

down-multihost:
	@if [ -x $(BIN)/python ]; then $(MULTIHOST) down; else python3 scripts/multihost.py down; fi

# The checker on 3-broker clusters: a scale-up and a decommission with the moving leader killed, a rolling
# restart, the database down for longer than a lease (tests/workflows/test_replicated_faults.py, ~8 minutes);
# Metadata's replicas and ISR through a proxy, a follower stopped (tests/proxy/test_metadata_replicas_integration.py);
# site.yml with 3 brokers a cluster, topics with 3 replicas and min.insync 2, teardown stopping all six
# (tests/ansible/test_local_brokers.py, ~4-6 minutes; `make test` keeps its inventory check); `fedkafka local up
# --brokers 3` reporting, resuming and stopping every broker (tests/launcher/test_replicated_clusters.py, ~70 s;
# `make test` keeps local up, add-cluster, down and resume with one broker, tests/launcher/test_resume_added_cluster.py).
test-replicated: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	FEDKAFKA_REPLICATED_FAULTS=1 $(BIN)/pytest tests/workflows/test_replicated_faults.py \
		tests/proxy/test_metadata_replicas_integration.py tests/ansible/test_local_brokers.py \
		tests/launcher/test_replicated_clusters.py $(PYTEST_ARGS)

# Ansible scenarios of minutes, each with a cheaper cover in `make test`: site.yml then scale_up.yml (twice,
# changed=0) through ansible-runner in an AWX-style private data dir (tests/ansible/test_awx_runner.py, ~4 minutes;
# `make test` runs validate.yml that way); the controller role's secrets in 0600 files and its restart on a changed
# one, predicted by --check (tests/ansible/test_role_controller_secret_files.py, ~1.5 minutes); storage an earlier
# run left root's given to the broker's service user (tests/ansible/test_role_broker_service_user_files.py, about a
# minute; root); the controller role over HTTPS in site.yml --check (tests/ansible/test_role_controller_tls.py, about
# a minute). With the cheap tests of the same files, ~10-12 minutes in all on the shared 2-core machine.
# Also the role files `make test` leaves out whole for CI's time (FILES_OF_THEIR_OWN_TARGET, tests/conftest.py;
# ~19 minutes more): the service and routing tokens (test_role_service_token.py), the broker's
# security variables and golden renders (test_role_broker_security.py), the services' --check predictions
# (test_review_rvans_service_check_mode.py), upstream reloads (test_role_upstream_reload.py) and client rules
# (test_review_rvans_client_rules.py); site.yml's wait for every broker of a cluster against the session's Kafka
# (test_site_broker_wait.py, ~2 minutes) and the failover and coordination modules and playbooks against real
# clusters (test_failover_modules_integration.py, ~1 minute). `make test` keeps the security role, the token
# reviews, the playbooks' checks and the modules against real Kafka (test_modules_integration.py).
test-ansible-heavy: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	FEDKAFKA_ANSIBLE_HEAVY=1 $(BIN)/pytest tests/ansible/test_awx_runner.py \
		tests/ansible/test_role_controller_secret_files.py tests/ansible/test_role_broker_service_user_files.py \
		tests/ansible/test_role_controller_tls.py tests/ansible/test_role_service_token.py \
		tests/ansible/test_role_broker_security.py tests/ansible/test_review_rvans_service_check_mode.py \
		tests/ansible/test_role_upstream_reload.py tests/ansible/test_review_rvans_client_rules.py \
		tests/ansible/test_site_broker_wait.py tests/ansible/test_failover_modules_integration.py $(PYTEST_ARGS)

# Real-Kafka scenarios `make test` leaves out whole for CI's time (FILES_OF_THEIR_OWN_TARGET, tests/conftest.py;
# ~15 minutes): traffic outliving every controller until the fence (tests/workflows/test_static_stability.py), a
# controller killed mid-move and a silent proxy (test_faults.py), PostgreSQL crashed under load (test_postgres_restart.py),
# a short fuzz run against real proxies (tests/fuzz/test_fuzz_integration.py; `make test` keeps test_fuzz_unit.py) and a
# proxy with --workers 2 under load (test_proxy_workers_integration.py; `make test` keeps tests/controller/test_proxy_workers.py),
# a cluster added by `fedkafka local add-cluster` back after down and up (tests/launcher/test_resume_added_cluster.py;
# `make test` keeps local up and down, tests/launcher/test_real_clusters.py).
test-scenarios: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	FEDKAFKA_SCENARIOS=1 $(BIN)/pytest tests/workflows/test_static_stability.py tests/workflows/test_faults.py \
		tests/workflows/test_postgres_restart.py tests/fuzz/test_fuzz_integration.py \
		tests/workflows/test_proxy_workers_integration.py tests/launcher/test_resume_added_cluster.py $(PYTEST_ARGS)

# The molecule scenarios default (site.yml), scale_up (then scale_up.yml c3) and decommission (then
# decommission.yml c1), each converge, idempotence, testinfra verify and cleanup on this machine, one after the
# other (tests/ansible/test_molecule.py; ~4-10 minutes each, 15-20 in all on the shared 2-core machine).
# `make test` keeps the syntax check of their converge and cleanup playbooks.
test-molecule: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	FEDKAFKA_MOLECULE=1 $(BIN)/pytest tests/ansible/test_molecule.py $(PYTEST_ARGS)

# Failover scenarios of minutes each, marked failover_scenario: kill -9 of a whole cluster under the checker's load,
# then a failover asked for (~2 minutes) and one by --auto-failover-after (3-6 minutes; tests/workflows/
# test_failover_integration.py, measured on the shared 2-core machine). `make test` skips them and keeps their fast
# cover: the workflow, its dry run, refusals and the automatic start (tests/controller/test_failover.py), the clients
# across a gap (tests/consume/test_unclean_gap_integration.py) and the modules (tests/ansible).
test-failover: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	FEDKAFKA_FAILOVER_SCENARIOS=1 $(BIN)/pytest -m failover_scenario tests $(PYTEST_ARGS)

# A secured federation (SASL_SSL, SCRAM, OAUTHBEARER, mTLS, ACLs; brokers that require SASL_SSL too) with
# confluent-kafka, aiokafka, kafka-python and the Java tools through the name service
# (tests/security/test_sasl_integration.py, ~4-11 minutes), `fedkafka local up --security sasl_ssl` with its
# client files (tests/security/test_local_secured_integration.py, ~2.5 minutes), and the kafka_broker role with
# SASL_SSL on this machine, then scale_up.yml onto it (tests/ansible/test_broker_sasl_integration.py, ~3-7 minutes);
# the proxy's and controller's own SASL_SSL to brokers that require it (tests/security/test_upstream_sasl_integration.py,
# ~2 minutes; left out of `make test` for CI's time, FILES_OF_THEIR_OWN_TARGET; `make test` keeps re-authentication,
# certificate renewal and the password flood).
test-security: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	FEDKAFKA_SECURITY_E2E=1 $(BIN)/pytest tests/security/test_sasl_integration.py tests/security/test_acl_admin_integration.py \
		tests/security/test_local_secured_integration.py tests/ansible/test_broker_sasl_integration.py \
		tests/security/test_upstream_sasl_integration.py $(PYTEST_ARGS)

# Kafka Streams word count kept counting exactly, and a Kafka Connect worker copying exactly once per offset, through
# a scale-up (tests/apps; the plain word count and Connect copy through a local federation run in `make test` too).
# Resolves kafka-streams, connect-runtime and connect-file from Maven Central once (apps/pom.xml).
test-apps: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.apps import ensure_apps; ensure_apps()"
	FEDKAFKA_APPS=1 $(BIN)/pytest tests/apps $(PYTEST_ARGS)

# Hosts up, site.yml twice (changed=0), produce and consume through the name service; then under `fedkafka check`
# load scale_up.yml (c3), decommission.yml (c1), rolling_restart.yml and upgrade.yml; hosts down (even on failure).
# About 66 minutes on the shared 2-core machine (site 20, scale-up 11, decommission 4, rolling restart 14, upgrade 17).
test-multihost: $(STAMP)
	FEDKAFKA_MULTIHOST=1 $(BIN)/pytest -m multihost tests/ansible/test_multihost.py -rP $(PYTEST_ARGS)

# The same federation without Ansible: `fedkafka local up` runs each service as a plain daemon.
up-local: $(STAMP)
	$(BIN)/fedkafka local up --clusters $(CLUSTERS) $(if $(BROKERS),--brokers $(BROKERS)) \
		$(if $(SECURITY),--security $(SECURITY))
	$(BIN)/fedkafka local demo

status: $(STAMP)
	$(BIN)/fedkafka local status

test: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; print('Kafka', ensure_kafka().version)"
	$(BIN)/ruff check fedkafka tests bench library module_utils doc_fragments
	$(BIN)/lint-imports
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint -q roles playbooks awx
	$(BIN)/mypy
	scripts/test_suite.sh $(BIN) $(PYTEST_ARGS)

# The tests that need no JVM, Kafka broker, PostgreSQL, service process or Ansible run, on every core (pytest-xdist):
# markers in pyproject.toml, README's test section.
# Hypothesis draws a quarter of each property test's examples there (the fedkafka-unit profile, tests/conftest.py).
.PHONY: test-unit
test-unit: $(STAMP)
	$(BIN)/pytest -m "not integration and not ansible" -n auto --hypothesis-profile=fedkafka-unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check fedkafka tests bench library module_utils doc_fragments
	$(BIN)/lint-imports
	$(BIN)/mypy
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint roles playbooks awx

bench: $(STAMP)
	@for b in bench/*.py; do case $$b in *_soak.py|*/scratch.py) continue;; esac; \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Long runs, not part of `make bench`: the checker on 3 clusters x 3 brokers with a scale-up, a decommission,
# a rolling restart and broker kills every few minutes (SOAK_DURATION seconds, 30 minutes by default).
SOAK_DURATION ?= 1800
soak-replicated: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	$(BIN)/python bench/replicated_soak.py --duration $(SOAK_DURATION)

# Re-resolve the lock from pyproject.toml in a scratch virtualenv (after changing a dependency), then `make install`.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q -e '.[dev]'
	{ sed -n '1,3p' constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^fedkafka'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv

# The fuzz harness against a fresh federation (two local clusters, controller, pproxy, cproxy, name service):
# `make fuzz DURATION=600`, `make fuzz FRAMES=1000000` (then no time limit), SEED=, CONNECTIONS=; crash files
# (the killing frame and the ones before it) go to FUZZ_CORPUS, replayed by `make fuzz REPLAY=<file>`.
DURATION ?=
FRAMES ?=
SEED ?= 1
CONNECTIONS ?= 32
FUZZ_CORPUS ?= fuzz-corpus
REPLAY ?=
FUZZ_ARGS := --seed $(SEED) --connections $(CONNECTIONS) --corpus $(FUZZ_CORPUS) \
	$(if $(DURATION),--duration $(DURATION)) $(if $(FRAMES),--frames $(FRAMES)) $(if $(REPLAY),--replay $(REPLAY))

fuzz: $(STAMP)
	$(BIN)/python -c "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"
	$(BIN)/python -m fedkafka.fuzz $(FUZZ_ARGS)

clean: down
	rm -rf $(VENV) .fedkafka .pytest_cache .ruff_cache
