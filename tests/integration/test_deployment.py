"""Flower's Deployment Engine on loopback: TLS, SuperNode authentication, FedHyper full.

``scripts/federation.sh`` starts a SuperLink and two SuperNodes, each with its own data
directory (a slice of the real Fashion-MNIST train split laid out like the mirror);
``flwr run`` submits two rounds of FedHyper (GM on the server, CL on the clients). All
Flower state lives under ``tmp_path`` (``FLWR_HOME``), ports are free ones, and every
process the federation started is ended by PID, also when a test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch

from benchmarks.deployment_cost import free_port_block
from clients.client_app import DATA_DIR_KEY, local_data
from clients.warm_launcher import READY_LINE
from fedhyper.compose import compose_config
from fedhyper.data.source import ENV_DATA_DIR, resolve_data_dir
from fedhyper.errors import ConfigError, DatasetUnavailableError
from fedhyper.history import read_history
from fedhyper.processes import die_with_parent
from fedhyper.wire import PARTITION_ID_KEY, ClientTask
from tests.support.paths import ROOT as REPO

SCRIPT = REPO / "scripts" / "federation.sh"
MIRROR = resolve_data_dir(None)
CONNECTION = "fedhyper-local"
NODE_ROWS = (300, 400)
"""Train rows of each SuperNode's own data directory (disjoint slices of the mirror)."""
ROUNDS = 2
MAX_STEPS = 4
SMALL_FEDERATION = (
    f"partition.num_clients={len(NODE_ROWS)}",
    f"strategy.clients_per_round={len(NODE_ROWS)}",
    "strategy.evaluate_clients_per_round=0",
)
RUN_OVERRIDES = " ".join(
    [
        f"num_rounds={ROUNDS}",
        *SMALL_FEDERATION,
        f"client.max_steps={MAX_STEPS}",
        "client.batch_size=32",
        "dataset.test_examples=200",
        "logging.progress=false",
        "simulation.node_wait_s=60",
        "simulation.round_timeout_s=120",
    ]
)

pytestmark = [
    pytest.mark.skipif(
        MIRROR is None or not (MIRROR / "fashion_mnist" / "train.parquet").is_file(),
        reason="real dataset mirror not found (../shared/data or FEDHYPER_DATA_DIR)",
    ),
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("openssl", "ssh-keygen", "curl", "setsid")),
        reason="needs openssl, ssh-keygen, curl and setsid",
    ),
]


def make_node_data(folder: Path, start: int, rows: int) -> Path:
    """Write rows ``start .. start+rows-1`` of the mirror's train split as a node's data."""
    assert MIRROR is not None
    table = pq.read_table(MIRROR / "fashion_mnist" / "train.parquet").slice(start, rows)
    (folder / "fashion_mnist").mkdir(parents=True)
    pq.write_table(table, folder / "fashion_mnist" / "train.parquet")
    return folder


def task_for(**changes: object) -> ClientTask:
    config = compose_config(["partition=iid", *SMALL_FEDERATION])
    return dataclasses.replace(ClientTask.from_experiment(config), **changes)  # type: ignore[arg-type]


# --- node config: which rows a SuperNode trains on -------------------------------------


def test_data_dir_node_trains_on_all_of_its_own_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server names the shared mirror; the node's own folder must win.
    assert MIRROR is not None
    monkeypatch.setenv("FEDHYPER_CACHE_DIR", str(tmp_path / "cache"))
    own = make_node_data(tmp_path / "node", 1000, 250)
    data = local_data(task_for(data_dir=str(MIRROR)), None, {DATA_DIR_KEY: str(own)})
    assert len(data.train) + len(data.validation) == 250
    assert len(data.validation) == int(250 * 0.1)
    labels = pq.read_table(own / "fashion_mnist" / "train.parquet").column("label").to_pylist()
    got = sorted(int(y) for part in (data.train, data.validation) for y in part.tensors[1])
    assert got == sorted(labels)


