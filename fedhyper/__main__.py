"""``python -m fedhyper`` / ``fedhyper``: run one experiment, or sweep with ``--multirun``.

Examples
--------
``python -m fedhyper strategy=fedavg num_rounds=5``
``python -m fedhyper --multirun strategy=fedavg,fedhyper_g seed=0,1,2``

"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedhyper.compose import CONF_DIR, to_experiment
from fedhyper.errors import FedHyperError

LOGGER = logging.getLogger("fedhyper")


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def _run(cfg: DictConfig) -> float:
    try:
        config = to_experiment(cfg)
    except FedHyperError as error:
        # A user error: one line, no traceback, and no training started.
        print(f"fedhyper: {error}", file=sys.stderr)
        sys.exit(2)
    # Imported here so that `--help` and config errors do not pay for Flower and Ray.
    from flwr.common.logger import console_handler

    from strategies.simulation import simulate

    # Hydra's handlers (console and job log file) already receive Flower's records.
    logging.getLogger("flwr").removeHandler(console_handler)

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = simulate(config, run_dir)
    LOGGER.info(
        "%s: final accuracy %.4f, best %.4f -> %s",
        config.strategy.name,
        summary.final_accuracy,
        summary.best_accuracy,
        run_dir,
    )
    # The return value is what Hydra sweepers optimise.
    return summary.final_accuracy


def main() -> None:
    """Console-script entry point."""
    _run()


if __name__ == "__main__":
    main()
