# Pitwall — the two commands of the README, and the pieces they are made of.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv || echo /opt/pitwall-tools/bin/uv)
# No PITWALL_DATA_DIR here: `make demo`, `make lab` and `.venv/bin/pitwall` all use the
# one default data dir (~/.local/share/pitwall, /var/lib/pitwall for root, or
# $PITWALL_DATA_DIR when set), so
# every local run shows in `pitwall jobs list` and in the lab's Backtests panel.
DEMO_SYMBOLS ?= AAPL,MSFT,AMZN,GOOG,META,NVDA,JPM,XOM,JNJ,PG
DEMO_START ?= 2024-01-02
DEMO_END ?= 2024-06-28

.PHONY: demo test bootstrap services labextension wheel lab lint typecheck pytest bench clean

demo: bootstrap
	$(PY) -m pitwall_executor.cli data generate --dataset sample --symbols 20 \
		--start 2024-01-01 --end 2024-06-30 --seed 7
	$(PY) -m pitwall_executor.cli run examples/sma_crossover.py --dataset sample \
		--symbols $(DEMO_SYMBOLS) --start $(DEMO_START) --end $(DEMO_END) --param fast=30 --param slow=240

test: bootstrap services labextension wheel lint typecheck pytest

bootstrap:
	@bash scripts/bootstrap.sh

services:
	@bash scripts/services.sh

labextension: bootstrap
	@bash scripts/dev_labextension.sh

# The wheel carries the built labextension and the server config: `pip install` of it
# needs no Node.js (tests/jupyter/test_wheel.py installs it in a venv without Node.js).
wheel: labextension
	@rm -rf dist
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" HATCH_BUILD_HOOKS_ENABLE=1 $(UV) build --wheel --quiet

LAB_PORT ?= 8888
# Jupyter refuses to run as root without --allow-root (a fresh machine's `make lab`).
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: labextension
	$(PY) -m pitwall_executor.cli data generate --dataset sample --symbols 20 \
		--start 2024-01-01 --end 2024-06-30 --seed 7
	$(VENV)/bin/jupyter lab --port $(LAB_PORT) --notebook-dir notebooks $(LAB_ROOT) \
		--ServerApp.jpserver_extensions='{"pitwall_server": True}'

lint: bootstrap
	$(VENV)/bin/ruff check .

typecheck: bootstrap
	$(VENV)/bin/mypy

pytest: bootstrap
	$(VENV)/bin/pytest -q

bench: bootstrap
	$(PY) bench/sandbox_start.py

clean:
	rm -rf var test-artifacts
