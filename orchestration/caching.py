"""Content-keyed caching for stage tasks, persisted under the workdir.

Prefect's default cache policy reuses results only within one flow run (api-notes section 1),
so every stage task here takes :func:`stage_cache_policy`: Prefect's own ``TASK_SOURCE +
INPUTS - ...`` over exactly what determines the stage's output, with the files it reads entering
by content (:class:`FileContents`), never by path, and the parameters that say where to write
(``workdir``, ``output_path``) left out. A task reads nothing that is not one of its keyed
parameters: the config a task runs with is built from them alone.

Results are stored in ``<workdir>/.multicsr/prefect-results`` (not ``~/.prefect``), and each
stage writes its output file under ``<workdir>/stages/<task>/<key>...``, a content-addressed
name: a cache hit hands back a file that is still the right one. :func:`run_cached` computes
the key with the task's own policy (the same one Prefect then computes) to name that file.

If a cached output file has been deleted by hand, :func:`run_cached` notices and refreshes that
task's cache instead of handing back a dangling path.

A stage file's content hash (:func:`content_hash`) is the hash of its table and of the
provenance that determines it, not of its bytes: the bytes hold a ``created_at``, so a stage
recomputed with identical content would otherwise re-key (and recompute) everything downstream.

A stage's typed result travels with the Prefect task runs that produced it (:class:`Produced`);
the next stage's tasks wait for them (``wait_for``), so each task run's ``task_inputs`` name its upstream
runs and the UI draws the pipeline (load -> generate -> score -> curate -> train -> evaluate),
on a failed run too. Waiting changes no key: ``wait_for`` is not a parameter.

Task results (typed: ``multicsr_core.pipeline.results``) name their files relative to the workdir (:func:`workdir_relative`) and
:func:`run_cached` / :func:`rebase` turn them back into paths under the *current* workdir, so a
moved or copied workdir resumes from its cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Generic, TypeVar

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.utilities.hashing import hash_objects

from multicsr_core.config import stable_hash

# Parameters that say where to write, not what to compute: never part of a key.
WHERE = ("workdir", "output_path")


@dataclass
class FileContents(CachePolicy):
    """Keys a task by the content of the files (or folders) its ``parameters`` name: a path, a
    list of paths, or None (no file). What a stage reads enters its key whatever its path, and a
    file edited in place re-keys it (:func:`content_hash`, :func:`folder_hash`). ``locate`` turns
    a parameter's value into the file it names (a config's ``{data_root}/...``; None: no file)."""

    parameters: tuple[str, ...] = ()
    locate: Callable[[Any], Any] | None = None

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        if not self.parameters:
            return None
        return hash_objects({name: self._contents(inputs.get(name)) for name in self.parameters}, raise_on_failure=True)

    def _contents(self, value):
        if isinstance(value, (list, tuple)):
            return [self._contents(v) for v in value]
        path = self.locate(value) if self.locate is not None and value is not None else value
        if path is None:
            return None
        return folder_hash(path) if Path(path).is_dir() else content_hash(path)


def stage_cache_policy(*contents: str | FileContents, not_keyed: tuple[str, ...] = ()) -> CachePolicy:
    """A stage task's cache policy: its source, its parameters but :data:`WHERE` and ``not_keyed``
    (provenance), and the parameters named in ``contents`` (paths: a name, or a
    :class:`FileContents` that locates them) by the content of what they name, not by the path."""
    policy = TASK_SOURCE + INPUTS
    for item in contents:
        files = FileContents(parameters=(item,)) if isinstance(item, str) else item
        policy = policy + files
        for name in files.parameters:
            policy = policy - name
    for name in (*WHERE, *not_keyed):
        policy = policy - name
    return policy


# Prefect's task options shared by every stage task: keyed by content, results kept as JSON.
STAGE_TASK = dict(persist_result=True, result_serializer="json")


def stage_key(task, params: dict[str, Any]) -> str:
    """The key Prefect computes for ``task`` called with ``params``: its cache policy, out of a run.
    The policy the task was declared with, which Prefect keeps as given even where a setting
    (``PREFECT_TASKS_DISABLE_CACHING``) turns caching off: the output still gets its own name."""
    policy = getattr(task, "_user_cache_policy", task.cache_policy)  # prefect==3.8.8 keeps it there (with_options)
    return policy.compute_key(task_ctx=SimpleNamespace(task=task), inputs=params, flow_parameters={})


def stage_output(workdir: str | Path, task_name: str, key: str, suffix: str = ".parquet") -> Path:
    return Path(workdir) / "stages" / task_name / f"{key}{suffix}"


def results_dir(workdir: str | Path) -> Path:
    path = Path(workdir).resolve() / ".multicsr" / "prefect-results"
    path.mkdir(parents=True, exist_ok=True)
    return path


R = TypeVar("R")


@dataclass(frozen=True)
class Produced(Generic[R]):
    """A stage's typed result (``multicsr_core.pipeline.results``) and the Prefect task runs
    (futures) that produced it: the next stage's tasks wait for them, which is what the UI draws
    as the pipeline's edges."""

    result: R
    task_runs: tuple = ()