def test_data_dir_without_the_split_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A usable mirror is reachable through the environment, yet must not be used.
    monkeypatch.setenv(ENV_DATA_DIR, str(MIRROR))
    with pytest.raises(DatasetUnavailableError, match="data-dir"):
        local_data(task_for(), None, {DATA_DIR_KEY: str(tmp_path / "empty")})


def test_partition_nodes_split_their_data_dir_by_the_server_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDHYPER_CACHE_DIR", str(tmp_path / "cache"))
    own = make_node_data(tmp_path / "copy", 0, 200)
    task = task_for(data_dir=str(tmp_path / "server-path-that-does-not-exist-here"))
    sizes = [
        len(d.train) + len(d.validation)
        for d in (
            local_data(task, i, {PARTITION_ID_KEY: 0, DATA_DIR_KEY: str(own)}) for i in range(2)
        )
    ]
    assert sizes == [100, 100]


def test_a_node_without_the_shared_dataset_must_name_its_own_data() -> None:
    with pytest.raises(ConfigError, match="partition-id"):
        local_data(task_for(), None, {})


# --- the federation -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Federation:
    run_dir: Path
    port: int
    env: dict[str, str]

    @property
    def certs(self) -> Path:
        return self.run_dir / "certs"

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["flwr", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def flwr_json(self, *args: str) -> dict[str, Any]:
        result = self.flwr(*args, "--format", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        parsed: dict[str, Any] = json.loads(result.stdout)
        return parsed


def process_tree(roots: list[int]) -> set[int]:
    """The given PIDs and all their descendants (from one ``ps`` snapshot)."""
    listing = subprocess.run(
        ["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    children: dict[int, list[int]] = {}
    for line in listing.splitlines():
        pid, ppid = (int(field) for field in line.split())
        children.setdefault(ppid, []).append(pid)
    tree, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, []))
    return tree


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but still listed until its parent reaps it.
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(") ")[-1][0] != "Z"


def federation_env(run_dir: Path, cache: Path) -> dict[str, str]:
    """The environment of ``scripts/federation.sh`` and ``flwr`` for a run folder."""
    return {
        **os.environ,
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        # The flwr CLI's home; the script gives each Flower process its own under it.
        "FLWR_HOME": str(run_dir / "flwr" / "cli"),
        ENV_DATA_DIR: str(MIRROR),  # the server's centralised test set
        "FEDHYPER_CACHE_DIR": str(cache),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
    }


@contextlib.contextmanager
def running_federation(root: Path, *options: str) -> Iterator[Federation]:
    """Start a federation on loopback in ``root`` (its data, state and logs); stop it after.

    Every process it started must be gone once ``federation.sh stop`` has run.
    """
    node_dirs, start = [], 0
    for i, rows in enumerate(NODE_ROWS):
        node_dirs.append(make_node_data(root / f"node-{i}-data", start, rows))
        start += rows
    run_dir = root / "federation"
    port = free_port_block(1 + len(NODE_ROWS))
    env = federation_env(run_dir, root / "cache")
    started: set[int] = set()
    try:
        # The federation lives only as long as this test process, however that ends.
        start_cmd = [str(SCRIPT), "start", "--dir", str(run_dir), "-n", str(len(NODE_ROWS))]
        start_cmd += ["--owner", str(os.getpid())]
        start_cmd += ["--port", str(port), "--node-port-base", str(port + 1)]
        start_cmd += ["--data-dirs", ",".join(str(d) for d in node_dirs), *options]
        result = subprocess.run(
            start_cmd, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        pid_files = sorted((run_dir / "pids").glob("*.pid"))
        started = {int(f.read_text()) for f in pid_files}
        assert result.returncode == 0, result.stdout + result.stderr
        # With the owner watcher, and a warm launcher per SuperNode with --warm.
        per_node = 2 if "--warm" in options else 1
        assert len(pid_files) == 2 + per_node * len(NODE_ROWS)
        yield Federation(run_dir, port, env)
    finally:
        tree = process_tree(sorted(started))
        subprocess.run(
            [str(SCRIPT), "stop", "--dir", str(run_dir)], env=env, timeout=60, check=False
        )
        survivors = [pid for pid in tree if alive(pid)]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        assert not survivors, f"federation.sh stop left processes {survivors}"


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with running_federation(tmp_path_factory.mktemp("deployment")) as running:
        yield running


RUNNER = """
import os, subprocess, sys, time
subprocess.run([*sys.argv[1:], "--owner", str(os.getpid())], check=True, capture_output=True)
print("up", flush=True)
time.sleep(600)
"""
"""A test runner: starts a federation it owns, then waits to be killed."""


@pytest.mark.parametrize("launchers", [[], ["--warm"]], ids=["superexec", "warm"])
def test_a_killed_runner_leaves_no_process_of_its_federation(
    tmp_path: Path, launchers: list[str]
) -> None:
    run_dir, port = tmp_path / "federation", free_port_block(2)
    start_cmd = [str(SCRIPT), "start", "--insecure", "--dir", str(run_dir), "-n", "1"]
    start_cmd += launchers
    start_cmd += ["--port", str(port), "--node-port-base", str(port + 1)]
    env = federation_env(run_dir, tmp_path / "cache")
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, *start_cmd], env=env, stdout=subprocess.PIPE, text=True
    )
    tree: set[int] = set()
    try:
        assert runner.stdout is not None and runner.stdout.readline() == "up\n"
        started = [int(f.read_text()) for f in (run_dir / "pids").glob("*.pid")]
        # The SuperLink, the SuperNode, the watcher and the SuperExecs the two started (or,
        # warm, the SuperLink's SuperExec, the launcher and the loop that restarts it).
        deadline = time.monotonic() + 30
        while len(tree := process_tree(started)) < 5 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(tree) >= 5, tree
        runner.send_signal(signal.SIGTERM)  # what a CI time-out sends
        runner.wait(timeout=10)
        deadline = time.monotonic() + 30
        while (survivors := {p for p in tree if alive(p)}) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not survivors
    finally:
        runner.kill()
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_unregistered_supernodes_are_refused(federation: Federation) -> None:
    # Two intruders at once: one with a key the SuperLink never registered, and one with
    # no key, which registers itself; only node authentication refuses the latter.
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", "intruder"],
        cwd=federation.run_dir,
        check=True,
        timeout=30,
    )
    key = ["--auth-supernode-private-key", str(federation.run_dir / "intruder")]
    expected = {"unregistered-key": "Failed to activate SuperNode", "no-key": "registered"}
    port = free_port_block(len(expected))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for offset, name in enumerate(expected):
            command = ["flower-supernode", "--superlink", f"127.0.0.1:{federation.port}"]
            command += ["--root-certificates", str(federation.certs / "ca.crt")]
            command += ["--port", str(port + offset), "--node-config", "partition-id=0"]
            command += key if name == "unregistered-key" else []
            # Output goes to a file: the SuperExec child would hold a pipe open while it
            # waits for its parent to be reaped.
            with (federation.run_dir / f"{name}.log").open("w") as sink:
                processes[name] = subprocess.Popen(
                    command,
                    env=federation.env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    # SIGKILL when the test dies; its SuperExec follows (Flower's parent watch).
                    preexec_fn=functools.partial(die_with_parent, signal.SIGKILL),
                )
        # No retry limit was set: a refusal must end the SuperNode, not leave it knocking.
        returncodes = {name: process.wait(timeout=60) for name, process in processes.items()}
    finally:
        for process in processes.values():
            # The SuperNode's session (its PID) holds the SuperExec it started, if any.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    for name, reason in expected.items():
        output = (federation.run_dir / f"{name}.log").read_text()
        assert returncodes[name] != 0, output
        assert "Failed to initialize the connection to the SuperLink" in output, output
        assert reason in output, output
    nodes = federation.flwr_json("supernode", "ls", CONNECTION)["nodes"]
    assert sorted(node["status"] for node in nodes) == ["online"] * len(NODE_ROWS)


