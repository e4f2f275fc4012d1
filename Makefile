# Two commands on a fresh machine: `make build-uvd` and `make test`.
# Both create .venv when it is missing and install the project into it (once: the stamp file
# is refreshed only when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.uvd-installed
SAMPLE_DIR ?= data/sample
CONFIG ?= configs/sample.yaml

.PHONY: build-uvd test test-fast bench sample report env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first and pinned: pip then takes the CPU wheel, never a multi-GB CUDA build.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

sample: $(STAMP)
	$(PY) -m uvd_pipeline sample $(SAMPLE_DIR)

build-uvd: sample
	$(PY) -m uvd_pipeline build $(CONFIG) --replace-changed --report

test: $(STAMP)
	$(PY) -m pytest -m "slow or not slow" -q

test-fast: $(STAMP)
	$(PY) -m pytest -q

bench: sample
	$(PY) benchmarks/run_all.py

report: $(STAMP)
	$(PY) -m uvd_pipeline report build/sample

clean:
	rm -rf build bench_out .pytest_cache
