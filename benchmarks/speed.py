"""Simulation speed: the Flower path side by side with the parallel pure-compute floor.

``python -m benchmarks.speed`` runs, for each configuration, three measurements of the
same work, each in its own child process so that memory and start-up are its own:

parallel floor
    :func:`benchmarks.floor.floor` on as many worker processes as the simulation runs
    ClientApps at once (:func:`strategies.simulation.concurrent_clients`), each on the
    same torch threads: the time to beat. No Flower messages, no Ray.
sequential floor
    The same on one process, for reference.
flower
    :func:`strategies.simulation.simulate` on the composed experiment (Ray backend,
    clients multiplexed over one simulated SuperNode per worker).

The breakdown of a round: client training (the parallel floor's summed client seconds
over its workers), the server step (average and rule) and centralised evaluation, all
timed in the parallel floor; what the Flower path takes beyond the parallel floor is
Flower and Ray: messages, serialisation, scheduling.

Both run the same composed :class:`~fedhyper.config.ExperimentConfig`. Federated
evaluation is off (``strategy.evaluate_clients_per_round=0``) and centralised evaluation
runs in both, on a 200-example test subset (``dataset.test_examples=200``).

flower, attached
    The same, attached to a Ray head started beforehand
    (:func:`strategies.ray_cluster.attached_head`), as every run of a sweep but its first
    is: only its start-up is reported.

Seconds per round are the mean over rounds 2..R (round 1 carries the one-off warm-up
of the workers). ``startup_s`` is the time from calling ``simulate`` to the end of round
1, less one steady round: everything the first round costs beyond a later one. Its
breakdown: ``ray`` until Ray is initialised (started, or attached to), ``workers``
until every simulated SuperNode has answered the server's first query (the ClientApp
workers started and imported the project), ``first_round`` the rest (the workers' first
use of torch's optimisers and of their data, the server's first round).
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

from benchmarks.floor import floor
from benchmarks.provenance import write_result
from fedhyper.compose import compose_config
from fedhyper.config import ExperimentConfig
from fedhyper.history import HISTORY_FILE, read_history
from strategies.callbacks import RoundCallback, RunContext
from strategies.ray_cluster import attached_head
from strategies.simulation import concurrent_clients

RESULT = Path(__file__).parent / "results" / "speed.json"

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
            "Fashion-MNIST CNN, 1,000 Dirichlet(0.5) clients, 100 a round, 1 epoch",
        ),
        Case(
            "shakespeare_lstm_100",
            (
                "experiment=shakespeare_cpu",
                "model.hidden_size=64",
                "client.max_steps=20",
                "client.batch_size=64",
                "strategy.clients_per_round=100",
            ),
            "Shakespeare char-LSTM REDUCED as above; 152 natural clients, 100 a round",
        ),
    )
}
DEFAULT_CASES = (
    "fmnist_cnn_10",
    "fmnist_cnn_100",
    "fmnist_cnn_100of1000",
    "shakespeare_lstm_10",
    "shakespeare_lstm_100",
)


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


class RunStartMark(RoundCallback):
    """Note when the run's rounds can start: every simulated SuperNode has answered."""

    def __init__(self) -> None:
        self.at: float | None = None

    def on_run_start(self, run: RunContext) -> None:
        """Take the time."""
        self.at = time.perf_counter()


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
        call to the first history row, polled every 20 ms), ``ray_ready_s`` (to Ray
        initialised, polled the same way), ``nodes_ready_s`` (to the run's start, after
        the SuperNodes answered), ``total_s`` and ``accuracy``.

    """
    import ray

    from strategies.runner import default_callbacks
    from strategies.simulation import simulate

    history = run_dir / HISTORY_FILE
    first_row: list[float] = []
    ray_ready: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if not ray_ready and ray.is_initialized():
                ray_ready.append(time.perf_counter())
            if history.exists() and history.stat().st_size > 0:
                first_row.append(time.perf_counter())
                return
            time.sleep(0.02)

    mark = RunStartMark()
    watcher = threading.Thread(target=watch, daemon=True)
    start = time.perf_counter()
    watcher.start()
    summary = simulate(config, run_dir, [mark, *default_callbacks()])
    total_s = time.perf_counter() - start
    done.set()
    watcher.join()
    walls = [0.0, *(float(row["wall_s"]) for row in read_history(run_dir))]

    def since_start(marks: Sequence[float]) -> float:
        return marks[0] - start if marks else float("nan")

    return {
        "round_s": [b - a for a, b in itertools.pairwise(walls)],
        "first_round_end_s": since_start(first_row),
        "ray_ready_s": since_start(ray_ready),
        "nodes_ready_s": since_start([mark.at] if mark.at is not None else []),
        "total_s": total_s,
        "accuracy": summary.final_accuracy,
    }


def startup(result: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """Return a Flower run's start-up and its breakdown (see the module docstring)."""
    steady_s = steady(result["round_s"])
    total = result["first_round_end_s"] - steady_s
    breakdown = {
        "ray": result["ray_ready_s"],
        "workers": result["nodes_ready_s"] - result["ray_ready_s"],
        "first_round": result["first_round_end_s"] - result["nodes_ready_s"] - steady_s,
    }
    return round(total, 2), {key: round(value, 2) for key, value in breakdown.items()}


