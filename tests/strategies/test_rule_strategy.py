"""Strategies fed fixed client replies: the new global arrays, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM
from flwr.supercore.task_identity import TaskIdentity

from fedhyper.compose import compose_config
from fedhyper.methods import method_names
from fedhyper.rules import FedExP, GlobalLR, GlobalMomentumLR, ServerLocalLR, UniversalGlobalLR
from fedhyper.wire import (
    CONFIG_RECORD,
    GLOBAL_LR_KEY,
    HYPERGRADIENT_KEY,
    PREVIOUS_DELTA_RECORD,
    SCHEDULED_CLIENT_LR_KEY,
    TrainInstruction,
)
from strategies.delegating import AveragedBuffers
from strategies.factory import build_strategy, server_rule
from strategies.rule_strategy import RuleStrategy
from strategies.universal import UniversalStrategy
from tests.support.grid import KEYS, SAMPLING, FixedNodes, model, reply


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    """Messages carry their sender; set it as Flower's in-process simulation does."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def run_round(
    strategy: FedAvg | AveragedBuffers | UniversalStrategy,
    server_round: int,
    current: ArrayRecord,
    replies: list[Message],
) -> tuple[ArrayRecord, MetricRecord, list[Message]]:
    messages = list(strategy.configure_train(server_round, current, ConfigRecord(), FixedNodes(2)))
    new, metrics = strategy.aggregate_train(server_round, replies)
    assert new is not None and metrics is not None
    return new, metrics, messages


def weights(arrays: ArrayRecord) -> np.ndarray:
    return arrays["w"].numpy()


def test_fedhyper_g_two_rounds_by_hand() -> None:
    strategy = RuleStrategy(GlobalLR(initial_lr=1.0, hyper_lr=1.0), KEYS, **SAMPLING)
    w0 = model([1.0, 1.0])
    # Weighted 1:3 -> average [3.5, 2.5], so Δ_0 = [2.5, 1.5]; α_0 = 1.
    w1, metrics, _ = run_round(
        strategy,
        1,
        w0,
        [reply(model([2.0, 1.0], 0.0, 5), 1), reply(model([4.0, 3.0], 4.0, 9), 3)],
    )
    np.testing.assert_allclose(weights(w1), [3.5, 2.5])
    assert metrics[GLOBAL_LR_KEY] == 1.0
    # Buffers take the plain weighted average and keep their dtype: (0+12)/4, (5+27)/4.
    np.testing.assert_allclose(w1["bn.running_mean"].numpy(), [3.0])
    assert w1["bn.num_batches_tracked"].numpy().dtype == np.int64
    assert int(w1["bn.num_batches_tracked"].numpy()) == 8
    # Δ_1 = [1, -1]: <Δ_1, Δ_0> = 2.5 - 1.5 = 1 -> α_1 = 2, w_2 = w_1 + 2 Δ_1.
    w2, metrics, _ = run_round(
        strategy, 2, w1, [reply(model([4.5, 1.5]), 1), reply(model([4.5, 1.5]), 1)]
    )
    assert metrics[GLOBAL_LR_KEY] == pytest.approx(2.0)
    assert metrics[HYPERGRADIENT_KEY] == pytest.approx(1.0)
    np.testing.assert_allclose(weights(w2), [5.5, 0.5])


def test_sign_convention_opposing_updates_shrink_the_global_lr() -> None:
    strategy = RuleStrategy(GlobalLR(hyper_lr=1.0), KEYS, **SAMPLING)
    w1, _, _ = run_round(
        strategy, 1, model([0.0, 0.0]), [reply(model([1.0, 0.0]), 1) for _ in range(2)]
    )
    _, metrics, _ = run_round(strategy, 2, w1, [reply(model([0.5, 0.0]), 1) for _ in range(2)])
    # Δ_1 = [-0.5, 0] opposes Δ_0 = [1, 0]: α = 1 - 0.5.
    assert metrics[GLOBAL_LR_KEY] == pytest.approx(0.5)


def test_unweighted_mean_ignores_example_counts() -> None:
    strategy = RuleStrategy(GlobalLR(), KEYS, weighted_by_key="uniform-weight", **SAMPLING)
    w1, _, _ = run_round(
        strategy, 1, model([0.0, 0.0]), [reply(model([2.0, 0.0]), 1), reply(model([4.0, 2.0]), 99)]
    )
    np.testing.assert_allclose(weights(w1), [3.0, 1.0])


def test_fedhyper_sl_sends_the_scheduled_lr() -> None:
    rule = ServerLocalLR(initial_client_lr=0.01, hyper_lr=1.0)
    strategy = RuleStrategy(rule, KEYS, **SAMPLING)
    # The configured client LR (client.lr) differs: the scheduled one must replace it.
    config = compose_config(["client.lr=0.5"])

    def sent_lr(server_round: int, current: ArrayRecord) -> float:
        instruction = TrainInstruction.from_experiment(config, server_round, 0)
        record = ConfigRecord(instruction.to_record())
        messages = list(strategy.configure_train(server_round, current, record, FixedNodes(2)))
        return TrainInstruction.from_record(messages[0].content[CONFIG_RECORD]).lr

    assert sent_lr(1, model([0.0, 0.0])) == 0.01
    strategy.aggregate_train(1, [reply(model([1.0, 0.0]), 1) for _ in range(2)])
    w1 = model([1.0, 0.0])
    sent_lr(2, w1)
    _, metrics = strategy.aggregate_train(2, [reply(model([1.5, 0.0]), 1) for _ in range(2)])
    # acc = <[0.5, 0], [1, 0]> = 0.5 -> η = 0.01 (1 + 0.5) for round 3.
    assert sent_lr(3, w1) == pytest.approx(0.015)
    assert metrics is not None and metrics[SCHEDULED_CLIENT_LR_KEY] == 0.01


