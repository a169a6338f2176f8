"""Evaluate: SentEval STS (and transfer) for a model folder or hub id -> results JSON + table artifact."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from multicsr_core.config import PipelineConfig, expand_path
from multicsr_core.evaluation.runner import resolve_senteval_dir, write_results
from multicsr_core.pipeline.evaluate import evaluate_stage, evaluation_settings
from multicsr_core.pipeline.results import EvaluatedModel, TrainedModel
from multicsr.orchestration.caching import (STAGE_TASK, Produced, run_cached, stage_cache_policy, task_runs,
                                            workdir_relative)
from multicsr.orchestration.progress import stage_progress


# the SentEval folder enters by content; the model by its key (the trained folder's content key,
# or ``base:<hub id>``): the folder itself gains its model card when the run publishes
@task(name="evaluate", cache_policy=stage_cache_policy("data_dir", not_keyed=("source_path",)), **STAGE_TASK)
def evaluate_task(workdir: str, output_path: str, source_path: str, model_key: str, data_dir: str, settings: dict,
                  label: str) -> EvaluatedModel:
    # about a minute per model on a CPU: progress in sentences encoded, like the other stages
    with stage_progress(f"evaluate {label}", "sentences") as progress:
        results = evaluate_stage(source_path, data_dir, output_path, settings, progress=progress,
                                 provenance={"model": source_path, "model_key": model_key, "label": label})
    get_run_logger().info("%s: %s", label, json.dumps(results, default=str))
    return EvaluatedModel(workdir_relative(output_path, workdir), results)


def evaluate(model_path: str, model_key: str, cfg: PipelineConfig, workdir: str | Path, label: str,
             publish_as: str, publish_dir: str | Path | None = None,
             after: Produced[TrainedModel] | None = None) -> EvaluatedModel:
    """Evaluate, then publish ``<publish_dir>/<publish_as>`` (the ``multicsr evaluate`` JSON shape, plus the
    run's config under ``_provenance``; ``publish_dir`` is the run's staging folder, default the
    workdir) and a Prefect table artifact. The task run is ``evaluate-<label>`` and waits for the
    stage result ``after`` (the training)."""
    result = run_cached(evaluate_task, workdir, output_suffix=".json", run_name=f"evaluate-{label}",
                        after=task_runs(after), source_path=model_path, model_key=model_key,
                        data_dir=str(resolve_senteval_dir(expand_path(cfg.evaluation.data_dir))),
                        settings=evaluation_settings(cfg), label=label)
    published = Path(publish_dir if publish_dir is not None else workdir) / publish_as
    evaluated = result.result
    write_results(evaluated.results, published, provenance={"model": model_path, "model_key": model_key, "label": label,
                                                             "config": cfg.to_dict(), "config_hash": cfg.config_hash()})
    sts = {k: v for k, v in evaluated.results.items() if isinstance(v, float)}
    create_table_artifact([{"task": k, "spearman_x100": round(v, 2)} for k, v in sts.items()],
                          key=f"sts-{label}".lower().replace("_", "-"), description=f"SentEval STS Spearman x 100: {label}")
    return dataclasses.replace(evaluated, published=str(Path(workdir) / publish_as))
