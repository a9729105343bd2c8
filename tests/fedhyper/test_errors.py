"""The one-line configuration error."""

from __future__ import annotations

from fedhyper.data import ConfigError


def test_config_error_message_is_one_line() -> None:
    error = ConfigError("strategy.name", "foo", "fedavg, fedhyper_g")
    assert str(error) == "invalid value for 'strategy.name': 'foo' (allowed: fedavg, fedhyper_g)"
