# The user's verbs. Each one creates .venv and installs forma with its tools on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BOARD  ?= ulx3s-85f
DESIGN ?=
JOBS   ?= auto
MODEL  ?= examples/digits_mlp.onnx
BACKEND ?= native

.PHONY: all setup synth sim test bench mutate clean export

all: test

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

synth: $(STAMP)
	$(BIN)/forma synth --board $(BOARD) $(DESIGN)

export: $(STAMP)
	$(BIN)/forma export $(MODEL) --board $(BOARD) --backend $(BACKEND)

sim: $(STAMP)
	$(BIN)/pytest -n $(JOBS) -m "sim and not bench" -v

test: $(STAMP)
	$(BIN)/pytest -n $(JOBS) -ra --durations=15

bench: $(STAMP)
	$(BIN)/forma bench all
	$(BIN)/pytest -n $(JOBS) -m bench -ra

mutate: $(STAMP)
	mkdir -p build/mutate
	$(BIN)/pytest -n $(JOBS) -m bench -ra --basetemp=build/mutate/runs tests/test_mutate.py

clean:
	rm -rf build .pytest_cache
