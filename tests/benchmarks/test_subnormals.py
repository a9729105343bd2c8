from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from benchmarks.subnormals import block_seconds, main, measure_run
from fedhyper.checkpoint import CONFIG_FILE, Checkpoint, capture_rng, save_checkpoint
from fedhyper.compose import compose_config
from fedhyper.models import build_model
from tests.support.data import needs_mirror


def _subnormals_survive() -> bool:
    return bool((torch.tensor([1e-39]) * 2.0).item() != 0.0)


def test_a_block_leaves_the_model_as_saved_and_subnormals_kept() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(3)]
    assert block_seconds(model, batches, flush=True) > 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert _subnormals_survive()


@needs_mirror
def test_a_run_directory_gives_its_checkpoint_and_a_fresh_model(tmp_path: Path) -> None:
    config = compose_config(
        ["experiment=shakespeare_cpu", "model.hidden_size=8", "dataset.test_examples=64"]
    )
    (tmp_path / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    trained = build_model(config.dataset.spec(), "char_lstm", hidden_size=8)
    save_checkpoint(tmp_path, Checkpoint(7, trained.state_dict(), {}, capture_rng(), []))
    rows = measure_run(tmp_path, steps=2, repeats=1)
    assert [(r["model"], r["round"]) for r in rows] == [("checkpoint", 7), ("fresh", 0)]
    for row in rows:
        assert row["kept_ms"] > 0.0 and row["flushed_ms"] > 0.0
        assert row["speedup"] == row["kept_ms"] / row["flushed_ms"]
    output = tmp_path / "subnormals.json"
    main([str(tmp_path), "--steps", "1", "--repeats", "1", "--output", str(output)])
    written = json.loads(output.read_text())
    assert {"machine", "date", "command"} <= written.keys()
    assert len(written["runs"]) == 2
