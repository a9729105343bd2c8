"""Where the repository's files are, for tests that read its configs, docs and results."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
