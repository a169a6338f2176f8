"""Operations against a real Prefect server (``prefect server start``, SQLite, 127.0.0.1):

- the deployments registered from code and from prefect.yaml, with their rebuild schedules;
- the demo deployment run by a real process worker, its artifacts read back through the client;
- a scheduled rebuild after premises were appended costs only the new generation batch and the
  new scoring pairs;
- the DaskTaskRunner on a LocalCluster of 2 processes gives the single-process outputs, each
  worker loading the LLM once.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter

import numpy as np
import pytest
import yaml

pytest.register_assert_rewrite("ops_fixtures")

from multicsr_core.config import PipelineConfig, load_config, parse_override  # noqa: E402
from multicsr.deployments.register import prefect_yaml  # noqa: E402
from multicsr.deployments.specs import DEPLOYMENTS, ENTRYPOINT, deployment_parameters  # noqa: E402

from ops_fixtures import REPO, premises_config, run_cli, task_states  # noqa: E402

pytest_plugins = ["ops_fixtures"]


@pytest.fixture
def dask():
    """prefect-dask (the [dask] extra) is needed by the Dask tests; skipped with that reason if absent."""
    return pytest.importorskip("prefect_dask", reason="prefect-dask not installed: pip install 'multicsr[dask]'")


def _deployments(server) -> dict:
    from prefect.client.orchestration import get_client

    with server.settings(), get_client(sync_client=True) as client:
        return {d.name: d for d in client.read_deployments()}


def test_prefect_yaml_is_the_generated_one():
    """prefect.yaml is rendered from deployments/specs.py; regenerate it after editing the specs."""
    committed = (REPO / "prefect.yaml").read_text(encoding="utf-8")
    assert committed == prefect_yaml(), "run `python -m multicsr.deployments yaml -o prefect.yaml`"
    document = yaml.safe_load(committed)
    assert [d["name"] for d in document["deployments"]] == [s.name for s in DEPLOYMENTS]
    for entry, spec in zip(document["deployments"], DEPLOYMENTS):
        # the parameters validate to exactly the preset's config
        assert PipelineConfig.model_validate(entry["parameters"]["config"]) == load_config(spec.preset)
        assert entry["parameters"]["workdir"] == "{{ $MULTICSR_WORKDIR_ROOT }}/" + spec.name
    combos = {(s.llm, s.backbone) for s in DEPLOYMENTS}
    assert {("flan-t5-xl", "bert-base"), ("flan-t5-xl", "roberta-base"), ("gpt-3.5-turbo", "roberta-base")} <= combos


@pytest.mark.slow
def test_register_from_code_with_rebuild_schedules(live_server, tmp_path):
    """``python -m multicsr.deployments register`` creates every deployment; the server's
    scheduler then creates the upcoming cron runs of the premises-fed ones."""
    root = tmp_path / "runs"
    run_cli(["multicsr.deployments", "register", "--create-pools", "--cpu-pool", "ops-cpu", "--gpu-pool", "ops-gpu",
             "--workdir-root", str(root)], live_server.env())
    deployments = _deployments(live_server)
    for spec in DEPLOYMENTS:
        d = deployments[spec.name]
        assert d.entrypoint == f"multicsr.flows.pipeline.{ENTRYPOINT.split(':')[1]}"
        assert d.parameters == deployment_parameters(spec, root)
        assert d.work_pool_name == ("ops-gpu" if spec.gpu else "ops-cpu")
        assert d.global_concurrency_limit.limit == 1
        assert set(spec.all_tags) <= set(d.tags)
        assert [s.schedule.cron for s in d.schedules] == ([spec.cron] if spec.cron else [])

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    scheduled = {d.name: d for d in DEPLOYMENTS if d.cron}
    runs: dict = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(runs.get(name) for name in scheduled):
        time.sleep(1)
        with live_server.settings(), get_client(sync_client=True) as client:
            for name in scheduled:
                runs[name] = client.read_flow_runs(deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[deployments[name].id])))
    for name, spec in scheduled.items():
        assert runs[name], f"the scheduler created no run for {name}"
        hour = int(spec.cron.split()[1])
        for run in runs[name]:
            assert run.state.name == "Scheduled"
            assert (run.expected_start_time.hour, run.expected_start_time.minute) == (hour, 0)
            assert run.parameters == deployment_parameters(spec, root)


@pytest.mark.slow
def test_prefect_yaml_deploys(live_server, tmp_path):
    """``prefect --no-prompt deploy --all`` with the repository's prefect.yaml."""
    env = live_server.env(MULTICSR_WORKDIR_ROOT=str(tmp_path / "yaml-runs"))
    for pool in ("multicsr-cpu", "multicsr-gpu"):
        run_cli(["prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"], env)
    run_cli(["prefect", "--no-prompt", "deploy", "--all"], env, cwd=REPO)  # reads ./prefect.yaml
    deployments = _deployments(live_server)
    for spec in DEPLOYMENTS:
        d = deployments[spec.name]
        assert d.parameters == deployment_parameters(spec, tmp_path / "yaml-runs")
        assert d.work_pool_name == spec.work_pool
        assert d.pull_steps in (None, [])
        assert [s.schedule.cron for s in d.schedules] == ([spec.cron] if spec.cron else [])


