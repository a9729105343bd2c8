"""Summary rows and tables of the benchmark suites, from hand-made runs."""

from __future__ import annotations

from typing import Any

from benchmarks.tables import (
    compare_summary_row,
    compare_table,
    robustness_summary_rows,
    robustness_table,
)


def _run(strategy: str, accuracy: list[float], seed: int = 0, **cell: float) -> dict[str, Any]:
    target = 0.5
    return {
        "strategy": strategy,
        "seed": seed,
        "global_lr": cell.get("global_lr", 1.0),
        "local_lr": cell.get("local_lr", 0.01),
        "accuracy": accuracy,
        "final_accuracy": accuracy[-1],
        "best_accuracy": max(accuracy),
        "rounds_to_target": next((i + 1 for i, a in enumerate(accuracy) if a >= target), None),
        "wall_s": 1.0,
    }


PROVENANCE = {
    "profile": "cpu",
    "date": "2026-01-01T00:00:00",
    "suite_wall_s": 120.0,
    "dataset": "toy",
    "setup": {"target_accuracy": 0.5, "optimizer": "sgd"},
}


TOY_COMPARE = {
    **PROVENANCE,
    "suite": "compare",
    "runs": [
        _run(name, curve, seed)
        for name, curves in (
            # final accuracies 0.7 and 0.6: the target is 0.65; rounds 4 and 5
            ("fedavg", ([0.2, 0.4, 0.6, 0.7, 0.8], [0.3, 0.5, 0.5, 0.6, 0.7])),
            # rounds 2 and 3, final 0.7: the fastest baseline
            ("fedavgm", ([0.3, 0.7, 0.7, 0.7, 0.7], [0.3, 0.4, 0.7, 0.7, 0.7])),
            # seed 1 never reaches 0.65; finals 0.9 and 0.5333: the most accurate baseline
            ("fedyogi", ([0.2, 0.3, 0.9, 0.9, 0.9], [0.2, 0.3, 0.4, 0.6, 0.6])),
            # rounds 2 and 3 like FedAvgM; finals 0.7 and 0.7
            ("fedhyper_gm", ([0.3, 0.7, 0.7, 0.7, 0.7], [0.3, 0.4, 0.7, 0.7, 0.7])),
            # rounds 2 and 3 too, a tie broken by its higher finals, 0.8 and 0.7667
            ("fedhyper", ([0.2, 0.7, 0.8, 0.8, 0.8], [0.2, 0.3, 0.7, 0.8, 0.8])),
        )
        for seed, curve in enumerate(curves)
    ],
}


def test_compare_summary_row_is_the_hand_computed_headline() -> None:
    cells = [c.strip() for c in compare_summary_row(TOY_COMPARE).strip("|").split("|")]
    assert cells == [
        "toy",
        "cpu",
        "sgd, LR 0.01",
        "2",
        "0.650 ± 0.050",
        "4.5",
        "`fedhyper`",
        "1.80x (2.5 vs 4.5)",
        "1.00x (2.5 vs 2.5), `fedavgm`",
        "0.783 ± 0.017",
        "0.783 ± 0.017 `fedhyper`",
        "0.717 ± 0.183 `fedyogi`",
        "2 min",
        "2026-01-01",
    ]


def test_compare_table_shows_a_missed_seed_and_the_absolute_target() -> None:
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in compare_table(TOY_COMPARE).splitlines()
        if line.startswith("| fed")
    }
    # final ± std | rounds to 0.65 | speed-up | best accuracy | rounds to 50% (secondary)
    assert rows["fedyogi"][2:7] == ["0.7167 ± 0.1833", "missed 1/2", "—", "0.7500", "3.5"]
    assert rows["fedavg"][2:7] == ["0.6500 ± 0.0500", "4.5", "1.00x", "0.7500", "2.5"]
    assert rows["fedavgm"][3:5] == ["2.5", "1.80x"]


CELLS = ((0.5, 0.01), (2.0, 0.01), (0.5, 0.1), (2.0, 0.1))


"""(alpha_0, eta_0) of a 2 x 2 robustness grid, row-major."""


def test_robustness_summary_rows_are_the_hand_computed_regrets() -> None:
    robustness = {
        **PROVENANCE,
        "suite": "robustness",
        "runs": [
            _run(arm, curve, global_lr=g, local_lr=lr)
            for arm, curves in (
                # finals (last 3 rounds) 0.2, 0.4, 0.7, 0.8: tuned FedAvg is 0.8 at (2, 0.1)
                ("fedavg", ([0.1, 0.2, 0.3], [0.4] * 3, [0.9, 0.6, 0.6], [0.8] * 3)),
                # finals 0.79, 0.8, 0.7, 0.7: regrets 1 (within), 0, 10, 10 (a tie)
                ("fedhyper", ([0.79] * 3, [0.8] * 3, [0.7] * 3, [0.7] * 3)),
            )
            for (g, lr), curve in zip(CELLS, curves, strict=True)
        ],
    }
    rows = [
        [c.strip() for c in row.strip("|").split("|")]
        for row in robustness_summary_rows(robustness)
    ]
    tuned = "0.800 (α_0 = 2, η_0 = 0.1)"
    assert [row[:4] for row in rows] == [
        ["toy", "cpu", "sgd", "`fedavg`"],
        ["toy", "cpu", "sgd", "`fedhyper`"],
    ]
    # FedAvg's own regrets: 60, 40, 10, 0
    assert rows[0][4:] == [
        tuned,
        "60.0 (α_0 = 0.5, η_0 = 0.01)",
        "25.0",
        "1/4",
        "2 min",
        "2026-01-01",
    ]
    assert rows[1][4:8] == [tuned, "10.0 (α_0 = 0.5, η_0 = 0.1)", "5.5", "2/4"]


def test_robustness_table_gives_a_seeded_cell_its_spread_and_count() -> None:
    tuning = {
        **PROVENANCE,
        "suite": "tuning",
        "runs": [
            # finals 0.2 and 0.4 at eta_0 = 0.01: mean 0.3, population std 0.1, two seeds
            _run("fedavg", [0.2] * 3, seed=0),
            _run("fedavg", [0.4] * 3, seed=1),
            # one seed at eta_0 = 0.1: its final alone
            _run("fedavg", [0.5] * 3, local_lr=0.1),
        ],
    }
    rows = robustness_table(tuning).splitlines()
    assert "| 0.01 | 0.3000 ± 0.1000 (2) |" in rows
    assert "| 0.1 | 0.5000 |" in rows
