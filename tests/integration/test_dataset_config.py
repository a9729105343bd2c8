"""A dataset is configuration: a Parquet folder plus one yaml file, and no code change.

Each test writes a small dataset of its own (images, or text) into ``tmp_path``, with
column names the code has never seen, and a ``dataset/<name>.yaml`` into a separate
config directory, then trains on it through the project's public entry points.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from fedhyper.compose import CONF_DIR, to_experiment
from fedhyper.history import read_history
from fedhyper.preflight import check_data
from strategies.runner import MODEL_FILE
from tests.support.inprocess import run_in_process
from tests.support.paths import ROOT

OWNERS = ("ann", "bob", "cy", "dee")


def write_split(folder: Path, split: str, columns: dict[str, pa.Array]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / f"{split}.parquet")


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder: Path, rows: int, seed: int) -> None:
    """12x12 grey images of 3 classes (a bright band whose row is the class)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, rows)
    pictures = []
    for label in labels:
        pixels = rng.integers(0, 60, (12, 12), dtype=np.uint8)
        pixels[4 * label : 4 * label + 4] += 150
        pictures.append({"bytes": png(pixels), "path": None})
    split = "train" if seed == 0 else "test"
    write_split(
        folder,
        split,
        {
            "picture": pa.array(
                pictures, pa.struct([("bytes", pa.binary()), ("path", pa.string())])
            ),
            "target": pa.array(labels, pa.int64()),
            "owner": pa.array([OWNERS[i % 4] for i in range(rows)]),
        },
    )


def write_text(folder: Path, text: str) -> None:
    """Windows of 12 characters, each labelled with the character after it."""
    for split, part in (("train", text), ("test", text[::-1])):
        starts = range(len(part) - 12)
        write_split(
            folder,
            split,
            {
                "context": pa.array([part[i : i + 12] for i in starts]),
                "next": pa.array([part[i + 12] for i in starts]),
                "speaker": pa.array([OWNERS[i % 4] for i in starts]),
            },
        )


def write_yaml(conf_dir: Path, name: str, body: str) -> None:
    (conf_dir / "dataset").mkdir(parents=True, exist_ok=True)
    (conf_dir / "dataset" / f"{name}.yaml").write_text(textwrap.dedent(body))


SMALL = (
    "partition=natural",
    f"partition.num_clients={len(OWNERS)}",
    "strategy=fedavg",
    "strategy.clients_per_round=2",
    "strategy.evaluate_clients_per_round=2",
    "num_rounds=2",
    "client.max_steps=3",
    "logging.progress=false",
)


def test_an_image_dataset_in_a_yaml_trains_from_the_command_line(tmp_path: Path) -> None:
    data, conf, run_dir = tmp_path / "data", tmp_path / "conf", tmp_path / "run"
    write_images(data / "bands", rows=160, seed=0)
    write_images(data / "bands", rows=60, seed=1)
    write_yaml(
        conf,
        "bands",
        """\
        name: bands
        modality: image
        input_column: picture
        label_column: target
        natural_id_column: owner
        num_classes: 3
        input_shape: [1, 12, 12]
        mean: [0.3]
        std: [0.3]
        """,
    )
    overrides = [
        "dataset=bands",
        f"dataset.data_dir={data}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        *SMALL,
        f"logging.output_dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fedhyper", "--config-dir", str(conf), *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_history(run_dir)
    assert [row["round"] for row in history] == [1, 2]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in history)
    # model=auto chose the grey-scale CNN and sized it by the yaml: 3 classes, 12 // 4 = 3.
    state = torch.load(run_dir / MODEL_FILE)
    assert state["features.0.weight"].shape == (16, 1, 5, 5)
    assert state["classifier.weight"].shape == (3, 32 * 3 * 3)


def test_a_text_dataset_in_a_yaml_trains_in_a_federation(tmp_path: Path) -> None:
    data, conf = tmp_path / "data", tmp_path / "conf"
    write_text(data / "plays", "to be or not to be, that is the question. " * 8)
    # "z" stands for every character outside the vocabulary (here "," and ".").
    write_yaml(
        conf,
        "plays",
        """\
        name: plays
        folder: plays
        modality: text
        input_column: context
        label_column: next
        natural_id_column: speaker
        num_classes: 15
        input_shape: [12]
        vocabulary: " abehinoqrstuwz"
        """,
    )
    overrides = [
        f"hydra.searchpath=[file://{conf}]",
        "dataset=plays",
        f"dataset.data_dir={data}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "model.hidden_size=16",
        *SMALL,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        config = to_experiment(compose(config_name="config", overrides=overrides))
    check_data(config, partitions=True)
    summary = run_in_process(config, tmp_path / "run")
    history = read_history(tmp_path / "run")
    assert [row["round"] for row in history] == [1, 2]
    assert summary.final_accuracy == history[-1]["accuracy"]
    # model=auto chose the character LSTM over the yaml's 15-character vocabulary.
    state = torch.load(tmp_path / "run" / MODEL_FILE)
    assert state["embedding.weight"].shape == (15, 8)
    assert state["head.weight"].shape == (15, 16)
