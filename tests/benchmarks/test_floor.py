from benchmarks.floor import floor
from fedhyper.compose import compose_config

SMALL = [
    "partition=iid",
    "partition.num_clients=10",
    "strategy=fedavg",
    "strategy.clients_per_round=4",
    "client.max_steps=2",
    "dataset.test_examples=100",
    "num_rounds=2",
]


def test_the_parallel_floor_does_the_sequential_floors_work() -> None:
    config = compose_config(SMALL)
    sequential, parallel = floor(config, workers=1), floor(config, workers=2)
    assert (sequential["workers"], parallel["workers"]) == (1, 2)
    # The same clients train the same way, in whichever process: the same model.
    assert parallel["accuracy"] == sequential["accuracy"]
    for result in (sequential, parallel):
        assert len(result["round_s"]) == len(result["train_s"]) == 2
        assert all(t > 0 for t in result["train_s"])
        # Training, the server step and evaluation happen within the round.
        rounds = zip(
            result["round_s"], result["train_s"], result["server_s"], result["eval_s"], strict=True
        )
        for round_s, train_s, server_s, eval_s in rounds:
            assert train_s / result["workers"] + server_s + eval_s <= round_s
