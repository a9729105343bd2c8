"""Join a later sweep into an existing result file: a new arm without rerunning the rest.

A suite's result file normally comes from one command. Adding a method to a suite that
took an hour should not mean rerunning the hour, so ``python -m benchmarks.suite ...
--add`` trains only what its overrides select (``strategy=fedhyper_auto``) and joins
those runs to the file. The join is only allowed between sweeps of the same setup (model,
partition, rounds, client optimiser, ...): anything else would compare methods under
different conditions. The file keeps every sweep's provenance: the original sweep stays
at the top level, each later one is an entry of ``additions`` (command, machine, date),
and each run it brought names it by its index (``"addition": k``). A later run replaces
an earlier one with the same label, seed and learning rates.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROVENANCE_KEYS", "SetupMismatchError", "add_sweep", "run_key"]

PROVENANCE_KEYS = (
    "command",
    "machine",
    "date",
    "hydra_commands",
    "suite_wall_s",
    "finished",
)
"""The fields of a result file that describe the sweep that made it."""


class SetupMismatchError(ValueError):
    """The sweep to add ran under another setup than the result file's."""


def run_key(run: dict[str, Any]) -> tuple[str, int, float, float]:
    """Identify a run within a suite: its label, seed, initial global and client LRs."""
    return (str(run["strategy"]), int(run["seed"]), run["global_lr"], run["local_lr"])


def add_sweep(existing: dict[str, Any], sweep: dict[str, Any]) -> dict[str, Any]:
    """Return a result file's content with a later sweep's runs joined to it.

    Parameters
    ----------
    existing : dict
        The result file's content (possibly already holding ``additions``).
    sweep : dict
        The new sweep's content, as :func:`benchmarks.suite.collect` builds it.

    Returns
    -------
    dict
        ``existing`` with the sweep's provenance appended to ``additions``, its runs
        marked ``"addition": k``, replacing runs with the same :func:`run_key` in place and
        following the others.

    Raises
    ------
    SetupMismatchError
        If the two differ in suite, dataset, profile or any setup field.

    """
    for key in ("suite", "dataset", "profile"):
        if existing[key] != sweep[key]:
            raise SetupMismatchError(
                f"{key}: the file has {existing[key]!r}, the sweep {sweep[key]!r}"
            )
    differing = sorted(
        key
        for key in existing["setup"].keys() | sweep["setup"].keys()
        if existing["setup"].get(key) != sweep["setup"].get(key)
    )
    if differing:
        details = ", ".join(
            f"{key} {existing['setup'].get(key)!r} vs {sweep['setup'].get(key)!r}"
            for key in differing
        )
        raise SetupMismatchError(f"setup differs ({details})")
    additions = [*existing.get("additions", []), {key: sweep[key] for key in PROVENANCE_KEYS}]
    index = len(additions) - 1
    new_runs = {run_key(run): {**run, "addition": index} for run in sweep["runs"]}
    runs = [new_runs.pop(run_key(run), run) for run in existing["runs"]]
    return {**existing, "additions": additions, "runs": [*runs, *new_runs.values()]}
