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
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any, Callable

from multicsr_core.config import stable_hash

# Parameters that say where or how to report, not what to compute.
NOT_KEYED = {"workdir", "output_path", "source_path", "full_config"}  # where, not what: content enters as hashes


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


def run_cached(task, workdir: str | Path, output_suffix: str | None = ".parquet",
               refresh_if: Callable[[Path], bool] | None = None, submit: bool = False, **params):
    """Call a content-keyed task with its results stored in the workdir.

    The task receives ``output_path``: the content-addressed file (``output_suffix``, or a folder
    with ``""``) it must write. When that output is missing the task runs again even if Prefect
    holds a result; likewise when ``refresh_if(output)`` says the output must be redone (a
    scoring shard with failed items). With ``submit`` the call goes to the flow's task runner
    and a future comes back (batch families fan out). Pass every parameter explicitly: the key is computed from them here and by
    :func:`content_cache_key`, which must agree.
    """
    params = {"workdir": str(workdir), **params}
    options: dict[str, Any] = {"result_storage": results_dir(workdir)}
    if output_suffix is not None:
        output = stage_output(workdir, task.name, stage_key(task.name, task.fn, params), output_suffix)
        params["output_path"] = str(output)
        if not output.exists() or (refresh_if is not None and refresh_if(output)):
            options["refresh_cache"] = True
    configured = task.with_options(**options)
    # submit: hand the call to the flow's task runner (threads, or Dask workers) and return a future
    return configured.submit(**params) if submit else configured(**params)


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes: what a stage's input really is, whatever its path."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
