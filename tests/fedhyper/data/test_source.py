"""Finding a split: the data-dir precedence and the missing-mirror error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedhyper.data import resolve_data_dir
from fedhyper.data.source import ENV_DATA_DIR


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    beside_cwd = tmp_path / "shared" / "data"
    for path in (explicit, env, beside_cwd, tmp_path / "work"):
        path.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv(ENV_DATA_DIR, str(env))
    assert resolve_data_dir(str(explicit)) == explicit
    assert resolve_data_dir(str(tmp_path / "typo")) == env
    monkeypatch.delenv(ENV_DATA_DIR)
    found = resolve_data_dir(None)
    assert found is not None and found.resolve() == beside_cwd.resolve()


def test_missing_mirror_and_hub_names_both_places(tmp_path: Path) -> None:
    # A fresh interpreter: the hub libraries read the offline switches at import time.
    script = textwrap.dedent(
        """
        import dataclasses
        import sys
        from fedhyper.compose import compose_config
        from fedhyper.data import DatasetUnavailableError, load_split
        ghost = dataclasses.replace(
            compose_config().dataset.spec(), name="ghost", folder="ghost_folder",
            hub_name="fedhyper-tests/no-such-dataset")
        try:
            load_split(ghost, "train", None)
        except DatasetUnavailableError as error:
            print(error)
            sys.exit(3)
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        ENV_DATA_DIR: str(tmp_path / "empty"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    message = result.stdout.strip()
    assert "\n" not in message
    assert str(tmp_path / "empty" / "ghost_folder" / "train.parquet") in message
    assert "fedhyper-tests/no-such-dataset" in message
    assert "FEDHYPER_DATA_DIR" in message and "dataset.data_dir" in message
