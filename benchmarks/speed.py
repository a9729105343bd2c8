"""Simulation speed: the Flower path side by side with the pure-compute floor.

``python -m benchmarks.speed`` runs, for each configuration, two measurements of the
same work, each in its own child process so that memory and start-up are its own:

floor
    The sampled clients' local training as a plain sequential loop: data decoded and
    partitioned before the clock starts, one reusable model, the same sampled clients
    (:func:`fedhyper.sampling.sample_clients`) and the same training call as the
    ClientApp (:func:`fedhyper.training.train_client`, shuffled by
    :func:`fedhyper.training.shuffle_generator`), then the same server update (Flower's
    weighted average, then the strategy's pure rule through
    :func:`fedhyper.rules.apply_rule`) and the same centralised evaluation. No Flower
    messages, no Ray.
flower
    :func:`strategies.simulation.simulate` on the composed experiment (Ray backend).

Both run the same composed :class:`~fedhyper.config.ExperimentConfig`. Federated
evaluation is off (``strategy.evaluate_clients_per_round=0``) and centralised evaluation
runs in both, on a 200-example test subset (``dataset.test_examples=200``).

Seconds per round are the mean over rounds 2..R (round 1 carries the one-off warm-up
of the workers). ``startup_s`` is the time from calling ``simulate`` to the end of round
1, less one steady round: everything the first round costs beyond a later one (Ray and
SuperNodes, partition discovery, worker imports, data decoding in the workers).
``peak_rss_mb`` is the peak over the run of the summed RSS of the child process and all
its descendants (Ray's raylet, GCS and workers), sampled from ``/proc`` every 0.25 s;
shared pages (libtorch in every worker) count once per process, so ``peak_pss_mb``
(proportional set size) is given beside it.

Results go to ``benchmarks/results/speed.json`` (``--output``) with the machine, date
and command (:func:`benchmarks.provenance.write_result`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from torch.utils.data import TensorDataset

from benchmarks.provenance import write_result
from fedhyper.compose import compose_config
from fedhyper.config import ExperimentConfig
from fedhyper.data.federated import test_data
from fedhyper.history import HISTORY_FILE, read_history
from fedhyper.models import trainable_float_keys
from fedhyper.rules import FedExP, Plain, ServerRule, apply_rule
from fedhyper.sampling import Purpose, sample_clients
from fedhyper.training import evaluate, pick_device, shuffle_generator, train_client
from fedhyper.wire import ARRAYS_RECORD, METRICS_RECORD, ClientTask

RESULT = Path(__file__).parent / "results" / "speed.json"

WEIGHT_KEY = "weight"
"""Metric of the floor's client records that the average is weighted by."""

