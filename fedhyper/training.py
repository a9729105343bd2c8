"""Local training and evaluation loops shared by clients and the server.

Batches are ``(inputs, targets)`` pairs and the loss is cross-entropy on logits.
Per-step learning-rate rules (FedHyper's client-side hypergradient) plug into
:func:`train_local` through the :class:`StepController` protocol.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.optimizer import ParamsT
from torch.utils.data import TensorDataset

from fedhyper.batching import TensorBatches, sequential_batches
from fedhyper.errors import ConfigError

__all__ = [
    "ADAPTIVE_OPTIMIZERS",
    "DEVICE_CHOICES",
    "OPTIMIZER_NAMES",
    "EvalResult",
    "LocalSettings",
    "StepController",
    "TrainResult",
    "evaluate",
    "first_rows",
    "flush_denormals",
    "loss_before_step",
    "make_optimizer",
    "pick_device",
    "set_seed",
    "shuffle_generator",
    "train_client",
    "train_local",
]

OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "adam")
ADAPTIVE_OPTIMIZERS: tuple[str, ...] = ("adam",)
"""The optimisers of :data:`OPTIMIZER_NAMES` that scale each coordinate's step by its own
gradient history."""
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class StepController(Protocol):
    """Per-step hooks through which a learning-rate rule steers :func:`train_local`.

    The controller is expected to hold the optimizer (and model) it acts on; the loop
    only tells it where it is.
    """

    def start_epoch(self) -> None:
        """Run at the start of every local epoch, before its first batch."""

    def before_step(self) -> None:
        """Run after ``backward()`` and right before ``optimizer.step()``.

        Gradients of the current batch are available; a learning rate set here is
        the one the imminent step uses.
        """

    def after_step(self) -> None:
        """Run right after ``optimizer.step()``; a learning rate set here applies next."""


class LocalSettings(Protocol):
    """How a client trains in a round (a client's task has these attributes)."""

    @property
    def optimizer(self) -> str:
        """``sgd`` or ``adam``."""

    @property
    def momentum(self) -> float:
        """SGD momentum."""

    @property
    def weight_decay(self) -> float:
        """L2 penalty."""

    @property
    def local_epochs(self) -> int:
        """Passes over the client's data."""

    @property
    def batch_size(self) -> int:
        """Mini-batch size."""

    @property
    def max_steps(self) -> int:
        """Cap on optimizer steps; 0 for none."""


Controller = TypeVar("Controller", bound=StepController)


@dataclass(frozen=True)
class TrainResult:
    """Summary of one call to :func:`train_local`.

    Attributes
    ----------
    mean_loss : float
        Training loss averaged over every example processed (NaN if none was).
    num_examples : int
        Examples processed, counted once per epoch they were seen in.
    steps : int
        Optimizer steps taken.
    lrs : list of float
        Learning rate of ``optimizer.param_groups[0]`` used by each step.

    """

    mean_loss: float
    num_examples: int
    steps: int
    lrs: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class EvalResult:
    """Summary of one call to :func:`evaluate`.

    Attributes
    ----------
    loss : float
        Mean cross-entropy per example (NaN on empty data).
    accuracy : float
        Fraction of examples whose arg-max logit is the target (NaN on empty data).
    num_examples : int
        Examples evaluated.

    """

    loss: float
    accuracy: float
    num_examples: int


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and every CUDA device) generators.

    Parameters
    ----------
    seed : int
        The seed.

    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def flush_denormals(enabled: bool) -> bool:
    """Treat subnormal floats as zero on the CPU, or keep IEEE's gradual underflow.

    Sets the x86 FTZ/DAZ flags (``torch.set_flush_denormal``) of the calling thread;
    threads it starts later inherit them, so the call belongs before any parallel work
    of the process. Arithmetic on subnormal values (below 1.2e-38 in float32) takes
    many times as long as on normal ones, and the gradients of a saturated recurrent
    network fall there. No effect on a GPU, nor on a CPU without the flags.

    Parameters
    ----------
    enabled : bool
        Flush (``True``) or not.

    Returns
    -------
    bool
        Whether this CPU has the flags (the call does nothing where it has not).

    """
    return bool(torch.set_flush_denormal(enabled))


