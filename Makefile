# The two commands of the README: `make run` and `make test`. Both set up what they need.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup setup-test run test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The edge install: what a Raspberry Pi gets (no TensorFlow).
$(VENV)/.edge: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

# Everything the tests need, training's TensorFlow included.
$(VENV)/.test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test,train]'
	# onnx2tf's metadata pins TensorFlow 2.19; it runs on train's 2.21 (tests/test_convert.py).
	$(BIN)/python -m pip install -q --no-deps onnx2tf==1.29.24
	touch $@

setup: $(VENV)/.edge
setup-test: $(VENV)/.test

# Fetch and verify the default models, then watch ./inbox (Ctrl-C stops).
# Offline: BIRDTRAP_MODEL_MIRROR=/path/to/models make run
run: setup
	$(BIN)/birdtrap model fetch inat-birds --config config.yaml
	$(BIN)/birdtrap model fetch imagenet-mobilenet-v2 --config config.yaml
	$(BIN)/birdtrap model fetch coco-ssd-mobilenet-v1 --config config.yaml
	mkdir -p inbox
	$(BIN)/birdtrap run --config config.yaml

test: setup-test
	$(BIN)/python -m pytest

lint: setup-test
	$(BIN)/ruff check birdtrap training tests bench
