"""Task runners for the pipeline flow: threads in one process, or Dask workers.

Generation and scoring shards are the only tasks the flow submits; everything else runs in the
flow's own process. With ``threads`` (the flow's default) the shards run one at a time next to
the flow. With ``dask`` they spread over Dask worker processes: each worker loads the LLM once
(``multicsr_core.pipeline.components`` keeps models per process) and works through the shards it is handed.

Three Dask layouts:

- ``build_task_runner("dask", n_workers=N)``: a LocalCluster of N single-threaded worker
  processes, started with the flow and closed with it.
- ``build_task_runner("dask", cuda_devices=["0", "1"])``: one worker process per GPU, each
  seeing only its own device (``CUDA_VISIBLE_DEVICES``), so every worker holds one copy of the
  LLM on one GPU.
- ``build_task_runner("dask", address="tcp://scheduler:8786")``: an existing cluster, e.g. one
  ``dask worker`` per GPU across machines (docs/operations.md).

Dask worker processes talk to the Prefect API themselves: point them at a real server
(``PREFECT_API_URL``); in ephemeral mode every worker process starts a server of its own.

Every worker process has a deadline on its start (``death_timeout``:
``MULTICSR_WORKER_STARTUP_TIMEOUT_SECONDS``, default 180): a worker that cannot start, or cannot
reach its scheduler, fails the run instead of leaving it waiting.
"""

from __future__ import annotations

import os
from typing import Literal, Sequence

# No Prefect import at module level: the CLI reads DASK_LOCAL_WORKERS for its --help before it has
# set Prefect's environment (multicsr.cli), and Prefect reads it once, on import.
RunnerKind = Literal["threads", "dask"]
DASK_LOCAL_WORKERS = 2  # worker processes of the LocalCluster when n_workers is not given
WORKER_STARTUP_TIMEOUT_VAR = "MULTICSR_WORKER_STARTUP_TIMEOUT_SECONDS"


def worker_startup_timeout_s() -> float:
    """Seconds a Dask worker process may take to start and reach its scheduler."""
    value = os.environ.get(WORKER_STARTUP_TIMEOUT_VAR, "").strip()
    try:
        seconds = float(value) if value else 180.0
    except ValueError:
        raise ValueError(f"{WORKER_STARTUP_TIMEOUT_VAR}={value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{WORKER_STARTUP_TIMEOUT_VAR}={value!r}: give a positive number of seconds")
    return seconds


def build_task_runner(kind: RunnerKind = "threads", n_workers: int | None = None, address: str | None = None,
                      cuda_devices: Sequence[str] | None = None):
    """The task runner for ``multicsr_pipeline.with_options(task_runner=...)``.

    Args:
        kind: ``threads`` (shards one after another in the flow process, unless ``n_workers``
            allows more threads) or ``dask``.
        n_workers: threads for ``threads`` (default 1: one model, one device); worker processes
            of the LocalCluster for ``dask`` (default :data:`DASK_LOCAL_WORKERS`).
        address: scheduler address of a running Dask cluster (``dask`` only).
        cuda_devices: one Dask worker process per listed device (``dask`` only).
    """
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        if address or cuda_devices:
            raise ValueError("address and cuda_devices need kind='dask'")
        return ThreadPoolTaskRunner(max_workers=n_workers or 1)
    if kind != "dask":
        raise ValueError(f"unknown task runner {kind!r}: expected 'threads' or 'dask'")
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ImportError("the dask task runner needs prefect-dask: pip install 'multicsr[dask]'") from exc
    if sum(x is not None for x in (address, cuda_devices)) > 1 or (address and n_workers):
        raise ValueError("give one of: n_workers, address, cuda_devices")
    if address:
        return DaskTaskRunner(address=address)
    if cuda_devices is not None:
        if not cuda_devices:
            raise ValueError("cuda_devices is empty")
        return DaskTaskRunner(cluster_class=gpu_cluster, cluster_kwargs={"cuda_devices": list(cuda_devices)})
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    # One thread per worker: a worker runs one shard at a time with the whole model to itself.
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": n_workers or DASK_LOCAL_WORKERS, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None, "death_timeout": worker_startup_timeout_s()})


def gpu_cluster(cuda_devices: Sequence[str], asynchronous: bool = False, **kwargs):
    """A local Dask cluster with one single-threaded worker process per GPU.

    Each worker's ``CUDA_VISIBLE_DEVICES`` names only its own device, so inside the worker that
    GPU is ``cuda:0`` and ``device="auto"`` puts the model on it.
    """
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {f"gpu-{device}": {"cls": Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(device)},
                                                           "death_timeout": worker_startup_timeout_s()}}
               for device in cuda_devices}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    return SpecCluster(workers=workers, scheduler=scheduler, asynchronous=asynchronous, **kwargs)
