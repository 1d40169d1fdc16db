# Pitwall — the two commands of the README, and the pieces they are made of.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PITWALL_DATA_DIR ?= $(CURDIR)/var
DEMO_SYMBOLS ?= AAPL,MSFT,AMZN,GOOG,META,NVDA,JPM,XOM,JNJ,PG
DEMO_START ?= 2024-01-02
DEMO_END ?= 2024-06-28

.PHONY: demo test bootstrap services lint typecheck pytest bench clean

demo: bootstrap
	$(PY) -m pitwall_executor.cli data generate --dataset sample --symbols 20 \
		--start 2024-01-01 --end 2024-06-30 --seed 7
	$(PY) -m pitwall_executor.cli run examples/sma_crossover.py --dataset sample \
		--symbols $(DEMO_SYMBOLS) --start $(DEMO_START) --end $(DEMO_END) --param fast=30 --param slow=240

test: bootstrap services lint typecheck pytest

bootstrap:
	@bash scripts/bootstrap.sh

services:
	@bash scripts/services.sh

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
