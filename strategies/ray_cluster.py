"""Ray clusters a run attaches to, and one Ray head that a sweep's runs share.

Light on imports (no Ray, torch or Flower), so that Hydra can load the callback
before a run checks its configuration.

A private Ray costs every run its start (GCS, raylet and Ray's helper processes, about
5 s on two cores) before the first ClientApp starts. :class:`RayHead` starts one
single-node cluster with the settings a private one would have (this machine's CPUs, a
small object store, no dashboard) and stops it with everything it started;
:class:`SharedRayHead` does that around a Hydra multirun and points its runs at it
through ``RAY_ADDRESS`` (:func:`strategies.simulation.attach_to_cluster`). Results do
not change: the runs see the same CPUs and the same number of workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fedhyper.processes import die_with_parent

LOGGER = logging.getLogger("fedhyper")

RAY_ADDRESS_ENV = "RAY_ADDRESS"
"""Ray's own variable naming a running cluster; ``ray.init()`` connects to it when set."""

OBJECT_STORE_BYTES = 512 * 2**20
"""Ray's shared-memory object store: a round's bundled messages (a model per client at
most) fit, where Ray's default (30 % of RAM) would reserve gigabytes."""

CONNECT_TIMEOUT_S = 5.0
"""Seconds to wait for a TCP answer at ``RAY_ADDRESS`` before giving up: Ray itself
retries an unreachable cluster for minutes."""

START_TIMEOUT_S = 120.0
"""Seconds the head gets to start (several on an idle machine)."""

STARTED_LINE = "Ray runtime started."
"""What ``ray start`` prints once every process of the node runs: its GCS accepts
connections seconds earlier, and a run attaching then would wait out the rest."""


def available_cpus() -> int:
    """Return the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_reachable(address: str) -> None:
    """Fail fast if ``address``, given as ``host:port``, does not accept a connection.

    Other forms (``auto``, ``ray://…``) are left to Ray.

    Raises
    ------
    OSError
        If nothing answers at ``host:port`` within :data:`CONNECT_TIMEOUT_S`.

    """
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()


def free_port() -> int:
    """Return a TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RayHead:
    """A single-node Ray cluster on the loopback interface, owned by this process.

    Parameters
    ----------
    num_cpus : int or None
        CPUs the cluster offers; ``None`` means this process's cores.

    Attributes
    ----------
    address : str
        ``host:port`` to attach to (``RAY_ADDRESS``).
    temp_dir : Path
        The cluster's session files and logs; removed by :meth:`stop`.

    Raises
    ------
    RuntimeError
        If the head exits or has not started within :data:`START_TIMEOUT_S`.
    OSError
        If it started but does not accept connections.

    """

    def __init__(self, num_cpus: int | None = None) -> None:
        # A temp dir of its own, so a private `ray.init` elsewhere never finds this
        # cluster; short, because Ray's socket paths under it must fit in 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        command = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus or available_cpus()}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        ]
        # A file, not a pipe nobody reads, which would block Ray once full.
        self._log = self.temp_dir / "ray_start.log"
        # A session of its own, so that stop() reaches every process of the cluster.
        # When this process dies, however it dies, the shell gets SIGTERM and kills the
        # whole session: `ray start` told alone late in its start-up sometimes left its
        # GCS and raylet running, and SIGKILL to it alone always would.
        with self._log.open("w", encoding="utf-8") as log:
            self._process = subprocess.Popen(
                ["/bin/sh", "-c", 'trap "kill -KILL 0" TERM; "$@" & wait $!', "sh", *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while STARTED_LINE not in (log := self._log.read_text(encoding="utf-8")):
            if self._process.poll() is not None:
                tail = " ".join(log.split()[-30:])
                raise RuntimeError(f"the Ray head exited at start: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start in {START_TIMEOUT_S:g} s")
            time.sleep(0.1)
        check_reachable(self.address)

    def stop(self) -> None:
        """Stop every process of the cluster and remove its files; idempotent."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        # Ray's processes die with the group; wait for the last of them.
        for _ in range(100):
            try:
                os.killpg(self._process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def attached_head(num_cpus: int | None = None) -> Iterator[RayHead]:
    """Start a :class:`RayHead` and point this process's runs at it while inside.

    ``RAY_ADDRESS`` names the head until the block ends, then the head stops.
    """
    head = RayHead(num_cpus)
    os.environ[RAY_ADDRESS_ENV] = head.address
    try:
        yield head
    finally:
        os.environ.pop(RAY_ADDRESS_ENV, None)
        head.stop()


class SharedRayHead(Callback):
    """Hydra callback: a multirun's runs share one :class:`RayHead`.

    Does nothing when ``RAY_ADDRESS`` already names a cluster, or for a single run.
    Registered in ``conf/config.yaml`` (``hydra.callbacks.shared_ray_head``); remove it
    with ``~hydra.callbacks.shared_ray_head`` to give every run a private Ray.
    """

    def __init__(self) -> None:
        self._sweep = contextlib.ExitStack()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Start the head and point the runs at it."""
        if os.environ.get(RAY_ADDRESS_ENV):
            return
        head = self._sweep.enter_context(attached_head())
        LOGGER.info("fedhyper: the sweep's runs share one Ray head at %s", head.address)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Stop the head the sweep started, if any."""
        self._sweep.close()
