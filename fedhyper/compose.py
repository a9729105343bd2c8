"""Resolve an :class:`~fedhyper.config.ExperimentConfig` from Hydra or Flower inputs.

Both entry points end here: ``python -m fedhyper`` hands over the ``DictConfig`` Hydra
composed, and the Flower ServerApp turns its run-config into the same Hydra group
choices and overrides and composes them with :func:`compose_config`.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from fedhyper.client_rules import CLIENT_RULES
from fedhyper.config import ClientConfig, ClientRuleConfig, ExperimentConfig, StrategyConfig
from fedhyper.errors import ConfigError
from fedhyper.methods import METHODS
from fedhyper.validation import validate

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
"""The Hydra configuration tree shipped with the project."""

CONFIG_GROUPS = (
    "experiment",
    "dataset",
    "partition",
    "model",
    "client",
    "strategy",
    "simulation",
    "logging",
)
"""Hydra config groups, also the group keys of the Flower run-config."""

OVERRIDES_KEY = "overrides"
"""Run-config key holding extra Hydra-style ``key=value`` overrides."""

NO_CHOICE = "none"
"""Run-config value that leaves an optional group (``experiment``) unselected."""

SEARCHPATH_KEY = "hydra.searchpath"
"""Override adding config directories (``hydra.searchpath=[file:///my/conf]``): a method,
client rule or preset kept outside this repository puts its yaml there."""

ConfigStore.instance().store(name="schema", node=ExperimentConfig)


def store_schemas() -> None:
    """Register each method's and client rule's settings as the schema of its yaml.

    ``conf/config.yaml`` merges ``strategy_schema/<strategy choice>`` before
    ``strategy/<choice>.yaml`` (and likewise ``client_rule_schema``), so Hydra types
    each node by the chosen plug-in: its own keys are accepted, with their types, and
    any other key is rejected. Run before every composition, to include plug-ins
    registered since.
    """
    store = ConfigStore.instance()
    for method in METHODS:
        store.store(group="strategy_schema", name=method.name, node=method.defaults())
    for rule in CLIENT_RULES:
        store.store(group="client_rule_schema", name=rule.name, node=rule.defaults())


def _first_set(*values: object) -> object:
    return next((value for value in values if value is not None), None)


def _product(*factors: float) -> float:
    return math.prod(float(factor) for factor in factors)


# `hydra.run.dir` is the first of `resume`, `logging.output_dir` and a fresh dated folder
# (conf/config.yaml), so a resumed run logs into the run it continues.
if not OmegaConf.has_resolver("first_set"):
    OmegaConf.register_new_resolver("first_set", _first_set)
# A robustness arm whose server LR lives on another scale than FedAvg's takes alpha_0 as
# a multiple of its own default (conf/arm/fedadam.yaml).
if not OmegaConf.has_resolver("product"):
    OmegaConf.register_new_resolver("product", _product)


def group_options(group: str, search_dirs: Sequence[Path] = ()) -> list[str]:
    """List the choices of a config group, as named by the files in ``conf/<group>/``.

    Parameters
    ----------
    group : str
        A member of :data:`CONFIG_GROUPS`.
    search_dirs : sequence of Path
        Further config directories (``hydra.searchpath``) whose ``<group>/`` counts too.

    Returns
    -------
    list of str
        Sorted option names.

    """
    return sorted(
        {path.stem for root in (CONF_DIR, *search_dirs) for path in (root / group).glob("*.yaml")}
    )


def search_dirs(overrides: Sequence[str]) -> list[Path]:
    """Return the local directories a ``hydra.searchpath=[...]`` override adds.

    Parameters
    ----------
    overrides : sequence of str
        Hydra-style overrides.

    Returns
    -------
    list of Path
        The ``file://`` entries (and plain paths) of the last such override.

    """
    found: list[Path] = []
    for override in overrides:
        if override.lstrip("+~").partition("=")[0] == SEARCHPATH_KEY:
            value = OverridesParser.create().parse_override(override).value()
            entries = value if isinstance(value, list) else [value]
            found = [
                Path(str(entry).removeprefix("file://"))
                for entry in entries
                if "://" not in str(entry) or str(entry).startswith("file://")
            ]
    return found


def to_experiment(cfg: DictConfig) -> ExperimentConfig:
    """Convert a composed Hydra config into a validated :class:`ExperimentConfig`.

    Parameters
    ----------
    cfg : DictConfig
        Output of Hydra's composition (``hydra.main`` or :func:`compose_config`).

    Returns
    -------
    ExperimentConfig
        The typed, validated experiment.

    Raises
    ------
    ConfigError
        If a value is out of its allowed range.

    """
    plain = OmegaConf.masked_copy(cfg, [str(key) for key in cfg if key != "hydra"])
    schema = ExperimentConfig(
        strategy=_plugin_settings(plain, "strategy", METHODS, StrategyConfig),
        client=ClientConfig(
            rule=_plugin_settings(plain, "client.rule", CLIENT_RULES, ClientRuleConfig)
        ),
    )
    experiment = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), plain))
    assert isinstance(experiment, ExperimentConfig)
    validate(experiment)
    return experiment


def _plugin_settings(plain: DictConfig, key: str, registry: Any, base: type) -> Any:
    """Return the default settings of the plug-in a node names, after checking its type.

    A node Hydra typed from a chosen yaml (``strategy=fedhyper_g``) must name a plug-in
    with those settings: ``strategy.name`` changes the method only within them.
    """
    name = OmegaConf.select(plain, f"{key}.name", default=base().name)
    entry = registry.get(str(name))
    node = OmegaConf.select(plain, key)
    typed = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if typed is not None and issubclass(typed, base) and typed is not entry.params:
        same = [other.name for other in registry if other.params is typed]
        raise ConfigError(f"{key}.name", name, f"{', '.join(same)} (the ones its yaml configures)")
    return entry.defaults()


def compose_config(overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Compose ``conf/config.yaml`` with Hydra-style overrides, as the CLI would.

    Parameters
    ----------
    overrides : sequence of str
        Overrides in Hydra syntax, e.g. ``["strategy=fedavg", "client.lr=0.05"]``.

    Returns
    -------
    ExperimentConfig
        The typed, validated experiment.

    Raises
    ------
    ConfigError
        If a group choice or key does not exist or a value is invalid.

    """
    dirs = search_dirs(overrides)
    for override in overrides:
        check_override(override, dirs)
    store_schemas()
    try:
        # Hydra keeps one global instance, which the Hydra CLI path already owns.
        if GlobalHydra.instance().is_initialized():
            cfg = compose(config_name="config", overrides=list(overrides))
        else:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
                cfg = compose(config_name="config", overrides=list(overrides))
    except OmegaConfBaseException as error:
        raise ConfigError(str(error.full_key), error.value, _expected(error)) from None
    except HydraException as error:
        cause = error.__cause__
        if isinstance(cause, OmegaConfBaseException):
            raise ConfigError(str(cause.full_key), cause.value, _expected(cause)) from None
        raise ConfigError("overrides", list(overrides), _first_line(error)) from None
    return to_experiment(cfg)


def run_config_overrides(run_config: Mapping[str, object]) -> list[str]:
    """Translate a Flower run-config into Hydra overrides.

    Group keys (``strategy = "fedavg"``) become group choices, and the free-form
    ``overrides`` string is split like a shell command line.

    Parameters
    ----------
    run_config : mapping
        ``context.run_config`` of the ServerApp.

    Returns
    -------
    list of str
        Overrides for :func:`compose_config`.

    """
    overrides = [
        f"{group}={run_config[group]}"
        for group in CONFIG_GROUPS
        if group in run_config and run_config[group] != NO_CHOICE
    ]
    extra = run_config.get(OVERRIDES_KEY, "")
    allowed = "a string of space-separated key=value pairs"
    if not isinstance(extra, str):
        raise ConfigError(OVERRIDES_KEY, extra, allowed)
    try:
        return overrides + shlex.split(extra)
    except ValueError as error:  # shlex: an unbalanced quote
        allowed += f", quoted shell-style ({error})"
        raise ConfigError(OVERRIDES_KEY, extra, allowed) from None


def check_override(override: str, search_dirs: Sequence[Path] = ()) -> None:
    """Reject an unknown group choice or key with the allowed values, before Hydra does.

    Parameters
    ----------
    override : str
        One Hydra-style override, ``key=value`` (``+``/``~`` prefixes allowed).
    search_dirs : sequence of Path
        Config directories added by ``hydra.searchpath``, whose groups count too.

    Raises
    ------
    ConfigError
        Naming the key and the choices or keys that exist.

    """
    key, sep, value = override.lstrip("+~").partition("=")
    if not sep:
        raise ConfigError(key, None, "key=value")
    # The run-config groups, plus groups only sweeps use (conf/suite, conf/arm).
    if key in CONFIG_GROUPS or any((root / key).is_dir() for root in (CONF_DIR, *search_dirs)):
        options = group_options(key, search_dirs)
        if value not in (*options, "null"):
            raise ConfigError(key, value, ", ".join(options))
        return
    if key.startswith("hydra."):
        return
    parts = key.split(".")
    node: object = ExperimentConfig
    for depth, part in enumerate(parts):
        parent = ".".join(parts[:depth]) or "the top level"
        if not is_dataclass(node):
            raise ConfigError(key, value, f"no keys below '{parent}', which is a value")
        hints = _keys_of(node)
        if part not in hints:
            raise ConfigError(key, value, f"keys of {parent}: {', '.join(hints)}")
        node = hints[part]


def _keys_of(node: Any) -> dict[str, Any]:
    """Return the keys of a schema node, with their types.

    For the node of a plug-in, the keys of every registered one: Hydra then checks them
    against the chosen one.
    """
    registry: Any = {StrategyConfig: METHODS, ClientRuleConfig: CLIENT_RULES}.get(node)
    classes = [entry.params for entry in registry] if registry is not None else [node]
    return {key: hint for cls in classes for key, hint in get_type_hints(cls).items()}


def _expected(error: OmegaConfBaseException) -> str:
    if isinstance(error, ConfigAttributeError | ConfigKeyError) and is_dataclass(error.object_type):
        keys = ", ".join(get_type_hints(error.object_type))
        return f"keys of {error.object_type.__name__}: {keys}"
    target = _first_line(error).split(" could not be converted to ")[-1].rstrip(".")
    return f"a value of type {target.lower()}"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]
