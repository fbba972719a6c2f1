# Wardgate developer commands. Every target creates/updates .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench soak generate verify docs clean waf-eval

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=25.1'
	$(PY) -m pip install -q -e '.[operator]' --group test --group lint
	touch $(STAMP)

# The WAF's compiled databases, where `wardgate run` looks first (see
# wardgate/filters/hyperscan_db.py): without them every start compiles for many seconds.
# Rebuilt when a rule file changes; a stale store is never wrong, only slow (not hit).
HS_STORE := $(VENV)/share/wardgate/hyperscan
WAF_RULE_FILES := $(wildcard gateway/wardgate/filters/waf/rules/*.yaml)

$(HS_STORE)/.built: $(STAMP) $(WAF_RULE_FILES)
	$(VENV)/bin/wardgate precompile-waf --out $(HS_STORE)
	touch $@

install: $(STAMP) $(HS_STORE)/.built

run: $(STAMP)
	$(VENV)/bin/wardgate demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Style and types, layering (import-linter), dead code (vulture, settings and whitelist in
# pyproject.toml / tools/vulture_whitelist.py) and the size limits (tests/test_structure.py:
# modules <= 600 lines, functions <= 80, no import cycle).
lint: $(STAMP)
	$(VENV)/bin/ruff check gateway operator tests bench tools
	$(VENV)/bin/ruff format --check gateway operator tests bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/vulture
	$(PY) -m pytest -q -p no:cacheprovider tests/test_structure.py tests/test_layering.py

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

# Every generated file (docs/configuration.md, docs/policy.schema.json, crds/, the chart's
# CRDs, values.schema.json and dashboard.json) is in one registry, tools/generated.py.
generate: $(STAMP)
	$(PY) -m tools.generated

docs: generate

# Fails naming each generated file that differs from its generator.
verify: $(STAMP)
	$(PY) -m tools.generated --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
