# The two set-up commands of the README: `make demo` and `make test`. Each installs what it
# needs (a virtualenv in .venv with Driftline and its test tools), idempotently.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint soak bench install system-packages

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/driftline demo

# Real Prometheus and Alertmanager for the on-call tests, and Chromium to render `driftline explain`
# pages, from Debian's packages. Without root they are not installed and those tests skip, saying so.
system-packages:
	@if command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null \
		&& command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			prometheus prometheus-alertmanager chromium >/dev/null; \
	else echo "prometheus/alertmanager/chromium not installed (needs root): the on-call tests will skip"; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint system-packages
	$(BIN)/python -m pytest

# The slow runs (`-m slow`: the 200k and 1M SIGKILL soaks, the 30-s broker outage, 10,000 hostile
# messages; 30-40 minutes on 2 cores). CI runs a shortened variant of each in `make test`. Each test
# adds a row to the report as it finishes (tests/production/soak_report.py); the 1M soak runs last.
SOAK_REPORT ?= bench/results/soak-$(shell date -u +%F).md

soak: install system-packages
	PYTHONPATH=tests/production SOAK_REPORT=$(SOAK_REPORT) SOAK_LAST=1M-events $(BIN)/python -m pytest -p soak_report \
		-m slow -rA --continue-on-collection-errors tests; status=$$?; cat $(SOAK_REPORT); exit $$status

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py
