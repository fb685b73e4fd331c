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

.PHONY: help install train serve run test bench clean

help:
	@echo "make run    create .venv, train the four model families on bundled/generated data (once), serve on http://$(HOST):$(PORT)"
	@echo "make test   run the test suite"
	@echo "make bench  load-test the service against a naive baseline; graph vs Python-loop beam search; graph vs NumPy NMS"
	@echo "make clean  remove .venv, runs/, artifacts/ and the project's BentoML store"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(TF_EXTRA),dev]"
	touch $@

install: $(BIN)/.installed

train: install
	$(BIN)/python -m pipelines.classifier --skip-if-exported
	$(BIN)/python -m pipelines.seq2seq --skip-if-exported
	$(BIN)/python -m pipelines.detector --skip-if-exported
	$(BIN)/python -m pipelines.transfer --skip-if-exported

serve: install
	$(BIN)/modelservice serve --host $(HOST) --port $(PORT)

run: train serve

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.decoding --train-if-missing
	$(BIN)/python -m benchmarks.detection --train-if-missing

clean:
	rm -rf $(VENV) runs artifacts .bentoml
