"""The bias-corrected average of a signal, plain and over its RMS, by hand."""

from __future__ import annotations

import pytest

from fedhyper.rules.signal_average import SignalAverage


def test_plain_average_is_bias_corrected() -> None:
    average = SignalAverage(0.5)
    assert average.add(0.4) == pytest.approx(0.4)
    # e = 0.5 * 0.2 + 0.5 * 0.0 = 0.1, corrected by 1 - 0.25.
    assert average.add(0.0) == pytest.approx(0.1 / 0.75)


def test_rms_normalised_average_keeps_the_sign_and_drops_the_size() -> None:
    small, large = SignalAverage(0.5, rms_normalised=True), SignalAverage(0.5, True)
    for signal in (0.01, 0.03, -0.02):
        assert small.add(signal) == pytest.approx(large.add(100.0 * signal))
    steady = SignalAverage(0.5, rms_normalised=True)
    assert [steady.add(0.02) for _ in range(3)] == pytest.approx([1.0, 1.0, 1.0])
    flipping = SignalAverage(0.5, rms_normalised=True)
    values = [flipping.add(sign * 0.3) for sign in (1, -1, 1, -1)]
    assert all(abs(value) < 1.0 for value in values[1:])
    assert SignalAverage(0.5, rms_normalised=True).add(0.0) == 0.0


def test_no_smoothing_passes_the_signal_or_its_sign() -> None:
    assert SignalAverage(0.0).add(-0.3) == pytest.approx(-0.3)
    assert SignalAverage(0.0, rms_normalised=True).add(-0.3) == pytest.approx(-1.0)


def test_state_round_trip_and_bad_settings() -> None:
    original = SignalAverage(0.5, rms_normalised=True)
    original.add(0.2)
    restored = SignalAverage(0.5, rms_normalised=True)
    restored.load_state_dict(original.state_dict())
    assert restored.add(-0.1) == original.add(-0.1)
    with pytest.raises(KeyError, match="power"):
        restored.load_state_dict({"average": 0.0, "count": 1})
    with pytest.raises(ValueError, match="smoothing"):
        SignalAverage(1.0)
