"""Content-keyed caching for stage tasks, persisted under the workdir.

Prefect's default cache policy reuses results only within one flow run (api-notes section 1),
so every stage task here uses an explicit ``cache_key_fn``: a hash of exactly what determines
the stage's output (the task's source, the content hashes of its input files, the config
section it reads), never of paths or of the workdir. Results are stored in
``<workdir>/.multicsr/prefect-results`` (not ``~/.prefect``), and each stage writes its output
file under ``<workdir>/stages/<task>/<key>...``, a content-addressed name: a cache hit hands
back a file that is still the right one.

If a cached output file has been deleted by hand, :func:`run_cached` notices and refreshes that
task's cache instead of handing back a dangling path.

A stage file's content hash (:func:`content_hash`) is the hash of its table and of the
provenance that determines it, not of its bytes: the bytes hold a ``created_at``, so a stage
recomputed with identical content would otherwise re-key (and recompute) everything downstream.

A stage's result carries the Prefect task runs that produced it (:data:`TASK_RUNS`); the next
stage's tasks wait for them (``wait_for``), so each task run's ``task_inputs`` name its upstream
runs and the UI draws the pipeline (load -> generate -> score -> curate -> train -> evaluate),
on a failed run too. Waiting changes no key: ``wait_for`` is not a parameter.

Task results name their files relative to the workdir (:func:`workdir_relative`) and
:func:`run_cached` / :func:`rebase` turn them back into paths under the *current* workdir, so a
moved or copied workdir resumes from its cache.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any, Callable

from prefect.futures import PrefectFuture
from prefect.states import State

from multicsr_core.config import stable_hash

# Parameters that say where or how to report, not what to compute.
NOT_KEYED = {"workdir", "output_path", "source_path", "shard_paths", "data_dir",
             "full_config"}  # where, not what: content enters as hashes


def _source_hash(fn) -> str:
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = getattr(fn, "__qualname__", repr(fn))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def stage_key(task_name: str, fn, params: dict[str, Any]) -> str:
    keyed = {k: v for k, v in params.items() if k not in NOT_KEYED}
    return stable_hash({"task": task_name, "source": _source_hash(fn), "params": keyed})[:32]


def stage_output(workdir: str | Path, task_name: str, key: str, suffix: str = ".parquet") -> Path:
    return Path(workdir) / "stages" / task_name / f"{key}{suffix}"


def content_cache_key(context, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn``: the task's stage key (see module docstring)."""
    task = context.task
    return stage_key(task.name, task.fn, parameters)


def results_dir(workdir: str | Path) -> Path:
    path = Path(workdir).resolve() / ".multicsr" / "prefect-results"
    path.mkdir(parents=True, exist_ok=True)
    return path


# A stage result's key holding the Prefect task runs (as futures) that produced it:
# the next stage's tasks wait for them, which is what the UI draws as the pipeline's edges.
TASK_RUNS = "task_runs"


def task_runs(*results: dict | None) -> list:
    """The task runs that produced these stage results: what the next stage waits for (``after``)."""
    return [run for result in results if result for run in result.get(TASK_RUNS, [])]


def produced_by(result: dict, *runs) -> dict:
    """``result`` marked as the output of the task runs ``runs`` (futures)."""
    return {**result, TASK_RUNS: list(runs)}


class FinishedTaskRun(PrefectFuture):
    """A task run called directly (it has finished) as a future, to be waited for.

    Prefect names a future's task run in ``task_inputs`` by its id alone. A ``State`` would be
    searched field by field for results of earlier tasks, and Prefect recognizes those by ``id()``,
    which a freed result's memory can share with an unrelated object: edges to task runs that are
    no upstream at all. Plain data: it travels to Dask workers too."""

    def __init__(self, state: State):
        super().__init__(state.state_details.task_run_id)
        self._final_state = state

    def wait(self, timeout: float | None = None) -> None:
        return None

    def result(self, timeout: float | None = None, raise_on_failure: bool = True):
        return self._final_state.result(raise_on_failure=raise_on_failure)

    def add_done_callback(self, fn) -> None:
        fn(self)