@pytest.mark.slow
def test_deployment_runs_through_a_process_worker(demo_worker_run, live_server):
    """The demo deployment, run by a process worker with a partial ``config``, ``overrides`` and its
    own workdir: the run used them over the deployment's preset and shows them in its parameters;
    the UI's graph is the pipeline; artifacts and worker output read well."""
    import json
    import re

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from multicsr_core.io.corpus import read_provenance
    from ops_fixtures import DEMO_RUN_LIMIT, DEMO_RUN_SHARD, task_graph

    with live_server.settings(), get_client(sync_client=True) as client:
        run = client.read_flow_run(demo_worker_run.flow_run_id)
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        deployment = client.read_deployment(run.deployment_id)
        graph = task_graph(run.id)
        drawn = client.request("GET", "/flow_runs/{id}/graph-v2", path_params={"id": run.id}).json()
    assert run.state.is_completed(), (run.state, demo_worker_run.worker_output[-3000:])
    assert deployment.name == "demo-snli" and run.work_pool_name == "ops-test-cpu"

    # the run's changes are in its parameters, and took effect over the deployment's preset
    assert {k: run.parameters[k] for k in ("config", "overrides", "workdir")} == demo_worker_run.parameters
    workdir = demo_worker_run.workdir
    assert json.loads((workdir / "run_summary.json").read_text())["funnel"]["total"] == DEMO_RUN_LIMIT
    preset = load_config("demo-snli")
    config = read_provenance(workdir / "corpus.parquet")["config"]
    assert config["input"]["limit"] == DEMO_RUN_LIMIT and config["scoring"]["shard_size"] == DEMO_RUN_SHARD
    assert config["training"]["base_model"] == preset.training.base_model  # not the library default
    assert config["training"]["max_steps"] == 2  # the deployment's own --set, kept
    for name in ("corpus.parquet", "results.json", "baseline_results.json", "run_summary.json"):
        assert (workdir / name).is_file(), name

    # the graph: each task run's task_inputs name its upstream run; run names say what each does
    shards = {f"score-shard-{i}-of-{DEMO_RUN_LIMIT // DEMO_RUN_SHARD}" for i in (1, 2)}
    assert graph == {"load-triplets": set(), **{s: {"load-triplets"} for s in shards}, "curate": shards,
                     "train": {"curate"}, "evaluate-baseline": {"train"}, "evaluate-trained": {"train"}}, graph
    # ... and the UI's graph endpoint (graph-v2: nodes as [id, node] pairs) draws those edges
    labels = {node_id: node["label"] for node_id, node in drawn["nodes"]}
    edges = {(labels[parent["id"]], node["label"]) for _, node in drawn["nodes"] for parent in node["parents"]}
    assert edges == {(up, name) for name, ups in graph.items() for up in ups}, edges

    kinds = {a.key: a.type for a in artifacts}
    for key in ("curation-funnel", "run-summary", "sts-baseline", "sts-trained", "train-dev-history"):
        assert kinds.get(key) == "table", (key, kinds)
    for key in ("curation-report", "sts-comparison"):
        assert kinds.get(key) == "markdown", (key, kinds)
    comparison = next(a for a in artifacts if a.key == "sts-comparison")
    assert "STS16" in comparison.data
    # progress reads "<stage>: 24 of 24 triplets, 31.2 triplets/s" (or "4 s per shard"), never "1/1 at 0.0/s"
    progress = [a.description for a in artifacts if a.type == "progress"]
    assert progress
    for text in progress:
        assert re.fullmatch(r".+: \d+ of \d+ \w+(, [\d.]+ (\w+/s|s per \w+|min per \w+))?", text), progress
    # the run summary's columns say what they hold
    summary = json.loads(next(a for a in artifacts if a.key == "run-summary").data)
    assert {tuple(row) for row in summary} == {("section", "item", "value", "unit")}
    assert {"section": "funnel", "item": "total", "value": DEMO_RUN_LIMIT, "unit": "rows"} in summary
    assert {row["item"] for row in summary if row["section"] == "time per stage"} == {
        "load", "score", "curate", "train", "evaluate"}
    # the worker's output holds the stages' lines, not the Trainer's metric dicts or loading bars
    for noise in ("{'loss'", "{'train_runtime'", "Loading weights", "FutureWarning"):
        assert noise not in demo_worker_run.worker_output, noise
    assert "overrides: scoring.shard_size=24" in demo_worker_run.worker_output


