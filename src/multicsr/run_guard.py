"""What `multicsr run` holds for the length of a run: the workdir lock and the Prefect server.

**Workdir lock.** Two runs on one workdir would both do all the work and race on its outputs.
``workdir_lock`` takes an exclusive ``filelock.FileLock`` on ``<workdir>/.multicsr/run.lock``
(an OS lock: a killed holder releases it at once) and records the holder in ``run.owner``. A
second run exits with "workdir DIR is in use by pid N" (exit 2), or with ``--wait-lock`` waits.

**Temporary Prefect server.** Without ``PREFECT_API_URL``, Prefect starts a temporary server
subprocess and stops it from an ``atexit`` hook, which a SIGKILL (or the OOM killer) never runs:
the server is left behind with parent pid 1. ``ephemeral_prefect_server`` starts that same server
(Prefect's ``SubprocessASGIServer``, same command and environment) with the Linux
parent-death signal set in the child (``prctl(PR_SET_PDEATHSIG, SIGTERM)``), so the kernel
stops it whatever ends this process, and points this run (and its child processes, e.g. Dask
workers) at it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkdirBusy(RuntimeError):
    """Another run holds the workdir."""


def _owner_path(workdir: Path) -> Path:
    return workdir / ".multicsr" / "run.owner"


@contextlib.contextmanager
def workdir_lock(workdir: str | Path, wait: bool = False) -> Iterator[None]:
    """Hold ``<workdir>/.multicsr/run.lock`` for the block; raise :class:`WorkdirBusy` naming the
    holder's pid when it is taken (or, with ``wait``, block until it is free)."""
    from filelock import FileLock, Timeout

    workdir = Path(workdir)
    (workdir / ".multicsr").mkdir(parents=True, exist_ok=True)
    lock = FileLock(workdir / ".multicsr" / "run.lock", timeout=-1 if wait else 0)
    if wait and _held_by_other(lock):
        print(f"workdir {workdir} is in use by {_holder(workdir)}: waiting for it to finish", file=sys.stderr, flush=True)
    try:
        lock.acquire()
    except Timeout:
        raise WorkdirBusy(f"workdir {workdir} is in use by {_holder(workdir)} (another multicsr run): wait for it to "
                          "finish, pass --wait-lock to wait, or use another --workdir") from None
    try:
        owner = _owner_path(workdir)
        owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}), encoding="utf-8")
        yield
    finally:
        _owner_path(workdir).unlink(missing_ok=True)
        lock.release()


def _held_by_other(lock) -> bool:
    from filelock import Timeout

    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def _holder(workdir: Path) -> str:
    try:
        owner = json.loads(_owner_path(workdir).read_text(encoding="utf-8"))
        return f"pid {owner['pid']} on {owner['host']}"
    except (OSError, ValueError, KeyError):
        return "another process"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _server_class():
    import subprocess

    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class DiesWithParentServer(SubprocessASGIServer):
        """Prefect's temporary server, stopped by the kernel when the process that started it dies."""

        _instances: dict = {}  # not shared with Prefect's own ephemeral servers

        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect 3.8.8's SubprocessASGIServer._run_uvicorn_command, plus preexec_fn.
            server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
            return subprocess.Popen(
                args=[sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                      "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                      "--log-level", "error", "--lifespan", "on"],
                env={**os.environ, **server_env, **get_current_settings().to_environment_variables(exclude_unset=True)},
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    return DiesWithParentServer


@contextlib.contextmanager
def ephemeral_prefect_server() -> Iterator[str | None]:
    """With no Prefect API configured, run the block against a temporary server that dies with
    this process (module docstring); yields its API URL, or None when a server is configured."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield None
        return
    server = _server_class()()
    server.start()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url  # child processes (Dask workers) report here too
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        # send the run's last logs and events while the server still listens
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        server.stop()
