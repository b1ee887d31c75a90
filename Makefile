# rawdrift: two commands do everything on a fresh machine.
#   make repro   venv + the whole DVC pipeline on the embedded synthetic data (default profile)
#   make test    venv + the test suite
#   make demo    venv + the whole DAG at the tests' tiny profile in a scratch workspace
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

# The paper protocol (256 px tiles, 940 / 548 images, 5 splits): `make repro-paper`.
PAPER_SETS := -S data.microscopy.count=940 -S data.microscopy.tile=256 \
              -S data.drone.count=548 -S data.drone.tile=256 -S data.folds=5 \
              -S train.microscopy.epochs=100 -S train.microscopy.batch_size=128 \
              -S train.microscopy.lr=0.0001 -S train.microscopy.schedule=constant \
              -S train.drone.arch=unetplusplus -S train.drone.encoder=resnet34 -S train.drone.encoder_depth=5 \
              -S 'train.drone.decoder_channels=[256,128,64,32,16]' -S train.drone.epochs=100 \
              -S train.drone.batch_size=12 -S train.drone.lr=0.000075 -S train.drone.schedule=constant \
              -S train.drone.loss=dice \
              -S optimize.microscopy.epochs=100 -S optimize.microscopy.eval_every=6 \
              -S optimize.drone.epochs=100 -S optimize.drone.eval_every=37 \
              -S forensics.search_tiles=0 -S forensics.batch_size=16 \
              -S "forensics.lambda=[100000.0,10000.0,1000.0,100.0,10.0,1.0]"

.PHONY: venv repro repro-paper scale-study demo fanout test test-all bench clean-venv

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

# The whole DAG at the tests' tiny profile in a scratch git + DVC workspace (a temporary folder,
# or DIR=path); prints where every artifact is. Your workspace and DVC cache are not touched.
demo: $(STAMP)
	$(BIN)/python -m rawdrift.demo $(if $(DIR),--keep $(DIR))

fanout: $(FANOUT_STAMP)
	test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/python -m rawdrift.fanout $(FANOUT_ARGS)

repro-paper: $(STAMP)
	$(BIN)/dvc exp run $(PAPER_SETS)

# How processing drift depends on pixel scale (studies/scale/): ~1 h on a 2-core CPU.
scale-study: $(STAMP)
	$(BIN)/dvc repro studies/scale/dvc.yaml

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

# Training throughput vs the model-only ceiling on this machine's device -> bench/<device>.json
bench: $(STAMP)
	$(BIN)/python -m rawdrift.bench

clean-venv:
	rm -rf $(VENV)