@pytest.mark.slow
def test_a_failed_run_draws_its_graph_too(live_server, tmp_path):
    """A run whose training fails (no such base model, offline): the graph still reads load ->
    score -> curate -> train, each task run naming its upstream run in task_inputs."""
    from multicsr.flows.pipeline import multicsr_pipeline
    from ops_fixtures import task_graph

    config = load_config("demo-snli", [parse_override(s) for s in (
        "input.limit=8", "scoring.shard_size=4", "training.base_model=no-such-org/no-such-model")]).to_dict()
    with live_server.settings():
        state = multicsr_pipeline(config=config, workdir=str(tmp_path / "run"), return_state=True)
        assert state.is_failed(), state
        graph = task_graph(state.state_details.flow_run_id)
        failed = task_states(state.state_details.flow_run_id)["train"]
    shards = {"score-shard-1-of-2", "score-shard-2-of-2"}
    assert graph == {"load-triplets": set(), **{s: {"load-triplets"} for s in shards}, "curate": shards,
                     "train": {"curate"}}, graph
    assert failed == Counter(Failed=1)


def test_a_run_refuses_a_bad_override_before_any_stage(prefect_server, tmp_path):
    """overrides are validated with the config, before any stage: one line naming the key."""
    from multicsr.flows.pipeline import multicsr_pipeline
    from multicsr_core.errors import UserError

    config = load_config("demo-snli").to_dict()
    for overrides, message in ((["training.sigmaa=0.8"], "training.sigmaa: unknown key"),
                               (["input.triplets=null"], "the config names no input")):
        state = multicsr_pipeline(config=config, workdir=str(tmp_path / "run"), overrides=overrides, return_state=True)
        assert state.is_failed()
        with pytest.raises(UserError, match=re.escape(message)):
            state.result()
        assert task_states(state.state_details.flow_run_id) == {}, overrides
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_scheduled_rebuild_costs_only_the_new_batches(incremental_runs, live_server):
    """16 premises in 2 shards of 8, then 8 appended: the 2 finished shards come back Cached and
    only the new one generates; scoring reruns over the new corpus file, but the response cache
    answers every old pair, so only the 8 new triplets (16 pairs) reach the LLM."""
    first, second = incremental_runs.first_states, incremental_runs.second_states
    assert first["generate_shard"] == Counter(Completed=2)
    # the graph of stage 1 -> 2: each shard waits for the load, the join for the shards
    from ops_fixtures import task_graph

    with live_server.settings():
        graph = task_graph(incremental_runs.first_flow_run_id)
    generated = {"generate-shard-1-of-2", "generate-shard-2-of-2"}
    assert graph == {"load-premises": set(), **{s: {"load-premises"} for s in generated},
                     "materialize-generated": generated, "score-shard-1-of-1": {"materialize-generated"},
                     "curate": {"score-shard-1-of-1"}}, graph
    assert second["generate_shard"] == Counter(Cached=2, Completed=1)
    assert second["load_premises"] == Counter(Completed=1)  # the file changed
    from multicsr_core.io.corpus import read_corpus, read_provenance

    corpus = read_corpus(incremental_runs.workdir / "corpus.parquet")
    # stage-1 cleaning drops some of the random tiny model's outputs (repetitions): every premise
    # is accounted for, and only the appended premises' surviving triplets reach the LLM
    funnel = read_provenance(incremental_runs.workdir / "corpus.parquet")["funnel"]
    assert funnel["premises"] == 24 and corpus.num_rows == 24 - funnel["generation_rejected"]
    new_rows = sum(row > 16 for row in corpus.column("source_row").to_pylist())  # 1-based lines 17..24
    assert 0 < new_rows <= 8
    assert incremental_runs.new_responses == 2 * new_rows
    assert incremental_runs.old_responses_touched == 0
    assert incremental_runs.responses_after_first > 0


