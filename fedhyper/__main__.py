"""``python -m fedhyper`` / ``fedhyper``: run one experiment, or sweep with ``--multirun``.

Examples
--------
``python -m fedhyper strategy=fedavg num_rounds=5``
``python -m fedhyper --multirun strategy=fedavg,fedhyper_g seed=0,1,2``
``python -m fedhyper resume=outputs/2025-01-01/12-00-00-fedavg num_rounds=40``

A user error (an unknown option or key, a bad value, a run directory that cannot be
resumed, data that does not load) ends the command with one line on stderr and exit
status 2, before any training starts.

"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig

from fedhyper.checkpoint import load_checkpoint, resume_experiment
from fedhyper.compose import CONF_DIR, SEARCHPATH_KEY, compose_config, store_schemas, to_experiment
from fedhyper.config import ExperimentConfig
from fedhyper.errors import ConfigError, FedHyperError
from fedhyper.preflight import check_data, check_device, check_run_dir

LOGGER = logging.getLogger("fedhyper")

USAGE_ERROR = 2
"""Exit status of a user error, as argparse and Hydra use."""

RUN_FAILED = 1
"""Exit status of a run that started and could not finish (e.g. too few clients)."""

# Options after which Hydra neither composes this app's config nor runs it.
_NO_RUN_OPTIONS = ("help", "hydra_help", "shell_completion", "info", "experimental_rerun")
# Options that each choose what Hydra does; it takes one at most.
_MODES = ("run", "multirun", "cfg", "info", "shell_completion")
# Options that point Hydra at another config tree than the one checked here.
_OTHER_CONFIG_OPTIONS = ("config_path", "config_name", "config_dir")


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def _run(cfg: DictConfig) -> float:
    try:
        config = to_experiment(cfg)
        if config.resume is not None:
            config = resume_experiment(config, _override_keys(HydraConfig.get().overrides.task))
        # conf/config.yaml points Hydra's run dir at the resumed run, unless overridden.
        run_dir = Path(config.resume or HydraConfig.get().runtime.output_dir)
        check_run_dir(config, run_dir)
        check_device(config)
        check_data(config, partitions=True)
    except FedHyperError as error:
        _fail(error, USAGE_ERROR)
    # Imported here so that `--help` and config errors do not pay for Flower and Ray.
    from flwr.common.logger import console_handler

    from strategies.simulation import simulate

    # Hydra's handlers (console and job log file) already receive Flower's records.
    logging.getLogger("flwr").removeHandler(console_handler)

    try:
        summary = simulate(config, run_dir)
    except FedHyperError as error:
        _fail(error, USAGE_ERROR if isinstance(error, ConfigError) else RUN_FAILED)
    LOGGER.info(
        "%s: final accuracy %.4f, best %.4f -> %s",
        config.strategy.name,
        summary.final_accuracy,
        summary.best_accuracy,
        run_dir,
    )
    # The return value is what Hydra sweepers optimise.
    return summary.final_accuracy


def _fail(error: FedHyperError, status: int) -> NoReturn:
    # A user error: one line, no traceback.
    print(f"fedhyper: {error}", file=sys.stderr)
    sys.exit(status)


def _override_keys(overrides: Sequence[str]) -> list[str]:
    return [override.partition("=")[0] for override in overrides]


def check_command_line(argv: Sequence[str]) -> None:
    """Check the arguments as Hydra will read them, failing in one line where Hydra would not.

    Hydra reports a mistyped key, a wrong type or an unknown option in several lines,
    some with a stack-trace hint; this check finds the same problems first. Each
    experiment a ``--multirun`` sweep would run is composed once per swept value.

    Parameters
    ----------
    argv : sequence of str
        The command-line arguments, without the program name.

    Raises
    ------
    ConfigError
        For an unknown option, an override that does not parse, names an unknown key or
        choice or has an invalid value, a sweep without ``--multirun``, or a ``resume``
        directory that cannot be resumed.

    """
    parser = hydra_arguments()
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise ConfigError("command line", " ".join(argv), str(error)) from None
    if unknown:
        raise ConfigError(
            "command line", " ".join(unknown), "Hydra's options (see --help) and key=value"
        )
    options = {name: f"--{name.replace('_', '-')}" for name in _MODES}
    modes = [option for name, option in options.items() if getattr(args, name)]
    if len(modes) > 1:
        raise ConfigError("command line", " ".join(modes), "one of " + ", ".join(options.values()))
    if any(getattr(args, name) for name in (*_NO_RUN_OPTIONS, *_OTHER_CONFIG_OPTIONS)):
        return
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException as error:
        first = str(error).splitlines()
        raise ConfigError(
            "command line", " ".join(args.overrides), f"key=value overrides ({first[1]})"
        ) from None
    # Hydra's own settings are Hydra's to check; the search path also finds this app's yaml.
    experiment = [
        o
        for o in overrides
        if o.key_or_group == SEARCHPATH_KEY or not o.key_or_group.startswith(("hydra.", "hydra/"))
    ]
    fixed = [str(o.input_line) for o in experiment if not o.is_sweep_override()]
    sweeps = [o for o in experiment if o.is_sweep_override()]
    for sweep in sweeps:
        if not args.multirun:
            value = sweep.input_line.partition("=")[2] if sweep.input_line else None
            raise ConfigError(sweep.key_or_group, value, "one value without --multirun")
        try:
            values = list(sweep.sweep_string_iterator())
        except HydraException:  # interval(...): only a sweeper plugin can sample it
            continue
        for value in values:
            compose_config([*fixed, f"{sweep.get_key_element()}={value}"])
    if not sweeps:
        config = compose_config(fixed)
        if config.resume is not None:
            if args.multirun:
                raise ConfigError("resume", config.resume, "one run, not with --multirun")
            _check_resumable(config, _override_keys(fixed))
        elif config.logging.output_dir is not None:
            # Before Hydra writes its .hydra/ files into an earlier run's directory.
            check_run_dir(config, Path(config.logging.output_dir))


def _check_resumable(config: ExperimentConfig, changed: Sequence[str]) -> None:
    resumed = resume_experiment(config, changed)
    load_checkpoint(Path(str(resumed.resume)))


def hydra_arguments() -> argparse.ArgumentParser:
    """Return Hydra's own command-line parser, raising instead of exiting on errors."""
    # Hydra builds its parser in a private module; using it keeps the options in step.
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    return parser


def main() -> None:
    """Console-script entry point."""
    try:
        check_command_line(sys.argv[1:])
    except FedHyperError as error:
        _fail(error, USAGE_ERROR)
    # Hydra composes (even for --help) from the schemas the plug-ins registered.
    store_schemas()
    _run()


if __name__ == "__main__":
    main()
