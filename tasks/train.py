"""Train: stage 3 on the kept triplets -> a SentenceTransformer folder (content-addressed), and
``<workdir>/model`` pointing at the latest one."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.utilities.annotations import quote

from multicsr_core.config import PipelineConfig, deep_merge, expand_path
from multicsr_core.evaluation.runner import resolve_senteval_dir
from multicsr_core.io.atomic import atomic_symlink
from multicsr_core.pipeline.results import CuratedCorpus, TrainedModel
from multicsr.orchestration.caching import (STAGE_TASK, FileContents, Produced, run_cached, stage_cache_policy,
                                            task_runs, workdir_relative)
from multicsr.orchestration.library_logs import trainer_log_lines_to_debug
from multicsr.orchestration.progress import stage_progress


def senteval_folder(data_dir: str) -> Path | None:
    """The SentEval folder ``evaluation.data_dir`` names (its STS-B dev selects the checkpoint);
    None when there is none (training then selects no checkpoint)."""
    try:
        return resolve_senteval_dir(expand_path(data_dir))
    except FileNotFoundError:
        return None


def training_inputs(cfg: PipelineConfig) -> dict:
    """What the trained model depends on besides the corpus, as ``train_task``'s keyed parameters,
    each as the config writes it: the training section, its supervised NLI file and the SentEval
    folder (these two by content), and the input rule training applies again (``max_chars``)."""
    return {"training_config": cfg.training.model_dump(mode="json", exclude={"supervised_nli"}),
            "supervised_nli": cfg.training.supervised_nli, "senteval_dir": cfg.evaluation.data_dir,
            "max_chars": cfg.input.max_chars}


def _training_config(provenance_config: dict, inputs: dict) -> PipelineConfig:
    """The config training runs with: every value it reads comes from the keyed ``inputs``; the
    rest of the run's config is provenance (``multicsr_training.json``, the model card)."""
    keyed = {"training": {**inputs["training_config"], "supervised_nli": inputs["supervised_nli"]},
             "input": {"max_chars": inputs["max_chars"]}, "evaluation": {"data_dir": inputs["senteval_dir"]}}
    return PipelineConfig.model_validate(deep_merge(provenance_config, keyed))


# the corpus, the supervised NLI file and the SentEval folder enter by content; the run's whole
# config is provenance only (recorded in the model folder), not a key
TRAIN_POLICY = stage_cache_policy("source_path", FileContents(parameters=("supervised_nli",), locate=expand_path),
                                  FileContents(parameters=("senteval_dir",), locate=senteval_folder),
                                  not_keyed=("provenance_config",))


@task(name="train", cache_policy=TRAIN_POLICY, **STAGE_TASK)
def train_task(workdir: str, output_path: str, source_path: str, training_config: dict, supervised_nli: str | None,
               senteval_dir: str, max_chars: int, provenance_config: dict) -> TrainedModel:
    # imported when the task runs: the stage loads torch, and importing the flow (every run, every worker) stays quick
    from multicsr_core.pipeline.train import train_stage

    cfg = _training_config(provenance_config, {"training_config": training_config, "supervised_nli": supervised_nli,
                                               "senteval_dir": senteval_dir, "max_chars": max_chars})
    with stage_progress("train", "steps") as progress:
        report = train_stage(cfg, source_path, output_path, cache_dir=Path(workdir) / "cache", progress=progress)
    get_run_logger().info("trained %s: best STS-B dev %s at step %s", output_path, report["best_score"], report["best_step"])
    if report["history"]:
        create_table_artifact(report["history"], key="train-dev-history", description="STS-B dev Spearman x 100 by step")
    return TrainedModel(workdir_relative(output_path, workdir), key=Path(output_path).name, report=report)


def train(corpus: Produced[CuratedCorpus], cfg: PipelineConfig, workdir: str | Path,
          publish_dir: str | Path | None = None) -> Produced[TrainedModel]:
    """Train (cached by corpus content + :func:`training_inputs`), then stage the link ``model`` ->
    the trained folder in ``publish_dir`` (the run's staging folder; default the workdir). The
    link is relative to the workdir, where it is published, so a moved workdir keeps a working
    ``model``."""
    with trainer_log_lines_to_debug():
        result = run_cached(train_task, workdir, output_suffix="", run_name="train", after=task_runs(corpus),
                            source_path=corpus.result.stage_path, **training_inputs(cfg),
                            # quoted: Prefect draws an edge from any task whose result shares an object with a
                            # parameter (interned strings such as the loaded input's kind "triplets" included);
                            # the config is provenance, not data from upstream
                            provenance_config=quote(cfg.to_dict()))
    trained = result.result
    publish_dir = Path(publish_dir if publish_dir is not None else workdir)
    link = publish_dir / "model"
    if link.is_dir() and not link.is_symlink():
        raise FileExistsError(f"{link} is a real folder, not the pipeline's link; move it away")
    atomic_symlink(link, os.path.relpath(trained.path, workdir))
    return Produced(dataclasses.replace(trained, stage_path=trained.path, path=str(Path(workdir) / "model")),
                    result.task_runs)
