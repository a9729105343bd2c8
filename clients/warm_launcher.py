"""Warm ClientApp launcher: one process per SuperNode that forks a ClientApp per message.

Under Flower 1.42 a deployed SuperNode starts a fresh ``flwr-clientapp`` process for
every message it receives (through its SuperExec), and each of them imports torch again:
about 3 s of CPU per message. This launcher takes the SuperExec's place for a SuperNode
started with ``--isolation process``. It imports torch and the data libraries once, asks
the SuperNode's Runtime API for ClientApp tasks as the SuperExec does (``AcquireTask``),
and for each task forks a child that runs Flower's own ``run_clientapp`` with the task's
token. The child loads the ClientApp from the run's app bundle, as ``flwr-clientapp``
does, so what ``flwr run`` sent is what runs::

    python -m clients.warm_launcher --runtime-api-address 127.0.0.1:9094 --insecure \
        [--superexec-auth-secret-file FILE] [--parent-pid SUPERNODE_PID]

It relies on Flower internals, so it runs only under the Flower release it was written
for (``SUPPORTED_FLOWER``) and stops with one line under any other. Exit status 2 means
that restarting cannot help (another Flower release, a fork hazard, a refused secret,
bad arguments); any other exit is for its supervisor to restart
(``scripts/federation.sh``, or systemd on a real machine). Linux only: it forks, reads
``/proc`` and uses ``PR_SET_PDEATHSIG``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from fedhyper.processes import die_with_parent

# Flower's internals are imported inside the functions that use them, so that under
# another Flower release ``main`` can refuse with one line before any of them is needed.
if TYPE_CHECKING:
    from flwr.supercore.runtime import RuntimeHttpClient

SUPPORTED_FLOWER = (1, 42)
"""The Flower release (major, minor) whose internals this module was written against."""
CANNOT_RESTART = 2
"""Exit status for failures that a restart would only repeat."""
READY_LINE = "warm launcher ready"
"""Printed once the imports are done and tasks are being acquired."""

WARM_MODULES = (
    "torch",
    "numpy",
    "pyarrow.parquet",
    "pyarrow.compute",
    "omegaconf",
    "hydra",
    "flwr.app",
    "flwr.clientapp",
    "flwr.supernode.runtime.run_clientapp",
)
"""The libraries a ClientApp imports, imported once here and inherited by every child."""
PROJECT_PACKAGES = ("fedhyper", "strategies", "clients", "benchmarks")
"""The project's packages: each child imports them afresh from the run's app bundle."""
QUIET_IMPORT_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
}
"""Settings under which the warm imports start no thread (see ``warm_imports``)."""
STOP_GRACE_S = 10.0
"""How long ClientApps get to report their end after SIGTERM before they are killed."""


class LauncherError(Exception):
    """A condition that restarting the launcher cannot fix; its message is one line."""


def flower_version_problem(version: str) -> str | None:
    """Return why ``version`` of Flower cannot run this launcher, or ``None`` if it can.

    Parameters
    ----------
    version : str
        The installed Flower version, e.g. ``"1.42.0"``.

    Returns
    -------
    str or None
        One line naming the supported release and the one found.

    """
    major_minor = re.match(r"(\d+)\.(\d+)\b", version)
    if major_minor and (int(major_minor[1]), int(major_minor[2])) == SUPPORTED_FLOWER:
        return None
    wanted = ".".join(str(part) for part in SUPPORTED_FLOWER)
    return (
        f"the warm launcher was written for Flower {wanted}.x and relies on its internals, "
        f"but Flower {version} is installed; start the SuperNodes without it"
    )


def fork_hazards(thread_names: Sequence[str], cuda_initialized: bool) -> list[str]:
    """Return what makes forking this process unsafe (nothing when it is safe).

    ``fork`` copies only the calling thread: any other thread is simply absent in the
    child, along with whatever lock it held (an OpenMP or BLAS pool the child then
    deadlocks on, a logging or allocator lock). A CUDA context does not survive ``fork``
    at all: a child of a process that has initialised CUDA cannot use the GPU.

    Parameters
    ----------
    thread_names : sequence of str
        Names of the process's threads, the calling one included.
    cuda_initialized : bool
        Whether torch has initialised CUDA in this process.

    Returns
    -------
    list of str
        One phrase per hazard.

    """
    hazards = []
    if len(thread_names) > 1:
        hazards.append(f"{len(thread_names)} threads are running ({', '.join(thread_names)})")
    if cuda_initialized:
        hazards.append("CUDA has been initialised")
    return hazards


def running_thread_names() -> list[str]:
    """Return the names of this process's threads, native ones included (from ``/proc``)."""
    tasks = Path("/proc/self/task")
    return [(task / "comm").read_text().strip() for task in sorted(tasks.iterdir())]


