"""Exceptions that FedHyper raises for problems a user can fix.

Everything a user can cause (a bad configuration value, a dataset that cannot be
found) derives from :class:`FedHyperError`, so entry points can catch one type and
print its one-line message instead of a traceback.
"""

from __future__ import annotations


class FedHyperError(Exception):
    """Base class of all errors that FedHyper reports to the user."""


class ConfigError(FedHyperError):
    """A configuration value is invalid.

    Parameters
    ----------
    key : str
        Dotted configuration key, e.g. ``"strategy.name"``.
    value : object
        The offending value as configured.
    allowed : str
        Human-readable description of the accepted values.

    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid value for {key!r}: {value!r} (allowed: {allowed})")


class DatasetUnavailableError(FedHyperError):
    """A dataset split is neither in the offline mirror nor loadable from the hub."""


def one_line(error: BaseException) -> str:
    """Return ``"<type>: <message>"`` with all whitespace runs collapsed to one space.

    For quoting a library's exception inside a one-line user message.
    """
    return " ".join(f"{type(error).__name__}: {error}".split())