def wait_until_finished(federation: Federation, run_id: str) -> dict[str, Any]:
    """Poll ``flwr ls`` until the run has finished (or 240 s have passed)."""
    deadline = time.monotonic() + 240
    while True:
        runs = federation.flwr_json("ls", CONNECTION, "--run-id", run_id)["runs"]
        assert len(runs) == 1
        run: dict[str, Any] = runs[0]
        if str(run["status"]).startswith("finished") or time.monotonic() > deadline:
            return run
        time.sleep(3)


def run_fedhyper(
    federation: Federation, output_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run FedHyper on the federation; return its ``flwr ls`` entry and its history."""
    overrides = f"{RUN_OVERRIDES} logging.output_dir={output_dir}"
    run_config = f"strategy='fedhyper' partition='iid' overrides='{overrides}'"
    submitted = federation.flwr_json("run", ".", CONNECTION, "--run-config", run_config)
    run_id = str(submitted["run-id"])
    run = wait_until_finished(federation, run_id)
    if run["status"] != "finished:completed":
        log = federation.flwr("log", run_id, CONNECTION, "--show").stdout
        pytest.fail(f"run {run_id} ended as {run['status']}: {run.get('status-details')}\n{log}")
    return run, read_history(output_dir)


@pytest.fixture(scope="module")
def fedhyper_run(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return run_fedhyper(federation, tmp_path_factory.mktemp("fedhyper-deployed") / "run")


def test_a_node_without_cuda_fails_the_run_in_one_line(
    federation: Federation,
    fedhyper_run: tuple[dict[str, Any], list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    # After the FedHyper run (the fixture), so the two never share the SuperNodes.
    if torch.cuda.is_available():
        pytest.skip("the SuperNodes see a CUDA device")
    overrides = f"{RUN_OVERRIDES} logging.output_dir={tmp_path} client.device=cuda"
    run_config = f"overrides='{overrides}'"
    submitted = federation.flwr_json("run", ".", CONNECTION, "--run-config", run_config)
    run = wait_until_finished(federation, str(submitted["run-id"]))
    assert run["status"] == "finished:failed"
    details = str(run["status-details"])
    assert "\n" not in details
    assert "cannot run this experiment: invalid value for 'client.device': 'cuda'" in details
    assert not (tmp_path / "history.jsonl").exists()  # no round started


def test_fedhyper_run_finished_on_both_supernodes(
    fedhyper_run: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    run, history = fedhyper_run
    assert run["status"] == "finished:completed"
    assert [row["round"] for row in history] == list(range(1, ROUNDS + 1))
    for row in history:
        assert row["clients"] == len(NODE_ROWS) and row["failures"] == 0
        assert 0.0 <= row["accuracy"] <= 1.0


def test_deployed_global_lr_obeys_the_gm_rule(
    fedhyper_run: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, history = fedhyper_run
    # FedHyper full: GM with beta = 1 and accumulator bounds [-0.2, 4], so α = 1 + acc.
    hyper_lr, low, high = 1.0, 0.8, 5.0
    assert history[0]["global_lr"] == 1.0 and history[0]["hypergradient"] == 0.0
    for previous, row in itertools.pairwise(history):
        assert row["hypergradient"] != 0.0
        step = previous["global_lr"] + hyper_lr * row["hypergradient"]
        assert row["global_lr"] == pytest.approx(min(max(step, low), high), rel=1e-9)
        assert low <= row["global_lr"] <= high


def test_deployed_clients_adapt_their_lr_with_fedhyper_cl(
    fedhyper_run: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, history = fedhyper_run
    lr = 0.01
    for row in history:
        low, high = row["client_lr_min"], row["client_lr_max"]
        # CL moved the LR within the round, by at most +10 % per step: steps 2 to
        # MAX_STEPS - 1 each set the LR of the next step (step 1 is not counted).
        assert lr * 0.1 <= low < high <= lr * 1.1 ** (MAX_STEPS - 2) + 1e-12


# --- warm launchers (federation.sh start --warm) ----------------------------------------


def warm_launchers(federation: Federation) -> dict[str, tuple[int | None, str]]:
    """Each warm-<i> line of ``federation.sh status``: its launcher's PID (if alive), the line."""
    status = subprocess.run(
        [str(SCRIPT), "status", "--dir", str(federation.run_dir)],
        env=federation.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    launchers: dict[str, tuple[int | None, str]] = {}
    for line in status.splitlines():
        if line.startswith("warm-"):
            alive_pid = re.search(r"launcher PID (\d+) alive", line)
            launchers[line.split(":")[0]] = (int(alive_pid[1]) if alive_pid else None, line)
    return launchers


@pytest.fixture(scope="class")
def warm_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    # Class-scoped: stopped before the next federation starts.
    with running_federation(tmp_path_factory.mktemp("warm"), "--warm") as running:
        yield running


@pytest.fixture(scope="class")
def warm_run(
    warm_federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return run_fedhyper(warm_federation, tmp_path_factory.mktemp("fedhyper-warm") / "run")


class TestWarmLaunchers:
    """The same FedHyper run with a warm launcher per SuperNode instead of a SuperExec."""

    def test_fedhyper_run_completed_on_both_supernodes(
        self, warm_run: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        run, history = warm_run
        assert run["status"] == "finished:completed"
        assert [row["round"] for row in history] == list(range(1, ROUNDS + 1))
        assert all(row["clients"] == len(NODE_ROWS) and row["failures"] == 0 for row in history)

    def test_the_launchers_not_a_superexec_ran_the_client_apps(
        self,
        warm_federation: Federation,
        warm_run: tuple[dict[str, Any], list[dict[str, Any]]],
    ) -> None:
        pids = warm_federation.run_dir / "pids"
        for i in range(len(NODE_ROWS)):
            supernode = int((pids / f"supernode-{i}.pid").read_text())
            assert process_tree([supernode]) == {supernode}  # --isolation process
            log = (warm_federation.run_dir / "logs" / f"warm-{i}.log").read_text()
            assert "Successfully installed fedhyper" in log  # a child unpacked the app

    def test_status_shows_a_live_launcher_per_supernode(
        self, warm_federation: Federation, warm_run: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        launchers = warm_launchers(warm_federation)
        assert sorted(launchers) == [f"warm-{i}" for i in range(len(NODE_ROWS))]
        for pid, line in launchers.values():
            assert pid is not None and alive(pid), line
            assert "restarted 0 times" in line

    def test_a_launcher_without_the_node_secret_is_refused_in_one_line(
        self,
        warm_federation: Federation,
        warm_run: tuple[dict[str, Any], list[dict[str, Any]]],
        tmp_path: Path,
    ) -> None:
        # Only the node's own launcher may take its tasks (and the models in them).
        (tmp_path / "guess").write_bytes(b"not the secret")
        command = [sys.executable, "-m", "clients.warm_launcher", "--insecure"]
        command += ["--runtime-api-address", f"127.0.0.1:{warm_federation.port + 1}"]
        command += ["--superexec-auth-secret-file", str(tmp_path / "guess")]
        result = subprocess.run(
            command,
            cwd=REPO,
            env=warm_federation.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        refusal = [line for line in result.stderr.splitlines() if "refused" in line]
        assert refusal == [
            f"warm launcher: the SuperNode at 127.0.0.1:{warm_federation.port + 1} refused "
            "the launcher (HTTP 401); give both the same --superexec-auth-secret-file"
        ]

    def test_a_killed_launcher_is_restarted(
        self, warm_federation: Federation, warm_run: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        killed, _ = warm_launchers(warm_federation)["warm-0"]
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        log = warm_federation.run_dir / "logs" / "warm-0.log"
        deadline = time.monotonic() + 120
        while log.read_text().count(READY_LINE) < 2:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        pid, line = warm_launchers(warm_federation)["warm-0"]
        assert pid is not None and pid != killed and alive(pid), line
        assert "restarted 1 times" in line
