r"""Run a benchmark suite as Hydra multiruns, then collect it into one result file.

``python -m benchmarks.suite SUITE --dataset NAME --profile PROFILE [OVERRIDE ...]``

A suite is one or more Hydra suite configs (``conf/suite/<leg>.yaml``, each setting
``hydra.sweeper.params``) swept over one dataset preset
(``conf/experiment/<dataset>_<profile>.yaml``, which sets the rounds, the target accuracy
and the seeds in its own ``hydra.sweeper.params.seed``). Seeds are the outer loop, so an
interrupted suite still holds every strategy for its first seeds: for each seed ``S`` of
the preset, each leg runs as a subprocess::

    python -m fedhyper --multirun +suite=<leg> experiment=<dataset>_<profile> \\
        seed=S hydra.sweep.dir=<sweep dir>/<leg>-seed<S> [OVERRIDE ...]

Extra ``OVERRIDE`` arguments go to every leg and win over the suite's and preset's
sweep values (``client.lr=0.001`` restricts ``robustness`` to one row; ``seed=0``
restricts the seeds). ``--client adam --lr 0.01`` runs every leg with that client
optimiser (``conf/client/``) and initial client LR instead of the preset's; ``--lr`` is
required with ``--client``, because the presets set an LR tuned for SGD. Afterwards every
finished run below the sweep directory is written to
``benchmarks/results/<suite>_<dataset>.json`` (:func:`result_path`: ``_<profile>`` for a
profile other than ``cpu``, then ``_<client>`` and ``_lr<lr>`` when given), stamped with
the command, machine and date of the training, and the tables, plots and the results
index are regenerated (:mod:`benchmarks.report`).

``--collect-only`` skips training and collects an existing sweep directory; the
provenance then comes from the ``suite.json`` the training wrote there. ``--add`` joins
the sweep to the existing result file instead of replacing it (:mod:`benchmarks.additions`):
``python -m benchmarks.suite compare --dataset fashion_mnist --legs compare --add
strategy=fedhyper_auto`` adds one strategy to a finished suite (``--legs`` runs only the
named legs); a setup that differs from the file's stops it before training.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from benchmarks.additions import PROVENANCE_KEYS, SetupMismatchError, add_sweep
from benchmarks.compare import Run, find_runs
from benchmarks.provenance import command, machine, write_result
from benchmarks.report import render, write_index
from benchmarks.tables import RESULTS_DIR
from fedhyper.compose import CONF_DIR, compose_config, group_options
from fedhyper.config import ClientConfig
from strategies.methods.fedhyper import HyperParams

SUITES: dict[str, tuple[str, ...]] = {
    "compare": ("compare", "compare_normalised"),
    "robustness": ("robustness",),
    "tuning": ("tuning",),
    "ablation": ("ablation",),
    "hdet": ("hdet",),
}
"""Suite name -> the ``conf/suite/`` configs (legs) it sweeps, in order."""

LR_SCALED_LEGS = ("hdet",)
"""Legs whose runs differ in client LR: an arm's label then names the LR's factor."""

PROFILES = ("cpu", "paper")
CLIENTS = group_options("client")
"""Client optimisers a suite can run with (``--client``)."""
PROVENANCE_FILE = "suite.json"
"""Written into the sweep directory when training starts; read back by collection."""


def result_path(
    suite: str,
    dataset: str,
    profile: str,
    results_dir: Path = RESULTS_DIR,
    *,
    client: str | None = None,
    lr: float | None = None,
) -> Path:
    """Return where a suite's result file goes.

    Parameters
    ----------
    suite, dataset, profile : str
        What ran.
    results_dir : Path
        The results folder.
    client : str, optional
        The client optimiser, if not the preset's.
    lr : float, optional
        The initial client LR, if not the preset's.

    Returns
    -------
    Path
        ``<suite>_<dataset>.json`` for the ``cpu`` profile and the preset's client, with
        ``_<profile>`` for another profile, then ``_<client>`` and ``_lr<lr>`` when given:
        ``compare_fashion_mnist_adam_lr0.01.json``.

    """
    profile_part = "" if profile == "cpu" else f"_{profile}"
    return results_dir / f"{suite}_{dataset}{profile_part}{client_suffix(client, lr)}.json"


def client_suffix(client: str | None, lr: float | None) -> str:
    """Return ``"_<client>_lr<lr>"`` (each part only when given) for file and folder names."""
    return ("" if client is None else f"_{client}") + ("" if lr is None else f"_lr{lr:g}")


def client_overrides(client: str | None, lr: float | None) -> list[str]:
    """Return the Hydra overrides that set the client optimiser and initial LR, if given."""
    return [
        *([] if client is None else [f"client={client}"]),
        *([] if lr is None else [f"client.lr={lr:g}"]),
    ]


def hydra_commands(
    suite: str,
    dataset: str,
    profile: str,
    sweep_dir: Path,
    overrides: list[str],
    legs: list[str] | None = None,
) -> list[list[str]]:
    """Build the Hydra multirun commands of a suite: every leg for each seed in turn.

    Parameters
    ----------
    suite, dataset, profile : str
        What to run.
    sweep_dir : Path
        Parent of the legs' sweep directories.
    overrides : list of str
        Extra Hydra overrides for every leg.
    legs : list of str, optional
        Only these of the suite's legs (default: all).

    Returns
    -------
    list of list of str
        One argument vector per (seed, leg), seeds outermost.

    """
    seed_override = next((o for o in overrides if o.startswith("seed=")), None)
    seeds = (
        seed_override.split("=", 1)[1] if seed_override else sweep_seeds(suite, dataset, profile)
    )
    others = [o for o in overrides if o != seed_override]
    return [
        [
            sys.executable,
            "-m",
            "fedhyper",
            "--multirun",
            f"+suite={leg}",
            f"experiment={dataset}_{profile}",
            f"seed={seed}",
            f"hydra.sweep.dir={sweep_dir / f'{leg}-seed{seed}'}",
            *others,
        ]
        for seed in seeds.split(",")
        for leg in SUITES[suite]
        if legs is None or leg in legs
    ]


def sweep_seeds(suite: str, dataset: str, profile: str) -> str:
    """Return the seeds a suite sweeps on a preset, as Hydra writes them (``"0,1,2"``).

    A suite config's own ``hydra.sweeper.params.seed`` wins (it is composed after the
    preset, as Hydra would), else the preset's, else seed 0.
    """
    configs = [CONF_DIR / "suite" / f"{leg}.yaml" for leg in SUITES[suite]]
    configs.append(CONF_DIR / "experiment" / f"{dataset}_{profile}.yaml")
    for path in configs:
        seeds = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params.seed")
        if seeds is not None:
            return str(seeds)
    return "0"


def _label(run: Run, config: Any) -> str:
    """Name a run by its robustness arm, else its strategy (``_normalised`` if so)."""
    hydra_file = run.path / ".hydra" / "hydra.yaml"
    if hydra_file.exists():
        choices = OmegaConf.load(hydra_file).hydra.runtime.choices
        if "arm" in choices and choices.get("suite") in LR_SCALED_LEGS:
            return f"{choices['arm']}{_lr_factor(config, str(choices['experiment']))}"
        if "arm" in choices:
            return str(choices["arm"])
    name = str(config.strategy.name)
    return f"{name}_normalised" if _setting(config, "normalised") else name


def _lr_factor(config: Any, preset: str) -> str:
    """Return ``""`` at the preset's client LR, else ``"_x<client LR / preset's>"``."""
    preset_lr = OmegaConf.select(
        OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml"),
        "client.lr",
        default=ClientConfig().lr,
    )
    factor = float(config.client.lr) / float(preset_lr)
    return "" if math.isclose(factor, 1.0) else f"_x{factor:.3g}"


