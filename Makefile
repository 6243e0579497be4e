# The two commands a newcomer runs (see README): `make demo` and `make test`.
# Both create or reuse .venv from nothing but a Python >= 3.11.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before anything else when the venv has no torch: on our machines this is a local
# CPU wheel, and with it present no dependency can pull a (multi-GB, CUDA) torch from the index.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_PLAN ?= examples/demo_study.yaml

.PHONY: demo demo-quick test test-slow test-all lint clean-venv browser

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "surefast needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q --disable-pip-version-check -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $@ $(VENV)/.installed

# The main job, offline: SAGE speculative decoding on one prompt (Qwen2.5-Coder 1.5B target,
# 0.5B draft packed to int4 on load, n-gram branches and the cost planner: the fastest lossless
# configuration in benchmarks/results/spec_llm-reduced.json; compared with the target alone; 1-2 min), then a small real compression study and
# its report (about 20 min on 2 CPU cores the first time; a finished study is not recomputed).
# `demo-quick` answers three prompts with a small model.
DEMO_PROMPT ?= Write a Python function that returns the n-th Fibonacci number, with a docstring.
demo: $(VENV)/.installed
	@echo "== SAGE speculative decoding (the target's own output, fewer target forwards) =="
	$(BIN)/surefast speculate --draft-compress int4 --max-new-tokens 96 "$(DEMO_PROMPT)"
	@echo "== compression-uncertainty study =="
	$(BIN)/surefast study run $(DEMO_PLAN)

demo-quick: $(VENV)/.installed
	$(BIN)/surefast demo

# Best effort, never fails: headless Chromium for the report test (which skips without it),
# installed only where it is missing, apt-get exists and we are root (CI containers).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& echo "installing chromium for the report test (apt-get, about a minute)" \
		&& { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1; } || true

test: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

clean-venv:
	rm -rf $(VENV)
