"""Name-keyed registries of plug-ins, filled by importing the modules that register them.

A registry names a package of plug-in modules; the first lookup imports every module of
that package, and every lookup imports the modules named in ``$FEDHYPER_PLUGINS``
(comma-separated, importable from ``sys.path``), so a plug-in kept outside this
repository is found the same way.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

from fedhyper.errors import ConfigError

PLUGINS_ENV = "FEDHYPER_PLUGINS"
"""Environment variable naming extra plug-in modules, comma-separated."""

T = TypeVar("T")


def import_plugins_from_env() -> None:
    """Import the modules named in ``$FEDHYPER_PLUGINS`` (Python caches them).

    Raises
    ------
    ConfigError
        If a named module cannot be imported.

    """
    for name in os.environ.get(PLUGINS_ENV, "").split(","):
        if name.strip():
            try:
                importlib.import_module(name.strip())
            except ImportError as error:
                raise ConfigError(PLUGINS_ENV, name, f"importable modules ({error})") from None


class Registry(Generic[T]):
    """Plug-ins of one kind, by name, in the order they registered.

    Parameters
    ----------
    key : str
        The configuration key that names a plug-in, for error messages
        (``strategy.name``).
    package : str
        The package whose modules register the built-in plug-ins.

    """

    def __init__(self, key: str, package: str) -> None:
        self.key = key
        self.package = package
        self._entries: dict[str, T] = {}
        self._imported = False

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` and return it.

        Raises
        ------
        ValueError
            If another entry already holds the name.

        """
        if self._entries.get(name, entry) is not entry:
            raise ValueError(f"{self.key} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def _import(self) -> None:
        if not self._imported:
            # Set first: the imported modules register into this registry.
            self._imported = True
            root = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(root.__path__):
                importlib.import_module(f"{self.package}.{module.name}")
        import_plugins_from_env()

    def get(self, name: str) -> T:
        """Return the entry named ``name``.

        Raises
        ------
        ConfigError
            Under :attr:`key`, listing the registered names, if none is called so.

        """
        self._import()
        if name not in self._entries:
            raise ConfigError(self.key, name, ", ".join(self._entries))
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        """Return the registered names, in registration order."""
        self._import()
        return tuple(self._entries)

    def __iter__(self) -> Iterator[T]:
        """Iterate over the entries, in registration order."""
        self._import()
        return iter(list(self._entries.values()))
