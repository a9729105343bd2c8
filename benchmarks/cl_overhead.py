"""FedHyper-CL's per-step cost next to a plain local training step.

``python -m benchmarks.cl_overhead`` times local SGD and Adam steps on real batches
(Fashion-MNIST with the CNN, Shakespeare with the character LSTM) with and without the
client-side hypergradient controller, in interleaved blocks, times the controller's
hooks on their own, and writes
``benchmarks/results/cl_overhead.json`` and a markdown table.

Steps run on one thread and are timed in process CPU time, so the ratio holds on a
machine that is busy with other work; wall time on an idle machine is about the same.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.provenance import write_result
from fedhyper.compose import compose_config
from fedhyper.data.federated import test_data
from fedhyper.models import build_model, trainable_float_keys
from fedhyper.rules import HypergradientLocalLR
from fedhyper.training import make_optimizer, set_seed, train_local

RESULT = Path(__file__).parent / "results" / "cl_overhead.json"
CASES = (("fashion_mnist", "cnn"), ("shakespeare", "char_lstm"))
LR = {"sgd": 0.01, "adam": 0.001}


class TimedHooks:
    """Forward the step hooks to a controller and add up the CPU time they take."""

    def __init__(self, controller: HypergradientLocalLR) -> None:
        self.controller = controller
        self.seconds = 0.0

    def start_epoch(self) -> None:
        """Forward (not timed: once per epoch)."""
        self.controller.start_epoch()

    def before_step(self) -> None:
        """Forward and time."""
        start = time.process_time()
        self.controller.before_step()
        self.seconds += time.process_time() - start

    def after_step(self) -> None:
        """Forward and time."""
        start = time.process_time()
        self.controller.after_step()
        self.seconds += time.process_time() - start


def _block_seconds(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    optimizer_name: str,
    with_controller: bool,
) -> tuple[float, float]:
    """Seconds per step of one pass over ``batches``, and of that in the CL hooks."""
    optimizer = make_optimizer(optimizer_name, model.parameters(), LR[optimizer_name], 0.5, 0.0)
    controller: TimedHooks | None = None
    if with_controller:
        parameters = dict(model.named_parameters())
        params = [parameters[key] for key in trainable_float_keys(model)]
        controller = TimedHooks(
            HypergradientLocalLR(
                params,
                optimizer,
                base_lr=LR[optimizer_name],
                global_delta=[torch.randn_like(p) * 1e-3 for p in params],
                coupling=0.01,
            )
        )
    start = time.process_time()
    train_local(
        model, batches, optimizer, epochs=1, device=torch.device("cpu"), controller=controller
    )
    hooks = controller.seconds if controller is not None else 0.0
    return (time.process_time() - start) / len(batches), hooks / len(batches)


def measure(
    dataset: str, model_name: str, optimizer: str, steps: int, repeats: int
) -> dict[str, Any]:
    """Time plain and CL steps in alternating blocks; report medians and the overhead.

    Parameters
    ----------
    dataset, model_name : str
        What to train.
    optimizer : str
        ``sgd`` or ``adam``.
    steps : int
        Steps per timed block.
    repeats : int
        Blocks of each kind.

    Returns
    -------
    dict
        Medians in milliseconds and the relative overhead.

    """
    config = compose_config([f"dataset={dataset}", f"dataset.test_examples={64 * steps}"])
    set_seed(0)
    model = build_model(config.dataset.spec(), model_name)
    inputs, labels = test_data(config.dataset).tensors
    batches = list(zip(torch.split(inputs, 64), torch.split(labels, 64), strict=True))
    for with_controller in (False, True):  # warm-up: allocator and kernels
        _block_seconds(model, batches, optimizer, with_controller=with_controller)
    plain: list[float] = []
    with_cl: list[float] = []
    hooks: list[float] = []
    for _ in range(repeats):
        plain.append(_block_seconds(model, batches, optimizer, with_controller=False)[0])
        step, hook = _block_seconds(model, batches, optimizer, with_controller=True)
        with_cl.append(step)
        hooks.append(hook)
    plain_ms, cl_ms = statistics.median(plain) * 1e3, statistics.median(with_cl) * 1e3
    hooks_ms = statistics.median(hooks) * 1e3
    return {
        "dataset": dataset,
        "model": model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "optimizer": optimizer,
        "plain_ms_per_step": round(plain_ms, 3),
        "cl_ms_per_step": round(cl_ms, 3),
        "hooks_ms_per_step": round(hooks_ms, 3),
        "hooks_fraction": round(hooks_ms / plain_ms, 4),
        "overhead": round(cl_ms / plain_ms - 1.0, 4),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """Format the measurements as a markdown table."""
    lines = [
        "| model | optimizer | parameters | plain ms/step | CL hooks ms/step "
        "| hooks / step | step with CL ms | end-to-end overhead |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} ({r['dataset']}) | {r['optimizer']} | {r['parameters']:,} "
        f"| {r['plain_ms_per_step']:.2f} | {r['hooks_ms_per_step']:.3f} "
        f"| {r['hooks_fraction']:.1%} | {r['cl_ms_per_step']:.2f} | {r['overhead']:+.1%} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and write the result file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="blocks of each kind")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [
        measure(dataset, model, optimizer, args.steps, args.repeats)
        for dataset, model in CASES
        for optimizer in ("sgd", "adam")
    ]
    payload = {"timer": "process CPU time, 1 thread", "steps_per_block": args.steps}
    write_result(RESULT, {**payload, "repeats": args.repeats, "runs": rows})
    print(table(rows))
    print(f"\nwritten: {RESULT}")


if __name__ == "__main__":
    main()
