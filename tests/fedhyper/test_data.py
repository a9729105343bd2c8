"""The data package's names, each imported from its module only when first used."""

from __future__ import annotations

import importlib

import fedhyper.data as data


def test_every_exported_name_comes_from_its_module() -> None:
    assert sorted(data.__all__) == sorted(data._HOME_OF)
    for name in data.__all__:
        home = importlib.import_module(data._HOME_OF[name])
        assert getattr(data, name) is getattr(home, name)