def check_fork_safe() -> None:
    """Raise ``LauncherError`` unless this process may fork a ClientApp."""
    import torch  # already imported by warm_imports

    cuda_initialized = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    hazards = fork_hazards(running_thread_names(), cuda_initialized)
    if hazards:
        raise LauncherError("cannot fork ClientApps safely: " + "; ".join(hazards))


@contextmanager
def temporary_environment(settings: Mapping[str, str]) -> Iterator[None]:
    """Apply ``settings`` to ``os.environ`` where unset, and restore it afterwards."""
    added = [name for name in settings if name not in os.environ]
    os.environ.update({name: settings[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            del os.environ[name]


def warm_imports(modules: Sequence[str] = WARM_MODULES) -> None:
    """Import ``modules`` without starting a thread and without touching CUDA.

    numpy's OpenBLAS starts its worker threads, and pyarrow's bundled jemalloc its
    background thread, as soon as they are loaded; under ``QUIET_IMPORT_ENV`` they start
    none. That leaves numpy's BLAS single-threaded in the ClientApps (their training runs
    on torch, whose thread pool each child starts for itself) and does not change
    pyarrow's default memory pool. The settings are removed again afterwards, so the
    ClientApps see the launcher's own environment.
    """
    with temporary_environment(QUIET_IMPORT_ENV):
        for module in modules:
            importlib.import_module(module)


def forget_project_modules(packages: Sequence[str] = PROJECT_PACKAGES) -> None:
    """Drop ``packages`` and their submodules from ``sys.modules``.

    Flower loads the ClientApp with ``importlib.import_module``, which returns a module
    already in ``sys.modules`` as it is; the launcher's own package must not stand in
    for the code of the run's app bundle.
    """
    for name in [name for name in sys.modules if name.split(".")[0] in packages]:
        del sys.modules[name]


def process_exists(pid: int) -> bool:
    """Return whether process ``pid`` exists (zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RuntimeEndpoint:
    """Where and how ClientApps reach the SuperNode's Runtime API.

    Attributes
    ----------
    address : str
        ``host:port`` of the Runtime API.
    insecure : bool
        Plain HTTP (a Runtime API on loopback) rather than HTTPS.
    root_certificates : str or None
        CA file for HTTPS; ``None``: the system's CAs.

    """

    address: str
    insecure: bool
    root_certificates: str | None


def runtime_client(endpoint: RuntimeEndpoint, secret: bytes | None) -> RuntimeHttpClient:
    """Return the launcher's client of the Runtime API.

    Without a retry invoker: a request fails at once and the main loop retries it, so
    the loop stays responsive to signals and to the SuperNode exiting.
    """
    from flwr.supercore.interceptors import (
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.protobuf.client import ProtobufClientInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.superexec.run_superexec import _SUPEREXEC_AUTH_METHODS

    interceptors: list[ProtobufClientInterceptor] = [
        RuntimeVersionHttpInterceptor(component_name="SuperExec")
    ]
    if secret is not None:
        interceptors.append(
            SuperExecAuthHttpInterceptor(
                master_secret=secret, protected_methods=_SUPEREXEC_AUTH_METHODS
            )
        )
    return RuntimeHttpClient.from_server_address(
        server_address=endpoint.address,
        insecure=endpoint.insecure,
        root_certificates=endpoint.root_certificates,
        interceptors=interceptors,
    )


class TaskSource:
    """Acquires ClientApp tasks from the SuperNode, one token at a time."""

    def __init__(self, client: RuntimeHttpClient, address: str) -> None:
        self._client = client
        self._address = address
        self._unreachable = False

    def acquire(self) -> str | None:
        """Return the token of a pending ClientApp task, or ``None`` if there is none.

        Raises
        ------
        LauncherError
            If the SuperNode refuses the launcher (a missing or wrong shared secret).

        """
        import httpx
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType
        from flwr.supercore.logger import log

        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        try:
            response = self._client.AcquireTask(request)
        except httpx.HTTPStatusError as error:
            code = error.response.status_code
            if code in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
                raise LauncherError(
                    f"the SuperNode at {self._address} refused the launcher (HTTP {code}); "
                    "give both the same --superexec-auth-secret-file"
                ) from error
            log(logging.ERROR, "warm launcher: AcquireTask failed with HTTP %s", code)
            return None
        except httpx.TransportError as error:
            if not self._unreachable:
                log(
                    logging.WARNING,
                    "warm launcher: Runtime API %s unreachable (%s)",
                    self._address,
                    error,
                )
            self._unreachable = True
            return None
        if self._unreachable:
            log(logging.INFO, "warm launcher: Runtime API %s reachable again", self._address)
        self._unreachable = False
        if response.HasField("task") and response.token:
            return str(response.token)
        return None


def run_clientapp_in_child(token: str, endpoint: RuntimeEndpoint) -> NoReturn:
    """Run Flower's ClientApp process for ``token`` in this forked child, then exit."""
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        forget_project_modules()
        from flwr.supercore.tls import validate_and_resolve_root_certificates
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        run_clientapp(
            runtime_api_address=endpoint.address,
            token=token,
            insecure=endpoint.insecure,
            certificates=validate_and_resolve_root_certificates(
                endpoint.root_certificates, endpoint.insecure
            ),
            # Flower's own watch: the ClientApp reports its end and exits when the
            # launcher is gone, as it does when its SuperExec is.
            parent_pid=os.getppid(),
            runtime_dependency_install=False,
        )
        status = 0
    except SystemExit as exit_:  # run_clientapp always ends in sys.exit
        status = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # a child must never return into the launcher's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Never unwind into the launcher's loop, nor run the handlers it registered.
        os._exit(status)


def fork_clientapp(token: str, endpoint: RuntimeEndpoint) -> int:
    """Fork a child that runs the ClientApp task of ``token``; return its PID."""
    check_fork_safe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        run_clientapp_in_child(token, endpoint)
    return pid


def reap(children: set[int]) -> set[int]:
    """Collect the children of ``children`` that have exited; return their PIDs."""
    from flwr.supercore.logger import log

    finished = set()
    for pid in children:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited == 0:
            continue
        finished.add(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log(
                logging.WARNING,
                "warm launcher: ClientApp process %d exited with status %d",
                pid,
                code,
            )
    return finished


def stop_children(children: set[int], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the running children, SIGKILL those still there after ``grace_s``; reap all."""
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while children and time.monotonic() < deadline:
        children -= reap(children)
        time.sleep(0.05)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    children.clear()


def serve(
    tasks: TaskSource,
    endpoint: RuntimeEndpoint,
    poll_interval_s: float,
    supernode_pid: int | None,
) -> None:
    """Fork a ClientApp per acquired task until stopped or the SuperNode is gone."""
    children: set[int] = set()
    try:
        while supernode_pid is None or process_exists(supernode_pid):
            children -= reap(children)
            if (token := tasks.acquire()) is not None:
                children.add(fork_clientapp(token, endpoint))
                continue  # another task may be waiting
            time.sleep(poll_interval_s)
    except KeyboardInterrupt:  # SIGINT, or SIGTERM (see ``start``)
        pass
    finally:
        # A second signal (the supervisor passes its SIGTERM on) must not cut this short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_children(children)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line (``--help`` lists the options)."""
    parser = argparse.ArgumentParser(
        prog="python -m clients.warm_launcher", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runtime-api-address", help="the SuperNode's host:port (required)")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="plain HTTP to the Runtime API")
    tls.add_argument("--root-certificates", help="CA file of an HTTPS Runtime API")
    parser.add_argument(
        "--superexec-auth-secret-file",
        help="the shared secret the SuperNode was given (same flag of flower-supernode)",
    )
    parser.add_argument("--parent-pid", type=int, help="exit when this process (SuperNode) has")
    parser.add_argument(
        "--check", action="store_true", help="only check the Flower version, then exit"
    )
    args = parser.parse_args(argv)
    if args.runtime_api_address is None and not args.check:
        parser.error("the following arguments are required: --runtime-api-address")
    return args


def start(args: argparse.Namespace) -> None:
    """Import, check, and serve tasks until stopped."""
    # Flower internals are imported only after the version check: under another release
    # they may not exist, and the user gets one line instead of an ImportError.
    problem = flower_version_problem(importlib.metadata.version("flwr"))
    if problem is not None:
        raise LauncherError(problem)
    if args.check:
        return
    die_with_parent()  # with its supervisor
    warm_imports()  # first: Flower itself imports numpy
    from flwr.supercore.auth import load_superexec_auth_secret
    from flwr.supercore.logger import log
    from flwr.supercore.superexec.run_superexec import _get_task_poll_interval

    try:
        secret = load_superexec_auth_secret(args.superexec_auth_secret_file)
        poll_interval_s = _get_task_poll_interval()  # FLWR_SUPEREXEC_TASK_POLL_INTERVAL
    except ValueError as error:
        raise LauncherError(str(error)) from error
    endpoint = RuntimeEndpoint(args.runtime_api_address, args.insecure, args.root_certificates)
    tasks = TaskSource(runtime_client(endpoint, secret), endpoint.address)
    check_fork_safe()  # now, rather than at the first message
    # SIGTERM, like SIGINT, interrupts the loop, which then stops its ClientApps.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log(logging.INFO, "%s: PID %d, Runtime API %s", READY_LINE, os.getpid(), endpoint.address)
    serve(tasks, endpoint, poll_interval_s, args.parent_pid)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the launcher; a condition a restart cannot fix exits with one line and status 2."""
    args = parse_args(argv)
    try:
        start(args)
    except LauncherError as error:
        print(f"warm launcher: {error}", file=sys.stderr)
        sys.exit(CANNOT_RESTART)


if __name__ == "__main__":
    main()
