"""Clients multiplexed over nodes: results depend on the clients, not on the nodes."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedhyper.history import read_history
from strategies.federation import discover_clients
from strategies.multiplex import Multiplexer
from tests.support.inprocess import InProcessGrid, comparable, run_in_process
from tests.support.runs import config, same_weights

# Real training with FedHyper (GM on the server, CL on the clients) and CL's state
# carried between a client's rounds, so that each client's rule state must follow it
# from node to node; crash and delay faults are drawn per client.
INVARIANT = (
    "strategy=fedhyper",
    "client.rule.carry=true",
    "strategy.clients_per_round=6",
    "strategy.evaluate_clients_per_round=3",
    "num_rounds=2",
    "faults.crash_probability=0.15",
    "faults.delay_probability=0.15",
    "reliability.min_reply_fraction=0.3",
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Every client trains in this process: one thread, as one simulated worker has.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_history_is_the_same_on_2_10_and_100_nodes(tmp_path: Path) -> None:
    runs = {nodes: tmp_path / str(nodes) for nodes in (2, 10, 100)}
    for nodes, run_dir in runs.items():
        run_in_process(config(*INVARIANT), run_dir, num_nodes=nodes)
    history = read_history(runs[2])
    for run_dir in (runs[10], runs[100]):
        assert comparable(read_history(run_dir)) == comparable(history)
        assert same_weights(runs[2], run_dir)
    # The faults did strike, and the clients' rule state was carried.
    assert sum(row["failures"] for row in history) > 0
    assert sum(row["timeouts"] for row in history) > 0


def test_each_node_gets_one_message_with_its_share_of_the_clients() -> None:
    cfg = config("strategy.clients_per_round=7")
    grid = InProcessGrid(3)
    multiplexer = Multiplexer(grid, discover_clients(grid, cfg), cfg.simulation)
    multiplexer.steps = {0: 10, 1: 10, 2: 10, 3: 1, 4: 1, 5: 30}
    # Client 6 has no steps yet: the others' mean, 62/6 = 10.3. Largest first to the
    # lightest node: 5 (30) -> a; 6 (10.3) -> b; 0 (10) -> c; 1 -> c (10 < 10.3);
    # 2 -> b (10.3 < 20); 3 (1) -> c (20 < 20.3); 4 -> b (20.3 < 21).
    assigned = multiplexer._assign([0, 1, 2, 3, 4, 5, 6])
    assert sorted(assigned.values()) == [[0, 1, 3], [2, 4, 6], [5]]
