"""README "Extending" stays honest: every file and Python name it points to exists."""

from __future__ import annotations

import importlib
import re

import pytest

from tests.support.paths import ROOT

PACKAGES = ("fedhyper", "strategies", "clients", "benchmarks")
# Backticked spans of the section; paths have a slash, dotted names start with a package.
SPAN = re.compile(r"`([^`]+)`")
DOTTED = re.compile(rf"^(?:{'|'.join(PACKAGES)})(?:\.\w+)+")
PLACEHOLDER = re.compile(r"<[^>]+>")


def extending_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Extending\n", 1)[1]
    return section.split("\n## ", 1)[0]


def spans() -> list[str]:
    return SPAN.findall(extending_section())


def mentioned_paths() -> list[str]:
    """Repository paths, cut at the first placeholder (``conf/strategy/<name>.yaml``)."""
    paths = []
    for span in spans():
        if "/" not in span or re.search(r"[ =:]", span) or not span[0].islower():
            continue  # a command, an override, a yaml snippet, or a user's own directory
        path = PLACEHOLDER.split(span, 1)[0]
        if path:
            paths.append(path)
    return sorted(set(paths))


def mentioned_names() -> list[str]:
    names = {match.group(0) for span in spans() if (match := DOTTED.match(span))}
    return sorted(names)


def test_the_section_names_what_each_extension_needs() -> None:
    section = extending_section()
    for kind in ("A method", "A client rule", "A dataset", "A callback"):
        assert f"**{kind}" in section
    # Hand-counted from the section: guards the span patterns against matching nothing.
    assert {"conf/strategy/", "strategies/methods/", "fedhyper/models.py"} <= set(mentioned_paths())
    assert {"fedhyper.methods.Method", "strategies.runner.default_callbacks"} <= set(
        mentioned_names()
    )


@pytest.mark.parametrize("path", mentioned_paths())
def test_every_mentioned_path_exists(path: str) -> None:
    assert (ROOT / path).exists(), f"README Extending names {path}, which does not exist"


@pytest.mark.parametrize("name", mentioned_names())
def test_every_mentioned_python_name_imports(name: str) -> None:
    parts = name.split(".")
    # The longest importable prefix is the module; the rest are attributes of it.
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            assert hasattr(target, attribute), f"README Extending names {name}: no {attribute}"
            target = getattr(target, attribute)
        return
    pytest.fail(f"README Extending names {name}, which does not import")
