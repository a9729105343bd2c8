"""Write a file so that a crash at any instant leaves either the old or the new content."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_text", "remove_stale_temporaries"]


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file in its folder, then rename it into place.

    The data is flushed to disk (``fsync``) before ``os.replace``, and the folder after
    it, so a process killed with SIGKILL, or a machine losing power, never leaves a
    truncated file under ``path``; at worst a stray ``.<name>.*.tmp`` next to it.

    Parameters
    ----------
    path : Path
        The destination; its folder must exist.
    write : callable
        Writes the whole content to the binary handle it is given.

    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write`."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries that writes of ``path`` killed mid-way left behind."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk; Windows cannot
    # open a folder, and its rename is durable on return.
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
