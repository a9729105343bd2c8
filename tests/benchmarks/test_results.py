"""The committed benchmark results: their schema, and tables reproduced from the JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import index
from benchmarks.tables import (
    RESULTS_DIR,
    SUITE_NAMES,
    result_files,
    table,
)

RESULT_FILES = result_files()


TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "suite": str,
    "dataset": str,
    "profile": str,
    "command": str,
    "machine": str,
    "date": str,
    "runs": list,
}


RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "strategy": str,
    "seed": int,
    "global_lr": (int, float),
    "local_lr": (int, float),
    "accuracy": list,
    "final_accuracy": (int, float),
    "best_accuracy": (int, float),
    "rounds_to_target": (int, type(None)),
    "wall_s": (int, float),
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_there_are_result_files() -> None:
    assert RESULT_FILES, "no benchmarks/results/<suite>_<dataset>.json committed"


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_result_file_schema(path: Path) -> None:
    data = _load(path)
    for key, kind in TOP_LEVEL.items():
        assert isinstance(data.get(key), kind), f"{path.name}: top-level {key!r}"
    assert data["suite"] in SUITE_NAMES
    assert path.stem.startswith(f"{data['suite']}_{data['dataset']}")
    assert data["command"].startswith("python -m benchmarks.suite ")
    assert data["runs"], f"{path.name}: no runs"
    target = data["setup"]["target_accuracy"]
    for run in data["runs"]:
        for key, kind in RUN_FIELDS.items():
            assert isinstance(run.get(key), kind), f"{path.name}: run field {key!r}"
        accuracy = run["accuracy"]
        assert accuracy and all(0.0 <= a <= 1.0 for a in accuracy)
        assert run["final_accuracy"] == accuracy[-1]
        assert run["best_accuracy"] == max(accuracy)
        # rounds-to-target is the first 1-based round at or above the target
        expected = next((i + 1 for i, a in enumerate(accuracy) if a >= target), None)
        assert run["rounds_to_target"] == expected


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_committed_table_is_reproduced_from_the_json(path: Path) -> None:
    committed = path.with_suffix(".md").read_text(encoding="utf-8")
    assert table(_load(path)) == committed


def test_committed_index_is_reproduced_from_the_json() -> None:
    committed = (RESULTS_DIR / "README.md").read_text(encoding="utf-8")
    assert index(RESULT_FILES) == committed