def run_cached(task, workdir: str | Path, output_suffix: str | None = ".parquet",
               refresh_if: Callable[[Path], bool] | None = None, submit: bool = False, run_name: str | None = None,
               after: list | tuple = (), **params):
    """Call a content-keyed task with its results stored in the workdir.

    The task receives ``output_path``: the content-addressed file (``output_suffix``, or a folder
    with ``""``) it must write. When that output is missing the task runs again even if Prefect
    holds a result; likewise when ``refresh_if(output)`` says the output must be redone (a
    scoring shard with failed items). With ``submit`` the call goes to the flow's task runner
    and a future comes back (batch families fan out). Pass every parameter explicitly: the key is computed from them here and by
    :func:`content_cache_key`, which must agree.

    ``run_name`` names the task run in the UI (``generate-shard-3-of-8``, ``evaluate-baseline``);
    ``after`` holds the upstream task runs (:func:`task_runs` of the stage results this call
    follows): the task waits for them and its ``task_inputs`` name them. Neither enters the key.
    A direct call returns the result marked with its task run (:func:`produced_by`).
    """
    params = {"workdir": str(workdir), **params}
    options: dict[str, Any] = {"result_storage": results_dir(workdir)}
    if run_name is not None:
        # Prefect formats the name with the parameters: braces are literal here
        options["task_run_name"] = run_name.replace("{", "{{").replace("}", "}}")
    if output_suffix is not None:
        output = stage_output(workdir, task.name, stage_key(task.name, task.fn, params), output_suffix)
        params["output_path"] = str(output)
        if not output.exists() or (refresh_if is not None and refresh_if(output)):
            options["refresh_cache"] = True
    configured = task.with_options(**options)
    wait_for = list(after) or None
    # submit: hand the call to the flow's task runner (threads, or Dask workers) and return a future
    if submit:
        return configured.submit(wait_for=wait_for, **params)  # rebase the result once gathered (gather_with_progress)
    state = configured(**params, wait_for=wait_for, return_state=True)
    return produced_by(rebase(state.result(), workdir), FinishedTaskRun(state))  # a failed task raises here


# Keys of a task result that name files (stored relative to the workdir).
PATH_KEYS = ("path",)


def workdir_relative(path: str | Path, workdir: str | Path) -> str:
    """``path`` as stored in a cached result: relative to the workdir when it lies inside it."""
    path, workdir = Path(path).absolute(), Path(workdir).absolute()
    try:
        return path.relative_to(workdir).as_posix()
    except ValueError:
        return str(path)


def rebase(result, workdir: str | Path):
    """A task result with its workdir-relative paths made absolute under ``workdir`` (the one this
    run uses, wherever the result was computed)."""
    if not isinstance(result, dict):
        return result
    return {k: (os.path.join(str(workdir), v) if k in PATH_KEYS and isinstance(v, str) and not os.path.isabs(v) else v)
            for k, v in result.items()}


# Provenance keys that say when or how fast, not what: left out of a stage file's content hash.
VOLATILE_PROVENANCE = {"created_at", "seconds", "timings", "elapsed_s"}


def _stable_provenance(value):
    if isinstance(value, dict):
        return {k: _stable_provenance(v) for k, v in value.items() if k not in VOLATILE_PROVENANCE}
    if isinstance(value, list):
        return [_stable_provenance(v) for v in value]
    return value


def table_hash(path: str | Path) -> str:
    """sha256 of a Parquet file's content: schema, every column's values (Arrow IPC of the table
    without its metadata) and the provenance minus :data:`VOLATILE_PROVENANCE`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from multicsr_core.io.corpus import read_provenance

    table = pq.read_table(path)
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest = hashlib.sha256(sink.getvalue().to_pybytes())
    digest.update(stable_hash(_stable_provenance(read_provenance(path))).encode())
    return digest.hexdigest()


def content_hash(path: str | Path) -> str:
    """What a stage's input is, whatever its path or write time: :func:`table_hash` for Parquet,
    the bytes (:func:`file_hash`) for anything else (a user's text or csv file, a folder's file)."""
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        return table_hash(path)
    return file_hash(path)


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes: what a stage's input really is, whatever its path."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
