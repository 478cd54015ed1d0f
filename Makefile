# Every target creates/updates the virtualenv in .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test bench bench-sparseprop clean fashion-mnist

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package when it can be installed;
# otherwise the demo uses the subset committed under src/sparsetrain/data/fixtures.
fashion-mnist:
	@[ -d /usr/share/datasets/fashion-mnist ] || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "note: dataset-fashion-mnist not installed; the demo uses the committed subset")

demo: setup fashion-mnist
	$(BIN)/sparsetrain demo

test: setup
	$(BIN)/python -m pytest -n 2 tests

bench: setup
	$(BIN)/python benchmarks/layers.py --threads 1,2

# Installs the published sparseprop package (compiles C++) so `make bench` can compare against it.
bench-sparseprop: setup
	$(BIN)/pip install --quiet pybind11
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pip install --quiet --no-build-isolation sparseprop==0.1.14
	$(BIN)/python benchmarks/layers.py --threads 1,2

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