COMMON = (
    "strategy.evaluate_clients_per_round=0",
    "dataset.test_examples=200",
    "logging.progress=false",
)
"""Overrides every configuration shares: federated evaluation off, a small central one."""


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration.

    Attributes
    ----------
    name : str
        Short name, the ``config`` field of the results.
    overrides : tuple of str
        Hydra overrides on top of :data:`COMMON`.
    note : str
        What is reduced relative to the paper's setup, for the report.

    """

    name: str
    overrides: tuple[str, ...]
    note: str


CASES = {
    case.name: case
    for case in (
        Case(
            "fmnist_cnn_10",
            ("experiment=fashion_mnist_cpu",),
            "Fashion-MNIST CNN, 100 Dirichlet(0.5) clients, 10 a round, 1 epoch, batch 64",
        ),
        Case(
            "fmnist_cnn_100",
            ("experiment=fashion_mnist_cpu", "strategy.clients_per_round=100"),
            "Fashion-MNIST CNN, 100 Dirichlet(0.5) clients, all 100 a round, 1 epoch",
        ),
        Case(
            "shakespeare_lstm_10",
            (
                "experiment=shakespeare_cpu",
                "model.hidden_size=64",
                "client.max_steps=20",
                "client.batch_size=64",
            ),
            "Shakespeare char-LSTM REDUCED to 2x64 units (LEAF: 256) and at most 20 local "
            "steps of batch 64; 152 natural clients, 10 a round",
        ),
        Case(
            "cifar10_resnet18gn_10",
            ("experiment=cifar10_cpu", "model=resnet18_gn"),
            "CIFAR-10 ResNet-18-GN, 100 Dirichlet(0.5) clients, 10 a round, 1 epoch (GPU)",
        ),
        Case(
            "fmnist_cnn_100of1000",
            (
                "experiment=fashion_mnist_cpu",
                "partition.num_clients=1000",
                "strategy.clients_per_round=100",
            ),
            "memory check: Fashion-MNIST CNN, 1,000 clients, 100 a round",
        ),
    )
}
DEFAULT_CASES = ("fmnist_cnn_10", "fmnist_cnn_100", "shakespeare_lstm_10")


def experiment(
    case: Case, rounds: int, strategy: str, extra: Sequence[str], run_dir: Path
) -> ExperimentConfig:
    """Compose the experiment both measurements of ``case`` run.

    Parameters
    ----------
    case : Case
        The configuration.
    rounds : int
        Federated rounds.
    strategy : str
        Strategy name (``fedavg`` or a rule strategy such as ``fedhyper_g``).
    extra : sequence of str
        Further overrides (device, simulation profile), applied last.
    run_dir : Path
        The run's output directory.

    Returns
    -------
    ExperimentConfig
        The validated experiment.

    """
    return compose_config(
        [
            *case.overrides,
            *COMMON,
            f"strategy={strategy}",
            f"num_rounds={rounds}",
            f"logging.output_dir={run_dir}",
            *extra,
        ]
    )


def server_rule_for(config: ExperimentConfig, keys: Sequence[str]) -> ServerRule:
    """Return the server rule the strategy applies to the averaged update.

    FedAvg is :class:`~fedhyper.rules.Plain`; a method that steps by a server rule gets
    the rule :func:`strategies.factory.server_rule` builds for it.
    """
    if config.strategy.name == "fedavg":
        return Plain()
    from fedhyper.methods import method_of
    from strategies.factory import server_rule

    method = method_of(config)
    # FedExP's rule also needs every client's own update.
    if method.server_rule is None or method.name == "fedexp":
        raise SystemExit(
            f"the floor knows fedavg and rule strategies but FedExP, not {method.name}"
        )
    rule = server_rule(config)
    assert not isinstance(rule, FedExP)
    return rule


def floor(config: ExperimentConfig) -> dict[str, Any]:
    """Run the experiment's rounds as a plain sequential loop and time them.

    Parameters
    ----------
    config : ExperimentConfig
        The composed experiment.

    Returns
    -------
    dict
        ``round_s`` (seconds of each round), ``preload_s`` (decoding and partitioning
        the sampled clients' data before the clock starts), ``accuracy`` (last round)
        and ``torch_threads``.

    """
    from strategies.runner import initial_model

    task = ClientTask.from_experiment(config)
    device = pick_device(task.device)
    # A Ray worker with num_cpus=n runs torch on n threads (Ray sets OMP_NUM_THREADS);
    # the floor trains on as many. More threads than free cores makes a busy machine's
    # OpenMP spin-waits cost several times the compute.
    torch.set_num_threads(max(1, int(config.simulation.num_cpus_per_client)))
    count = config.strategy.clients_per_round
    schedule = [
        sample_clients(
            config.seed, server_round, 0, Purpose.TRAIN, config.partition.num_clients, count
        )
        for server_round in range(1, config.num_rounds + 1)
    ]
    start = time.perf_counter()
    data: dict[int, TensorDataset] = {}
    for partition in sorted({p for sampled in schedule for p in sampled}):
        train = task.partition(partition).train
        data[partition] = TensorDataset(*(tensor.to(device) for tensor in train.tensors))
    test = test_data(config.dataset)
    server_model = initial_model(config).to(device)
    client_model = initial_model(config).to(device)
    keys = trainable_float_keys(server_model)
    rule = server_rule_for(config, keys)
    # On the CPU, where the Flower server keeps the global model.
    global_state = {key: value.cpu().clone() for key, value in server_model.state_dict().items()}
    preload_s = time.perf_counter() - start

    round_s: list[float] = []
    accuracy = float("nan")
    for server_round, sampled in enumerate(schedule, start=1):
        start = time.perf_counter()
        replies: list[RecordDict] = []
        for partition in sampled:
            client_model.load_state_dict(global_state)
            train_client(
                client_model,
                data[partition],
                task,
                lr=config.client.lr,
                generator=shuffle_generator(task.seed, partition, server_round),
                device=device,
            )
            weight = len(data[partition]) if config.strategy.weighted else 1
            replies.append(
                RecordDict(
                    {
                        ARRAYS_RECORD: ArrayRecord(client_model.state_dict()),
                        METRICS_RECORD: MetricRecord({WEIGHT_KEY: weight}),
                    }
                )
            )
        average = aggregate_arrayrecords(replies, WEIGHT_KEY).to_torch_state_dict()
        global_state, _, _ = apply_rule(rule, global_state, average, keys)
        server_model.load_state_dict(global_state)
        accuracy = evaluate(server_model, test, device=device).accuracy
        if device.type == "cuda":
            torch.cuda.synchronize()
        round_s.append(time.perf_counter() - start)
    return {
        "round_s": round_s,
        "preload_s": preload_s,
        "accuracy": accuracy,
        "torch_threads": torch.get_num_threads(),
    }


def flower(config: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """Run the experiment through :func:`strategies.simulation.simulate` and time it.

    Parameters
    ----------
    config : ExperimentConfig
        The composed experiment.
    run_dir : Path
        Its output directory (must be fresh).

    Returns
    -------
    dict
        ``round_s`` (from the history's ``wall_s``), ``first_round_end_s`` (from the
        call to the first history row, polled every 20 ms), ``total_s`` and
        ``accuracy``.

    """
    from strategies.simulation import simulate

    history = run_dir / HISTORY_FILE
    first_row: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if history.exists() and history.stat().st_size > 0:
                first_row.append(time.perf_counter())
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    start = time.perf_counter()
    watcher.start()
    summary = simulate(config, run_dir)
    total_s = time.perf_counter() - start
    done.set()
    watcher.join()
    walls = [0.0, *(float(row["wall_s"]) for row in read_history(run_dir))]
    return {
        "round_s": [b - a for a, b in itertools.pairwise(walls)],
        "first_round_end_s": first_row[0] - start if first_row else float("nan"),
        "total_s": total_s,
        "accuracy": summary.final_accuracy,
    }


def _children() -> dict[int, list[int]]:
    """Map each pid to its child pids, from ``/proc/<pid>/stat``."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the ppid follows the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_memory_mb(root: int) -> tuple[float, float]:
    """Return the summed RSS and PSS, in MB, of ``root`` and all its descendants."""
    tree = _children()
    pending, rss, pss = [root], 0.0, 0.0
    while pending:
        pid = pending.pop()
        pending.extend(tree.get(pid, []))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in rollup:
            field, _, rest = line.partition(":")
            if field in ("Rss", "Pss"):
                kilobytes = float(rest.split()[0])
                if field == "Rss":
                    rss += kilobytes / 1024
                else:
                    pss += kilobytes / 1024
    return rss, pss


def run_child(args: Sequence[str]) -> dict[str, Any]:
    """Run ``python -m benchmarks.speed --child ...`` and track its memory.

    Returns
    -------
    dict
        The child's JSON result with ``peak_rss_mb`` and ``peak_pss_mb`` added.

    """
    with tempfile.TemporaryDirectory(prefix="fedhyper-speed-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks.speed", *args, "--child-output", str(out)]
        process = subprocess.Popen(command)
        peak_rss = peak_pss = 0.0
        while process.poll() is None:
            rss, pss = tree_memory_mb(process.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.25)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed with exit status {process.returncode}")
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    result["peak_rss_mb"] = round(peak_rss, 1)
    result["peak_pss_mb"] = round(peak_pss, 1)
    return result


def concurrency(config: ExperimentConfig) -> int:
    """Clients Ray trains at once: CPUs (and GPUs) over each ClientApp's share."""
    simulation = config.simulation
    slots = (os.cpu_count() or 1) // max(1, int(simulation.num_cpus_per_client))
    if simulation.num_gpus_per_client > 0 and torch.cuda.is_available():
        slots = min(slots, int(torch.cuda.device_count() / simulation.num_gpus_per_client))
    return max(1, slots)


def steady(round_s: Sequence[float]) -> float:
    """Mean seconds per round after the first (all rounds if there is only one)."""
    return statistics.fmean(round_s[1:] if len(round_s) > 1 else round_s)


def measure(case: Case, rounds: int, strategy: str, extra: Sequence[str]) -> dict[str, Any]:
    """Measure the floor and the Flower path of one configuration, each in a child.

    Returns
    -------
    dict
        One entry of ``runs`` in ``speed.json``.

    """
    child = [
        "--configs",
        case.name,
        "--rounds",
        str(rounds),
        "--strategy",
        strategy,
        *(f"--override={override}" for override in extra),
    ]
    floor_result = run_child(["--child", "floor", *child])
    flower_result = run_child(["--child", "flower", *child])
    with tempfile.TemporaryDirectory() as tmp:
        config = experiment(case, rounds, strategy, extra, Path(tmp))
    floor_s = steady(floor_result["round_s"])
    flower_s = steady(flower_result["round_s"])
    return {
        "config": case.name,
        "clients_per_round": config.strategy.clients_per_round,
        "num_clients": config.partition.num_clients,
        "floor_s_per_round": round(floor_s, 3),
        "flower_s_per_round": round(flower_s, 3),
        "ratio": round(flower_s / floor_s, 2),
        "startup_s": round(flower_result["first_round_end_s"] - flower_s, 2),
        "peak_rss_mb": flower_result["peak_rss_mb"],
        "peak_pss_mb": flower_result["peak_pss_mb"],
        "floor_peak_rss_mb": floor_result["peak_rss_mb"],
        "floor_preload_s": round(floor_result["preload_s"], 2),
        "floor_torch_threads": floor_result["torch_threads"],
        "concurrency": concurrency(config),
        "rounds": rounds,
        "floor_round_s": [round(s, 3) for s in floor_result["round_s"]],
        "flower_round_s": [round(s, 3) for s in flower_result["round_s"]],
        "flower_first_round_end_s": round(flower_result["first_round_end_s"], 2),
        "floor_accuracy": round(floor_result["accuracy"], 4),
        "flower_accuracy": round(flower_result["accuracy"], 4),
        "device": config.client.device,
        "simulation": asdict(config.simulation),
        "note": case.note,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and write the result file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CASES), default=DEFAULT_CASES)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (first is warm-up)")
    parser.add_argument("--strategy", default="fedavg", help="fedavg or a rule strategy")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override for both paths, e.g. client.device=cuda (repeatable)",
    )
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--child", choices=("floor", "flower"), help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the first round is warm-up")

    if args.child is not None:
        (case,) = (CASES[name] for name in args.configs)
        with tempfile.TemporaryDirectory(prefix="fedhyper-speed-run-") as tmp:
            run_dir = Path(tmp) / "run"
            config = experiment(case, args.rounds, args.strategy, args.override, run_dir)
            result = floor(config) if args.child == "floor" else flower(config, run_dir)
        args.child_output.write_text(json.dumps(result), encoding="utf-8")
        return

    runs = []
    for name in args.configs:
        run = measure(CASES[name], args.rounds, args.strategy, args.override)
        print(json.dumps({k: v for k, v in run.items() if not k.endswith("round_s")}), flush=True)
        runs.append(run)
    write_result(
        args.output,
        {
            "load_average": os.getloadavg(),
            "definitions": {
                "floor_s_per_round": (
                    "mean of rounds 2..R, plain sequential PyTorch loop on num_cpus_per_client "
                    "torch threads (Flower trains `concurrency` clients at once)"
                ),
                "flower_s_per_round": "mean of rounds 2..R of the history's wall_s",
                "ratio": "flower_s_per_round / floor_s_per_round",
                "startup_s": "call of simulate() to end of round 1, less one steady round",
                "peak_rss_mb": "peak summed RSS of the Flower run's process tree (Ray incl.)",
                "peak_pss_mb": "the same, proportional set size (shared pages split)",
            },
            "common_overrides": list(COMMON),
            "runs": runs,
        },
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
