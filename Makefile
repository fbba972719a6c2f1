# Wardgate developer commands. Every target creates/updates .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench soak verify docs clean waf-eval

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=25.1'
	$(PY) -m pip install -q -e '.[operator]' --group test --group lint
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/wardgate demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway operator tests bench
	$(VENV)/bin/ruff format --check gateway operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/run.py

# The issue 19 probe run: reload under load, soak, slow clients (about two minutes;
# durations as SOAK_ARGS, e.g. SOAK_ARGS="--soak-seconds 360").
soak: $(STAMP)
	$(PY) bench/soak.py $(SOAK_ARGS)

WAF_CORPUS ?= $(firstword $(wildcard ../shared/waf-corpus/crs-regression.jsonl ../../shared/waf-corpus/crs-regression.jsonl) ../shared/waf-corpus/crs-regression.jsonl)

waf-eval: $(STAMP)
	$(PY) -m wardgate.filters.waf.corpus $(WAF_CORPUS)
	$(PY) -m wardgate.filters.waf.precision $(WAF_CORPUS)

docs: $(STAMP)
	mkdir -p docs
	$(VENV)/bin/wardgate schema > docs/policy.schema.json
	$(VENV)/bin/wardgate schema --format markdown > docs/configuration.md
	$(VENV)/bin/wardgate-operator crds --out crds --out charts/wardgate/crds > /dev/null
	$(PY) -m tests.chart.values_schema > charts/wardgate/values.schema.json
	$(PY) -m tests.chart.dashboard > charts/wardgate/files/dashboard.json

verify: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/test_generated.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