def _setting(config: Any, key: str) -> Any:
    """Return a hypergradient setting of a saved run, its default for a method without one.

    The result files record a value for every run.
    """
    return OmegaConf.select(config, f"strategy.{key}", default=getattr(HyperParams(), key))


def run_record(run: Run) -> dict[str, Any]:
    """Turn one finished run directory into a result-file entry.

    Parameters
    ----------
    run : Run
        The run (summary, history and the ``config.yaml`` beside them).

    Returns
    -------
    dict
        ``strategy``, ``seed``, ``global_lr`` (initial α_0), ``local_lr`` (initial η_0),
        ``accuracy`` per round, ``final_accuracy``, ``best_accuracy``,
        ``rounds_to_target``, ``wall_s``, and ``global_lr_per_round``,
        ``local_lr_per_round`` (mean over the round's clients and steps),
        ``diverged_rounds`` (the rounds whose clients the rule read as diverged), ``hyper_lr``,
        ``normalised``, and ``settings``: the run's whole ``strategy`` and ``client``
        configuration, so that a row still says what ran after a default changes.

    """
    config = OmegaConf.load(run.path / "config.yaml")
    s = run.summary
    return {
        "strategy": _label(run, config),
        "seed": int(config.seed),
        "global_lr": float(config.strategy.global_lr),
        "local_lr": float(config.client.lr),
        "accuracy": [float(row["accuracy"]) for row in run.history],
        "final_accuracy": s.final_accuracy,
        "best_accuracy": s.best_accuracy,
        "rounds_to_target": s.rounds_to_target,
        "wall_s": s.wall_s,
        "global_lr_per_round": [float(row["global_lr"]) for row in run.history],
        "local_lr_per_round": [float(row["client_lr_mean"]) for row in run.history],
        # Histories written before the divergence cap existed have no such column.
        "diverged_rounds": [
            int(row["round"]) for row in run.history if row.get("clients_diverged", False)
        ],
        "hyper_lr": float(_setting(config, "hyper_lr")),
        "normalised": bool(_setting(config, "normalised")),
        "settings": {
            section: OmegaConf.to_container(OmegaConf.select(config, section), resolve=True)
            for section in ("strategy", "client")
        },
    }


