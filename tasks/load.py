"""Load: premises (stage 1 input) or an existing triplet corpus (stage 2 input) -> Parquet."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from prefect import get_run_logger, task

from multicsr_core.config import PipelineConfig
from multicsr_core.io.corpus import PREMISE_SCHEMA, make_provenance, with_provenance, write_parquet_atomic
from multicsr_core.io.inputs import input_stat, materialize_stream, read_premises, read_triplets
from multicsr_core.pipeline.results import LoadedInput
from multicsr.orchestration.caching import (STAGE_TASK, Produced, content_hash, run_cached, stage_cache_policy,
                                            workdir_relative)
from multicsr.orchestration.run_config import input_source

# the input file enters by content; input_config holds the reading rules, not the file's path
LOAD_POLICY = stage_cache_policy("source_path")


@task(name="load_premises", cache_policy=LOAD_POLICY, **STAGE_TASK)
def load_premises_task(workdir: str, output_path: str, source_path: str, input_config: dict) -> LoadedInput:
    premise_set = read_premises(source_path, fmt=input_config["premises_format"], column=input_config["column"],
                                max_chars=input_config["max_chars"], limit=input_config["limit"])
    table = pa.table({"premise": premise_set.premises, "source_row": premise_set.source_rows}, schema=PREMISE_SCHEMA)
    prov = make_provenance("load_premises", source=source_path, source_sha256=content_hash(source_path),
                           stats=premise_set.stats.as_dict())
    write_parquet_atomic(with_provenance(table, prov), output_path)
    get_run_logger().info("premises from %s: %s", source_path, premise_set.stats.as_dict())
    return LoadedInput(workdir_relative(output_path, workdir), table.num_rows, kind="premises",
                       stats=premise_set.stats.as_dict())


@task(name="load_triplets", cache_policy=LOAD_POLICY, **STAGE_TASK)
def load_triplets_task(workdir: str, output_path: str, source_path: str, input_config: dict) -> LoadedInput:
    table, stats = read_triplets(source_path, max_chars=input_config["max_chars"], limit=input_config["limit"])
    prov = make_provenance("load_triplets", source=source_path, source_sha256=content_hash(source_path),
                           stats=stats.as_dict())
    write_parquet_atomic(with_provenance(table, prov), output_path)
    get_run_logger().info("triplets from %s: %s", source_path, stats.as_dict())
    return LoadedInput(workdir_relative(output_path, workdir), table.num_rows, kind="triplets", stats=stats.as_dict())


def load_input(cfg: PipelineConfig, workdir: str | Path) -> Produced[LoadedInput]:
    """Load whichever input the config names (its ``kind``: premises|triplets)."""
    path, kind = input_source(cfg)
    task_fn = load_triplets_task if kind == "triplets" else load_premises_task
    input_stat(path, f"input.{kind}")  # one line naming what it is
    # a pipe or process substitution is read once into the workdir: the run can then resume from it
    path = materialize_stream(path, Path(workdir) / ".multicsr" / "inputs")
    return run_cached(task_fn, workdir, run_name=f"load-{kind}", source_path=str(path),
                      input_config=cfg.input.model_dump(mode="json", exclude={"premises", "triplets"}))
