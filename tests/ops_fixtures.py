"""Fixtures for the operations tests: a real ``prefect server start`` on 127.0.0.1 (SQLite in a
temporary PREFECT_HOME), the demo deployment run through a real process worker, and the
pipeline on a premises file with a tiny LLM. Loaded with ``pytest_plugins`` so the session-scoped
server and runs are shared by test_ops_server.py and test_ui_screenshot.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import drain_prefect_workers, task_states  # noqa: F401 (task_states re-exported for the ops tests)

REPO = Path(__file__).resolve().parents[1]
DEMO_SMALL = ["input.limit=96", "training.max_steps=2", "training.batch_size=16", "training.eval_steps=2",
              "evaluation.sts_tasks=[STS16]", "scoring.shard_size=48"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str  # the API, .../api
    home: Path
    process: subprocess.Popen
    log: Path

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a CLI or worker process that talks to this server."""
        env = {**os.environ, "PREFECT_API_URL": self.url, "PREFECT_HOME": str(self.home / "client"),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        env.update(extra)
        return env

    @contextlib.contextmanager
    def settings(self):
        """Point this process's flows and clients at the server.

        Prefect keeps one events worker and one log worker per process whatever the API URL (task
        run states reach the server as events), so they are drained and dropped on the way in and
        out: otherwise a worker started for another server (conftest's test harness) keeps
        sending this server's task runs there.
        """
        from prefect.settings import PREFECT_API_URL, temporary_settings

        drain_prefect_workers()
        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            try:
                yield
            finally:  # still pointing here: what is queued reaches this server
                drain_prefect_workers()




def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def start_server(home: Path, timeout_s: float = 120.0, **extra_env: str) -> LiveServer:
    """``prefect server start`` on a free 127.0.0.1 port; returns once /api/health answers."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    url = f"http://127.0.0.1:{port}/api"
    # the UI asks the API at PREFECT_UI_API_URL, which does not follow --port (default :4200)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": "", "PREFECT_UI_API_URL": url, **extra_env}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                    "--port", str(port), "--log-level", "WARNING"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if _healthy(url):
            return LiveServer(url, home, process, log)
        time.sleep(0.5)
    stop(process)
    raise RuntimeError(f"prefect server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


# --- the server, the demo deployment through a worker, the premises pipeline ------------------

@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """A real Prefect server (SQLite) on 127.0.0.1; the scheduler looks for due runs every 2 s."""
    server = start_server(tmp_path_factory.mktemp("prefect-server"),
                          PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2")
    try:
        yield server
    finally:
        stop(server.process)


def run_cli(args: list[str], env: dict, timeout_s: float = 120.0, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m <args>``; a non-zero exit fails with the command's output."""
    result = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=timeout_s,
                            cwd=cwd)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@dataclass
class WorkerRun:
    flow_run_id: object
    workdir: Path
    worker_output: str
    seconds: float
    parameters: dict  # what the run was started with, over the deployment's


# The demo deployment run as an operator changes one run: a partial ``config`` (Prefect replaces
# the deployment's whole config with it; the flow merges it over the deployment's), ``overrides``
# in the CLI's --set syntax, and a workdir of its own. 48 of the deployment's 96 triplets in 2
# scoring shards of 24 (the deployment's shards hold 48).
DEMO_RUN_LIMIT, DEMO_RUN_SHARD = 48, 24


@pytest.fixture(scope="session")
def demo_worker_run(live_server, tmp_path_factory) -> WorkerRun:
    """The demo deployment (small slice) registered with ``python -m multicsr.deployments``, run by
    ``prefect worker start --run-once`` on a process pool, with run-time changes (see above)."""
    root = tmp_path_factory.mktemp("deployment-runs")
    env = live_server.env()
    sets = [arg for s in DEMO_SMALL for arg in ("--set", s)]
    run_cli(["multicsr.deployments", "register", "--only", "demo-snli", "--create-pools", "--cpu-pool",
             "ops-test-cpu", "--workdir-root", str(root), *sets], env)
    parameters = {"config": {"input": {"limit": DEMO_RUN_LIMIT}}, "overrides": [f"scoring.shard_size={DEMO_RUN_SHARD}"],
                  "workdir": str(tmp_path_factory.mktemp("one-run") / "workdir")}
    with live_server.settings():
        from prefect.deployments import run_deployment

        flow_run = run_deployment("multicsr-pipeline/demo-snli", parameters=parameters, timeout=0)
    start = time.monotonic()
    worker = run_cli(["prefect", "worker", "start", "--pool", "ops-test-cpu", "--run-once"], env, timeout_s=480)
    return WorkerRun(flow_run.id, Path(parameters["workdir"]), worker.stdout + worker.stderr, time.monotonic() - start,
                     parameters)