@pytest.mark.slow
def test_dask_runner_matches_the_single_process_run(dask, incremental_runs, live_server, tmp_path):
    """The same config on a LocalCluster of 2 worker processes: identical corpus; the shards
    were spread over both workers and each loaded the LLM exactly once."""
    from distributed import Client, LocalCluster

    from multicsr.flows.pipeline import multicsr_pipeline
    from multicsr.runners import build_task_runner
    from multicsr_core.io.corpus import read_corpus

    config = premises_config(incremental_runs.llm_dir, incremental_runs.premises)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        flow = multicsr_pipeline.with_options(task_runner=build_task_runner("dask", address=cluster.scheduler_address))
        with live_server.settings():
            state = flow(config=config, workdir=str(tmp_path / "dask"), return_state=True)
            assert state.is_completed(), state.message
            states = task_states(state.state_details.flow_run_id)

        def generator_loads():
            from multicsr_core.pipeline.components import cached_generator

            info = cached_generator.cache_info()
            return os.getpid(), info.misses, info.hits

        per_worker = client.run(generator_loads)
    assert states["generate_shard"] == Counter(Completed=3) and states["score_shard"] == Counter(Completed=2)
    assert len({pid for pid, _, _ in per_worker.values()} | {os.getpid()}) == 3  # two worker processes
    # 5 shards (3 generate, 2 score) over 2 workers: both worked, each loaded the LLM once
    assert sorted(misses for _, misses, _ in per_worker.values()) == [1, 1], per_worker
    assert sum(misses + hits for _, misses, hits in per_worker.values()) == 5, per_worker  # one lookup per shard
    single = read_corpus(incremental_runs.workdir / "corpus.parquet")
    distributed = read_corpus(tmp_path / "dask" / "corpus.parquet")
    assert distributed.num_rows == single.num_rows > 0
    # the score-token mass is a float sum over a batch-padded forward: equal up to float32 rounding
    mass = ("entailment_score_mass", "contradiction_score_mass")
    for column in mass:
        a, b = (t.column(column).to_numpy(zero_copy_only=False).astype(float) for t in (distributed, single))
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True), column
    assert distributed.drop_columns(list(mass)).equals(single.drop_columns(list(mass)))


