"""``python -m fedhyper.bilevel``: run FedMAID on Flower's simulation engine.

Examples
--------
``python -m fedhyper.bilevel``: the run ``conf/fedmaid.yaml`` describes.
``python -m fedhyper.bilevel maid.schedule=geometric lower.solver=fedavg max_steps=50``
``python -m fedhyper.bilevel resume=outputs/fedmaid/2025-01-01/12-00-00 max_steps=80``

A user error (an unknown key, a bad value, a run directory that cannot be resumed,
data that does not load) ends the command with one line on stderr and exit status 2,
before any client starts.

"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fedhyper.bilevel.config import FedMAIDConfig, compose_fedmaid, resumed_fedmaid
from fedhyper.errors import ConfigError, FedHyperError

USAGE_ERROR = 2
"""Exit status of a user error, as ``python -m fedhyper`` uses."""

RESUME_PREFIX = "resume="


def configure(argv: Sequence[str]) -> tuple[FedMAIDConfig, Path]:
    """Compose the run the arguments describe and choose its directory.

    Parameters
    ----------
    argv : sequence of str
        ``key=value`` overrides; with ``resume=<run dir>``, only the settings a
        resumed run may change.

    Returns
    -------
    tuple of (FedMAIDConfig, Path)
        The validated run and its directory.

    Raises
    ------
    ConfigError
        For any invalid setting, a run directory to resume that holds no run, or a
        fresh run pointed at a directory that already holds one.

    """
    from strategies.fedmaid import CHECKPOINT_FILE, CONFIG_FILE

    resume = [arg.removeprefix(RESUME_PREFIX) for arg in argv if arg.startswith(RESUME_PREFIX)]
    if resume:
        run_dir = Path(resume[-1])
        saved = run_dir / CONFIG_FILE
        if not (run_dir / CHECKPOINT_FILE).is_file() or not saved.is_file():
            raise ConfigError(
                "resume", str(run_dir), f"a FedMAID run directory ({CHECKPOINT_FILE})"
            )
        others = [arg for arg in argv if not arg.startswith(RESUME_PREFIX)]
        loaded = OmegaConf.load(saved)
        if not isinstance(loaded, DictConfig):
            raise ConfigError("resume", str(run_dir), f"a run whose {CONFIG_FILE} is a mapping")
        return resumed_fedmaid(loaded, others, str(run_dir)), run_dir
    config = compose_fedmaid(argv)
    run_dir = Path(config.output_dir or f"outputs/fedmaid/{datetime.now():%Y-%m-%d/%H-%M-%S}")
    if (run_dir / CHECKPOINT_FILE).exists():
        raise ConfigError(
            "output_dir",
            str(run_dir),
            f"a directory without a previous run's {CHECKPOINT_FILE} "
            f"(continue that run with resume={run_dir})",
        )
    return config, run_dir


def main(argv: Sequence[str] | None = None) -> None:
    """Check the arguments and the data, then run FedMAID and print its final figures."""
    from strategies.fedmaid import load_task, simulate_fedmaid

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config, run_dir = configure(sys.argv[1:] if argv is None else argv)
        load_task(config)  # the data the server will load: fail here, in one line
    except FedHyperError as error:
        print(f"fedhyper.bilevel: {error}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    history = simulate_fedmaid(config, run_dir)
    final = history[-1]
    print(
        f"fedmaid: {len(history)} steps, {final['total_rounds']} rounds, validation CE "
        f"{final['upper_value']:.4f}, test accuracy {final['test_accuracy']:.4f} -> {run_dir}"
    )


if __name__ == "__main__":
    main()
