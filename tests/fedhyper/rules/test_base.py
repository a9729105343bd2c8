"""The ServerRule contract: a state_dict round trip continues every rule identically."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from fedhyper.rules import (
    DecayGlobal,
    DecayLocal,
    FedExP,
    GlobalLR,
    GlobalMomentumLR,
    ServerLocalLR,
    ServerRule,
    ServerStep,
    UniversalGlobalLR,
)


def _deltas(seed: int, rounds: int) -> list[list[Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    # Small magnitudes so the raw inner products (~0.1) do not saturate the bounds.
    return [
        [0.1 * torch.randn(3, 2, generator=gen), 0.1 * torch.randn(4, generator=gen)]
        for _ in range(rounds)
    ]


RULE_FACTORIES: dict[str, Callable[[], ServerRule]] = {
    "G": lambda: GlobalLR(initial_lr=1.2, hyper_lr=2.0),
    "G-normalised": lambda: GlobalLR(hyper_lr=0.3, normalised=True),
    "GM": lambda: GlobalMomentumLR(hyper_lr=2.0),
    "GM-normalised": lambda: GlobalMomentumLR(hyper_lr=0.3, normalised=True),
    "SL": lambda: ServerLocalLR(initial_client_lr=0.05, hyper_lr=2.0),
    "SL-normalised": lambda: ServerLocalLR(initial_client_lr=0.05, hyper_lr=0.3, normalised=True),
    "universal": lambda: UniversalGlobalLR(hyper_lr=3.0),
    "decay-G": lambda: DecayGlobal(initial_lr=1.5),
    "decay-SL": lambda: DecayLocal(initial_client_lr=0.05),
    "FedExP": lambda: FedExP(eps=1e-3),
}


def _run_round(rule: ServerRule, delta: list[Tensor]) -> ServerStep:
    if isinstance(rule, FedExP):
        # two clients whose mean is delta: 1.5 delta and 0.5 delta
        rule.add_client([1.5 * d for d in delta])
        rule.add_client([0.5 * d for d in delta])
    return rule.step(delta)


def _same_step(a: ServerStep, b: ServerStep) -> bool:
    return (a.global_lr, a.client_lr, a.hypergradient) == (
        b.global_lr,
        b.client_lr,
        b.hypergradient,
    ) and all(torch.equal(x, y) for x, y in zip(a.update, b.update, strict=True))


@pytest.mark.parametrize("name", sorted(RULE_FACTORIES))
def test_state_dict_round_trip_gives_identical_future_steps(name: str) -> None:
    factory = RULE_FACTORIES[name]
    deltas = _deltas(seed=7, rounds=3)
    original = factory()
    for delta in deltas[:2]:
        _run_round(original, delta)
    state = original.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # checkpointable as is
    # Step the original first: a state_dict aliasing live state would change under us.
    expected = _run_round(original, deltas[2])
    # Load the same in-memory state twice: a load_state_dict that aliased it would let the
    # first restored rule's in-place updates leak into the second.
    for _ in range(2):
        restored = factory()
        restored.load_state_dict(state)
        assert _same_step(_run_round(restored, deltas[2]), expected)
    buffer.seek(0)
    restored = factory()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert _same_step(_run_round(restored, deltas[2]), expected)
    if not isinstance(original, FedExP):  # FedExP's step size does not depend on history
        # A fresh rule that skipped the 2 rounds must differ, else the test proves nothing.
        assert not _same_step(_run_round(factory(), deltas[2]), expected)


def test_load_state_dict_reports_missing_keys() -> None:
    with pytest.raises(KeyError, match="previous_delta"):
        GlobalLR().load_state_dict({"alpha": 1.0})
