"""What subnormal floats cost a training step, and what ``client.flush_denormals`` saves.

``python -m benchmarks.subnormals RUN_DIR [RUN_DIR ...]`` takes run directories of
``python -m fedhyper`` (each with its ``config.yaml`` and ``checkpoint.pt``) and, for
each, times local training steps (forward, backward, SGD step at LR 0, so the model
stays as saved) of the checkpoint's global model and of a freshly initialised one, on
batches of the run's test set at its client batch size, with subnormals kept (IEEE's
gradual underflow) and flushed to zero, in interleaved blocks. It writes
``benchmarks/results/subnormals.json`` and prints a markdown table.

A model whose recurrent gates saturate late in training back-propagates gradients that
shrink through every time step into the subnormal range (inside the backward pass: the
parameters' own gradients need not hold any), where each CPU operation on them costs
many times a normal one; a freshly initialised model is the control. Steps
run on one thread (as a simulated client does) and are timed in process CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.provenance import write_result
from fedhyper.checkpoint import load_checkpoint, saved_experiment
from fedhyper.data.federated import test_data
from fedhyper.models import build_model
from fedhyper.training import flush_denormals

RESULT = Path(__file__).parent / "results" / "subnormals.json"

Batch = tuple[Tensor, Tensor]


def block_seconds(model: nn.Module, batches: list[Batch], flush: bool) -> float:
    """Return the process CPU seconds per step of one block of steps.

    The flush setting is restored to off (torch's default) afterwards.

    Parameters
    ----------
    model : nn.Module
        The model to step; an SGD step at LR 0 leaves it unchanged.
    batches : list of (inputs, labels)
        One step per batch.
    flush : bool
        Flush subnormals to zero during the block.

    Returns
    -------
    float
        Mean CPU seconds per step.

    """
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    flush_denormals(flush)
    try:
        start = time.process_time()
        for inputs, labels in batches:
            optimizer.zero_grad()
            # Same as loss.backward(), which torch leaves untyped.
            torch.autograd.backward(nn.functional.cross_entropy(model(inputs), labels))
            optimizer.step()
        return (time.process_time() - start) / len(batches)
    finally:
        flush_denormals(False)


def measure(model: nn.Module, batches: list[Batch], repeats: int) -> dict[str, float]:
    """Time a model's steps with subnormals kept and flushed, interleaved.

    Parameters
    ----------
    model : nn.Module
        The model.
    batches : list of (inputs, labels)
        The steps of one block.
    repeats : int
        Blocks of each setting; the median is reported.

    Returns
    -------
    dict
        ``kept_ms`` and ``flushed_ms`` (median per step) and their ratio ``speedup``.

    """
    kept, flushed = [], []
    block_seconds(model, batches[:1], flush=False)  # warm-up: allocator, kernels
    for _ in range(repeats):
        kept.append(block_seconds(model, batches, flush=False))
        flushed.append(block_seconds(model, batches, flush=True))
    kept_ms, flushed_ms = 1000 * statistics.median(kept), 1000 * statistics.median(flushed)
    return {
        "kept_ms": kept_ms,
        "flushed_ms": flushed_ms,
        "speedup": kept_ms / flushed_ms,
    }


def measure_run(run_dir: Path, steps: int, repeats: int) -> list[dict[str, Any]]:
    """Measure a run's checkpointed model and a fresh one of the same experiment.

    Parameters
    ----------
    run_dir : Path
        A run directory with ``config.yaml`` and ``checkpoint.pt``.
    steps : int
        Steps (batches) per block.
    repeats : int
        Blocks of each setting.

    Returns
    -------
    list of dict
        One row for the checkpoint's model and one for the fresh model.

    """
    config = saved_experiment(run_dir)
    checkpoint = load_checkpoint(run_dir)
    data = test_data(config.dataset)
    size = config.client.batch_size
    inputs, labels = data.tensors
    batches = list(zip(torch.split(inputs, size), torch.split(labels, size), strict=False))
    batches = [batch for batch in batches if len(batch[1]) == size][:steps]
    rows = []
    for label in ("checkpoint", "fresh"):
        torch.manual_seed(config.seed)
        model = build_model(
            config.dataset.spec(), config.model.name, hidden_size=config.model.hidden_size
        )
        if label == "checkpoint":
            model.load_state_dict(checkpoint.arrays)
        rows.append(
            {
                "run": str(run_dir),
                "model": label,
                "round": checkpoint.server_round if label == "checkpoint" else 0,
                **measure(model, batches, repeats),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Render the rows as a markdown table."""
    lines = [
        "| run | model (round) | ms/step, subnormals kept | flushed | speed-up |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {Path(r['run']).name} | {r['model']} ({r['round']}) | {r['kept_ms']:.1f} "
        f"| {r['flushed_ms']:.1f} | {r['speedup']:.2f}x |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure every run directory given and write the result file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="runs with a checkpoint")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="blocks of each setting")
    parser.add_argument("--output", type=Path, default=RESULT, help="result file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [row for run in args.run_dirs for row in measure_run(run, args.steps, args.repeats)]
    write_result(
        args.output,
        {"timer": "process CPU time, 1 thread", "steps_per_block": args.steps, "runs": rows},
    )
    print(table(rows))
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
