"""Progress inside a Prefect run: the terminal bar of ``multicsr_core.progress`` plus a progress
artifact in the UI (0-100), updated at most once a second."""

from __future__ import annotations

import logging
import re
import threading
import time

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from multicsr_core.progress import ProgressReporter


def progress_text(done: int, total: int, rate: float, unit: str) -> str:
    """``"12 of 96 premises, 3.4 premises/s"``; under one a second, the time per item
    (``"1 of 1 shards, 41 s per shard"``); nothing done yet, no rate."""
    text = f"{done} of {total} {unit}"
    if done <= 0 or rate <= 0:
        return text
    if rate >= 1:
        return f"{text}, {rate:.1f} {unit}/s"
    seconds = 1 / rate
    per = unit.removesuffix("s") if unit.endswith("s") else unit  # premises -> premise, pairs -> pair
    return f"{text}, {seconds:.0f} s per {per}" if seconds < 120 else f"{text}, {seconds / 60:.1f} min per {per}"


class _ArtifactSink:
    def __init__(self, key: str, stage: str, unit: str):
        self.stage, self.unit = stage, unit
        self.artifact_id = create_progress_artifact(progress=0.0, key=key, description=f"{stage}: {unit}")
        self._last = 0.0

    def __call__(self, done: int, total: int, rate: float) -> None:
        now = time.monotonic()
        if total and (done >= total or now - self._last >= 1.0):
            self._last = now
            update_progress_artifact(artifact_id=self.artifact_id, progress=100.0 * done / total,
                                     description=f"{self.stage}: {progress_text(done, total, rate, self.unit)}")


def stage_progress(stage: str, unit: str = "items") -> ProgressReporter:
    """A progress reporter for one stage task (artifact keys: lowercase letters, digits, dashes)."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"{stage}-progress".lower())
    return ProgressReporter(stage, unit, sinks=[_ArtifactSink(key, stage, unit)])


def run_logger():
    """The flow run's logger (the Prefect UI and the console), or this module's outside a run."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _wrapped(future):
    """The runner's own future under a Prefect future (a thread pool's, Dask's), or None."""
    return getattr(future, "wrapped_future", None)


def _as_user_error(outcome) -> BaseException | None:
    """``outcome`` if it is a ``UserError`` (no rerun fixes it: a rejected key, an unknown model, a
    prompt over the context, a full disk...) or was raised from one, else None."""
    from multicsr_core.errors import user_error_of

    return outcome if isinstance(outcome, BaseException) and user_error_of(outcome) is not None else None


def _user_error_of_state(state) -> BaseException | None:
    """The ``UserError`` a failed task's final state holds, else None."""
    from prefect.states import State

    if not isinstance(state, State) or not state.is_failed():
        return None
    return _as_user_error(state.result(raise_on_failure=False))


def _user_error(future) -> BaseException | None:
    """The ``UserError`` a finished task failed with, else None (a cancelled one: None)."""
    wrapped = _wrapped(future)
    if wrapped is not None and getattr(wrapped, "cancelled", lambda: False)():
        return None
    return _as_user_error(future.result(raise_on_failure=False))  # a failed task's exception, else its result


class ShardFamily:
    """The shards of one stage, submitted to the flow's task runner, that stop together.

    The first shard to fail with a ``UserError`` (no rerun fixes it, and every other shard would
    meet it too: a rejected key, an unknown model...) cancels every shard not started yet, from
    its done callback: a thread pool runs that callback in its worker before the worker takes the
    next shard, so none starts after it (Dask: the pending ones are cancelled as soon as it is
    told). ``stopped`` tells the submitter to submit no more. Gather with
    :func:`gather_with_progress`, which raises that error.
    """

    def __init__(self) -> None:
        self.futures: list = []
        self.stopped = False
        self._lock = threading.Lock()

    def add(self, future):
        with self._lock:
            self.futures.append(future)
        wrapped = _wrapped(future)
        if wrapped is not None and hasattr(wrapped, "add_done_callback"):
            wrapped.add_done_callback(self._on_done)
        return future

    def _on_done(self, wrapped) -> None:
        if self.stopped or getattr(wrapped, "cancelled", lambda: False)():
            return
        try:
            if _user_error_of_state(wrapped.result()) is None:
                return
        except Exception:  # noqa: BLE001  (its error is met when gathered; this only stops the rest early)
            return
        self.stopped = True
        with self._lock:
            others = list(self.futures)
        _cancel_unstarted(others)


def _cancel_unstarted(futures: list) -> int:
    """Cancel the submitted tasks that have not started (a thread pool's queue, Dask's pending
    ones); a running one finishes. Returns how many were cancelled."""
    cancelled = 0
    for future in futures:
        wrapped = _wrapped(future)
        try:
            if wrapped is not None and not wrapped.done() and wrapped.cancel():
                cancelled += 1
        except Exception:  # noqa: BLE001  (a runner whose futures cannot be cancelled: they run)
            pass
    return cancelled


def gather_with_progress(futures: list, stage: str, unit: str = "shards", workdir=None) -> list:
    """Wait for a family of submitted tasks, reporting shards done of total as they finish;
    the results come back in submission order (their paths rebased under ``workdir``).

    A task that fails with a ``UserError`` (no rerun fixes it: every other shard would meet it
    too, or the user must act first) ends the gathering at once: the tasks not started yet are
    cancelled (at once where they were submitted through a :class:`ShardFamily`), and that error
    is raised, so it is met and logged once, not once per shard. Any other failure (a retryable
    one) lets the other shards finish first, so their work is kept."""
    from prefect.futures import as_completed

    from multicsr.orchestration.caching import rebase

    with stage_progress(stage, unit) as progress:
        progress(0, len(futures))
        for done, future in enumerate(as_completed(futures), start=1):
            progress(done, len(futures))
            error = _user_error(future)
            if error is not None:
                _cancel_unstarted(futures)
                cancelled = sum(1 for f in futures if getattr(_wrapped(f), "cancelled", lambda: False)())
                if cancelled:
                    run_logger().warning("%s: %d of %d %s not started (one failed with an error no rerun fixes)",
                                      stage, cancelled, len(futures), unit)
                raise error
    results = [future.result() for future in futures]
    return results if workdir is None else [rebase(r, workdir) for r in results]