def attached_flower(config: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """Run :func:`flower` attached to a Ray head started (and stopped) around it."""
    with attached_head():
        return flower(config, run_dir)


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


def steady(round_s: Sequence[float]) -> float:
    """Mean seconds per round after the first (all rounds if there is only one)."""
    return statistics.fmean(round_s[1:] if len(round_s) > 1 else round_s)


def measure(case: Case, rounds: int, strategy: str, extra: Sequence[str]) -> dict[str, Any]:
    """Measure the floors and the Flower path of one configuration, each in a child.

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
    parallel = run_child(["--child", "parallel", *child])
    sequential = run_child(["--child", "floor", *child])
    flower_result = run_child(["--child", "flower", *child])
    attached = run_child(["--child", "attached", *child])
    startup_s, startup_breakdown = startup(flower_result)
    attached_startup_s, attached_breakdown = startup(attached)
    with tempfile.TemporaryDirectory() as tmp:
        config = experiment(case, rounds, strategy, extra, Path(tmp))
    parallel_s = steady(parallel["round_s"])
    flower_s = steady(flower_result["round_s"])
    workers = parallel["workers"]
    return {
        "config": case.name,
        "clients_per_round": config.strategy.clients_per_round,
        "num_clients": config.partition.num_clients,
        "parallel_floor_s_per_round": round(parallel_s, 3),
        "sequential_floor_s_per_round": round(steady(sequential["round_s"]), 3),
        "flower_s_per_round": round(flower_s, 3),
        "ratio": round(flower_s / parallel_s, 2),
        "startup_s": startup_s,
        "startup_breakdown_s": startup_breakdown,
        "attached_startup_s": attached_startup_s,
        "attached_startup_breakdown_s": attached_breakdown,
        "peak_rss_mb": flower_result["peak_rss_mb"],
        "peak_pss_mb": flower_result["peak_pss_mb"],
        "breakdown_s_per_round": {
            "training": round(steady(parallel["train_s"]) / workers, 3),
            "server_step": round(steady(parallel["server_s"]), 3),
            "evaluation": round(steady(parallel["eval_s"]), 3),
            "pool_and_idle": round(
                parallel_s
                - (
                    steady(parallel["train_s"]) / workers
                    + steady(parallel["server_s"])
                    + steady(parallel["eval_s"])
                ),
                3,
            ),
            "flower_and_ray": round(flower_s - parallel_s, 3),
        },
        "workers": workers,
        "torch_threads": parallel["torch_threads"],
        "floor_peak_rss_mb": parallel["peak_rss_mb"],
        "floor_preload_s": round(parallel["preload_s"], 2),
        "rounds": rounds,
        "parallel_floor_round_s": [round(s, 3) for s in parallel["round_s"]],
        "sequential_floor_round_s": [round(s, 3) for s in sequential["round_s"]],
        "flower_round_s": [round(s, 3) for s in flower_result["round_s"]],
        "flower_first_round_end_s": round(flower_result["first_round_end_s"], 2),
        "floor_accuracy": round(parallel["accuracy"], 4),
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
    parser.add_argument(
        "--child", choices=("parallel", "floor", "flower", "attached"), help=argparse.SUPPRESS
    )
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the first round is warm-up")

    if args.child is not None:
        (case,) = (CASES[name] for name in args.configs)
        with tempfile.TemporaryDirectory(prefix="fedhyper-speed-run-") as tmp:
            run_dir = Path(tmp) / "run"
            config = experiment(case, args.rounds, args.strategy, args.override, run_dir)
            if args.child == "flower":
                result = flower(config, run_dir)
            elif args.child == "attached":
                result = attached_flower(config, run_dir)
            else:
                workers = concurrent_clients(config.simulation) if args.child == "parallel" else 1
                result = floor(config, workers)
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
                "parallel_floor_s_per_round": (
                    "mean of rounds 2..R, plain PyTorch on `workers` forked processes of "
                    "num_cpus_per_client torch threads each (as many as Ray's ClientApps)"
                ),
                "sequential_floor_s_per_round": "the same on one process",
                "flower_s_per_round": "mean of rounds 2..R of the history's wall_s",
                "ratio": "flower_s_per_round / parallel_floor_s_per_round",
                "breakdown_s_per_round": (
                    "training (summed client seconds / workers), server step and "
                    "evaluation timed in the parallel floor; pool_and_idle: the rest of "
                    "its round (pickling, workers waiting on the last client); "
                    "flower_and_ray: flower_s_per_round - parallel_floor_s_per_round"
                ),
                "startup_s": "call of simulate() to end of round 1, less one steady round",
                "startup_breakdown_s": (
                    "ray: to Ray initialised; workers: to every SuperNode's answer to the "
                    "first query; first_round: the rest"
                ),
                "attached_startup_s": (
                    "the same, attached to a Ray head started beforehand (a sweep's "
                    "later runs); its breakdown likewise"
                ),
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
