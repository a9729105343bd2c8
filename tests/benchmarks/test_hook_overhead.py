"""The loss guard's cost measurement of ``benchmarks.hook_overhead`` on a real preset."""

from __future__ import annotations

import pytest

from benchmarks.hook_overhead import guard_cost, tables


def test_guard_cost_times_the_probes_against_a_round_of_training() -> None:
    row = guard_cost("fashion_mnist_cpu", clients=2, repeats=1)
    assert (row["preset"], row["clients"], row["probe_examples"]) == ("fashion_mnist_cpu", 2, 32)
    assert row["train_s"] > 0.0 and row["probe_s"] > 0.0
    # Two forward passes of 32 rows cost far less than a round over a client's rows.
    assert row["probe_fraction"] == pytest.approx(row["probe_s"] / row["train_s"], abs=1e-3)
    assert row["probe_fraction"] < 0.5
    # The global guard's probe is one more forward pass, on the model moved back.
    assert row["previous_probe_s"] > 0.0 and row["previous_probe_fraction"] < 0.5
    assert "| fashion_mnist_cpu (2 clients) | 32 |" in tables([], [], [row])
