# Two commands on a fresh machine: `make run` and `make test`. Both create the
# virtual environment first when it is missing or older than pyproject.toml.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MAIN_DIR := outputs/main/$(shell date +%Y-%m-%d_%H-%M-%S)
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: run test bench lint env

env: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The main job: FedAvg vs FedHyper-G on Fashion-MNIST, then the table and plot.
run: $(STAMP)
	$(PY) -m fedhyper --multirun experiment=main strategy=fedavg,fedhyper_g \
		hydra.sweep.dir=$(MAIN_DIR)
	$(PY) -m benchmarks.compare $(MAIN_DIR)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m fedhyper --multirun experiment=main strategy=fedavg,fedhyper_g seed=0,1,2 \
		hydra.sweep.dir=outputs/bench/$(shell date +%Y-%m-%d_%H-%M-%S)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy fedhyper strategies clients benchmarks
