"""What FedHyper's per-step client hooks and per-round server rules cost.

``python -m benchmarks.hook_overhead`` times local SGD and Adam steps on real batches
(Fashion-MNIST with the CNN, Shakespeare with the character LSTM) without a step
controller and with each of the clients' controllers (FedHyper-CL's
:class:`~fedhyper.rules.HypergradientLocalLR`, FedHyper-Auto's
:class:`~fedhyper.rules.DescentCosine`), in interleaved blocks, and the controllers' hooks
on their own. It also times one server step of FedHyper-Auto's and the reference
FedHyper's rule on an update of the model's size, and what FedHyper-Auto's loss guard
costs a client on each dataset's cpu preset: its two forward passes over the probe rows
against one round of the client's local training, and the optional global guard's third
(on the previous global model, rebuilt from the server's step). It writes
``benchmarks/results/hook_overhead.json`` and prints markdown tables.

Steps run on one thread and are timed in process CPU time, so the ratio holds on a
machine that is busy with other work; wall time on an idle machine is about the same.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.provenance import write_result
from fedhyper.compose import compose_config
from fedhyper.data.federated import test_data
from fedhyper.models import build_model, trainable_float_keys
from fedhyper.rules import (
    AutoLR,
    DescentCosine,
    GlobalMomentumLR,
    HypergradientLocalLR,
    ServerRule,
)
from fedhyper.training import (
    evaluate,
    first_rows,
    loss_before_step,
    make_optimizer,
    set_seed,
    shuffle_generator,
    train_client,
    train_local,
)
from fedhyper.wire import ClientTask
from strategies.methods.fedhyper_auto import AutoParams

RESULT = Path(__file__).parent / "results" / "hook_overhead.json"
CASES = (("fashion_mnist", "cnn"), ("shakespeare", "char_lstm"))
GUARD_PRESETS = ("fashion_mnist_cpu", "femnist_cpu", "cifar10_cpu", "shakespeare_cpu")
"""The presets whose clients' loss-guard cost is measured."""
LR = {"sgd": 0.01, "adam": 0.001}
StepController = HypergradientLocalLR | DescentCosine


def _cl(params: list[torch.Tensor], optimizer: torch.optim.Optimizer, lr: float) -> StepController:
    delta = [torch.randn_like(p) * 1e-3 for p in params]
    return HypergradientLocalLR(params, optimizer, base_lr=lr, global_delta=delta, coupling=0.01)


def _descent_cosine(
    params: list[torch.Tensor], optimizer: torch.optim.Optimizer, lr: float
) -> StepController:
    return DescentCosine(params, server_step=[torch.randn_like(p) * 1e-3 for p in params])


CONTROLLERS: dict[str, Callable[..., StepController]] = {
    "cl": _cl,
    "descent_cosine": _descent_cosine,
}
"""The clients' step controllers, by the name of the client rule that runs them."""
SERVER_RULES: dict[str, Callable[[], ServerRule]] = {
    "fedhyper_auto": AutoLR,
    "fedhyper_gm": GlobalMomentumLR,
}
"""Server rules timed per step, at their defaults."""


class TimedHooks:
    """Forward the step hooks to a controller and add up the CPU time they take."""

    def __init__(self, controller: StepController) -> None:
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
    controller_name: str | None,
) -> tuple[float, float]:
    """Seconds per step of one pass over ``batches``, and of that in the hooks."""
    lr = LR[optimizer_name]
    optimizer = make_optimizer(optimizer_name, model.parameters(), lr, 0.5, 0.0)
    controller: TimedHooks | None = None
    if controller_name is not None:
        parameters = dict(model.named_parameters())
        params = [parameters[key] for key in trainable_float_keys(model)]
        controller = TimedHooks(CONTROLLERS[controller_name](params, optimizer, lr))
    start = time.process_time()
    train_local(
        model, batches, optimizer, epochs=1, device=torch.device("cpu"), controller=controller
    )
    hooks = controller.seconds if controller is not None else 0.0
    return (time.process_time() - start) / len(batches), hooks / len(batches)


