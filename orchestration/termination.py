"""A SIGTERM ends a run within seconds, even while a shard runs in the task runner's thread.

Prefect's flow engine turns SIGTERM into a ``TerminationSignal`` raised in the main thread, marks
the flow run Crashed and then lets the signal end the process, but only after leaving the task
runner, which waits for the shards still running in its threads: a stage-1 generation batch
takes minutes, so ``docker stop`` (10 s), a Kubernetes eviction or a scheduler's cancel would
fall back to SIGKILL anyway. ``sigterm_deadline`` chains a handler in front of Prefect's: it says
on stderr what happens, starts a timer that ends the process with exit code 143 (128 + SIGTERM)
after ``seconds``, and hands the signal to Prefect's handler, which reports the crash meanwhile.

Ending the process there loses nothing a SIGKILL would not: every output is written atomically,
the caches are SQLite transactions, finished batches are kept, the workdir lock is an OS lock and
the temporary Prefect server dies with its parent (``multicsr.run_guard``). The same command
resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


@contextlib.contextmanager
def sigterm_deadline(seconds: float = 5.0) -> Iterator[None]:
    """For the block, a SIGTERM ends this process within ``seconds`` (see module docstring).
    Outside the main thread (where no signal handler can be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        print(f"multicsr: terminated (SIGTERM): stopping within {seconds:g} s; finished batches are kept and the "
              "same command resumes", file=sys.stderr, flush=True)
        timer = threading.Timer(seconds, _exit_now)
        timer.daemon = True
        timer.start()
        if callable(previous):
            previous(signum, frame)  # Prefect's: raises TerminationSignal, the run is marked Crashed
        elif previous != signal.SIG_IGN:
            _exit_now()  # the default action: end now

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_now() -> None:
    sys.stderr.flush()
    os._exit(EXIT_CODE)
