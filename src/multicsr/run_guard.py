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
workers) at it. Its start has a deadline (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``,
counted in wall-clock time): a server that exits at startup (its database cannot be opened or
reached) or does not answer in time fails the run with one line naming the cause and the server's
log (``<workdir>/.multicsr/prefect-server.log``, where its output goes), where Prefect's own
``start`` restarts a server that exits with code 3 without counting the time, printing a traceback
each time, for as long as the cause lasts. ``multicsr run`` checks Prefect's home first
(``multicsr_core.pipeline.preflight.check_prefect_home``).
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


STARTUP_TIMEOUT_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
_PORT_TAKEN = ("address already in use", "error while attempting to bind")


def startup_timeout_s() -> float:
    """The deadline of the temporary server's start (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``)."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    return float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())


def _last_error_line(log: Path) -> str:
    """The last line of the server's log that says what went wrong (an exception or an error)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith(("File ", "^", "(Background", "Traceback")) or "Application startup failed" in line:
            continue
        if "Error" in line or "error" in line or "Exception" in line:
            return " ".join(line.split())[:300]
    return " ".join(lines[-1].split())[:300] if lines else ""


def _startup_failure(code: int | None, log: Path, timeout_s: float):
    """The one-line error of a temporary server that exited (``code``) or did not answer in time."""
    from multicsr_core.errors import MachineError, ServerError, disk_full_error
    from multicsr_core.pipeline.preflight import prefect_home

    reason = _last_error_line(log)
    if code is None:
        return ServerError(f"the temporary Prefect server did not answer within {timeout_s:g} s (its log: {log})",
                           hint=f"a slow machine: raise {STARTUP_TIMEOUT_VAR}; or start a server (`prefect server "
                                "start`) and set PREFECT_API_URL")
    lowered = reason.lower()
    database = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or os.environ.get(
        "PREFECT_API_DATABASE_CONNECTION_URL") or ""
    if database and not database.startswith("sqlite"):
        where, variable = None, "PREFECT_SERVER_DATABASE_CONNECTION_URL"
    elif database:
        where = Path(database.split("///", 1)[-1]).expanduser().parent
        variable = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
    else:
        where, variable = prefect_home(), "PREFECT_HOME"
    if where is not None and ("database or disk is full" in lowered or "no space left" in lowered):
        return disk_full_error(where, variable)
    if where is not None and ("unable to open database file" in lowered or "readonly database" in lowered):
        return MachineError(f"the temporary Prefect server cannot write its database there ({reason})", path=where,
                            hint=f"set {variable} to a writable folder (its log: {log})")
    return MachineError(f"the temporary Prefect server exited at startup (exit code {code}"
                        + (f": {reason}" if reason else "") + f"; its log: {log})",
                        hint="fix what the log says (the server's database: " + variable + "), or start a server "
                             "(`prefect server start`) and set PREFECT_API_URL")


def _server_class():
    import subprocess

    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class DiesWithParentServer(SubprocessASGIServer):
        """Prefect's temporary server, stopped by the kernel when the process that started it dies,
        started with a deadline: it fails with one line when the process exits at startup (Prefect's
        own ``start`` restarts a server that exits with code 3 without counting the time, forever
        when its database cannot be opened) or does not answer in time. The server's output goes
        to a log file, not the terminal."""

        _instances: dict = {}  # not shared with Prefect's own ephemeral servers
        log_path: Path | None = None

        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect 3.8.8's SubprocessASGIServer._run_uvicorn_command, plus preexec_fn and a log file.
            server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
            log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
            try:
                return subprocess.Popen(
                    args=[sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                          "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                          "--log-level", "error", "--lifespan", "on"],
                    env={**os.environ, **server_env, **get_current_settings().to_environment_variables(exclude_unset=True)},
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
            finally:
                if log is not subprocess.DEVNULL:
                    log.close()  # the child holds its own copy

        def start(self, timeout: float | None = None) -> None:
            import atexit

            import httpx

            if self.running:
                return
            timeout_s = float(timeout or startup_timeout_s())
            deadline = time.monotonic() + timeout_s
            if self.port is None:
                self.port = self.find_available_port()
            self.running = True
            try:
                self.server_process = self._run_uvicorn_command()
                atexit.register(self.stop)
                port_retries = 3
                with httpx.Client(timeout=2.0) as client:
                    while True:
                        code = self.server_process.poll()
                        if code is not None:
                            text = self.log_path.read_text(errors="replace").lower() if self.log_path else ""
                            if port_retries and any(marker in text for marker in _PORT_TAKEN):
                                port_retries -= 1  # another process took the port between the check and the bind
                                self.port = self.find_available_port()
                                self.server_process = self._run_uvicorn_command()
                                continue
                            raise _startup_failure(code, self.log_path, timeout_s)
                        try:
                            if client.get(f"{self.api_url}/health").status_code == 200:
                                return
                        except httpx.HTTPError:
                            pass
                        if time.monotonic() > deadline:
                            raise _startup_failure(None, self.log_path, timeout_s)
                        time.sleep(0.1)
            except BaseException:
                self.stop()
                raise

        def stop(self) -> None:
            # Prefect's stop, without its log line: a failed start is reported as the CLI's one line
            if self.server_process is not None:
                self.server_process.terminate()
                try:
                    self.server_process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.server_process.kill()
                    self.server_process.wait()
                self.server_process = None
            self._instances.pop(getattr(self, "_instance_key", self.port), None)
            self.running = False

    return DiesWithParentServer


@contextlib.contextmanager
def ephemeral_prefect_server(log_dir: str | Path | None = None) -> Iterator[str | None]:
    """With no Prefect API configured, run the block against a temporary server that dies with
    this process (module docstring); yields its API URL, or None when a server is configured.
    The server's output goes to ``log_dir/prefect-server.log`` (default: a temporary folder)."""
    import tempfile

    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield None
        return
    folder = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="multicsr-prefect-"))
    folder.mkdir(parents=True, exist_ok=True)
    server = _server_class()()
    server.log_path = folder / "prefect-server.log"
    server.log_path.write_bytes(b"")  # this run's server only
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
