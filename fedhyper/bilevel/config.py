"""FedMAID's settings: a typed schema, ``conf/fedmaid.yaml``, and ``key=value`` overrides.

``python -m fedhyper.bilevel task.num_clients=5 maid.schedule=geometric`` composes
the schema's defaults, the yaml and the overrides (OmegaConf, the library under the
project's Hydra configuration), and checks every value before any data is loaded: a
bad one ends in one :class:`~fedhyper.errors.ConfigError` naming its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, is_dataclass
from typing import Any, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedhyper.bilevel.logistic import PROBLEM_SOLVER_KINDS
from fedhyper.bilevel.maid import MAIDConfig
from fedhyper.checks import at_least, one_of, positive
from fedhyper.compose import CONF_DIR
from fedhyper.config import SimulationConfig
from fedhyper.errors import ConfigError
from fedhyper.validation import BACKENDS

CONFIG_FILE = CONF_DIR / "fedmaid.yaml"
"""The yaml composed over the schema's defaults."""


@dataclass
class TaskConfig:
    """The 12x12 Fashion-MNIST task (:func:`~fedhyper.bilevel.fashion12.load_fashion12`).

    Attributes
    ----------
    train_examples : int
        Training rows, split over the clients (the lower level).
    validation_examples : int
        Validation rows, held by the server (the upper level).
    test_examples : int
        Test rows for reporting (the first ones); 0 keeps all.
    num_clients : int
        Clients (SuperNodes) of the Dirichlet split.
    alpha : float
        Dirichlet concentration; smaller is more skewed.
    seed : int
        Seed of the shuffle and of the split.
    data_dir, cache_dir : str or None
        See :func:`fedhyper.data.load_tensors`.

    """

    train_examples: int = 2000
    validation_examples: int = 1000
    test_examples: int = 0
    num_clients: int = 10
    alpha: float = 0.5
    seed: int = 0
    data_dir: str | None = None
    cache_dir: str | None = None


@dataclass
class LowerLevelConfig:
    """How the clients solve the lower level (full participation).

    Attributes
    ----------
    solver : str
        ``gradient`` or ``accelerated`` (federated gradient steps, plain or with
        Nesterov momentum on the server: exactly the centralised method), or
        ``fedavg`` (rounds of ``local_steps`` local steps, certified by the gradient
        the same round returns).
    local_steps : int
        Local steps per ``fedavg`` round.
    max_rounds : int
        Cap on rounds per lower-level solve.

    """

    solver: str = "accelerated"
    local_steps: int = 5
    max_rounds: int = 10_000


@dataclass
class FedMAIDConfig:
    """A FedMAID run.

    Attributes
    ----------
    task : TaskConfig
        The data.
    lower : LowerLevelConfig
        The lower-level solver.
    maid : MAIDConfig
        MAID's constants and accuracy schedule (``adaptive`` is MAID).
    theta0 : float
        Initial log-L2 weight of every entry.
    max_steps : int
        Outer steps in all (a resumed run continues up to it).
    max_rounds : int
        Stop after the outer step that reaches this many communication rounds in all;
        0 for no cap.
    simulation : SimulationConfig
        Flower's simulation engine and the timeouts.
    output_dir : str or None
        Run directory; ``None`` for ``outputs/fedmaid/<date>/<time>``.
    resume : str or None
        A run directory to continue from its checkpoint; its ``config.yaml`` is the
        run's, except ``max_steps``, ``max_rounds`` and ``simulation``.

    """

    task: TaskConfig = field(default_factory=TaskConfig)
    lower: LowerLevelConfig = field(default_factory=LowerLevelConfig)
    maid: MAIDConfig = field(default_factory=MAIDConfig)
    theta0: float = -3.0
    max_steps: int = 20
    max_rounds: int = 0
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    output_dir: str | None = None
    resume: str | None = None


RESUMABLE_SETTINGS = ("max_steps", "max_rounds", "simulation", "output_dir", "resume")
"""Settings a resumed run may change; the others define the run."""


