# The whole set-up on a fresh machine: `make demo` or `make test`. Nothing has to be done before.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[torch,dev]"
	touch $(STAMP)

# The main job on the synthetic data (about 40 s on 2 idle cores): kNN, LinearSVM, Softmax,
# TwoLayerNet and SimpleCNN, each in a subfolder of runs/compare-synthetic-<time>/, and one
# report, compare.html, whose path is printed last.
demo: $(STAMP)
	$(VENV)/bin/pix2pred compare --dataset synthetic --n-train 3000 --n-test 1000 --budget quick

test: lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