def test_previous_delta_travels_unscaled_from_round_two() -> None:
    strategy = RuleStrategy(GlobalLR(initial_lr=2.0), KEYS, send_previous_delta=True, **SAMPLING)
    _, _, messages = run_round(
        strategy, 1, model([0.0, 0.0]), [reply(model([1.0, 3.0]), 1) for _ in range(2)]
    )
    assert PREVIOUS_DELTA_RECORD not in messages[0].content
    _, _, messages = run_round(
        strategy, 2, model([2.0, 6.0]), [reply(model([2.0, 6.0]), 1) for _ in range(2)]
    )
    sent = messages[0].content.array_records[PREVIOUS_DELTA_RECORD]
    assert list(sent.keys()) == KEYS
    np.testing.assert_allclose(sent["w"].numpy(), [1.0, 3.0])  # Δ_0, not α Δ_0


def test_fedexp_extrapolates_from_client_norms() -> None:
    strategy = RuleStrategy(FedExP(eps=1e-3), KEYS, weighted_by_key="uniform-weight", **SAMPLING)
    w1, metrics, _ = run_round(
        strategy, 1, model([0.0, 0.0]), [reply(model([1.0, 0.0]), 1), reply(model([-1.0, 0.2]), 1)]
    )
    # Δ̄ = [0, 0.1]; Σ‖Δ_i‖² = 1 + 1.04 = 2.04; η = 2.04 / (2·2·(0.01 + 0.001)) = 46.3636...
    eta = 2.04 / (4 * 0.011)
    assert metrics[GLOBAL_LR_KEY] == pytest.approx(eta)
    np.testing.assert_allclose(weights(w1), [0.0, 0.1 * eta], rtol=1e-6)


def test_fedadam_steps_with_the_momentum_of_delta() -> None:
    """Regression: FedAdam's update is m_t / (sqrt(v_t) + τ), not Δ_t / (...)."""
    fedadam = FedAdam(eta=0.1, eta_l=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3, **SAMPLING)
    strategy = AveragedBuffers(fedadam, KEYS)
    w1, _, _ = run_round(
        strategy, 1, model([0.0, 0.0]), [reply(model([1.0, 1.0]), 1) for _ in range(2)]
    )
    # m = 0.1, v = 0.01, η_norm = 0.1·sqrt(1 − 0.99²)/(1 − 0.9²); step = η_norm·0.1/(0.1 + 1e-3).
    eta_norm = 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    first = eta_norm * 0.1 / (0.1 + 1e-3)
    np.testing.assert_allclose(weights(w1), [first, first], rtol=1e-5)
    w2, _, _ = run_round(
        strategy, 2, w1, [reply(model([first - 1.0, first - 1.0]), 1) for _ in range(2)]
    )
    # Δ_2 = -1: m = 0.09 - 0.1 = -0.01 (the sign of Δ_2 with the magnitude of the momentum),
    # v = 0.0099 + 0.01 = 0.0199.
    eta_norm = 0.1 * np.sqrt(1 - 0.99**3) / (1 - 0.9**3)
    second = first + eta_norm * (-0.01) / (np.sqrt(0.0199) + 1e-3)
    np.testing.assert_allclose(weights(w2), [second, second], rtol=1e-5)


def test_averaged_buffers_keep_server_momentum_off_batchnorm_statistics() -> None:
    fedavgm = FedAvgM(server_learning_rate=1.0, server_momentum=0.9, **SAMPLING)
    strategy = AveragedBuffers(fedavgm, KEYS)
    w1, _, _ = run_round(
        strategy, 1, model([0.0, 0.0], 1.0), [reply(model([1.0, 0.0], 3.0), 1) for _ in range(2)]
    )
    w2, _, _ = run_round(strategy, 2, w1, [reply(model([2.0, 0.0], 5.0), 1) for _ in range(2)])
    # Momentum on w: m = 0.9·1 + 1 -> w = 1 + 1.9; the running mean is just the average.
    np.testing.assert_allclose(weights(w2), [2.9, 0.0])
    np.testing.assert_allclose(w2["bn.running_mean"].numpy(), [5.0])


def test_universal_scales_the_update_before_the_inner_optimiser() -> None:
    strategy = UniversalStrategy(FedAvg(**SAMPLING), UniversalGlobalLR(hyper_lr=1.0), KEYS)
    w1, metrics, _ = run_round(
        strategy, 1, model([0.0, 0.0]), [reply(model([1.0, 0.0]), 1) for _ in range(2)]
    )
    assert metrics[GLOBAL_LR_KEY] == 1.0
    np.testing.assert_allclose(weights(w1), [1.0, 0.0])
    # <Δ_1, Δ_0> = 0.5 -> scale 1.5; FedAvg then adds 1.5 Δ_1.
    w2, metrics, _ = run_round(strategy, 2, w1, [reply(model([1.5, 0.0]), 1) for _ in range(2)])
    assert metrics[GLOBAL_LR_KEY] == pytest.approx(1.5)
    np.testing.assert_allclose(weights(w2), [1.75, 0.0])


def test_gm_starts_at_the_accumulator_of_its_initial_global_lr() -> None:
    config = compose_config(["strategy=fedhyper", "strategy.global_lr=0.5"])
    rule = server_rule(config)
    assert isinstance(rule, GlobalMomentumLR)
    assert rule.accumulator == pytest.approx((1 - 0.9) * (0.5 - 1))


@pytest.mark.parametrize("name", method_names())
def test_every_configured_strategy_builds(name: str) -> None:
    config = compose_config([f"strategy={name}"])
    assert build_strategy(config, KEYS) is not None
