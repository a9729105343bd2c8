# Two commands on a fresh machine: `make run` and `make test`. Both create the
# virtual environment first when it is missing or older than pyproject.toml.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MAIN_DIR := outputs/main/$(shell date +%Y-%m-%d_%H-%M-%S)
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: run test bench report lint env

env: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The main job: FedAvg vs FedHyper-Auto on Fashion-MNIST, then the table and plot.
run: $(STAMP)
	$(PY) -m fedhyper --multirun experiment=main strategy=fedavg,fedhyper_auto \
		hydra.sweep.dir=$(MAIN_DIR)
	$(PY) -m benchmarks.compare $(MAIN_DIR)

test: $(STAMP)
	$(PY) -m pytest

## The benchmark suites, `cpu` profile (docs/benchmarks.md): each writes
## benchmarks/results/<suite>_<dataset>.json with its table and plots. Several hours on a
## 2-core machine; `make report` redraws every table and plot from the JSON alone.
BENCH_PROFILE ?= cpu
bench: $(STAMP)
	$(PY) -m benchmarks.suite compare --dataset fashion_mnist --profile $(BENCH_PROFILE)
	$(PY) -m benchmarks.suite robustness --dataset fashion_mnist --profile $(BENCH_PROFILE)
	$(PY) -m benchmarks.suite compare --dataset shakespeare --profile $(BENCH_PROFILE)
	$(PY) -m benchmarks.suite robustness --dataset shakespeare --profile $(BENCH_PROFILE)
	$(PY) -m benchmarks.suite compare --dataset cifar10 --profile $(BENCH_PROFILE)
	$(PY) -m benchmarks.suite compare --dataset femnist --profile $(BENCH_PROFILE)

report: $(STAMP)
	$(PY) -m benchmarks.report

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy fedhyper strategies clients benchmarks

## A local Flower federation on loopback: SuperLink + $(NODES) SuperNodes with TLS and
## SuperNode authentication, PIDs and logs under .federation/ (docs/deployment.md).
## WARM=1: a warm launcher per SuperNode (torch imported once, a ClientApp forked per message).
## Then: eval "$$(scripts/federation.sh env)"; flwr run . fedhyper-local --stream
NODES ?= 2
WARM ?=
.PHONY: federation-start federation-stop federation-status deployment-cost
federation-start: $(STAMP)
	scripts/federation.sh start -n $(NODES) $(if $(WARM),--warm)

federation-stop:
	scripts/federation.sh stop

federation-status:
	scripts/federation.sh status

## Seconds per round, Deployment Engine vs simulation -> benchmarks/results/deployment_cost.json
deployment-cost: $(STAMP)
	$(PY) -m benchmarks.deployment_cost