def measure(
    dataset: str, model_name: str, optimizer: str, steps: int, repeats: int
) -> list[dict[str, Any]]:
    """Time plain steps and each controller's steps in alternating blocks.

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
    list of dict
        One row per controller: medians in milliseconds and the relative overhead.

    """
    config = compose_config([f"dataset={dataset}", f"dataset.test_examples={64 * steps}"])
    set_seed(0)
    model = build_model(config.dataset.spec(), model_name)
    inputs, labels = test_data(config.dataset).tensors
    batches = list(zip(torch.split(inputs, 64), torch.split(labels, 64), strict=True))
    kinds: list[str | None] = [None, *CONTROLLERS]
    for kind in kinds:  # warm-up: allocator and kernels
        _block_seconds(model, batches, optimizer, kind)
    steps_s: dict[str | None, list[float]] = {kind: [] for kind in kinds}
    hooks_s: dict[str | None, list[float]] = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind in kinds:
            step, hook = _block_seconds(model, batches, optimizer, kind)
            steps_s[kind].append(step)
            hooks_s[kind].append(hook)
    plain_ms = statistics.median(steps_s[None]) * 1e3
    rows = []
    for kind in CONTROLLERS:
        step_ms = statistics.median(steps_s[kind]) * 1e3
        hooks_ms = statistics.median(hooks_s[kind]) * 1e3
        rows.append(
            {
                "dataset": dataset,
                "model": model_name,
                "parameters": sum(p.numel() for p in model.parameters()),
                "optimizer": optimizer,
                "controller": kind,
                "plain_ms_per_step": round(plain_ms, 3),
                "controlled_ms_per_step": round(step_ms, 3),
                "hooks_ms_per_step": round(hooks_ms, 3),
                "hooks_fraction": round(hooks_ms / plain_ms, 4),
                "overhead": round(step_ms / plain_ms - 1.0, 4),
            }
        )
    return rows


def server_step_ms(model_name: str, dataset: str, repeats: int) -> list[dict[str, Any]]:
    """Median CPU milliseconds of one server step of each rule on a model-sized update.

    Each rule first takes two steps (so that momentum and the last update exist), then
    ``repeats`` timed ones on fresh random updates.
    """
    config = compose_config([f"dataset={dataset}"])
    set_seed(0)
    model = build_model(config.dataset.spec(), model_name)
    shapes = [p.shape for p in model.parameters()]
    rows = []
    for name, make_rule in SERVER_RULES.items():
        rule = make_rule()
        updates = [[torch.randn(shape) * 1e-3 for shape in shapes] for _ in range(repeats + 2)]
        for update in updates[:2]:
            rule.step(update)
        seconds = []
        for update in updates[2:]:
            start = time.process_time()
            rule.step(update)
            seconds.append(time.process_time() - start)
        rows.append(
            {
                "dataset": dataset,
                "model": model_name,
                "rule": name,
                "server_step_ms": round(statistics.median(seconds) * 1e3, 3),
            }
        )
    return rows


