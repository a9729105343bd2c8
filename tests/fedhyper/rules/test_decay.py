"""The Decay-G and Decay-SL baselines, with hand-computed expected values."""

from __future__ import annotations

import pytest

from fedhyper.rules import DecayGlobal, DecayLocal
from tests.support.tensors import assert_tl, tl


def test_decay_global_values() -> None:
    rule = DecayGlobal(initial_lr=2.0)
    # t = 0, 1, 2: 2, 2 * 0.995 = 1.99, 2 * 0.995^2 = 2 * 0.990025 = 1.98005
    for expected in (2.0, 1.99, 1.98005):
        step = rule.step(tl([1.0, -1.0]))
        assert step.global_lr == pytest.approx(expected, abs=1e-12)
        assert_tl(step.update, [[expected, -expected]])
        assert step.client_lr is None


def test_decay_local_values() -> None:
    rule = DecayLocal(initial_client_lr=0.1)
    # round t trains with 0.1 * 0.995^t: t = 0 -> 0.1, t = 1 -> 0.0995, t = 2 -> 0.0990025
    assert rule.initial_client_lr() == 0.1
    steps = [rule.step(tl([1.0, -1.0])) for _ in range(2)]
    assert steps[0].client_lr == pytest.approx(0.0995, abs=1e-12)
    assert steps[1].client_lr == pytest.approx(0.0990025, abs=1e-12)
    assert all(s.global_lr == 1.0 for s in steps)
    assert_tl(steps[1].update, [[1.0, -1.0]])
    with pytest.raises(ValueError, match="decay"):
        DecayLocal(0.1, decay=1.5)
