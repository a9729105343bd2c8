"""Seconds per round: Flower's Deployment Engine on loopback next to its simulation engine.

``python -m benchmarks.deployment_cost`` runs the same small FedHyper job (Fashion-MNIST,
2 clients, both trained and evaluated every round) five ways and writes
``benchmarks/results/deployment_cost.json``:

* ``simulation``: ``python -m fedhyper`` on the Ray simulation engine, one process;
* ``deployment``: ``scripts/federation.sh`` (SuperLink + 2 SuperNodes on loopback, TLS
  and SuperNode authentication, ``partition-id`` node config) and ``flwr run``, with
  the SuperExec task-polling interval (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``) at
  Flower's default of 1 s and at 0.1 s;
* the 0.1 s deployment once more without federated evaluation, which halves the
  messages per round;
* the 0.1 s deployment with warm launchers (``federation.sh start --warm``,
  :mod:`clients.warm_launcher`): torch imported once per SuperNode, a ClientApp forked
  per message instead of started afresh.

Per-round seconds come from the ``wall_s`` column of each run's ``history.jsonl`` (the
server's clock), so process start-up before round 1 is reported apart. The cold import
of the ClientApp module, which every deployed message pays, is timed next to torch's
alone. The machine is
shared with other work; the load average before and after each run is recorded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.provenance import write_result
from fedhyper.data.source import ENV_DATA_DIR, resolve_data_dir
from fedhyper.history import read_history

REPO = Path(__file__).resolve().parents[1]
RESULT = Path(__file__).parent / "results" / "deployment_cost.json"
FEDERATION = REPO / "scripts" / "federation.sh"
CONNECTION = "fedhyper-local"
NUM_CLIENTS = 2
POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"


@dataclass(frozen=True)
class Variant:
    """One way of running the job.

    Attributes
    ----------
    name : str
        Label in the result file.
    engine : str
        ``simulation`` or ``deployment``.
    poll_interval_s : float or None
        SuperExec task-polling interval (deployment only; ``None``: Flower's default).
    federated_evaluation : bool
        Whether clients also evaluate every round (a second message per client).
    warm : bool
        Deployment with warm launchers in place of Flower's SuperExecs on the SuperNodes.

    """

    name: str
    engine: str
    poll_interval_s: float | None
    federated_evaluation: bool
    warm: bool = False


VARIANTS = (
    Variant("simulation", "simulation", None, True),
    Variant("deployment, poll 1 s (default)", "deployment", None, True),
    Variant("deployment, poll 0.1 s", "deployment", 0.1, True),
    Variant("deployment, poll 0.1 s, no federated evaluation", "deployment", 0.1, False),
    Variant("deployment, poll 0.1 s, warm launchers", "deployment", 0.1, True, warm=True),
)


def job_overrides(rounds: int, max_steps: int, federated_evaluation: bool) -> list[str]:
    """Return the Hydra overrides of the benchmark job (after the group choices)."""
    evaluate = NUM_CLIENTS if federated_evaluation else 0
    return [
        f"num_rounds={rounds}",
        f"partition.num_clients={NUM_CLIENTS}",
        f"strategy.clients_per_round={NUM_CLIENTS}",
        f"strategy.evaluate_clients_per_round={evaluate}",
        f"client.max_steps={max_steps}",
        "client.batch_size=32",
        "dataset.test_examples=1000",
        "logging.progress=false",
    ]


def free_port_block(count: int) -> int:
    """Return ``base`` such that ports ``base .. base+count-1`` are free on loopback."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports found")


