"""Evaluation from the typed config: SentEval STS (and transfer) for one model, written as the
results JSON with its provenance. ``multicsr evaluate`` and the flow's evaluate task both run
:func:`evaluate_stage`; the task keys its cache on :func:`evaluation_settings`.
"""

from __future__ import annotations

from pathlib import Path

from multicsr_core.config import PipelineConfig
from multicsr_core.evaluation.runner import evaluate_model, write_results
from multicsr_core.progress import Progress


def evaluation_settings(cfg: PipelineConfig) -> dict:
    """What of the evaluation section changes the numbers: the task groups, the STS subset, the
    encoding batch size (a JSON dict: a cached evaluation is keyed on it)."""
    e = cfg.evaluation
    return {"tasks": list(e.tasks), "sts_tasks": e.sts_tasks, "batch_size": e.batch_size}


def evaluate_stage(model: str, senteval_dir: str | Path, output: str | Path, settings: dict,
                   provenance: dict | None = None, progress: Progress | None = None) -> dict:
    """Evaluate ``model`` (a folder, hub id or bundled name) on the SentEval data in
    ``senteval_dir`` as ``settings`` (:func:`evaluation_settings`) say; write the results JSON to
    ``output`` with ``provenance`` under ``_provenance``; return the results."""
    results = evaluate_model(model, senteval_dir, tasks=settings["tasks"], batch_size=settings["batch_size"],
                             sts_tasks=settings["sts_tasks"], progress=progress)
    write_results(results, output, provenance=provenance)
    return results
