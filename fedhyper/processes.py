"""Child processes that must not outlive the process that started them (Linux)."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when the thread that started it exits.

    Meant as a ``preexec_fn`` of :class:`subprocess.Popen` or right after a fork: a
    server started for a run then stops with it, even when the run is killed.
    """
    expected_parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != expected_parent:  # the parent exited before the request
        os.kill(os.getpid(), sig)
