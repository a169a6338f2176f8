"""Progress inside a Prefect run: the terminal bar of ``multicsr.progress`` plus a progress
artifact in the UI (0-100), updated at most once a second."""

from __future__ import annotations

import re
import time

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from multicsr.progress import ProgressReporter


class _ArtifactSink:
    def __init__(self, key: str, description: str):
        self.artifact_id = create_progress_artifact(progress=0.0, key=key, description=description)
        self._last = 0.0

    def __call__(self, done: int, total: int, rate: float) -> None:
        now = time.monotonic()
        if total and (done >= total or now - self._last >= 1.0):
            self._last = now
            update_progress_artifact(artifact_id=self.artifact_id, progress=100.0 * done / total,
                                     description=f"{done}/{total} at {rate:.1f}/s")


def stage_progress(stage: str, unit: str = "items") -> ProgressReporter:
    """A progress reporter for one stage task (artifact keys: lowercase letters, digits, dashes)."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"{stage}-progress".lower())
    return ProgressReporter(stage, unit, sinks=[_ArtifactSink(key, f"{stage}: {unit} done")])


def gather_with_progress(futures: list, stage: str, unit: str = "shards", workdir=None) -> list:
    """Wait for a family of submitted tasks, reporting shards done of total as they finish;
    the results come back in submission order (their paths rebased under ``workdir``)."""
    from prefect.futures import as_completed

    from multicsr.tasks.caching import rebase

    with stage_progress(stage, unit) as progress:
        progress(0, len(futures))
        for done, _ in enumerate(as_completed(futures), start=1):
            progress(done, len(futures))
    results = [future.result() for future in futures]
    return results if workdir is None else [rebase(r, workdir) for r in results]
