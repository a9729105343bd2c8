"""The logistic L2 problem: per-shard maths, hypergradient accuracy, the 12x12 task."""

from __future__ import annotations

import itertools

import pytest
import torch

from fedhyper.bilevel.fashion12 import downsample, load_fashion12
from fedhyper.bilevel.logistic import (
    LabelledData,
    LocalShards,
    LogisticL2Problem,
    local_descent,
    loss_smoothness,
    shard_gradient,
    shard_hessian_vector,
    shard_loss,
)
from fedhyper.bilevel.maid import MAID, MAIDConfig
from fedhyper.errors import ConfigError

DTYPE = torch.float64


FEATURES, CLASSES = 4, 3


def random_data(rows: int, seed: int) -> LabelledData:
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(rows, FEATURES, generator=generator, dtype=DTYPE)
    return LabelledData(features, torch.randint(0, CLASSES, (rows,), generator=generator))


def small_problem() -> LogisticL2Problem:
    shards = [random_data(rows, seed) for seed, rows in enumerate([7, 12, 0, 5])]
    return LogisticL2Problem(shards, random_data(9, 10), solver="accelerated")


def theta0() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return -1.0 + 0.5 * torch.randn(FEATURES, CLASSES, generator=generator, dtype=DTYPE)


def test_shard_gradient_and_hessian_vector_match_autograd() -> None:
    data = random_data(11, 0)
    weights = torch.randn(FEATURES, CLASSES, dtype=DTYPE, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(data.features @ weights, data.labels)
    (gradient,) = torch.autograd.grad(loss, weights, create_graph=True)
    vector = torch.randn(FEATURES, CLASSES, dtype=DTYPE)
    (product,) = torch.autograd.grad(gradient, weights, vector)
    detached = weights.detach()
    assert shard_loss(detached, data) == pytest.approx(float(loss.detach()))
    assert torch.allclose(shard_gradient(detached, data), gradient.detach())
    assert torch.allclose(shard_hessian_vector(detached, data, vector), product)


def test_shard_weights_make_the_training_loss_the_overall_mean() -> None:
    problem = small_problem()
    assert isinstance(problem.training, LocalShards)
    shards = problem.training.shards
    assert len(shards) == 3  # the empty shard is dropped
    pooled = LabelledData(
        torch.cat([s.features for s in shards]),
        torch.cat([s.labels for s in shards]),
    )
    weights = torch.randn(FEATURES, CLASSES, dtype=DTYPE)
    assert problem.training_loss(weights) == pytest.approx(shard_loss(weights, pooled))
    theta = theta0()
    expected = shard_gradient(weights, pooled) + torch.exp(theta) * weights
    assert torch.allclose(problem.lower_gradient(weights, theta), expected)


def test_smoothness_bounds_the_hessian() -> None:
    data = random_data(20, 4)
    weights = torch.randn(FEATURES, CLASSES, dtype=DTYPE)
    vector = torch.randn(FEATURES, CLASSES, dtype=DTYPE)
    for _ in range(100):  # power iteration for the largest eigenvalue
        vector = shard_hessian_vector(weights, data, vector)
        vector = vector / torch.linalg.vector_norm(vector)
    largest = float(torch.sum(vector * shard_hessian_vector(weights, data, vector)))
    assert 0 < largest <= loss_smoothness(data.features)


def test_lower_solve_is_certified_and_accurate() -> None:
    problem = small_problem()
    theta = theta0()
    start = torch.zeros(FEATURES, CLASSES, dtype=DTYPE)
    reference = problem.solve_lower(theta, start, 1e-12).x
    rough = problem.solve_lower(theta, start, 1e-3)
    assert rough.certified
    assert float(torch.linalg.vector_norm(rough.x - reference)) <= 1e-3


def test_one_local_step_per_round_is_gradient_descent() -> None:
    problem = small_problem()
    local = LogisticL2Problem(problem.training, problem.validation, solver="fedavg")
    theta, start = theta0(), torch.zeros(FEATURES, CLASSES, dtype=DTYPE)
    by_rounds = local.solve_lower(theta, start, 1e-6)
    by_gradients = problem.solve_lower(theta, start, 1e-6)
    step = 1 / problem.lower_smoothness(theta)
    descended = start
    for _ in range(by_rounds.gradient_evaluations - 1):
        descended = descended - step * problem.lower_gradient(descended, theta)
    assert by_rounds.certified
    assert torch.allclose(by_rounds.x, descended, rtol=0, atol=1e-12)
    assert float(torch.linalg.vector_norm(by_rounds.x - by_gradients.x)) < 2e-6


def test_local_descent_steps_on_the_shards_regularised_loss() -> None:
    data = random_data(6, 1)
    x, theta = torch.randn(FEATURES, CLASSES, dtype=DTYPE), theta0()
    first, point = local_descent(x, theta, data, 2, 0.5)
    middle = x - 0.5 * (shard_gradient(x, data) + torch.exp(theta) * x)
    assert torch.equal(first, shard_gradient(x, data))
    assert torch.allclose(
        point, middle - 0.5 * (shard_gradient(middle, data) + torch.exp(theta) * middle)
    )


def hypergradient_error(
    problem: LogisticL2Problem, accuracy: float, reference: torch.Tensor
) -> float:
    theta = theta0()
    maid = MAID(
        problem,
        theta,
        torch.zeros_like(theta),
        MAIDConfig(epsilon0=accuracy, delta0=accuracy),
    )
    x = problem.solve_lower(theta, torch.zeros_like(theta), accuracy).x
    direction, _ = maid.hypergradient(x)
    return float(torch.linalg.vector_norm(direction - reference))


def test_hypergradient_approaches_finite_differences_as_accuracies_shrink() -> None:
    problem = small_problem()
    theta = theta0()
    start = torch.zeros_like(theta)

    def value(point: torch.Tensor) -> float:
        return problem.upper_value(problem.solve_lower(point, start, 1e-13).x)

    step = 1e-5
    finite_differences = torch.zeros_like(theta)
    for index in range(theta.numel()):
        shift = torch.zeros(theta.numel(), dtype=DTYPE)
        shift[index] = step
        shift = shift.reshape(theta.shape)
        finite_differences.view(-1)[index] = (value(theta + shift) - value(theta - shift)) / (
            2 * step
        )
    errors = [hypergradient_error(problem, a, finite_differences) for a in (1e-1, 1e-3, 1e-5, 1e-8)]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert errors[-1] < 1e-6 * float(torch.linalg.vector_norm(finite_differences))


def test_bad_solver_settings_name_their_key() -> None:
    data = random_data(5, 0)
    with pytest.raises(ConfigError, match=r"maid\.lower_solver"):
        LogisticL2Problem([data], data, solver="newton")
    with pytest.raises(ConfigError, match=r"maid\.max_lower_evaluations"):
        LogisticL2Problem([data], data, max_lower_evaluations=0)
    with pytest.raises(ConfigError, match=r"maid\.local_steps"):
        LogisticL2Problem([data], data, solver="fedavg", local_steps=0)


def test_downsample_averages_areas_to_144_features_in_unit_range() -> None:
    images = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    images[0] = 255
    images[1, :, :14, :] = 255  # top half white: the top 6 of 12 rows
    features = downsample(images)
    assert features.shape == (2, 144) and features.dtype == DTYPE
    assert torch.equal(features[0], torch.ones(144, dtype=DTYPE))
    grid = features[1].reshape(12, 12)
    assert torch.equal(grid[:6], torch.ones(6, 12, dtype=DTYPE))
    assert torch.equal(grid[6:], torch.zeros(6, 12, dtype=DTYPE))


def test_fashion12_task_has_disjoint_parts_of_the_asked_sizes() -> None:
    task = load_fashion12(
        train_examples=300, validation_examples=200, num_clients=4, alpha=0.5, test_examples=100
    )
    assert len(task.shards) == 4 and sum(len(shard) for shard in task.shards) == 300
    assert len(task.validation) == 200 and len(task.test) == 100
    training = torch.cat([shard.features for shard in task.shards])
    assert training.shape[1] == 144 and 0 <= float(training.min()) <= float(training.max()) <= 1
    # No validation row equals a training row (checked on the feature vectors).
    assert not bool((torch.cdist(task.validation.features, training) == 0).any())
    with pytest.raises(ConfigError, match="train_examples"):
        load_fashion12(train_examples=60_000, validation_examples=200, num_clients=4, alpha=0.5)