@pytest.mark.slow
def test_dask_runner_starts_its_own_local_cluster(dask, live_server):
    """``build_task_runner("dask", n_workers=2)``: the flow starts and closes a LocalCluster whose
    two worker processes share the submitted tasks."""
    from prefect import flow, task

    from multicsr.runners import build_task_runner

    @task
    def where(i: int) -> int:
        time.sleep(1.0)  # long enough that the second task finds the first worker busy
        return os.getpid()

    @flow(task_runner=build_task_runner("dask", n_workers=2))
    def fan_out() -> list[int]:
        return [f.result() for f in [where.submit(i) for i in range(4)]]

    with live_server.settings():
        pids = fan_out()
    assert len(set(pids)) == 2 and os.getpid() not in pids


def test_gpu_cluster_gives_each_worker_one_device(dask):
    """One worker process per listed GPU, each seeing only its own CUDA_VISIBLE_DEVICES."""
    from distributed import Client

    from multicsr.runners import gpu_cluster

    with gpu_cluster(["0", "1"]) as cluster, Client(cluster) as client:
        seen = client.run(lambda: (os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")))
    assert sorted(device for _, device in seen.values()) == ["0", "1"]
    assert len({pid for pid, _ in seen.values()}) == 2


def test_build_task_runner_rejects_bad_combinations(dask):
    from prefect.task_runners import ThreadPoolTaskRunner

    from multicsr.runners import build_task_runner

    assert isinstance(build_task_runner(), ThreadPoolTaskRunner)
    assert build_task_runner("threads", n_workers=3)._max_workers == 3
    runner = build_task_runner("dask", n_workers=3)
    assert isinstance(runner, dask.DaskTaskRunner) and runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    assert build_task_runner("dask", address="tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    with pytest.raises(ValueError, match="kind='dask'"):
        build_task_runner("threads", address="tcp://x:1")
    with pytest.raises(ValueError, match="one of"):
        build_task_runner("dask", n_workers=2, address="tcp://x:1")
    with pytest.raises(ValueError, match="unknown task runner"):
        build_task_runner("ray")


def test_run_command_checks_task_runner_options(tmp_path, monkeypatch, capsys):
    """Through the real entry point (``multicsr.cli.main``): each bad combination is one line, exit 2."""
    from multicsr.cli import main

    for args, message in ((["--dask-workers", "2"], "need --task-runner dask"),
                          (["--task-runner", "ray"], "'ray' is not one of 'threads', 'dask'"),
                          (["--task-runner", "dask", "--dask-workers", "2", "--dask-address", "tcp://x:1"], "not both")):
        monkeypatch.setattr(sys, "argv", ["multicsr", "run", "--preset", "demo-snli", "--workdir", str(tmp_path), *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err
        assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_server_on_postgres(local_postgres, tmp_path):
    """The compose topology's database: the server on a real Postgres, the deployments registered,
    a flow run with an artifact stored and read back."""
    import asyncio

    import asyncpg

    from ops_fixtures import start_server, stop

    server = start_server(tmp_path / "prefect-pg", PREFECT_API_DATABASE_CONNECTION_URL=local_postgres)
    try:
        run_cli(["multicsr.deployments", "register", "--only", "demo-offline", "--create-pools", "--cpu-pool",
                 "pg-cpu", "--workdir-root", str(tmp_path / "runs")], server.env())
        from prefect import flow
        from prefect.artifacts import create_table_artifact

        @flow(name="postgres-probe")
        def probe() -> int:
            create_table_artifact([{"stage": "probe", "value": 1}], key="postgres-probe")
            return 1

        with server.settings():
            state = probe(return_state=True)
        assert state.is_completed()
    finally:
        stop(server.process)

    async def rows() -> tuple[int, int, list]:
        db = await asyncpg.connect(local_postgres.replace("postgresql+asyncpg", "postgresql"))
        try:
            return (await db.fetchval("SELECT count(*) FROM flow_run WHERE id = $1", state.state_details.flow_run_id),
                    await db.fetchval("SELECT count(*) FROM artifact WHERE key = 'postgres-probe'"),
                    [r["name"] for r in await db.fetch("SELECT name FROM deployment")])
        finally:
            await db.close()

    runs, artifacts, deployments = asyncio.run(rows())
    assert (runs, artifacts, deployments) == (1, 1, ["demo-offline"])


def test_library_output_goes_to_the_debug_log_during_a_run_only(capfd):
    """In a run: a library FutureWarning, a transformers warning and the Trainer's metric lines are
    debug lines (outside a flow run: of this module's logger), other stderr text passes on at once;
    after the run the libraries print as before."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    from multicsr.orchestration.library_logs import library_output_to_debug, trainer_log_lines_to_debug

    def chatter():
        warnings.warn("`past_key_values` is deprecated", FutureWarning)
        logging.getLogger("transformers.modeling_utils").warning("some weights were not used")
        print({"loss": 0.5, "epoch": 1.0}, file=sys.stderr)
        print("[train] 2/2 steps", file=sys.stderr)

    class Records(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.seen: list[tuple[int, str]] = []

        def emit(self, record):
            self.seen.append((record.levelno, record.getMessage()))

    library = logging.getLogger("transformers")
    library_before = (list(library.handlers), library.propagate)
    records, logger = Records(), logging.getLogger("multicsr.orchestration.progress")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    bars = hf_logging.is_progress_bar_enabled()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # pytest's configuration ignores FutureWarning
            with library_output_to_debug(), trainer_log_lines_to_debug():
                assert not hf_logging.is_progress_bar_enabled()
                chatter()
            assert capfd.readouterr().err == "[train] 2/2 steps\n"
            debug = [message for levelno, message in records.seen if levelno == logging.DEBUG]
            assert len(debug) == 3 and debug[0].startswith("FutureWarning: `past_key_values` is deprecated"), debug
            assert debug[1:] == ["transformers.modeling_utils: some weights were not used",
                                 "trainer: {'loss': 0.5, 'epoch': 1.0}"]
            assert hf_logging.is_progress_bar_enabled() == bars
        with warnings.catch_warnings(record=True) as caught:  # outside a run: the libraries' own behaviour
            warnings.simplefilter("always")
            chatter()
        err = capfd.readouterr().err
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
        logger.propagate = propagate
    assert [str(w.message) for w in caught] == ["`past_key_values` is deprecated"]
    # transformers' own handler is back (where it writes depends on when it was made: under pytest,
    # an earlier test's capture stream, so its text is not looked for in this test's stderr)
    assert (list(library.handlers), library.propagate) == library_before
    assert "{'loss': 0.5" in err


@pytest.mark.parametrize("transformers_bars, hub_bars", [(True, True), (False, True), (False, False)])
def test_each_librarys_progress_bars_are_as_before_after_a_run(transformers_bars, hub_bars):
    """transformers' switch flips huggingface_hub's bars too: after a run each library's bars are as
    they were before it, also where only huggingface_hub's were on (a download under `multicsr train`)."""
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    from multicsr.orchestration.library_logs import library_output_to_debug

    before = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    try:
        (hf_logging.enable_progress_bar if transformers_bars else hf_logging.disable_progress_bar)()
        (hub_utils.enable_progress_bars if hub_bars else hub_utils.disable_progress_bars)()
        with library_output_to_debug():
            assert not hf_logging.is_progress_bar_enabled() and hub_utils.are_progress_bars_disabled()
        assert (hf_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()) == \
            (transformers_bars, hub_bars)
    finally:
        (hf_logging.enable_progress_bar if before[0] else hf_logging.disable_progress_bar)()
        (hub_utils.disable_progress_bars if before[1] else hub_utils.enable_progress_bars)()
