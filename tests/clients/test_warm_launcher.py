"""The warm launcher's parts that run without a SuperNode.

Its whole path (a SuperNode in process isolation, TLS, authentication, a FedHyper run, a
restart) is in ``tests/integration/test_deployment.py``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from clients import warm_launcher
from clients.warm_launcher import (
    CANNOT_RESTART,
    PROJECT_PACKAGES,
    READY_LINE,
    flower_version_problem,
    fork_hazards,
    stop_children,
    temporary_environment,
)
from tests.support.paths import ROOT
from tests.support.processes import fresh_python

# --- the Flower pin -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.42.0", "1.42.7", "1.42.1rc2"])
def test_flower_1_42_releases_are_accepted(version: str) -> None:
    assert flower_version_problem(version) is None


@pytest.mark.parametrize("version", ["1.43.0", "1.41.9", "2.42.0", "1.4.2", "1.420.0", "nightly"])
def test_any_other_flower_is_refused_in_one_line(version: str) -> None:
    problem = flower_version_problem(version)
    assert problem is not None and "\n" not in problem
    assert "Flower 1.42.x" in problem and f"Flower {version} is installed" in problem


def test_the_installed_flower_is_the_one_it_was_written_for() -> None:
    assert flower_version_problem(importlib.metadata.version("flwr")) is None


def test_another_flower_stops_the_launcher_with_one_line_and_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda _: "1.43.0")
    with pytest.raises(SystemExit) as stopped:
        warm_launcher.main(["--runtime-api-address", "127.0.0.1:1", "--insecure"])
    assert stopped.value.code == CANNOT_RESTART == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warm launcher: the warm launcher was")


def test_federation_sh_waits_for_the_line_the_launcher_prints_when_ready() -> None:
    script = (ROOT / "scripts" / "federation.sh").read_text(encoding="utf-8")
    assert f'warm_ready_line="{READY_LINE}"' in script


def test_the_runtime_api_address_is_required_except_for_the_check() -> None:
    with pytest.raises(SystemExit) as stopped:
        warm_launcher.parse_args(["--insecure"])
    assert stopped.value.code == 2
    assert warm_launcher.parse_args(["--check"]).check


# --- forking safely -------------------------------------------------------------------


def test_a_single_thread_without_cuda_may_fork() -> None:
    assert fork_hazards(["python"], cuda_initialized=False) == []


def test_other_threads_and_cuda_are_named() -> None:
    assert fork_hazards(["python", "jemalloc_bg_thd"], cuda_initialized=True) == [
        "2 threads are running (python, jemalloc_bg_thd)",
        "CUDA has been initialised",
    ]


def test_quiet_settings_apply_only_where_unset_and_are_removed_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("A_SET_BY_THE_USER", "4")
    monkeypatch.delenv("A_LEFT_UNSET", raising=False)
    with temporary_environment({"A_SET_BY_THE_USER": "1", "A_LEFT_UNSET": "1"}):
        assert os.environ["A_SET_BY_THE_USER"] == "4"
        assert os.environ["A_LEFT_UNSET"] == "1"
    assert os.environ["A_SET_BY_THE_USER"] == "4"
    assert "A_LEFT_UNSET" not in os.environ


WARM_PROCESS = """
import json, sys
from clients import warm_launcher

warm_launcher.warm_imports()
import torch
hazards = warm_launcher.fork_hazards(
    warm_launcher.running_thread_names(), torch.cuda.is_initialized()
)
warm = set(sys.modules)
import clients.client_app
new = set(sys.modules) - warm
project = set(warm_launcher.PROJECT_PACKAGES)
stdlib = set(sys.stdlib_module_names)
cold = sorted(m for m in new if m.split(".")[0] not in project | stdlib and m[0] != "_")
print(json.dumps({"hazards": hazards, "cold": cold}))
"""


def test_warm_imports_start_no_thread_and_cover_what_the_client_app_imports() -> None:
    report = json.loads(fresh_python(WARM_PROCESS).splitlines()[-1])
    assert report == {"hazards": [], "cold": []}


# --- the app bundle's code, not the launcher's ------------------------------------------

FORGETTING_PROCESS = """
import sys
import clients.warm_launcher
from clients import warm_launcher

warm_launcher.forget_project_modules()
sys.path.insert(0, sys.argv[1])  # what Flower does with the unpacked app bundle
import clients.client_app
print(clients.client_app.ORIGIN)
"""


def test_the_client_app_is_imported_from_the_app_bundle(tmp_path: Path) -> None:
    (tmp_path / "clients").mkdir()
    (tmp_path / "clients" / "__init__.py").write_text("")
    (tmp_path / "clients" / "client_app.py").write_text('ORIGIN = "app bundle"\n')
    assert fresh_python(FORGETTING_PROCESS, str(tmp_path)).strip() == "app bundle"


def test_the_project_packages_are_those_the_app_bundle_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(PROJECT_PACKAGES) == sorted(pattern.rstrip("*") for pattern in include)


# --- children ---------------------------------------------------------------------------


def test_stopping_terminates_reaps_and_kills_what_ignores_sigterm() -> None:
    polite = subprocess.Popen(["sleep", "60"])
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 60 & wait"])
    time.sleep(0.5)  # the trap is in place
    children = {polite.pid, stubborn.pid}
    start = time.monotonic()
    stop_children(children, grace_s=1.0)
    assert children == set()
    assert 1.0 <= time.monotonic() - start < 10
    for pid in (polite.pid, stubborn.pid):  # reaped: no longer our children
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
