# rawdrift: two commands do everything on a fresh machine.
#   make repro   venv + the whole DVC pipeline on the embedded synthetic data (default profile)
#   make test    venv + the test suite
#   make demo    venv + the whole DAG at the demo's tiny profile in a scratch workspace
#   make gpu-check  on a CUDA machine: CUDA tests + tiny DAG on cuda + bench, under bench/
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
FANOUT_STAMP := $(VENV)/.installed-fanout
# `make fanout`: the train matrix fanned out with Ray (docs/fanout.md), then the rest of the DAG.
FANOUT_ARGS ?= --engine ray 'train@*'
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv repro repro-paper scale-study demo fanout test test-all bench gpu-check clean-venv

venv: $(STAMP)

# torch/torchvision: the exact builds pinned in requirements.txt; `--only-binary` keeps
# pip from building anything, the pins keep any resolver from pulling another torch.
# Then rawdrift itself, editable and `--no-deps`: requirements.txt is the lock, pyproject.toml
# resolves nothing.
$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --only-binary=torch,torchvision -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $(STAMP)

# Test-only packages (S3 remote, local S3 server) and the fan-out engines (Ray, submitit) that
# tests/test_fanout.py runs, kept out of the `make repro` venv time. One pip call, so the two
# files resolve together; it also counts as `make fanout`'s install.
$(TEST_STAMP): requirements-test.txt requirements-remote.txt requirements-fanout.txt $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c requirements.txt \
		-r requirements-test.txt -r requirements-fanout.txt
	touch $(TEST_STAMP) $(FANOUT_STAMP)

# Ray and submitit only (`make fanout` without the test packages).
$(FANOUT_STAMP): requirements-fanout.txt $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c requirements.txt -r requirements-fanout.txt
	touch $(FANOUT_STAMP)

repro: $(STAMP)
	test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/dvc repro

# The whole DAG at the demo's tiny profile in a scratch git + DVC workspace (a temporary folder,
# or DIR=path); prints where every artifact is. Your workspace and DVC cache are not touched.
demo: $(STAMP)
	$(BIN)/python -m rawdrift.demo $(if $(DIR),--keep $(DIR))

fanout: $(FANOUT_STAMP)
	test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/python -m rawdrift.fanout $(FANOUT_ARGS)

# The paper protocol: profiles/paper.yaml laid over params.yaml as `dvc exp run -S` arguments
# (validated first: a bad profile stops here, before DVC runs anything). Folds train in turn,
# each step replayed as CUDA graphs (the profile's `compile: reduce-overhead`: on an H100 the
# drone step runs 2.6x as fast as eager (1,067 vs 411 img/s), 1.6x the eager folds in one process each;
# docs/performance.md); RAWDRIFT_CONCURRENT_FOLDS=1 trains them in one process each instead.
repro-paper: $(STAMP)
	sets="$$($(BIN)/python -m rawdrift.profiles paper --dvc-args)" && \
		RAWDRIFT_CONCURRENT_FOLDS=$${RAWDRIFT_CONCURRENT_FOLDS:-0} eval "$(BIN)/dvc exp run $$sets"

# How processing drift depends on pixel scale (studies/scale/): 117 minutes on a 2-core CPU from
# scratch; one DVC stage per point, so a new point costs its own minutes only.
scale-study: $(STAMP)
	$(BIN)/dvc repro studies/scale/dvc.yaml

# Test files spread over one pytest-xdist worker per core (a file's tests stay together, so a
# module's fixtures are built once); tests/conftest.py gives each worker its share of the cores.
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile

test: $(TEST_STAMP)
	$(PYTEST) -m "not slow"

test-all: $(TEST_STAMP)
	$(PYTEST)

# Training throughput vs the model-only ceiling on this machine's device -> bench/<device>.json
bench: $(STAMP)
	$(BIN)/python -m rawdrift.bench

# On a CUDA machine: the CUDA tests, the tiny DAG with device=cuda, and the benchmark
# (bench/cuda.json), all under bench/ within 10 minutes (docs/performance.md). No venv
# prerequisite: the GPU machine reaches no registry, so this runs the venv's python when there
# is one and $(PYTHON) (with the wheels of docs/performance.md) otherwise.
# GPU_CHECK_ARGS: e.g. --budget 480 or --steps bench (python -m rawdrift.gpucheck --help)
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m rawdrift.gpucheck $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
