"""Checkpoints of a run, and the configuration of a resumed run.

A checkpoint holds everything the rounds after it depend on: the global model, the
strategy's full state (learning rates, accumulators, Δ_{t−1}, momentum, server-optimiser
moments), what each client's rule kept after its last training (FedHyper-CL's carried
multiplier, ``client.rule.carry``), the random generators of the server process, the
round number and the history so far. It is written atomically (:mod:`fedhyper.atomic`),
so a run killed at any instant leaves the last complete checkpoint loadable, and it is
read with ``torch.load(weights_only=True)``: loading a checkpoint never executes code.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedhyper.atomic import atomic_write, remove_stale_temporaries
from fedhyper.compose import to_experiment
from fedhyper.config import ExperimentConfig
from fedhyper.errors import ConfigError, FedHyperError, one_line
from fedhyper.validation import validate

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "RESUMABLE_SETTINGS",
    "Checkpoint",
    "capture_rng",
    "load_checkpoint",
    "restore_rng",
    "resume_experiment",
    "save_checkpoint",
    "saved_experiment",
]

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
FORMAT_VERSION = 1
"""Bumped whenever the checkpoint's layout changes; older files are refused clearly."""

RESUMABLE_SETTINGS = ("num_rounds", "logging", "simulation", "reliability")
"""Top-level settings a resumed run may change; the others define the experiment."""


@dataclass
class Checkpoint:
    """The state of a run after a round.

    Attributes
    ----------
    server_round : int
        The last completed round.
    arrays : dict of str to Tensor
        The global model's state dict after that round.
    strategy : dict
        The strategy's ``state_dict()``: tensors, lists of tensors, numbers, ``None``.
    rng : dict
        The server process's random generators (:func:`capture_rng`).
    history : list of dict
        The history rows of rounds 1 to ``server_round``.
    client_rule_states : dict of int to dict of str to float, or None
        By client id, what the client's rule kept after its last training (empty for
        a rule that keeps nothing); ``None`` in a checkpoint written before they were
        saved.

    """

    server_round: int
    arrays: dict[str, torch.Tensor]
    strategy: dict[str, Any]
    rng: dict[str, Any]
    history: list[dict[str, Any]]
    client_rule_states: dict[int, dict[str, float]] | None = field(default_factory=dict)


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint.pt`` into ``run_dir`` atomically, replacing the previous one.

    Parameters
    ----------
    run_dir : Path
        The run's directory.
    checkpoint : Checkpoint
        The state to save.

    Returns
    -------
    Path
        The checkpoint file.

    """
    path = run_dir / CHECKPOINT_FILE
    # A run killed while writing leaves its temporary file; the next write clears it.
    remove_stale_temporaries(path)
    payload = {
        "format": FORMAT_VERSION,
        "server_round": checkpoint.server_round,
        "arrays": checkpoint.arrays,
        "strategy": checkpoint.strategy,
        "rng": checkpoint.rng,
        "history": checkpoint.history,
        "client_rule_states": checkpoint.client_rule_states,
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))
    return path


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read the checkpoint of a run directory.

    Parameters
    ----------
    run_dir : Path
        A run directory holding ``checkpoint.pt``.

    Returns
    -------
    Checkpoint
        The saved state.

    Raises
    ------
    ConfigError
        Under the key ``resume`` if the file is missing, unreadable or of another format.

    """
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(
            "resume",
            str(run_dir),
            f"a run directory holding {CHECKPOINT_FILE} "
            "(written after each round unless reliability.checkpoint_every=0)",
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    # A damaged file can fail in the zip reader, the unpickler or torch's storage code.
    except Exception as error:
        raise ConfigError(
            "resume",
            str(run_dir),
            f"a run directory whose {CHECKPOINT_FILE} loads ({one_line(error)})",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError(
            "resume",
            str(run_dir),
            f"a checkpoint of format {FORMAT_VERSION} (this one has format {found!r})",
        )
    return Checkpoint(
        server_round=int(payload["server_round"]),
        arrays=payload["arrays"],
        strategy=payload["strategy"],
        rng=payload["rng"],
        history=list(payload["history"]),
        client_rule_states=payload.get("client_rule_states"),
    )


def capture_rng() -> dict[str, Any]:
    """Return the states of Python's, NumPy's and PyTorch's (CPU) global generators.

    The NumPy key array is stored as a tensor so that the checkpoint loads with
    ``weights_only=True``.
    """
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global generators to a state from :func:`capture_rng`."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])


def saved_experiment(run_dir: Path) -> ExperimentConfig:
    """Read the experiment a run directory was created with (its ``config.yaml``).

    Raises
    ------
    ConfigError
        Under the key ``resume`` if the directory or its configuration is unusable.

    """
    if not run_dir.is_dir():
        raise ConfigError("resume", str(run_dir), "an existing run directory")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError("resume", str(run_dir), f"a run directory holding {CONFIG_FILE}")
    try:
        saved = OmegaConf.load(path)
        if not isinstance(saved, DictConfig):
            raise ValueError(f"{CONFIG_FILE} is a list, not a mapping")
        return to_experiment(saved)
    except (OmegaConfBaseException, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(
            "resume", str(run_dir), f"a run directory whose {CONFIG_FILE} is valid ({reason})"
        ) from None
    except FedHyperError as error:
        raise ConfigError(
            "resume", str(run_dir), f"a run directory whose {CONFIG_FILE} is valid ({error})"
        ) from None


def resume_experiment(requested: ExperimentConfig, changed: Iterable[str]) -> ExperimentConfig:
    """Return the experiment of a resumed run: the saved one, plus the allowed changes.

    Parameters
    ----------
    requested : ExperimentConfig
        The configuration the user composed; ``requested.resume`` names the run.
    changed : iterable of str
        The settings the user set explicitly, as override keys (``num_rounds``,
        ``logging.progress``, ``simulation``); ``resume`` and ``hydra.*`` are skipped.
        Their values are taken from ``requested``.

    Returns
    -------
    ExperimentConfig
        The saved experiment with those settings changed and ``resume`` set.

    Raises
    ------
    ConfigError
        If the run directory is unusable or a setting outside
        :data:`RESUMABLE_SETTINGS` is changed.

    """
    if requested.resume is None:
        raise ValueError("resume_experiment needs a configuration with resume set")
    run_dir = Path(requested.resume)
    experiment = saved_experiment(run_dir)
    for key in changed:
        *parents, leaf = key.lstrip("+~").split(".")
        top = parents[0] if parents else leaf
        if top in ("resume", "hydra"):
            continue
        if top not in RESUMABLE_SETTINGS:
            raise ConfigError(
                key,
                "changed on resume",
                f"only {', '.join(RESUMABLE_SETTINGS)} may change when resuming; "
                f"the rest is fixed by {run_dir / CONFIG_FILE}",
            )
        source: Any = requested
        target: Any = experiment
        for part in parents:
            source, target = getattr(source, part), getattr(target, part)
        setattr(target, leaf, copy.deepcopy(getattr(source, leaf)))
    experiment = replace(experiment, resume=str(run_dir))
    validate(experiment)
    return experiment