def flwr_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run a ``flwr`` CLI command with ``--format json`` and return its parsed output."""
    result = subprocess.run(
        ["flwr", *args, "--format", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@contextmanager
def loopback_federation(work: Path, env: dict[str, str], warm: bool) -> Iterator[float]:
    """Start a SuperLink and the SuperNodes with ``scripts/federation.sh``; yield start-up s.

    ``env["FLWR_HOME"]`` must be ``<work>/federation/flwr/cli``, where the script
    writes the CLI's connection. The federation is stopped (by PID) on exit.
    """
    port = free_port_block(1 + NUM_CLIENTS)
    command = [str(FEDERATION), "start", "--dir", str(work / "federation")]
    command += ["-n", str(NUM_CLIENTS), "--port", str(port), "--node-port-base", str(port + 1)]
    # Stopped with this process, also if it is killed before the `finally` below runs.
    command += ["--owner", str(os.getpid())]
    command += ["--warm"] if warm else []
    start = time.perf_counter()
    try:
        subprocess.run(command, env=env, check=True, timeout=300)
        yield time.perf_counter() - start
    finally:
        stop = [str(FEDERATION), "stop", "--dir", str(work / "federation")]
        subprocess.run(stop, env=env, check=False, timeout=120)


def run_deployment(
    work: Path, env: dict[str, str], overrides: list[str], warm: bool
) -> dict[str, Any]:
    """Run the job on a fresh loopback federation; return timings and the history.

    With ``warm``, the SuperNodes run warm launchers; start-up then includes their imports.
    """
    output_dir = work / "output"
    env = {**env, "FLWR_HOME": str(work / "federation" / "flwr" / "cli")}
    with loopback_federation(work, env, warm) as startup_s:
        run_config = "strategy='fedhyper' partition='iid' overrides='{}'".format(
            " ".join([*overrides, f"logging.output_dir={output_dir}"])
        )
        submitted = time.perf_counter()
        run_id = str(flwr_json(env, "run", ".", CONNECTION, "--run-config", run_config)["run-id"])
        while True:
            run: dict[str, Any] = flwr_json(env, "ls", CONNECTION, "--run-id", run_id)["runs"][0]
            if str(run["status"]).startswith("finished"):
                break
            time.sleep(2)
        if run["status"] != "finished:completed":
            raise RuntimeError(f"run {run_id} ended as {run['status']}: {run['status-details']}")
    return {
        "federation_startup_s": round(startup_s, 2),
        "submit_to_finished_s": round(time.perf_counter() - submitted, 2),
        "flower_elapsed_s": round(float(run["elapsed"]), 2),
        # Seconds Flower counted inside ServerApp and ClientApp processes (all clients).
        "flower_compute_time_s": {
            key: round(float(value), 2) for key, value in run["compute-time"].items()
        },
        "history": read_history(output_dir),
    }


def run_simulation(work: Path, env: dict[str, str], overrides: list[str]) -> dict[str, Any]:
    """Run the job with ``python -m fedhyper``; return timings and the history."""
    run_dir = work / "output"  # Hydra's job directory is the run directory
    command = [sys.executable, "-m", "fedhyper", "strategy=fedhyper", "partition=iid"]
    command += [*overrides, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, timeout=1800)
    return {
        "process_s": round(time.perf_counter() - start, 2),
        "history": read_history(run_dir),
    }


COLD_IMPORTS = ("torch", "clients.client_app")
"""Modules whose import a fresh ClientApp process pays: torch alone, and the whole app."""


def cold_import_seconds(module: str, env: dict[str, str], repeats: int = 3) -> dict[str, float]:
    """Time ``python -c "import <module>"`` in fresh processes.

    Returns
    -------
    dict
        The median ``wall_s`` and ``cpu_s`` (user + system, of the child alone): on a
        shared machine the CPU time is the steadier of the two.

    """
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        command = [sys.executable, "-c", f"import {module}"]
        subprocess.run(command, cwd=REPO, env=env, check=True, timeout=300)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {
        "wall_s": round(statistics.median(walls), 2),
        "cpu_s": round(statistics.median(cpus), 2),
    }


def round_seconds(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise the server's per-round wall times.

    Parameters
    ----------
    history : list of dict
        Rows of ``history.jsonl``; ``wall_s`` is cumulative from the first round's start.

    Returns
    -------
    dict
        ``per_round_s`` (every round), ``first_round_s`` and the mean and median of the
        later rounds (steady state: no first-round imports or data decoding).

    """
    walls = [float(row["wall_s"]) for row in history]
    per_round = [walls[0]] + [later - earlier for earlier, later in itertools.pairwise(walls)]
    later = per_round[1:]
    return {
        "per_round_s": [round(seconds, 2) for seconds in per_round],
        "first_round_s": round(per_round[0], 2),
        "later_rounds_mean_s": round(statistics.fmean(later), 2),
        "later_rounds_median_s": round(statistics.median(later), 2),
    }


def main(argv: list[str] | None = None) -> None:
    """Run every variant and write the result file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run (>= 2)")
    parser.add_argument("--max-steps", type=int, default=10, help="local steps per round")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first round is reported apart)")

    mirror = resolve_data_dir(None)
    if mirror is None:
        raise SystemExit(f"no dataset mirror found; set {ENV_DATA_DIR}")
    env = {
        **os.environ,
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        ENV_DATA_DIR: str(mirror),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }
    env.pop(POLL_ENV, None)
    load_before = os.getloadavg()[0]
    python_env = {**env, "PYTHONPATH": str(REPO)}
    cold_imports: dict[str, object] = {
        module: cold_import_seconds(module, python_env) for module in COLD_IMPORTS
    }
    cold_imports["load_average_1min_before_after"] = [
        round(load_before, 2),
        round(os.getloadavg()[0], 2),
    ]
    print(json.dumps(cold_imports), flush=True)
    runs = []
    for variant in VARIANTS:
        overrides = job_overrides(args.rounds, args.max_steps, variant.federated_evaluation)
        variant_env = dict(env)
        if variant.poll_interval_s is not None:
            variant_env[POLL_ENV] = str(variant.poll_interval_s)
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="fedhyper-cost-") as work:
            if variant.engine == "simulation":
                outcome = run_simulation(Path(work), variant_env, overrides)
            else:
                outcome = run_deployment(Path(work), variant_env, overrides, variant.warm)
        history = outcome.pop("history")
        runs.append(
            {
                "variant": variant.name,
                "engine": variant.engine,
                POLL_ENV: variant.poll_interval_s,
                "federated_evaluation": variant.federated_evaluation,
                "warm_launchers": variant.warm,
                **round_seconds(history),
                **outcome,
                "final_accuracy": round(float(history[-1]["accuracy"]), 4),
                "load_average_1min_before_after": [
                    round(load_before, 2),
                    round(os.getloadavg()[0], 2),
                ],
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    job = ["strategy=fedhyper", "partition=iid", *job_overrides(args.rounds, args.max_steps, True)]
    write_result(
        RESULT,
        {
            "job": " ".join(job),
            "timer": "server wall clock (history.jsonl wall_s)",
            "fixed_in_flower_1_42": (
                "an idle SuperNode polls the SuperLink for messages every 3 s "
                "(flwr/supernode/start_client_internal.py) and every message starts a "
                "fresh flwr-clientapp process (Python, torch and the data layer imported "
                "again); neither has a setting"
            ),
            "cold_import_s": cold_imports,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