def compose_fedmaid(overrides: Sequence[str] = (), base: DictConfig | None = None) -> FedMAIDConfig:
    """Compose the schema, ``conf/fedmaid.yaml`` (or ``base``) and ``key=value`` overrides.

    Parameters
    ----------
    overrides : sequence of str
        ``key=value`` pairs, e.g. ``["task.num_clients=5", "maid.schedule=geometric"]``.
    base : DictConfig, optional
        Settings to start from instead of the yaml (a resumed run's saved ones).

    Returns
    -------
    FedMAIDConfig
        The typed, validated run.

    Raises
    ------
    ConfigError
        For an override that is not ``key=value``, an unknown key, a value of the
        wrong type or out of its range.

    """
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key:
            raise ConfigError(override, None, "key=value")
        _check_key(key, override.partition("=")[2])
    try:
        schema = OmegaConf.structured(FedMAIDConfig)
        # MAIDConfig is frozen, which OmegaConf turns into a read-only node.
        OmegaConf.set_readonly(schema.maid, False)
        loaded = OmegaConf.load(CONFIG_FILE) if base is None else base
        merged = OmegaConf.merge(schema, loaded, OmegaConf.from_dotlist(list(overrides)))
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        first = str(error).strip().splitlines()[0]
        expected = first.split(" could not be converted to ")[-1].rstrip(".").lower()
        raise ConfigError(str(error.full_key), error.value, f"a value of type {expected}") from None
    assert isinstance(config, FedMAIDConfig)
    validate_fedmaid(config)
    return config


def _check_key(key: str, value: str) -> None:
    node: Any = FedMAIDConfig
    for depth, part in enumerate(key.split(".")):
        parent = ".".join(key.split(".")[:depth]) or "the top level"
        if not is_dataclass(node):
            raise ConfigError(key, value, f"no keys below '{parent}', which is a value")
        hints = get_type_hints(node)
        if part not in hints:
            raise ConfigError(key, value, f"keys of {parent}: {', '.join(hints)}")
        node = hints[part]


def validate_fedmaid(config: FedMAIDConfig) -> None:
    """Check every setting of a run (MAID's own constants check themselves).

    Raises
    ------
    ConfigError
        On the first invalid setting, naming its key and the allowed values.

    """
    task, lower, simulation = config.task, config.lower, config.simulation
    for name in ("train_examples", "validation_examples", "num_clients"):
        at_least(f"task.{name}", getattr(task, name), 1)
    at_least("task.test_examples", task.test_examples, 0)
    positive("task.alpha", task.alpha)
    one_of("lower.solver", lower.solver, PROBLEM_SOLVER_KINDS)
    at_least("lower.local_steps", lower.local_steps, 1)
    at_least("lower.max_rounds", lower.max_rounds, 1)
    at_least("max_steps", config.max_steps, 1)
    at_least("max_rounds", config.max_rounds, 0)
    one_of("simulation.backend", simulation.backend, BACKENDS)
    positive("simulation.num_cpus_per_client", simulation.num_cpus_per_client)
    at_least("simulation.num_gpus_per_client", simulation.num_gpus_per_client, 0.0)
    positive("simulation.round_timeout_s", simulation.round_timeout_s)
    at_least("simulation.node_wait_s", simulation.node_wait_s, 0.0)


def resumed_fedmaid(saved: DictConfig, overrides: Sequence[str], run_dir: str) -> FedMAIDConfig:
    """Compose a resumed run: its saved settings, changed only where resuming allows.

    Parameters
    ----------
    saved : DictConfig
        The run directory's ``config.yaml``.
    overrides : sequence of str
        The command's ``key=value`` pairs.
    run_dir : str
        The run directory (the ``resume`` value).

    Returns
    -------
    FedMAIDConfig
        The run to continue, with ``resume`` set.

    Raises
    ------
    ConfigError
        For an override of a setting that defines the run, or any invalid value.

    """
    for override in overrides:
        key = override.partition("=")[0]
        if key.split(".")[0] not in RESUMABLE_SETTINGS:
            raise ConfigError(
                key,
                override.partition("=")[2],
                f"unchanged when resuming (may change: {', '.join(RESUMABLE_SETTINGS)})",
            )
    return compose_fedmaid([*overrides, f"resume={run_dir}"], base=saved)