def task_graph(flow_run_id) -> dict[str, set[str]]:
    """{task run name: names of its upstream task runs} of one flow run, from each task run's
    ``task_inputs`` as the API gives them (what the UI draws as edges; ``__parents__`` is nesting)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    names = {run.id: run.name for run in runs}
    assert len(set(names.values())) == len(runs), f"task run names repeat: {sorted(names.values())}"
    return {run.name: {names.get(getattr(i, "id", None), f"<not in this run: {i}>")
                       for key, inputs in run.task_inputs.items() if key != "__parents__" for i in inputs}
            for run in runs}


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    """A tiny random T5 (weights scrambled so outputs depend on the prompt) saved like a hub model."""
    from tiny_generators import snli_premises, tiny_generator

    model, tokenizer = tiny_generator("t5", snli_premises(40))
    path = tmp_path_factory.mktemp("tiny-t5")
    model.float().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def premises_config(llm_dir: Path, premises: Path, *extra: str) -> dict:
    """Stage 1 -> 2 on a premises file with the tiny LLM writing and scoring; no training."""
    from multicsr_core.config import load_config, parse_override

    overrides = [f"input.premises={premises}", f"generation.llm={llm_dir}", "generation.shard_size=8",
                 "generation.batch_size=8", "generation.max_new_tokens=8", "generation.device=cpu",
                 "scoring.scorer=local", "scoring.device=cpu", "scoring.shard_size=16", "training.enabled=false",
                 "name=ops-premises", *extra]
    return load_config(None, [parse_override(s) for s in overrides]).to_dict()




@dataclass
class IncrementalRuns:
    first_flow_run_id: object
    workdir: Path
    premises: Path
    llm_dir: Path
    first_states: dict
    second_states: dict
    responses_after_first: int
    new_responses: int  # LLM answers computed by the second run
    old_responses_touched: int  # answers of the first run rewritten by the second (must be 0)


@pytest.fixture(scope="session")
def incremental_runs(live_server, tiny_llm_dir, tmp_path_factory) -> IncrementalRuns:
    """The scheduled-rebuild situation: a run on 16 premises (2 generation shards of 8), then 8
    premises appended to the file and the same deployment parameters run again."""
    import sqlite3

    import torch

    from multicsr.flows.pipeline import multicsr_pipeline
    from multicsr_core.llm.cache import default_cache_path
    from tiny_generators import snli_premises

    tmp = tmp_path_factory.mktemp("rebuild")
    premises, workdir = tmp / "premises.txt", tmp / "run"
    sentences = snli_premises(24)
    premises.write_text("\n".join(sentences[:16]) + "\n", encoding="utf-8")
    config = premises_config(tiny_llm_dir, premises)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Dask worker (OMP_NUM_THREADS=1): the same arithmetic
    try:
        with live_server.settings():
            first = multicsr_pipeline(config=config, workdir=str(workdir), return_state=True)
            assert first.is_completed(), first.message
            first_states = task_states(first.state_details.flow_run_id)
            cache = default_cache_path(workdir)
            with sqlite3.connect(cache) as db:
                after_first, = db.execute("SELECT count(*) FROM responses").fetchone()
                marker, = db.execute("SELECT max(updated_at) FROM responses").fetchone()
            with premises.open("a", encoding="utf-8") as fh:
                fh.write("\n".join(sentences[16:]) + "\n")
            second = multicsr_pipeline(config=config, workdir=str(workdir), return_state=True)
            assert second.is_completed(), second.message
            second_states = task_states(second.state_details.flow_run_id)
            with sqlite3.connect(cache) as db:
                new, = db.execute("SELECT count(*) FROM responses WHERE created_at > ?", (marker,)).fetchone()
                touched, = db.execute("SELECT count(*) FROM responses WHERE created_at <= ? AND updated_at > ?",
                                      (marker, marker)).fetchone()
    finally:
        torch.set_num_threads(threads)
    return IncrementalRuns(first.state_details.flow_run_id, workdir, premises, tiny_llm_dir, first_states, second_states, after_first, new, touched)


# --- Postgres from the distribution's packages (the compose topology's database) ---------------

def _pg_bin(name: str) -> str | None:
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


@pytest.fixture
def local_postgres():
    """A throwaway Postgres cluster on 127.0.0.1 (trust auth) from Debian's postgresql package;
    yields the asyncpg URL. As root the cluster runs as the ``postgres`` user (Postgres refuses root)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("Postgres server binaries not installed (Debian: apt-get install postgresql)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the Postgres server as")
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser to start Postgres as the 'postgres' user")
        prefix = ["runuser", "-u", "postgres", "--"]
    # not under pytest's tmp_path: its parents are private to the user running pytest
    data = Path(tempfile.mkdtemp(prefix="multicsr-pgdata-"))
    if prefix:
        os.chown(data, user.pw_uid, user.pw_gid)
    port = free_port()

    def run(*command: str, timeout_s: float = 120) -> None:
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout_s)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stdout}{result.stderr}")

    run(initdb, "-D", str(data), "-U", "prefect", "--auth=trust", "-E", "UTF8")
    run(pg_ctl, "-D", str(data), "-w", "-t", "60", "-l", str(data / "server.log"), "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start")
    try:
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)
