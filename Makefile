# make run   - create .venv, install the gateway, serve the demo on 127.0.0.1:8080
# make test  - create .venv with the dev extras, run the test suite
# make bench - run the benchmark suite (docs/performance.md); QUICK=1 or
#              make bench-quick for the one-minute smoke run, ARGS=... for flags
# make lint  - ruff and mypy

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config/gateway.toml

.PHONY: run test bench bench-quick lint clean system-deps

# A fresh Debian may lack the venv module (package python3-venv); install it
# when we can (root with apt), otherwise say what is missing.
$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	  else echo "Python's venv module is missing: install python3-venv" >&2; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.run

run: $(VENV)/.run
	@echo
	@echo "Start a dialogue on the demo instance (signed with the demo key) from another shell:"
	@echo '  curl -s "$$($(BIN)/ivr-gateway url Action=BeginDialogue InstanceId=demo ConversationId=call-$$(date +%s) CallingNumber=13800000000)"'
	@echo
	$(BIN)/python -m gateway serve --config $(CONFIG)

# Servers and tools the tests run for real: nginx (a proxy and a static
# server), espeak-ng (prompt audio). Installed when missing, as root with apt.
SYSTEM_DEPS := nginx:nginx-light espeak-ng:espeak-ng
system-deps:
	@missing=""; for d in $(SYSTEM_DEPS); do \
	  cmd=$${d%%:*}; pkg=$${d##*:}; \
	  command -v $$cmd >/dev/null || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (tests that need them will fail)" >&2; fi; fi

test: $(VENV)/.dev system-deps
	$(BIN)/python -m pytest

# The bench extra adds matplotlib, for the latency plot.
$(VENV)/.bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@touch $@ $(VENV)/.dev $(VENV)/.run

bench: $(VENV)/.bench system-deps
	$(BIN)/python -m bench $(if $(QUICK),--quick) $(ARGS)

bench-quick: $(VENV)/.bench system-deps
	$(BIN)/python -m bench --quick $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check gateway adapters tests bench
	$(BIN)/ruff format --check gateway adapters tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
