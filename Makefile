# The two commands: `make run` (the platform) and `make test` (the whole suite; `make deploy-test`
# adds the container deployment).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Use the MNIST copy beside the checkout when there is one; otherwise data/mnist (downloaded if missing).
MNIST_DIR ?= $(if $(wildcard ../shared/data/mnist/*),../shared/data/mnist,data/mnist)
export MNIST_DIR

.PHONY: run test deploy-test install bench clean

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

# The real deployment (root): podman + podman-compose, images from a local Debian base, the
# compose stack up, scaled, a worker killed, down. See README "Deploying with docker compose".
deploy-test: install
	$(BIN)/python -m pytest -m deploy -s tests/test_deploy.py

bench: install
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/perf.py
	$(BIN)/python bench/uploads.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/gan.py

clean:
	rm -rf $(VENV) var build *.egg-info
