"""Checks of one setting against its allowed values, each failing with one ConfigError.

Shared by :mod:`fedhyper.validation` and the plug-ins that validate their own settings.
"""

from __future__ import annotations

from fedhyper.errors import ConfigError


def one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    """Require ``value`` to be one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(key, value, ", ".join(allowed))


def positive(key: str, value: float) -> None:
    """Require ``value > 0``."""
    if not value > 0:
        raise ConfigError(key, value, "a number > 0")


def at_least(key: str, value: float, low: float) -> None:
    """Require ``value >= low``."""
    if not value >= low:
        raise ConfigError(key, value, f"a number >= {low:g}")


def ordered(low_key: str, low: float, high_key: str, high: float) -> None:
    """Require the lower bound ``low`` not to exceed the upper bound ``high``."""
    if low > high:
        raise ConfigError(high_key, high, f"a number >= {low_key} ({low:g})")


def in_range(key: str, value: float, low: float, high: float, *, closed_high: bool) -> None:
    """Require ``low <= value <= high`` (``< high`` unless ``closed_high``)."""
    upper_ok = value <= high if closed_high else value < high
    if not (low <= value and upper_ok):
        bracket = "]" if closed_high else ")"
        raise ConfigError(key, value, f"a number in [{low:g}, {high:g}{bracket}")


def within_own_bounds(key: str, value: float, low: float, high: float) -> None:
    """Require positive, ordered bounds ``<key>_min``/``<key>_max`` and ``value`` within them."""
    positive(f"{key}_min", low)
    ordered(f"{key}_min", low, f"{key}_max", high)
    in_range(key, value, low, high, closed_high=True)