def setup_of(config: Any) -> dict[str, Any]:
    """Describe the shared setup of a suite from one of its runs' configuration.

    Parameters
    ----------
    config : DictConfig
        A run's saved ``config.yaml``, or a composed experiment as an OmegaConf node.

    Returns
    -------
    dict
        The fields every run of a suite shares (model, partition, client, budget).

    """
    return {
        "num_rounds": int(config.num_rounds),
        "target_accuracy": float(config.target_accuracy),
        "model": str(config.model.name),
        "hidden_size": int(config.model.hidden_size),
        "partition": str(config.partition.kind),
        "alpha": float(config.partition.alpha),
        "num_clients": int(config.partition.num_clients),
        "clients_per_round": int(config.strategy.clients_per_round),
        "optimizer": str(config.client.optimizer),
        "momentum": float(config.client.momentum),
        "local_epochs": int(config.client.local_epochs),
        "batch_size": int(config.client.batch_size),
        "max_steps": int(config.client.max_steps),
        "test_examples": int(config.dataset.test_examples),
        "weighted": bool(config.strategy.weighted),
    }


def _run_order(run: Run, suite: str) -> tuple[int, int, int]:
    """Sort key of a run: its seed, its leg in the suite, its Hydra job number."""
    leg, _, seed = run.path.parent.name.rpartition("-seed")
    job = run.path.name.split("-", 1)[0]
    return int(seed), SUITES[suite].index(leg), int(job)


