"""Train: stage 3 on the kept triplets -> a SentenceTransformer folder (content-addressed), and
``<workdir>/model`` pointing at the latest one."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from multicsr_core.config import PipelineConfig
from multicsr_core.stages import train_from_corpus
from multicsr.tasks.caching import content_cache_key, content_hash, run_cached, task_runs, workdir_relative
from multicsr.tasks.library_logs import trainer_log_lines_to_debug
from multicsr.tasks.progress import stage_progress


@task(name="train", cache_key_fn=content_cache_key, persist_result=True, result_serializer="json")
def train_task(workdir: str, output_path: str, source_path: str, corpus_hash: str, training_config: dict,
               data_hash: str, full_config: dict) -> dict:
    cfg = PipelineConfig.model_validate(full_config)
    with stage_progress("train", "steps") as progress:
        report = train_from_corpus(cfg, source_path, output_path, cache_dir=Path(workdir) / "cache", progress=progress)
    get_run_logger().info("trained %s: best STS-B dev %s at step %s", output_path, report["best_score"], report["best_step"])
    if report["history"]:
        create_table_artifact(report["history"], key="train-dev-history", description="STS-B dev Spearman x 100 by step")
    return {"path": workdir_relative(output_path, workdir), "key": Path(output_path).name, "report": report}


def train(corpus: dict, cfg: PipelineConfig, workdir: str | Path, publish_dir: str | Path | None = None) -> dict:
    """Train (cached by corpus content + training config + evaluation data), then stage the link
    ``model`` -> the trained folder in ``publish_dir`` (the run's staging folder; default the
    workdir). The link is relative to the workdir, where it is published, so a moved workdir
    keeps a working ``model``."""
    from multicsr.tasks.evaluate import senteval_hash
    from multicsr_core.config import expand_path
    from multicsr_core.evaluation.runner import resolve_senteval_dir

    try:
        data_hash = senteval_hash(resolve_senteval_dir(expand_path(cfg.evaluation.data_dir)))
    except FileNotFoundError:
        data_hash = "no-dev-data"
    # the model depends on the training section and the STS-B dev data (checkpoint selection) only;
    # full_config is handed over for provenance and is not part of the key
    with trainer_log_lines_to_debug():
        result = run_cached(train_task, workdir, output_suffix="", run_name="train", after=task_runs(corpus),
                            source_path=corpus["stage_path"],
                            corpus_hash=content_hash(corpus["stage_path"]),
                            training_config=cfg.training.model_dump(mode="json"), data_hash=data_hash,
                            full_config=cfg.to_dict())
    publish_dir = Path(publish_dir if publish_dir is not None else workdir)
    link = publish_dir / "model"
    tmp = publish_dir / ".model.tmp-link"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(result["path"], workdir), tmp)
    if link.is_dir() and not link.is_symlink():
        raise FileExistsError(f"{link} is a real folder, not the pipeline's link; move it away")
    os.replace(tmp, link)
    return {**result, "stage_path": result["path"], "path": str(Path(workdir) / "model")}
