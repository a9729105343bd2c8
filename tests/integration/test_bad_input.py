"""Every way a user can get the input wrong ends in one clear line, before any training.

One parametrised test, one home: configuration values, Flower run-config strings, the
command line of ``python -m fedhyper``, resume directories, run directories and broken
dataset mirrors. Each case names the setting the message must name and a fragment of
what it must say is allowed. The ``cli`` cases run the real command and also check the
exit status, that stderr is exactly one line, and that no round started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf

from fedhyper.__main__ import check_command_line
from fedhyper.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, Checkpoint, save_checkpoint
from fedhyper.compose import compose_config
from fedhyper.errors import ConfigError, FedHyperError
from fedhyper.preflight import check_data, check_run_dir
from strategies.federation import NodeConfigError
from strategies.server_app import experiment_from_run_config
from tests.support.config import flower_run_config
from tests.support.inprocess import run_in_process
from tests.support.paths import ROOT

MIRROR = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class BadInput:
    """One invalid input and what its error message must say.

    ``kind`` says how the input reaches FedHyper: ``compose`` (Hydra overrides),
    ``run_config`` (a ``flwr run --run-config`` string), ``argv`` (the command line,
    checked in this process), ``cli`` (the command line, in a real ``python -m
    fedhyper`` process), ``data`` (overrides naming a broken mirror, checked as the run
    would before its first round) or ``run_dir`` (a fresh run into an existing run).
    ``{name}`` in ``args`` is replaced by the path of a prepared place; ``key`` is the
    setting the message must name (``None`` when the error is not a ConfigError).
    """

    kind: str
    args: tuple[str, ...]
    key: str | None
    allowed: str


def case(kind: str, args: str | tuple[str, ...], key: str | None, allowed: str) -> BadInput:
    return BadInput(kind, (args,) if isinstance(args, str) else args, key, allowed)


STRATEGIES = "decay_g, decay_sl, fedadagrad"
CASES = {
    # --- configuration values (Hydra overrides and the schema's validation) ---
    "unknown strategy": case("compose", "strategy=nope", "strategy", "fedhyper_gm"),
    "unknown strategy name": case("compose", "strategy.name=nope", "strategy.name", "fedhyper"),
    "unknown dataset": case("compose", "dataset=mnist", "dataset", "cifar10, fashion_mnist"),
    "unknown model": case("compose", "model=vgg", "model", "char_lstm, cifar_cnn, cnn"),
    "model for another dataset": case("compose", "model=char_lstm", "model.name", "cnn"),
    "unknown modality": case(
        "compose", "dataset.modality=audio", "dataset.modality", "image, text"
    ),
    "image shape without channels": case(
        "compose", "dataset.input_shape=[28,28]", "dataset.input_shape", "[channels, height"
    ),
    "normalisation not per channel": case(
        "compose", "dataset.mean=[0.1,0.2]", "dataset.mean", "one number per channel (1)"
    ),
    "dataset without a label column": case(
        "compose", "dataset.label_column=", "dataset.label_column", "the name of a column"
    ),
    "text classes other than its vocabulary": case(
        "compose",
        ("dataset=shakespeare", "partition=iid", "dataset.num_classes=79"),
        "dataset.num_classes",
        "80, the vocabulary's length",
    ),
    "image shape not a list of integers": case(
        "compose", "dataset.input_shape=[1,x,28]", "dataset.input_shape[1]", "type integer"
    ),
    "zero lr": case("compose", "client.lr=0", "client.lr", "a number > 0"),
    "infinite lr": case("compose", "client.lr=inf", "client.lr", "a finite number"),
    "nan lr": case("compose", "client.lr=nan", "client.lr", "a finite number"),
    "infinite method setting": case(
        "compose", "strategy.hyper_lr=-inf", "strategy.hyper_lr", "a finite number"
    ),
    "nan client rule setting": case(
        "compose",
        ("strategy=fedhyper_cl", "client.rule.coupling=nan"),
        "client.rule.coupling",
        "a finite number",
    ),
    "nan in a list": case("compose", "dataset.std=[nan]", "dataset.std", "a finite number"),
    "negative lr": case("compose", "client.lr=-0.1", "client.lr", "a number > 0"),
    "lr not a number": case("compose", "client.lr=fast", "client.lr", "a value of type float"),
    "unknown optimizer": case("compose", "client.optimizer=rmsprop", "client.optimizer", "sgd"),
    "misspelt key": case("compose", "client.lrr=0.1", "client.lrr", "keys of client"),
    "key below a value": case("compose", "num_rounds.x=1", "num_rounds.x", "no keys below"),
    "lr bounds reversed": case(
        "compose", "strategy.global_lr_min=6", "strategy.global_lr_max", ">= strategy."
    ),
    "global lr out of bounds": case("compose", "strategy.global_lr=9", "strategy.global_lr", "5]"),
    "GM start outside its accumulator": case(
        "compose",
        ("strategy=fedhyper_gm", "strategy.acc_min=-0.01", "strategy.global_lr=0.5"),
        "strategy.global_lr",
        "[0.9, 41]",
    ),
    "too many clients a round": case(
        "compose", "strategy.clients_per_round=101", "strategy.clients_per_round", "[1, 100]"
    ),
    "zero alpha": case("compose", "partition.alpha=0", "partition.alpha", "a number > 0"),
    "no natural clients": case("compose", "partition=natural", "partition.kind", "no natural"),
    "zero rounds": case("compose", "num_rounds=0", "num_rounds", ">= 1"),
    "accumulator bounds reversed": case(
        "compose",
        ("strategy=fedhyper_gm", "strategy.acc_min=5"),
        "strategy.acc_max",
        ">= strategy.acc_min",
    ),
    "decay above 1": case(
        "compose", ("strategy=decay_g", "strategy.decay=1.5"), "strategy.decay", "1]"
    ),
    "key of another method": case(
        "compose", "strategy.decay=0.9", "strategy.decay", "keys of GlobalLRParams"
    ),
    "CL without a rule strategy": case(
        "compose", ("strategy=fedavg", "client_rule=hypergradient"), "strategy.name", "fedhyper"
    ),
    "CL method without CL": case(
        "compose", ("strategy=fedhyper_cl", "client_rule=constant"), "client_rule", "hypergradient"
    ),
    "FedHDET linear spread of 1": case(
        "compose", ("strategy=fedhdet", "strategy.spread=1"), "strategy.spread", "[0, 1)"
    ),
    "FedHDET unknown signal": case(
        "compose", ("strategy=fedhdet", "strategy.signal=accuracy"), "strategy.signal", "loss_drop"
    ),
    "FedHDET unknown global rule": case(
        "compose",
        ("strategy=fedhdet", "strategy.global_rule=fedadam"),
        "strategy.global_rule",
        "fedhyper_g",
    ),
    "FedHDET spread weight decay of 0": case(
        "compose",
        ("strategy=fedhdet", "strategy.spread_weight_decay=true"),
        "client.weight_decay",
        "> 0 while strategy.spread_weight_decay",
    ),
    "unknown client rule": case("compose", "client_rule=sometimes", "client_rule", "constant"),
    "client rule setting out of range": case(
        "compose",
        ("strategy=fedhyper_cl", "client.rule.lr_max_factor=0.5"),
        "client.rule.lr_max_factor",
        ">= 1",
    ),
    "evaluation without validation rows": case(
        "compose",
        "dataset.validation_fraction=0",
        "dataset.validation_fraction",
        "evaluate_clients_per_round > 0",
    ),
    "negative checkpoint interval": case(
        "compose", "reliability.checkpoint_every=-1", "reliability.checkpoint_every", ">= 0"
    ),
    "reply fraction above 1": case(
        "compose", "reliability.min_reply_fraction=1.5", "reliability.min_reply_fraction", "1]"
    ),
    "negative retries": case(
        "compose", "reliability.round_retries=-1", "reliability.round_retries", ">= 0"
    ),
    "norm ratio below 1": case(
        "compose",
        "reliability.max_update_norm_ratio=0.5",
        "reliability.max_update_norm_ratio",
        ">= 1",
    ),
    "fault probabilities above 1": case(
        "compose",
        ("faults.crash_probability=0.7", "faults.delay_probability=0.5"),
        "faults.delay_probability",
        "[0, 0.3]",
    ),
    "unknown poison": case("compose", "faults.poison=zero", "faults.poison", "nan, inf, scale"),
    # --- Flower run-config strings (after Flower's own parsing) ---
    "run-config unknown group choice": case(
        "run_config", "strategy='nope'", "strategy", STRATEGIES
    ),
    "run-config unbalanced quote": case(
        "run_config", "overrides='client.lr=0.1 \"oops'", "overrides", "No closing quotation"
    ),
    "run-config override without value": case(
        "run_config", "overrides='num_rounds'", "num_rounds", "key=value"
    ),
    "run-config misspelt key": case(
        "run_config", "overrides='client.lrr=1'", "client.lrr", "keys of client"
    ),
    "run-config infinite lr": case(
        "run_config", "overrides='client.lr=inf'", "client.lr", "a finite number"
    ),
    "run-config overrides not a string": case(
        "run_config", "overrides=5", "overrides", "a string of space-separated"
    ),
    "run-config resume of a missing run": case(
        "run_config", "overrides='resume={missing}'", "resume", "an existing run directory"
    ),
    # --- the command line of python -m fedhyper ---
    "unknown option": case("argv", ("--rounds", "5"), "command line", "Hydra's options"),
    "option with a bad choice": case("argv", ("--cfg", "bogus"), "command line", "invalid choice"),
    "two modes": case("argv", ("--multirun", "--cfg", "job"), "command line", "one of --run"),
    "override that does not parse": case(
        "argv", "num_rounds=(", "command line", "key=value overrides"
    ),
    "argument without =": case("argv", "foo", "command line", "missing EQUAL"),
    "sweep without --multirun": case(
        "argv", "strategy=fedavg,fedhyper_g", "strategy", "one value without --multirun"
    ),
    "bad value in a sweep": case(
        "argv", ("--multirun", "strategy=fedavg,nope"), "strategy", "fedhyper_gm"
    ),
    "resume a missing run": case("argv", "resume={missing}", "resume", "an existing run"),
    "resume a run without checkpoint": case(
        "argv", "resume={no_checkpoint}", "resume", f"holding {CHECKPOINT_FILE}"
    ),
    "resume a corrupt checkpoint": case(
        "argv", "resume={corrupt_checkpoint}", "resume", f"whose {CHECKPOINT_FILE} loads"
    ),
    "resume with another strategy": case(
        "argv", ("resume={run}", "strategy=fedavg"), "strategy", "only num_rounds, logging"
    ),
    "resume with another lr": case(
        "argv", ("resume={run}", "client.lr=0.5"), "client.lr", "only num_rounds"
    ),
    "resume a sweep": case("argv", ("--multirun", "resume={run}"), "resume", "one run"),
    # --- run directories ---
    "fresh run into a resumable run": case(
        "run_dir", "{run}", "logging.output_dir", "continue that run with resume="
    ),
    "fresh run into a resumable run, from the command line": case(
        "argv", "logging.output_dir={run}", "logging.output_dir", "without a previous run's"
    ),
    "output dir below a file": case(
        "argv", "logging.output_dir={a_file}/run", "logging.output_dir", "is not a directory"
    ),
    "output dir not writable": case(
        "run_dir", "/sys/fedhyper-run", "logging.output_dir", "cannot create a directory in /sys"
    ),
    # --- datasets ---
    "missing data dir": case(
        "data", "dataset.data_dir={missing}", "dataset.data_dir", "an existing directory"
    ),
    "mirror file not parquet": case(
        "data", "dataset.data_dir={corrupt_mirror}", "dataset.data_dir", "a readable Parquet"
    ),
    "mirror without label column": case(
        "data", "dataset.data_dir={no_label_mirror}", "dataset.data_dir", "has the columns"
    ),
    "labels outside the classes": case(
        "data", "dataset.data_dir={bad_label_mirror}", "dataset.data_dir", "labels outside 0..9"
    ),
    "unknown partition column": case(
        "data",
        ("dataset=femnist", "partition=natural", "dataset.data_dir={no_writer_mirror}"),
        "partition.kind",
        "natural needs 'writer_id'",
    ),
    "natural clients miscounted": case(
        "data",
        ("dataset=femnist", "partition=natural", "partition.num_clients=100"),
        "partition.num_clients",
        "distinct writer_id values",
    ),
    # --- the real command, end to end ---
    "cli resume with another strategy": case(
        "cli", ("resume={run}", "strategy=fedavg"), "strategy", "only num_rounds"
    ),
    "cli output dir below a file": case(
        "cli", "logging.output_dir={a_file}/run", "logging.output_dir", "create and write"
    ),
    "cli missing mirror file": case(
        "cli", "dataset.data_dir={only_test_mirror}", None, "set FEDHYPER_DATA_DIR or dataset"
    ),
}


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run directories and broken mirrors the cases refer to."""
    root = tmp_path_factory.mktemp("places")
    config = compose_config(["strategy=fedhyper_g", "num_rounds=4"])
    run, no_checkpoint, corrupt = root / "run", root / "no_checkpoint", root / "corrupt"
    for directory in (run, no_checkpoint, corrupt):
        directory.mkdir()
        (directory / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    save_checkpoint(run, Checkpoint(1, {"w": torch.zeros(1)}, {}, {}, [{"round": 1}]))
    (corrupt / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 not really a zip")

    fmnist, femnist = "fashion_mnist", "femnist_leaf_subset"
    test_rows = pq.read_table(MIRROR / fmnist / "test.parquet").slice(0, 50)
    mirrors: dict[str, dict[str, object]] = {
        "corrupt_mirror": {f"{fmnist}/train.parquet": b"not parquet"},
        "no_label_mirror": {f"{fmnist}/train.parquet": test_rows.drop_columns(["label"])},
        "bad_label_mirror": {
            f"{fmnist}/train.parquet": test_rows.set_column(
                1, "label", pc.add(test_rows.column("label"), 90)
            )
        },
        "no_writer_mirror": {
            f"{femnist}/train.parquet": pq.read_table(MIRROR / femnist / "train.parquet")
            .slice(0, 50)
            .drop_columns(["writer_id"])
        },
        "only_test_mirror": {},
    }
    places = {"run": run, "no_checkpoint": no_checkpoint, "corrupt_checkpoint": corrupt}
    for name, files in mirrors.items():
        for folder in (fmnist, femnist):
            (root / name / folder).mkdir(parents=True)
            (root / name / folder / "test.parquet").symlink_to(MIRROR / folder / "test.parquet")
        for relative, content in files.items():
            path = root / name / relative
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                pq.write_table(content, path)  # type: ignore[arg-type]
        places[name] = root / name
    places["missing"] = root / "no_such_directory"
    places["a_file"] = root / "a_file"
    places["a_file"].write_text("in the way of a directory")
    places["cache"] = root / "cache"
    return places


def _trigger(bad: BadInput, places: dict[str, Path]) -> Callable[[], object]:
    args = [arg.format(**places) for arg in bad.args]
    if bad.kind == "compose":
        return lambda: compose_config(args)
    if bad.kind == "run_config":
        return lambda: experiment_from_run_config(flower_run_config(args[0]))
    if bad.kind == "argv":
        return lambda: check_command_line(args)
    if bad.kind == "run_dir":
        return lambda: check_run_dir(compose_config(), Path(args[0]))
    if bad.kind == "data":
        cache = f"dataset.cache_dir={places['cache']}"
        return lambda: check_data(compose_config([*args, cache]), partitions=True)
    raise ValueError(bad.kind)


@pytest.mark.parametrize("bad", CASES.values(), ids=CASES.keys())
def test_bad_input_fails_in_one_clear_line(
    bad: BadInput, places: dict[str, Path], tmp_path: Path
) -> None:
    if bad.kind == "cli":
        message = _run_cli([arg.format(**places) for arg in bad.args], tmp_path)
    else:
        with pytest.raises(FedHyperError) as caught:
            _trigger(bad, places)()
        error = caught.value
        if bad.key is not None:
            assert isinstance(error, ConfigError) and error.key == bad.key, error
        message = str(error)
    assert "\n" not in message
    assert bad.allowed in message, message
    if bad.key is not None:
        assert f"invalid value for {bad.key!r}" in message


def _run_cli(args: list[str], cwd: Path) -> str:
    """Run ``python -m fedhyper`` in ``cwd``; return its single stderr line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fedhyper", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedhyper: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # Nothing trained: no round was configured, no history written.
    assert "configure_train" not in result.stdout + result.stderr
    assert not list(cwd.rglob("history.jsonl"))
    return lines[0]


def test_the_exact_line_for_a_bad_value(tmp_path: Path) -> None:
    assert _run_cli(["partition.alpha=0"], tmp_path) == (
        "fedhyper: invalid value for 'partition.alpha': 0.0 (allowed: a number > 0)"
    )


WITHOUT_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@WITHOUT_CUDA
def test_cuda_on_a_machine_without_it_fails_before_the_simulation(tmp_path: Path) -> None:
    assert _run_cli(["client.device=cuda"], tmp_path) == (
        "fedhyper: invalid value for 'client.device': 'cuda' "
        "(allowed: auto, cpu (no CUDA device is available))"
    )


@WITHOUT_CUDA
def test_a_node_without_cuda_stops_the_run_in_one_line_before_any_round(tmp_path: Path) -> None:
    # The real ClientApp answers the server's first query; the server's exchange stops.
    config = compose_config(
        [
            "client.device=cuda",
            "partition.num_clients=2",
            "strategy.clients_per_round=2",
            "strategy.evaluate_clients_per_round=2",
        ]
    )
    with pytest.raises(NodeConfigError) as caught:
        run_in_process(config, tmp_path / "run")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("SuperNode ") and message.endswith(
        "cannot run this experiment: invalid value for 'client.device': 'cuda' "
        "(allowed: auto, cpu (no CUDA device is available))"
    )
    assert not list(tmp_path.rglob("history.jsonl"))
