"""The run config Flower hands the ServerApp, as ``flwr run`` builds it."""

from __future__ import annotations

import tomllib

from flwr.common.config import flatten_dict, fuse_dicts, parse_config_args

from tests.support.paths import ROOT


def flower_run_config(run_config_arg: str) -> dict[str, object]:
    """What Flower hands the ServerApp: pyproject defaults fused with --run-config."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    defaults = flatten_dict(pyproject["tool"]["flwr"]["app"]["config"])
    return fuse_dicts(defaults, parse_config_args([run_config_arg]))