def guard_cost(preset: str, clients: int, repeats: int) -> dict[str, Any]:
    """CPU time of the loss guard's probes against a round of local training.

    Each of the preset's first ``clients`` clients trains one round from the same
    freshly initialised model at the preset's client LR, as the ClientApp does, with its
    loss measured on its first ``strategy.probe_examples`` rows before and after
    (FedHyper-Auto's default when the preset sets none), and once more on the model
    moved back by a step of its own size, as the global guard does
    (:func:`~fedhyper.training.loss_before_step`). Data loading is not timed.

    Parameters
    ----------
    preset : str
        An ``experiment`` config, e.g. ``femnist_cpu``.
    clients : int
        Clients (partitions ``0 .. clients - 1``) per repeat.
    repeats : int
        Passes over the clients; the medians of the per-pass sums are reported.

    Returns
    -------
    dict
        The preset, the probe rows, seconds of training, of the two probes and of the
        global guard's probe per pass (over all clients), and each probe's ratio to
        training.

    """
    config = compose_config([f"experiment={preset}", "strategy=fedhyper_auto"])
    assert isinstance(config.strategy, AutoParams)  # the strategy composed above
    probe_examples = config.strategy.probe_examples
    task = ClientTask.from_experiment(config)
    set_seed(config.seed)
    model = build_model(task.dataset, task.model, hidden_size=task.hidden_size)
    device = torch.device("cpu")
    partitions = [task.partition(client).train for client in range(clients)]
    state = model.state_dict()
    step = {key: 0.01 * torch.randn_like(state[key]) for key in trainable_float_keys(model)}
    train_s: list[float] = []
    probe_s: list[float] = []
    previous_s: list[float] = []
    for _ in range(repeats):
        training = probing = previous = 0.0
        for client, data in enumerate(partitions):
            local = copy.deepcopy(model)
            probe = first_rows(data, probe_examples)
            start = time.process_time()
            evaluate(local, probe, device=device)
            probing += time.process_time() - start
            start = time.process_time()
            loss_before_step(local, step, probe, device=device)
            previous += time.process_time() - start
            start = time.process_time()
            generator = shuffle_generator(config.seed, client, 1)
            train_client(local, data, task, lr=config.client.lr, generator=generator, device=device)
            training += time.process_time() - start
            start = time.process_time()
            evaluate(local, probe, device=device)
            probing += time.process_time() - start
        train_s.append(training)
        probe_s.append(probing)
        previous_s.append(previous)
    train_median, probe_median = statistics.median(train_s), statistics.median(probe_s)
    previous_median = statistics.median(previous_s)
    return {
        "preset": preset,
        "model": task.model,
        "clients": clients,
        "probe_examples": probe_examples,
        "train_s": round(train_median, 4),
        "probe_s": round(probe_median, 4),
        "probe_fraction": round(probe_median / train_median, 4),
        "previous_probe_s": round(previous_median, 4),
        "previous_probe_fraction": round(previous_median / train_median, 4),
    }


def tables(
    rows: list[dict[str, Any]], server: list[dict[str, Any]], guard: list[dict[str, Any]]
) -> str:
    """Format the measurements as markdown tables: client steps, server steps, guard."""
    lines = [
        "| model | optimizer | parameters | controller | plain ms/step | hooks ms/step "
        "| hooks / step | step with hooks ms | end-to-end overhead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} ({r['dataset']}) | {r['optimizer']} | {r['parameters']:,} "
        f"| {r['controller']} | {r['plain_ms_per_step']:.2f} | {r['hooks_ms_per_step']:.3f} "
        f"| {r['hooks_fraction']:.1%} | {r['controlled_ms_per_step']:.2f} "
        f"| {r['overhead']:+.1%} |"
        for r in rows
    ]
    lines += ["", "| model | server rule | ms per round |", "|---|---|---|"]
    lines += [
        f"| {r['model']} ({r['dataset']}) | {r['rule']} | {r['server_step_ms']:.3f} |"
        for r in server
    ]
    lines += [
        "",
        "| preset | probe rows | training s (all clients) | probes s | probes / training "
        "| global guard's probe s | its probe / training |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['preset']} ({r['clients']} clients) | {r['probe_examples']} | {r['train_s']:.3f} "
        f"| {r['probe_s']:.3f} | {r['probe_fraction']:.1%} | {r['previous_probe_s']:.3f} "
        f"| {r['previous_probe_fraction']:.1%} |"
        for r in guard
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and write the result file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="blocks of each kind")
    parser.add_argument(
        "--guard-clients", type=int, default=10, help="clients per preset for the guard's cost"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [
        row
        for dataset, model in CASES
        for optimizer in ("sgd", "adam")
        for row in measure(dataset, model, optimizer, args.steps, args.repeats)
    ]
    server = [row for dataset, model in CASES for row in server_step_ms(model, dataset, 20)]
    guard = [guard_cost(preset, args.guard_clients, args.repeats) for preset in GUARD_PRESETS]
    payload = {"timer": "process CPU time, 1 thread", "steps_per_block": args.steps}
    write_result(
        RESULT,
        {**payload, "repeats": args.repeats, "runs": rows, "server": server, "guard": guard},
    )
    print(tables(rows, server, guard))
    print(f"\nwritten: {RESULT}")


if __name__ == "__main__":
    main()
