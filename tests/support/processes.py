"""Python snippets run in a fresh interpreter: for what the test process has long imported."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.paths import ROOT


def fresh_python(code: str, *args: str, timeout: float = 300) -> str:
    """Run ``python -c code args`` from the repository root; return its standard output."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
