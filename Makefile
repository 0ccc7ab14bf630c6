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

demo: $(STAMP)
	$(VENV)/bin/pix2pred train knn --dataset synthetic --n-train 2000 --n-test 500

test: lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