def collect(sweep_dir: Path) -> dict[str, Any]:
    """Return the result-file content of a sweep directory.

    Parameters
    ----------
    sweep_dir : Path
        Where the suite's legs ran (holds ``suite.json``).

    Returns
    -------
    dict
        The sweep's provenance, setup and runs.

    Raises
    ------
    FileNotFoundError
        If the sweep has no ``suite.json`` or no finished run.

    """
    provenance = json.loads((sweep_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
    runs = sorted(find_runs(sweep_dir), key=lambda run: _run_order(run, provenance["suite"]))
    if not runs:
        raise FileNotFoundError(f"no finished runs under {sweep_dir}")
    return {
        "suite": provenance["suite"],
        "dataset": provenance["dataset"],
        "profile": provenance["profile"],
        "command": provenance["command"],
        "machine": provenance["machine"],
        "date": provenance["date"],
        "hydra_commands": provenance["hydra_commands"],
        "suite_wall_s": provenance.get("wall_s"),
        "finished": bool(provenance.get("finished", False)),
        "setup": setup_of(OmegaConf.load(runs[0].path / "config.yaml")),
        "runs": [run_record(run) for run in runs],
    }


def planned_setup(suite: str, dataset: str, profile: str, overrides: list[str]) -> dict[str, Any]:
    """Return the setup a suite's runs will have, composed before any training.

    Sweep overrides (``client.lr=0.001,0.01``) are left out: the setup's fields are the
    ones a suite holds fixed.
    """
    fixed = [o for o in overrides if "," not in o.split("=", 1)[-1]]
    config = compose_config(
        [f"+suite={SUITES[suite][0]}", f"experiment={dataset}_{profile}", *fixed]
    )
    return setup_of(OmegaConf.structured(config))


def check_addition(args: argparse.Namespace, out: Path) -> None:
    """Stop with one line, before training, if ``--add`` could not join the sweep to ``out``."""
    if not out.exists():
        return
    existing = json.loads(out.read_text(encoding="utf-8"))
    planned = {
        "suite": args.suite,
        "dataset": args.dataset,
        "profile": args.profile,
        "setup": planned_setup(args.suite, args.dataset, args.profile, args.overrides),
        "runs": [],
        **dict.fromkeys(PROVENANCE_KEYS),
    }
    try:
        add_sweep(existing, planned)
    except SetupMismatchError as error:
        sys.exit(f"--add: {out} holds another setup than this sweep's: {error}")


def train(args: argparse.Namespace, sweep_dir: Path) -> None:
    """Run every leg of the suite, recording the provenance in ``suite.json``."""
    commands = hydra_commands(
        args.suite, args.dataset, args.profile, sweep_dir, args.overrides, args.legs
    )
    provenance: dict[str, Any] = {
        "suite": args.suite,
        "dataset": args.dataset,
        "profile": args.profile,
        "command": command(),
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "hydra_commands": [" ".join(["python", *argv[1:]]) for argv in commands],
        "wall_s": None,
        "finished": False,
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    provenance_file = sweep_dir / PROVENANCE_FILE
    provenance_file.write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    start = time.perf_counter()
    for argv in commands:
        print("+", " ".join(argv), flush=True)
        subprocess.run(argv, check=True, cwd=CONF_DIR.parent)
        provenance["wall_s"] = round(time.perf_counter() - start, 1)
        provenance_file.write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    provenance["finished"] = True
    provenance_file.write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Train (unless ``--collect-only``), collect and report one suite on one dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--dataset", choices=group_options("dataset"), required=True)
    parser.add_argument("--profile", choices=PROFILES, default="cpu")
    parser.add_argument(
        "--sweep-dir",
        type=Path,
        help="where the runs go (default: multirun/bench/<suite>_<dataset>_<profile>"
        "[_<client>][_lr<lr>]_<time>)",
    )
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        help="client optimiser instead of the preset's (needs --lr, or a client.lr grid)",
    )
    parser.add_argument("--lr", type=float, help="initial client LR instead of the preset's")
    parser.add_argument("--collect-only", action="store_true", help="collect an existing sweep")
    parser.add_argument(
        "--legs",
        type=lambda value: value.split(","),
        metavar="LEG[,LEG]",
        help="run only these of the suite's configs, comma-separated (default: all)",
    )
    parser.add_argument(
        "--add",
        action="store_true",
        help="join the sweep's runs to the existing result file (same setup) instead of "
        "replacing it: to add an arm without rerunning the rest",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every leg")
    args = parser.parse_intermixed_args(argv)
    unknown_legs = sorted(set(args.legs or ()) - set(SUITES[args.suite]))
    if unknown_legs:
        parser.error(
            f"--legs: {', '.join(unknown_legs)} not in suite {args.suite!r} "
            f"(allowed: {', '.join(SUITES[args.suite])})"
        )
    sets_lr = any(override.startswith("client.lr=") for override in args.overrides)
    if args.client is not None and args.lr is None and not sets_lr:
        parser.error(
            "--client needs --lr or a 'client.lr=...' override: the dataset presets and "
            "the suites' grids set client LRs tuned for SGD"
        )
    if args.lr is not None and args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr:g}")
    args.overrides = [*client_overrides(args.client, args.lr), *args.overrides]
    if args.sweep_dir is None:
        if args.collect_only:
            parser.error("--collect-only needs --sweep-dir")
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        name = f"{args.suite}_{args.dataset}_{args.profile}{client_suffix(args.client, args.lr)}"
        args.sweep_dir = Path("multirun/bench") / f"{name}_{stamp}"
    sweep_dir = args.sweep_dir.resolve()
    out = result_path(args.suite, args.dataset, args.profile, client=args.client, lr=args.lr)
    if args.add:
        check_addition(args, out)
    if not args.collect_only:
        train(args, sweep_dir)
    payload = collect(sweep_dir)
    if args.add and out.exists():
        try:
            payload = add_sweep(json.loads(out.read_text(encoding="utf-8")), payload)
        except SetupMismatchError as error:
            sys.exit(f"--add: {out} holds another setup than this sweep's: {error}")
    write_result(out, payload)
    for path in render(out, payload):
        print(f"wrote {path}")
    print(f"wrote {out} ({len(payload['runs'])} runs)")
    print(f"wrote {write_index()}")


if __name__ == "__main__":
    main()
