# Two commands do all the set-up:  `make run`  (train → export → serve)  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000
# Models and the BentoML store live in the project unless you point BENTOML_HOME elsewhere.
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export TF_CPP_MIN_LOG_LEVEL ?= 2
# TensorFlow's GPU build when a GPU is visible, else the (smaller) CPU build.
TF_EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
# TF Serving's protos (its model config file, warm-up records). The package asks for `tensorflow`, which
# tensorflow-cpu already is under another name, so it is installed without its dependencies (it needs protobuf).
TFSERVING_API := tensorflow-serving-api>=2.20,<2.22

.PHONY: help install node-client train serve run test lint test-e2e test-container test-benchmarks test-distributed image bench clean

help:
	@echo "make run    create .venv, train the four model families on bundled/generated data (once), serve on http://$(HOST):$(PORT)"
	@echo "make train  create .venv and train the four model families into artifacts/ (once), without serving"
	@echo "make test   ruff (lint and format check), then the test suite (the end-to-end tests: make test-e2e); installs Node's gRPC client for its tests where npm is"
	@echo "make test-e2e  the end-to-end tests: servers with their own settings, the scripts, bare TensorFlow processes, bentoml build, the browser (.ci/run runs it)"
	@echo "make lint   ruff check and ruff format --check only"
	@echo "make test-container  build the Docker image with the session's small models and run it (needs podman or docker)"
	@echo "make test-benchmarks  run each benchmark script end to end on small settings (.ci/run runs it after make test)"
	@echo "make test-distributed  training across devices and processes: mirrored, two workers (one killed), the distributed search (.ci/run runs it)"
	@echo "make image  build the image modelservice:latest from artifacts/ (train first: make train)"
	@echo "make bench  load-test the service with wrk (apt-get install wrk; h2load from nghttp2-client for gRPC) against the HTTP and gRPC ceilings, BentoML's anchors and a naive server; the event loop's CPU per JSON request and gRPC call; a 16 MiB gRPC upload over delayed links, grpcio vs zttp; training speed vs the matmul peak; graph vs Python-loop beam search; graph vs NumPy NMS; transfer vs scratch over 5 seeds"
	@echo "make clean  remove .venv, runs/, artifacts/ and the project's BentoML store"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(TF_EXTRA),train,dev]"
	$(BIN)/pip install --quiet --no-deps "$(TFSERVING_API)"
	touch $@

install: $(BIN)/.installed

train: install
	$(BIN)/python -m pipelines.classifier --skip-if-exported
	$(BIN)/python -m pipelines.seq2seq --skip-if-exported
	$(BIN)/python -m pipelines.detector --skip-if-exported
	$(BIN)/python -m pipelines.transfer --skip-if-exported

serve: install
	$(BIN)/modelservice serve --host $(HOST) --port $(PORT)

# Serving starts as soon as the first family is exported; the others join as they finish (pipelines/run.py).
run: install
	$(BIN)/python -m pipelines.run --host $(HOST) --port $(PORT)

# Test processes (pytest-xdist): "auto" is one per CPU core; TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= auto
# Node's gRPC (@grpc/grpc-js), a second client of the gRPC API in tests/serving/test_grpc.py: installed where npm
# is (from the npm registry, pinned by its package-lock.json); without it those tests skip and say why.
NODE_CLIENT := tests/serving/node_grpc
$(NODE_CLIENT)/node_modules/.package-lock.json: $(NODE_CLIENT)/package-lock.json
	npm ci --prefix $(NODE_CLIENT) --no-audit --no-fund --loglevel=error

node-client: $(if $(shell command -v npm),$(NODE_CLIENT)/node_modules/.package-lock.json)

test: install lint node-client
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Kept out of make test's 10 minutes on a 2-core machine; .ci/run runs them after it.
test-e2e: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m e2e

test-container: install
	$(BIN)/python -m pytest -m container -rs

test-benchmarks: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m benchmark

# One test at a time: most run two or three training processes of their own.
test-distributed: install
	$(BIN)/python -m pytest -m distributed

# BASE_IMAGE=<tag> replaces python:3.11-slim; CONTAINER_ENGINE=docker|podman (default: podman if installed, else docker).
CONTAINER_ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
image:
	$(CONTAINER_ENGINE) build $(if $(filter podman,$(CONTAINER_ENGINE)),--format docker) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t modelservice:latest .

bench: install
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.loop_cost
	$(BIN)/python -m benchmarks.grpc_upload
	$(BIN)/python -m benchmarks.training
	$(BIN)/python -m benchmarks.decoding --train-if-missing
	$(BIN)/python -m benchmarks.detection --train-if-missing
	$(BIN)/python -m benchmarks.transfer
	$(BIN)/python -m benchmarks.model_swaps

clean:
	rm -rf $(VENV) runs artifacts .bentoml $(NODE_CLIENT)/node_modules