def task_runs(*produced: Produced | None) -> list:
    """The task runs that produced these stage results: what the next stage waits for (``after``)."""
    return [run for item in produced if item is not None for run in item.task_runs]


def produced_by(result: R, *runs) -> Produced[R]:
    """``result`` marked as the output of the task runs ``runs`` (futures)."""
    return Produced(result, tuple(runs))


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
    and a future comes back (batch families fan out). Pass every parameter explicitly: the key is
    computed from them here with the task's cache policy, as Prefect computes it.

    ``run_name`` names the task run in the UI (``generate-shard-3-of-8``, ``evaluate-baseline``);
    ``after`` holds the upstream task runs (:func:`task_runs` of the stage results this call
    follows): the task waits for them and its ``task_inputs`` name them. Neither enters the key.
    A direct call returns the typed result with its task run (:class:`Produced`).
    """
    params = {"workdir": str(workdir), **params}
    options: dict[str, Any] = {"result_storage": results_dir(workdir)}
    if run_name is not None:
        # Prefect formats the name with the parameters: braces are literal here
        options["task_run_name"] = run_name.replace("{", "{{").replace("}", "}}")
    if output_suffix is not None:
        output = stage_output(workdir, task.name, stage_key(task, params), output_suffix)
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


# Fields of a stage result that name files (stored relative to the workdir).
PATH_FIELDS = ("path", "stage_path")


def workdir_relative(path: str | Path, workdir: str | Path) -> str:
    """``path`` as stored in a cached result: relative to the workdir when it lies inside it."""
    path, workdir = Path(path).absolute(), Path(workdir).absolute()
    try:
        return path.relative_to(workdir).as_posix()
    except ValueError:
        return str(path)


def rebase(result, workdir: str | Path):
    """A stage result with its workdir-relative paths made absolute under ``workdir`` (the one
    this run uses, wherever the result was computed)."""
    if not dataclasses.is_dataclass(result):
        return result
    absolute = {name: os.path.join(str(workdir), value) for name in PATH_FIELDS
                if isinstance(value := getattr(result, name, None), str) and not os.path.isabs(value)}
    return dataclasses.replace(result, **absolute)


# Provenance keys that say when or how fast, not what: left out of a stage file's content hash.
VOLATILE_PROVENANCE = {"created_at", "seconds", "timings", "elapsed_s"}
# A loaded input's path (its content is the table and ``source_sha256``): left out as well.
PATH_PROVENANCE = {"source"}


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
    provenance = {k: v for k, v in read_provenance(path).items() if k not in PATH_PROVENANCE}
    digest.update(stable_hash(_stable_provenance(provenance)).encode())
    return digest.hexdigest()


# A file's hash, remembered while its identity and write time stay the same: a key is computed
# twice per task (run_cached names the output, Prefect looks the result up), and every shard of
# a stage reads the same corpus. An edit in place changes the write time, so it is hashed anew.
_HASHES: dict[tuple, str] = {}
_HASHES_LOCK = threading.Lock()


def _remembered(path: Path, compute: Callable[[Path], str]) -> str:
    stat = path.stat()
    identity = (str(path.resolve()), compute.__name__, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _HASHES_LOCK:
        known = _HASHES.get(identity)
    if known is None:
        known = compute(path)
        with _HASHES_LOCK:
            _HASHES[identity] = known
    return known


def content_hash(path: str | Path) -> str:
    """What a stage's input is, whatever its path or write time: :func:`table_hash` for Parquet,
    the bytes (:func:`file_hash`) for anything else (a user's text or csv file, a folder's file)."""
    path = Path(path)
    return _remembered(path, table_hash if path.suffix.lower() in (".parquet", ".pq") else file_hash)


def folder_hash(folder: str | Path) -> str:
    """A folder's content: every file's name (relative to the folder) and bytes, in name order
    (the SentEval data: STS, SICK, the transfer sets)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(_remembered(path, file_hash).encode())
    return digest.hexdigest()


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes: what a stage's input really is, whatever its path."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
