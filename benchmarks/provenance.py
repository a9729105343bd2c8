"""Where a benchmark figure came from: machine, date and the command that made it."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch


def machine() -> str:
    """Describe this machine: CPU model and cores, accelerator, torch version."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {accelerator}, torch {torch.__version__}"


def command() -> str:
    """Return the command line that is running, as one could type it again."""
    module = sys.modules["__main__"].__spec__
    program = f"python -m {module.name}" if module is not None else f"python {sys.argv[0]}"
    return " ".join([program, *map(shlex.quote, sys.argv[1:])])


def write_result(path: Path, payload: dict[str, Any]) -> None:
    """Write a result file with ``machine``, ``date`` and ``command`` beside the payload.

    Parameters
    ----------
    path : Path
        JSON file to write.
    payload : dict
        The figures.

    """
    stamped = {
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": command(),
        **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stamped, indent=2) + "\n", encoding="utf-8")
