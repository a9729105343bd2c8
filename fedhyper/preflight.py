"""Checks that run before the first round, so that a bad setup fails in one clear line.

Without them a missing or damaged dataset surfaces only when the first client loads its
data, inside a simulation worker, as a traceback per client; and a run pointed at an
old run's directory would mix two histories.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.exceptions import DatasetsError

from fedhyper.checkpoint import CHECKPOINT_FILE
from fedhyper.config import ExperimentConfig
from fedhyper.data.federated import test_data
from fedhyper.data.source import mirror_file, resolve_data_dir
from fedhyper.errors import ConfigError, one_line
from fedhyper.training import pick_device
from fedhyper.wire import ClientTask

__all__ = ["check_data", "check_device", "check_run_dir"]

_SPLITS = ("train", "test")

# What reading a damaged or foreign file raises in pyarrow, datasets and the decoders.
_DATA_ERRORS = (OSError, ValueError, KeyError, pa.ArrowException, DatasetsError)


def check_run_dir(config: ExperimentConfig, run_dir: Path) -> None:
    """Refuse a run directory that cannot be written, or that holds a resumable run.

    Raises
    ------
    ConfigError
        Under ``logging.output_dir`` if ``run_dir`` cannot be created or written, or
        holds a checkpoint while ``config.resume`` is unset.

    """
    _check_writable("logging.output_dir", run_dir)
    if config.resume is None and (run_dir / CHECKPOINT_FILE).exists():
        raise ConfigError(
            "logging.output_dir",
            str(run_dir),
            f"a directory without a previous run's {CHECKPOINT_FILE} "
            f"(continue that run with resume={run_dir})",
        )


def _check_writable(key: str, directory: Path) -> None:
    """Require ``directory`` to be a directory this process can write, or can create."""
    # The nearest existing ancestor decides: creating the directory writes there. A probe
    # directory tells what os.access cannot (read-only mounts, /proc and /sys as root).
    existing = directory.expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = f"{existing} is not a directory"
    else:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".fedhyper-probe-", dir=existing))
            return
        except OSError as error:
            reason = f"cannot create a directory in {existing}: {error.strerror}"
    raise ConfigError(key, str(directory), f"a directory this user can create and write ({reason})")


def check_device(config: ExperimentConfig) -> None:
    """Refuse ``client.device=cuda`` on a machine without CUDA, before a simulation.

    Simulated clients run on this machine; a deployed SuperNode checks its own device
    when the server first asks it which partition it serves.

    Raises
    ------
    ConfigError
        Under ``client.device`` if it is ``cuda`` and no CUDA device is available.

    """
    pick_device(config.client.device)


def check_data(config: ExperimentConfig, *, partitions: bool) -> None:
    """Load what the run will load, once, and turn every data problem into a ConfigError.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment.
    partitions : bool
        Also partition the train split and load client 0's data, as every simulated
        client will (the server of a deployment may not hold the train split).

    Raises
    ------
    ConfigError
        For a missing data directory, a mirror file that is not Parquet, lacks a column
        the dataset or partitioner needs, or does not decode, and for partition settings
        the data contradicts.
    DatasetUnavailableError
        If a split is neither in the mirror nor on the hub.

    """
    dataset, partition = config.dataset, config.partition
    spec = dataset.spec()
    if dataset.data_dir is not None and not Path(dataset.data_dir).expanduser().is_dir():
        raise ConfigError(
            "dataset.data_dir",
            dataset.data_dir,
            f"an existing directory holding {spec.folder or spec.name}/train.parquet and "
            "test.parquet",
        )
    for split in _SPLITS if partitions else ("test",):
        path = mirror_file(spec, split, dataset.data_dir)
        if path is None:
            continue  # the hub is tried next; its failure is a DatasetUnavailableError
        try:
            columns = pq.read_schema(path).names
        except _DATA_ERRORS as error:
            raise ConfigError(
                "dataset.data_dir",
                str(path.parent.parent),
                f"a readable Parquet file at {path} ({one_line(error)})",
            ) from None
        needed = [spec.input_column, spec.label_column]
        missing = [column for column in needed if column not in columns]
        if missing:
            raise ConfigError(
                "dataset.data_dir",
                str(path.parent.parent),
                f"a mirror whose {path.name} has the columns {needed} (it has {columns})",
            )
        if (
            split == "train"
            and partition.kind == "natural"
            and spec.natural_id_column not in columns
        ):
            raise ConfigError(
                "partition.kind",
                partition.kind,
                f"a partition by a column of {path}: natural needs "
                f"{spec.natural_id_column!r}, the file has {columns}",
            )
    # Decoding progress bars would print lines before the one an error must be.
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        test_data(dataset)
        if partitions:
            ClientTask.from_experiment(config).partition(0)
    except _DATA_ERRORS as error:
        root = resolve_data_dir(dataset.data_dir)
        raise ConfigError(
            "dataset.data_dir", str(root), f"data that loads and decodes ({one_line(error)})"
        ) from None
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