def pick_device(prefer: str = "auto") -> torch.device:
    """Resolve a device setting.

    Parameters
    ----------
    prefer : str
        ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``.

    Returns
    -------
    torch.device
        The device to train on.

    Raises
    ------
    ConfigError
        If ``prefer`` is unknown, or is ``cuda`` while no CUDA device is available.

    """
    if prefer not in DEVICE_CHOICES:
        raise ConfigError("client.device", prefer, ", ".join(DEVICE_CHOICES))
    cuda = torch.cuda.is_available()
    if prefer == "cuda" and not cuda:
        raise ConfigError("client.device", prefer, "auto, cpu (no CUDA device is available)")
    if prefer == "cpu" or not cuda:
        return torch.device("cpu")
    return torch.device("cuda")


def make_optimizer(
    name: str, params: ParamsT, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Construct the local optimizer.

    Parameters
    ----------
    name : str
        ``sgd`` (heavy-ball momentum) or ``adam`` (default betas; ``momentum`` unused).
    params : iterable of torch.Tensor or of dict
        Parameters or parameter groups to optimise.
    lr : float
        Learning rate.
    momentum : float
        SGD momentum factor.
    weight_decay : float
        L2 penalty added to the gradient.

    Returns
    -------
    torch.optim.Optimizer
        The optimizer.

    Raises
    ------
    ConfigError
        If ``name`` is not in :data:`OPTIMIZER_NAMES`.

    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError("client.optimizer", name, ", ".join(OPTIMIZER_NAMES))


def shuffle_generator(seed: int, client: int, server_round: int) -> torch.Generator:
    """Return the generator of one client's batch order in one round.

    Parameters
    ----------
    seed : int
        The experiment's seed.
    client : int
        The client's partition id (or, for a node with its own data, its node id).
    server_round : int
        The round.

    Returns
    -------
    torch.Generator
        Seeded by ``(seed, client, server_round)``: a distinct, reproducible shuffle.

    """
    # The hash of a tuple of ints is the same in every process (no hash randomisation).
    return torch.Generator().manual_seed(hash((seed, client, server_round)))


def train_client(
    model: nn.Module,
    data: TensorDataset,
    settings: LocalSettings,
    *,
    lr: float,
    generator: torch.Generator,
    device: torch.device,
    controller_for: Callable[[torch.optim.Optimizer], Controller] | None = None,
) -> tuple[TrainResult, Controller | None]:
    """Run one client's local training of a round, as the ClientApp does.

    Parameters
    ----------
    model : torch.nn.Module
        The global model, already on ``device``; trained in place.
    data : TensorDataset
        The client's training rows.
    settings : LocalSettings
        Optimizer, epochs, batch size and step cap.
    lr : float
        The learning rate the round starts with (the server's instruction).
    generator : torch.Generator
        Shuffles the batches (:func:`shuffle_generator`).
    device : torch.device
        Where batches are moved.
    controller_for : callable, optional
        Builds the round's per-step learning-rate rule from the fresh optimizer.

    Returns
    -------
    TrainResult
        As :func:`train_local` returns it.
    controller
        The rule ``controller_for`` built (to read its report), or ``None``.

    """
    optimizer = make_optimizer(
        settings.optimizer,
        model.parameters(),
        lr,
        settings.momentum,
        settings.weight_decay,
    )
    controller = None if controller_for is None else controller_for(optimizer)
    result = train_local(
        model,
        TensorBatches(data, settings.batch_size, generator),
        optimizer,
        epochs=settings.local_epochs,
        device=device,
        max_steps=settings.max_steps,
        controller=controller,
    )
    return result, controller


def train_local(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    device: torch.device,
    max_steps: int = 0,
    controller: StepController | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy for a number of local epochs.

    Parameters
    ----------
    model : torch.nn.Module
        Network already on ``device``; it is left in training mode.
    loader : iterable of (Tensor, Tensor)
        Yields ``(inputs, targets)`` batches (a ``DataLoader``, a
        :class:`~fedhyper.batching.TensorBatches`); targets are class indices.
    optimizer : torch.optim.Optimizer
        Optimizer over ``model``'s parameters.
    epochs : int
        Passes over ``loader``; at least 1.
    device : torch.device
        Where batches are moved.
    max_steps : int
        If positive, stop after this many optimizer steps in total, even mid-epoch;
        an epoch that would take no step is not started.
    controller : StepController, optional
        Per-step learning-rate rule.

    Returns
    -------
    TrainResult
        Mean loss, example and step counts, and the learning rate of every step.

    Raises
    ------
    ValueError
        If ``epochs < 1`` or ``max_steps < 0``.

    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if max_steps < 0:
        raise ValueError(f"max_steps must be non-negative, got {max_steps}")
    step_budget = max_steps if max_steps > 0 else math.inf

    model.train()
    # Summed on the device so the loop never waits for the accelerator; read once at the end.
    loss_sum = torch.zeros((), device=device)
    num_examples = 0
    lrs: list[float] = []
    for _ in range(epochs):
        if len(lrs) >= step_budget:
            break
        if controller is not None:
            controller.start_epoch()
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(inputs), targets)
            # Same as loss.backward(), which torch leaves untyped.
            torch.autograd.backward(loss)
            if controller is not None:
                controller.before_step()
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            if controller is not None:
                controller.after_step()
            batch_size = targets.shape[0]
            loss_sum += loss.detach() * batch_size
            num_examples += batch_size
            if len(lrs) >= step_budget:
                break

    return TrainResult(
        mean_loss=loss_sum.item() / num_examples if num_examples else math.nan,
        num_examples=num_examples,
        steps=len(lrs),
        lrs=lrs,
    )


def first_rows(data: TensorDataset, count: int) -> TensorDataset:
    """Return the first ``count`` rows of ``data``.

    A client's training rows are in a seeded random order, so these are a fixed random
    sample of them: the rows the loss guard's probe measures before and after training.
    """
    return TensorDataset(*(tensor[:count] for tensor in data.tensors))


def loss_before_step(
    model: nn.Module, step: Mapping[str, Tensor], data: TensorDataset, *, device: torch.device
) -> float:
    """Return the loss on ``data`` of ``model`` moved back by ``step``; the model is restored.

    With ``step`` the server's last step :math:`w_t - w_{t-1}`, this is the previous
    global model's loss on the same rows: comparing it with the current model's tells
    whether that step went uphill, which a cosine at :math:`w_t` alone cannot.

    Parameters
    ----------
    model : torch.nn.Module
        The current model, on ``device``.
    step : mapping of str to Tensor
        ``state_dict`` entries to subtract (the others stay as they are).
    data : TensorDataset
        The rows to evaluate.
    device : torch.device
        Where batches are moved.

    Returns
    -------
    float
        The mean cross-entropy (:func:`evaluate`).

    """
    current = {key: value.clone() for key, value in model.state_dict().items()}
    previous = {
        key: value - step[key].to(value.device, value.dtype) if key in step else value
        for key, value in current.items()
    }
    model.load_state_dict(previous)
    try:
        return evaluate(model, data, device=device).loss
    finally:
        model.load_state_dict(current)


def evaluate(
    model: nn.Module,
    data: TensorDataset | Iterable[tuple[Tensor, Tensor]],
    *,
    device: torch.device,
    batch_size: int = 1024,
) -> EvalResult:
    """Compute cross-entropy and accuracy of ``model`` without tracking gradients.

    Parameters
    ----------
    model : torch.nn.Module
        Network already on ``device``; its train/eval mode is restored afterwards.
    data : TensorDataset or iterable of (Tensor, Tensor)
        ``(inputs, targets)`` tensors, sliced into batches in order, or any iterable
        of such batches (used as is).
    device : torch.device
        Where batches are moved.
    batch_size : int
        Batch size when ``data`` is a ``TensorDataset``.

    Returns
    -------
    EvalResult
        Mean loss, accuracy and number of examples.

    """
    loader = sequential_batches(data, batch_size) if isinstance(data, TensorDataset) else data
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    num_examples = 0
    try:
        with torch.inference_mode():
            for inputs, targets in loader:
                inputs = inputs.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                logits = model(inputs)
                loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
                correct += (logits.argmax(dim=1) == targets).sum()
                num_examples += targets.shape[0]
    finally:
        model.train(was_training)
    if num_examples == 0:
        return EvalResult(loss=math.nan, accuracy=math.nan, num_examples=0)
    return EvalResult(
        loss=loss_sum.item() / num_examples,
        accuracy=correct.item() / num_examples,
        num_examples=num_examples,
    )
