# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
# where torch's wheels come from: the CPU-only index (a plain `pip install torch` on Linux pulls
# the multi-GB CUDA build); on a CUDA machine use e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (pick the index matching your driver: https://pytorch.org/get-started/locally/)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install bench mnist clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch from TORCH_INDEX (an extra index: a local wheel cache or mirror still works offline)
	$(BIN)/pip install -q torch==2.13.0 --extra-index-url $(TORCH_INDEX)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m trilemma.demo --out out/demo

test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/pip install -q --no-deps denoising-diffusion-pytorch==2.3.4
	$(BIN)/python benchmarks/oracle_samplers.py
	$(BIN)/python benchmarks/train_throughput.py

# issue 13's MNIST yardstick: train every configs/mnist_*.yaml (45 CPU-min each at one thread),
# evaluate, merge into out/mnist/report (hours; see docs/RESULTS.md). Dry run: MNIST_ARGS=--dry-run
mnist: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/mnist_suite.py $(MNIST_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
