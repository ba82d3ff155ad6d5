# NEXUS-X settlement platform. Two commands do everything on a fresh machine:
#   make run    — install, start Kafka + workers, stream demo traffic with live progress (Ctrl-C stops all)
#   make test   — install and run the whole test suite (what CI runs)
SHELL := /bin/bash
# Debian's CPython 3.11 is built with optimisations (PGO/LTO) and runs this code ~2x faster than a
# pyenv build without them; fall back to whatever python3.11 is on PATH.
PY ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || command -v python3.11)
VENV := .venv
AIRFLOW_VENV := .venv-airflow
STAMP_PLATFORM := $(VENV)/.installed-$(shell (echo $(PY); cat requirements/platform.lock pyproject.toml) | sha1sum | cut -c1-12)
STAMP_AIRFLOW := $(AIRFLOW_VENV)/.installed-$(shell (echo $(PY); cat requirements/airflow.lock pyproject.toml) | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
# make run RUNTIME=plain: P2P services and the bridge on plain confluent-kafka loops (docs/performance.md);
# unset, the runtime is the setting NEXUS_RUNTIME (default faust, streams/settings.py).
RUNTIME ?=

.PHONY: setup run test test-fast stop cluster cluster-stop standby standby-stop standby-monitor failover lint typecheck schemas bench clean

setup: $(STAMP_PLATFORM) $(STAMP_AIRFLOW) system-deps kafka-jars

# A virtualenv on $(PY) with a lock installed and this project (editable); $(1) = venv, $(2) = lock, $@ = stamp.
define install_venv
	@test "$$(readlink -f $(1)/bin/python)" = "$$(readlink -f $(PY))" || (rm -rf $(1) && $(PY) -m venv $(1))
	$(1)/bin/pip install -q --upgrade pip
	$(1)/bin/pip install -q -r $(2)
	$(1)/bin/pip install -q --no-deps -e .
	@rm -f $(1)/.installed-* && touch $@
endef

$(STAMP_PLATFORM): requirements/platform.lock pyproject.toml
	$(call install_venv,$(VENV),requirements/platform.lock)

$(STAMP_AIRFLOW): requirements/airflow.lock pyproject.toml
	$(call install_venv,$(AIRFLOW_VENV),requirements/airflow.lock)

# Debian packages for servers the tests and demo start (Alertmanager, pdftoppm, Chromium).
system-deps:
	@bash infra/install-system-deps.sh

kafka-jars: $(STAMP_PLATFORM)
	@$(VENV)/bin/python -m infra.kafka.broker fetch
	@$(VENV)/bin/python -m infra.kafka.mirror fetch

run: setup
	$(VENV)/bin/python -m devtools.demo $(if $(RUNTIME),--runtime $(RUNTIME))

# The unit tests (pure, CPU-bound) run beside the integration tests (real servers, mostly waiting on them), and the
# integration tests run in two pytest-xdist workers, one test file at a time each, each worker with its own session
# broker: the suite takes about half the integration tests' serial time on a 2-core machine. With PYTEST_ARGS: one
# pytest run, as given.
test: setup
ifeq ($(strip $(PYTEST_ARGS)),)
	@mkdir -p .local; \
	$(VENV)/bin/python -m pytest tests/unit > .local/unit-tests.log 2>&1 & unit=$$!; \
	$(VENV)/bin/python -m pytest tests/integration -n 2 --dist loadfile --durations=15; integration=$$?; \
	wait $$unit; unit=$$?; \
	echo "----- tests/unit, run alongside (whole output: .local/unit-tests.log) -----"; \
	if [ $$unit -ne 0 ]; then cat .local/unit-tests.log; else tail -n 3 .local/unit-tests.log; fi; \
	exit $$(( integration != 0 || unit != 0 ))
else
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
endif

test-fast: $(STAMP_PLATFORM)
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

# A local 3-node KRaft cluster (replication 3, min.insync.replicas 2): docs/disaster-recovery.md.
cluster: kafka-jars
	$(VENV)/bin/python -m infra.kafka.cluster start

cluster-stop: $(STAMP_PLATFORM)
	$(VENV)/bin/python -m infra.kafka.cluster stop

# A standby region: one node on 39092, fed by MirrorMaker 2 from the cluster above; `make failover` moves the
# platform's consumer groups there once the cluster is down (docs/runbooks/failover.md).
STANDBY := --size 1 --base-port 39092 --data-root .local/kafka/standby
standby: kafka-jars
	$(VENV)/bin/python -m infra.kafka.cluster start $(STANDBY)
	$(VENV)/bin/python -m infra.kafka.mirror start

standby-stop: $(STAMP_PLATFORM)
	-$(VENV)/bin/python -m infra.kafka.mirror stop
	$(VENV)/bin/python -m infra.kafka.cluster stop $(STANDBY)

# The standby's replication delay on :9470/metrics (NexusStandbyReplicationBehind pages when it passes the RPO).
standby-monitor: $(STAMP_PLATFORM)
	$(VENV)/bin/python -m infra.kafka.replication_monitor

failover: $(STAMP_PLATFORM)
	$(VENV)/bin/python -m infra.kafka.failover to-standby

stop:
	-@$(VENV)/bin/python -m devtools.demo --stop

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

typecheck:
	$(VENV)/bin/mypy contracts domain streams devtools

schemas: $(STAMP_PLATFORM)
	$(VENV)/bin/python -m contracts
	$(VENV)/bin/python -m streams.api openapi

bench: $(STAMP_PLATFORM)
	@for b in bench/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean: stop
	rm -rf .local
