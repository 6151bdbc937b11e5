# The two commands: `make run` (the platform) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Use the MNIST copy beside the checkout when there is one; otherwise data/mnist (downloaded if missing).
MNIST_DIR ?= $(if $(wildcard ../shared/data/mnist/*),../shared/data/mnist,data/mnist)
export MNIST_DIR

.PHONY: run test install bench clean

$(BIN)/digitserve: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/digitserve

run: install
	$(BIN)/digitserve run

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) var build *.egg-info
