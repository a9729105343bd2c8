"""The test tree mirrors the package, and test modules share helpers only via tests.support."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

TESTS = ROOT / "tests"
PACKAGES = ("fedhyper", "strategies", "clients", "benchmarks")
SHARED = "tests.support"


def python_modules() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def imports_of_test_modules(source: str) -> list[str]:
    """The modules of the test tree that ``source`` imports, other than ``tests.support``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.append("." * node.level + (node.module or ""))
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "tests":
            modules = [f"tests.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found += [
            module
            for module in modules
            if module.split(".")[0] == "tests"
            and module != SHARED
            and not module.startswith(f"{SHARED}.")
        ]
    return found


def test_the_import_check_catches_a_test_module() -> None:
    assert imports_of_test_modules("from tests.support.grid import model") == []
    assert imports_of_test_modules("from tests import support") == []
    assert imports_of_test_modules("import fedhyper.rules") == []
    assert imports_of_test_modules("from tests.test_x import f") == ["tests.test_x"]
    assert imports_of_test_modules("import tests.strategies.test_y") == ["tests.strategies.test_y"]
    assert imports_of_test_modules("from tests import test_z") == ["tests.test_z"]
    assert imports_of_test_modules("def f():\n    from .test_w import g") == [".test_w"]


@pytest.mark.parametrize("path", python_modules(), ids=lambda p: str(p.relative_to(TESTS)))
def test_no_test_module_imports_another(path: Path) -> None:
    assert imports_of_test_modules(path.read_text(encoding="utf-8")) == []


def mirrored_test_modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (TESTS / package).rglob("test_*.py"))


@pytest.mark.parametrize("path", mirrored_test_modules(), ids=lambda p: str(p.relative_to(TESTS)))
def test_a_test_module_sits_where_its_source_does(path: Path) -> None:
    # tests/fedhyper/rules/test_global_lr.py tests fedhyper/rules/global_lr.py (or a folder).
    source = ROOT / path.parent.relative_to(TESTS) / path.stem.removeprefix("test_")
    assert source.with_suffix(".py").is_file() or source.is_dir(), f"no source for {path}"
