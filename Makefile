# Graft: `make serve` runs the service, `make test` runs every check. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 3000
export GRAFT_HOME ?= var
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
BIN := $(VENV)/bin
STAMP := $(VENV)/.graft-installed

.PHONY: serve test lint bench bench-images bench-quality bench-out-of-scope clean image image-test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Graft needs Python 3.11 or newer (PYTHON=$(PYTHON))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

serve: $(STAMP)
	$(BIN)/graft serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# About 5 minutes; prints a table and FIGURE lines and rewrites bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python -m bench.run

# About 3 minutes: the image backbone alone, then graft serve on it; rewrites bench/RESULTS-images.md.
bench-images: $(STAMP)
	$(BIN)/python -m bench.images

# About 15 minutes (SetFit fine-tunes on a CPU); rewrites bench/RESULTS-quality.md.
bench-quality: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,quality]'
	$(BIN)/python -m bench.quality

# About 3 minutes: abstention with and without out-of-scope examples; rewrites
# bench/RESULTS-out-of-scope.md.
bench-out-of-scope: $(STAMP)
	$(BIN)/python -m bench.out_of_scope

# The container (Dockerfile), built and run with buildah; see the README's "Container" section.
image:
	deploy/image/build.sh

image-test: image $(STAMP)
	PYTHONPATH=. $(BIN)/python deploy/image/image_test.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
