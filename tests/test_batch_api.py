"""The OpenAI Batch API path (``multicsr_core/llm/batch_api.py``) with the real ``openai`` client
against a real local server implementing ``/v1/files`` and ``/v1/batches``
(``tests/openai_batch_server.py``): scoring answered from batches, failed and expired lines
retried as ordinary requests, half-price accounting, no API key in the persisted state, and a
real ``multicsr score --batch-api`` killed with SIGKILL after its batch was created, run again:
no second batch, and it completes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from multicsr_core.llm.accounting import Pricing
from multicsr_core.llm.batch_api import BatchAPISettings, BatchStore, default_state_dir
from multicsr_core.llm.cache import ResponseCache, default_cache_path
from multicsr_core.llm.openai_backend import OpenAIChatBackend
from multicsr_core.llm.settings import APISettings
from multicsr_core.prompts import format_scoring_prompt
from multicsr_core.scoring.llm import OpenAIScorer
from tests.conftest import SHARED_DATA, openai_score_cmd, snli_triplets_csv
from tests.openai_batch_server import BatchAPIServer
from tests.openai_server import expected_score

SECRET = "sk-batch-3f9a1c-not-a-real-key"


def _pairs(n: int) -> tuple[list[str], list[str]]:
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()[1:n + 1]
    import csv

    rows = list(csv.reader(lines))
    return [r[0] for r in rows], [r[1] for r in rows]


def _scorer(server: BatchAPIServer, workdir: Path, max_tokens_field: str = "max_tokens", **settings) -> OpenAIScorer:
    batch = BatchAPISettings(default_state_dir(workdir), poll_interval_s=0.02, **settings)
    backend = OpenAIChatBackend("test-model", cache=ResponseCache(default_cache_path(workdir)), api_key=SECRET,
                                settings=APISettings(base_url=server.base_url, max_retries=1, timeout_s=10,
                                                     pricing=Pricing(1.0, 2.0), batch_api=batch,
                                                     max_tokens_field=max_tokens_field))
    return OpenAIScorer(backend)


def _expected(premises, hypotheses) -> list[float]:
    return [float(expected_score(format_scoring_prompt(p, h))) for p, h in zip(premises, hypotheses)]


def test_scores_come_from_one_batch_at_half_price_and_are_cached(tmp_path):
    premises, hypotheses = _pairs(12)
    with BatchAPIServer(polls_to_finish=3) as server:
        scorer = _scorer(server, tmp_path)
        scores = scorer.score_pairs(premises, hypotheses)
        assert [s.score for s in scores] == _expected(premises, hypotheses)
        assert server.batch_creates == 1 and server.lines_submitted() == 12
        assert server.total_requests() == 0  # nothing went out as a direct request
        assert sum(server.batch_requests.values()) == 12
        report = scorer.last_report
        assert report.n_ok == 12 and report.n_cached == 0
        # half price: the server reports len(prompt.split()) prompt tokens and 1 completion token
        prompt_tokens = sum(len(format_scoring_prompt(p, h).split()) for p, h in zip(premises, hypotheses))
        assert report.usage.prompt_tokens == prompt_tokens and report.usage.completion_tokens == 12
        assert report.usage.cost_usd == pytest.approx(0.5 * Pricing(1.0, 2.0).cost(prompt_tokens, 12))
        # the cache rows are marked, so cost reports across runs price them as batch replies
        assert scorer.backend.cache.token_totals(batch_api=True) == (prompt_tokens, 12)
        assert scorer.backend.cache.token_totals(batch_api=False) == (0, 0)

        again = _scorer(server, tmp_path)
        assert [s.score for s in again.score_pairs(premises, hypotheses)] == _expected(premises, hypotheses)
        assert again.last_report.n_cached == 12
        assert server.batch_creates == 1 and server.total_requests() == 0

    store = BatchStore(default_state_dir(tmp_path))
    [record] = store.records()
    assert record.ingested and record.status == "completed" and record.batch_id in server.batches
    assert not store.requests_path(record.local_id).exists()  # request bodies dropped once ingested
    store.close()


def test_failed_lines_are_retried_as_ordinary_requests(tmp_path):
    premises, hypotheses = _pairs(10)
    failing = premises[3]
    with BatchAPIServer(fail_match=(failing,)) as server:
        scorer = _scorer(server, tmp_path)
        scores = scorer.score_pairs(premises, hypotheses)
        assert [s.score for s in scores] == _expected(premises, hypotheses)
        n_failing = sum(failing in format_scoring_prompt(p, h) for p, h in zip(premises, hypotheses))
        assert n_failing >= 1
        assert server.count(failing) == n_failing  # each failed line once, directly
        assert server.total_requests() == n_failing
        assert server.batch_creates == 1


@pytest.mark.parametrize("final_status, answered", [("expired", 4), ("failed", 0)])
def test_expired_or_failed_batch_lines_are_retried_as_ordinary_requests(tmp_path, final_status, answered):
    premises, hypotheses = _pairs(9)
    with BatchAPIServer(final_status=final_status, expire_after_lines=answered) as server:
        scorer = _scorer(server, tmp_path)
        scores = scorer.score_pairs(premises, hypotheses)
        assert [s.score for s in scores] == _expected(premises, hypotheses)
        assert sum(server.batch_requests.values()) == answered
        assert server.total_requests() == 9 - answered
        assert server.batch_creates == 1
        # the retried lines were billed at the full price, the batch lines at half
        assert scorer.last_report.n_ok == 9


def test_shards_split_into_batches_and_the_key_stays_out_of_the_state(tmp_path):
    premises, hypotheses = _pairs(10)
    with BatchAPIServer() as server:
        scorer = _scorer(server, tmp_path, max_requests_per_batch=4)
        assert [s.score for s in scorer.score_pairs(premises, hypotheses)] == _expected(premises, hypotheses)
        assert server.batch_creates == 3  # 4 + 4 + 2 requests
        assert server.batch_authorization == {f"Bearer {SECRET}": sum(server.batch_authorization.values())}
    # nothing under the workdir holds the key (batch store, request files, response cache)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_max_wait_leaves_the_batch_for_the_next_run(tmp_path):
    premises, hypotheses = _pairs(6)
    with BatchAPIServer() as server:
        server.hold = True
        scorer = _scorer(server, tmp_path, max_wait_s=0.2)
        scores = scorer.score_pairs(premises, hypotheses)
        assert all(s.score is None for s in scores) and "run again to collect it" in scores[0].error
        assert scorer.last_report.n_not_requested == 6
        server.hold = False
        again = _scorer(server, tmp_path)
        assert [s.score for s in again.score_pairs(premises, hypotheses)] == _expected(premises, hypotheses)
        assert server.batch_creates == 1 and server.total_requests() == 0


# -- the real CLI, killed and resumed ---------------------------------------------------------
N_TRIPLETS = 15


@pytest.fixture
def corpus_csv(tmp_path) -> Path:
    return snli_triplets_csv(tmp_path / "triplets.csv", N_TRIPLETS)


def _score_cmd(corpus: Path, workdir: Path, out: Path, base_url: str) -> list[str]:
    return openai_score_cmd(corpus, workdir, out, base_url, "--batch-api", "--set", "scoring.batch_poll_interval_s=0.05", "--set", "scoring.max_retries=1")


def _batch_ids_on_disk(workdir: Path) -> list[str]:
    db = default_state_dir(workdir) / "batches.sqlite"
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return [b for (b,) in conn.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL")]
        except sqlite3.OperationalError:
            return []


def _kill_when(proc: subprocess.Popen, condition, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _check_scores(out: Path, corpus: Path) -> None:
    import csv

    rows = list(csv.DictReader(corpus.read_text(encoding="utf-8").splitlines()))
    table = pq.read_table(out)
    assert table.column("entailment_score").to_pylist() == _expected([r["sent0"] for r in rows],
                                                                      [r["sent1"] for r in rows])
    assert table.column("contradiction_score").to_pylist() == _expected([r["sent0"] for r in rows],
                                                                         [r["hard_neg"] for r in rows])


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["polling", "create"])
def test_sigkill_after_the_batch_was_created_then_rerun_creates_no_second_batch(tmp_path, corpus_csv, kill_at):
    """``polling``: killed while it polls (the batch id is on disk). ``create``: killed after the
    server created the batch but before the create call returned (the id is not on disk yet; the
    rerun finds the batch by its metadata)."""
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONUNBUFFERED": "1"}
    workdir, out = tmp_path / "run", tmp_path / "scored.parquet"
    with BatchAPIServer(create_delay_s=5.0 if kill_at == "create" else 0.0) as server:
        server.hold = True
        proc = subprocess.Popen(_score_cmd(corpus_csv, workdir, out, server.base_url), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kill_at == "polling":
            _kill_when(proc, lambda: server.batch_retrieves >= 2, "the batch was polled")
            assert len(_batch_ids_on_disk(workdir)) == 1
        else:
            _kill_when(proc, lambda: server.batch_creates == 1, "the batch was created")
            assert _batch_ids_on_disk(workdir) == []
        assert server.batch_creates == 1 and not out.exists()
        server.hold = False
        server.create_delay_s = 0.0
        done = subprocess.run(_score_cmd(corpus_csv, workdir, out, server.base_url), env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.batch_creates == 1  # picked up, not paid twice
        assert server.total_requests() == 0 and sum(server.batch_requests.values()) == 2 * N_TRIPLETS
        assert _batch_ids_on_disk(workdir) == list(server.batches)
    _check_scores(out, corpus_csv)
    assert json.loads(done.stdout)["failed"] == 0
    for path in workdir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_api_generation_goes_through_one_batch_per_shard(tmp_path, monkeypatch):
    from multicsr_core.config import load_config, parse_override
    from multicsr_core.pipeline.generate import generate_shard, generation_prompts
    from tests.openai_server import expected_generation

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    premises, _ = _pairs(6)
    premises = list(dict.fromkeys(premises))
    with BatchAPIServer() as server:
        cfg = load_config(None, [parse_override(s) for s in [
            "generation.llm=test-model", "generation.backend=openai", f"generation.base_url={server.base_url}",
            "generation.batch_api=true", "generation.shard_size=2", "scoring.batch_poll_interval_s=0.02"]])
        table, rejects = generate_shard(cfg, premises, list(range(len(premises))), workdir=tmp_path)
        # shard_size 2 premises -> 4 requests per batch, all submitted at once by this one call
        assert server.batch_creates == -(-2 * len(premises) // 4) and server.total_requests() == 0
    prompts = generation_prompts(cfg, premises)
    assert table.column("entailment").to_pylist() == [expected_generation(p.entailment_prompt) for p in prompts]
    assert table.column("contradiction").to_pylist() == [expected_generation(p.contradiction_prompt) for p in prompts]


@pytest.mark.slow
def test_pipeline_generates_and_scores_through_the_batch_api(prefect_server, tmp_path, monkeypatch):
    """The ChatGPT path as one Prefect run with both switches on: every generation shard and every
    scoring shard is one batch; no direct request; a second run recomputes nothing."""
    from collections import Counter

    from multicsr.flows.pipeline import multicsr_pipeline
    from multicsr_core.config import load_config, parse_override
    from multicsr_core.io.corpus import read_corpus
    from tests.conftest import task_states

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    premises = list(dict.fromkeys(_pairs(14)[0]))[:10]
    premises_file = tmp_path / "premises.txt"
    premises_file.write_text("\n".join(premises) + "\n", encoding="utf-8")
    with BatchAPIServer() as server:
        overrides = [f"input.premises={premises_file}", "input.triplets=null", "generation.llm=test-model",
                     "generation.backend=openai", f"generation.base_url={server.base_url}", "generation.batch_api=true",
                     "generation.shard_size=4", "scoring.scorer=openai", f"scoring.base_url={server.base_url}",
                     "scoring.batch_api=true", "scoring.shard_size=6", "scoring.batch_poll_interval_s=0.02",
                     "scoring.price_input_per_1m=1.0", "scoring.price_output_per_1m=2.0", "training.enabled=false"]
        config = load_config("demo-snli", [parse_override(o) for o in overrides]).to_dict()
        state = multicsr_pipeline(config=config, workdir=str(tmp_path / "run"), return_state=True)
        assert state.is_completed(), state.message
        tasks = task_states(state.state_details.flow_run_id)
        assert tasks["generate_shard"] == Counter(Completed=3) and tasks["score_shard"] == Counter(Completed=2)
        assert server.batch_creates == 3 + 2 and server.total_requests() == 0
        corpus = read_corpus(tmp_path / "run" / "corpus.parquet").to_pylist()
        assert len(corpus) == 10
        for row in corpus:
            assert row["entailment_score"] == expected_score(format_scoring_prompt(row["premise"], row["entailment"]))
            assert row["contradiction_score"] == expected_score(
                format_scoring_prompt(row["premise"], row["contradiction"]))
        again = multicsr_pipeline(config=config, workdir=str(tmp_path / "run"), return_state=True)
        assert again.is_completed() and server.batch_creates == 5
    # the run summary prices every reply (all came through batches) at half the configured price
    with ResponseCache(default_cache_path(tmp_path / "run")) as cache:
        tokens = cache.token_totals()
        assert cache.token_totals(batch_api=True) == tokens and tokens[0] > 0
    usage = json.loads((tmp_path / "run" / "run_summary.json").read_text())["llm_usage"]
    assert usage["cost_usd"] == pytest.approx(0.5 * Pricing(1.0, 2.0).cost(*tokens), abs=1e-6)
    assert (usage["batch_api_prompt_tokens"], usage["batch_api_completion_tokens"]) == tokens


def test_a_batch_the_server_no_longer_knows_is_answered_by_ordinary_requests(tmp_path):
    premises, hypotheses = _pairs(5)
    with BatchAPIServer() as server:
        server.hold = True
        first = _scorer(server, tmp_path, max_wait_s=0.1)
        assert all(s.score is None for s in first.score_pairs(premises, hypotheses))  # still running
        server.batches.clear()  # deleted on the server side (or another account's key)
        again = _scorer(server, tmp_path)
        assert [s.score for s in again.score_pairs(premises, hypotheses)] == _expected(premises, hypotheses)
        assert server.batch_creates == 1 and server.total_requests() == 5


def test_a_refused_batch_waits_for_the_running_ones(tmp_path):
    """OpenAI refuses a new batch (400) while a model's enqueued-token limit is reached: the
    refused requests wait for the running batches, then go out as a batch of their own."""
    premises, hypotheses = _pairs(10)
    with BatchAPIServer(max_active_batches=1) as server:
        scorer = _scorer(server, tmp_path, max_requests_per_batch=4)
        assert [s.score for s in scorer.score_pairs(premises, hypotheses)] == _expected(premises, hypotheses)
        assert server.batch_creates == 3 and server.batch_refusals >= 2 and server.total_requests() == 0
    store = BatchStore(default_state_dir(tmp_path))
    statuses = sorted(r.status for r in store.records())
    store.close()
    assert statuses.count("completed") == 3 and set(statuses) <= {"completed", "abandoned"}


def test_an_endpoint_without_the_batch_api_is_one_line_and_no_key(tmp_path, corpus_csv):
    from tests.openai_server import ChatCompletionsServer

    with ChatCompletionsServer() as server:  # chat completions only: no /v1/files
        done = subprocess.run(_score_cmd(corpus_csv, tmp_path / "w", tmp_path / "out.parquet", server.base_url),
                              env={**os.environ, "OPENAI_API_KEY": SECRET}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot take --batch-api" in done.stderr and "/v1/files" in done.stderr and SECRET not in done.stderr


# -- input files under OpenAI's 200 MB, and the reply-length field -----------------------------


def _uploaded_files(server: BatchAPIServer) -> list[bytes]:
    """The batch input files the server received, in the order they were uploaded."""
    return [server.files[b["input_file_id"]]["data"] for b in sorted(server.batches.values(),
                                                                     key=lambda b: b["created_at"])]


def test_input_files_are_split_by_bytes_and_every_line_is_answered(tmp_path):
    """A byte limit that fits a few lines: files under it, each as full as it can be, in order."""
    premises, hypotheses = _pairs(10)
    limit = 1_600  # an SNLI scoring line is 500-700 bytes: 2-3 lines a file
    with BatchAPIServer() as server:
        scorer = _scorer(server, tmp_path, max_bytes_per_batch=limit)
        assert [s.score for s in scorer.score_pairs(premises, hypotheses)] == _expected(premises, hypotheses)
        assert server.total_requests() == 0
        files = _uploaded_files(server)
    assert len(files) >= 4 and all(len(data) <= limit for data in files)
    for data, following in zip(files, files[1:]):  # cut only where the next line would not fit
        assert len(data) + len(following.splitlines(keepends=True)[0]) > limit
    lines = [json.loads(line) for data in files for line in data.splitlines()]
    assert [_last_user(line["body"]) for line in lines] == [format_scoring_prompt(p, h)
                                                           for p, h in zip(premises, hypotheses)]


def _last_user(body: dict) -> str:
    return [m["content"] for m in body["messages"] if m["role"] == "user"][-1]


def test_a_60000_line_scoring_job_at_max_chars_2000_goes_out_in_files_under_200_mb(tmp_path):
    """The acceptance case, through the whole Batch API path of one call (cache lookup, budget,
    split, request files, upload, create) against the real server, which refuses files over 200 MB
    as OpenAI does: 60,000 scoring requests whose sentences have input.max_chars = 2,000 characters
    (about 4.4 kB a line, 263 MB in all; 50,000 lines would be 218 MB). The batches are held
    in_progress and the call stops waiting at once: answering 60,000 lines is not what is tested.
    About 12 s on 2 cores, most of it serializing and hashing 263 MB."""
    from multicsr_core.config import InputConfig
    from multicsr_core.llm.batch_api import OPENAI_MAX_FILE_BYTES
    from multicsr_core.prompts import scoring_messages
    from multicsr_core.llm.openai_backend import ChatRequest

    max_chars = InputConfig().max_chars
    assert max_chars == 2000
    premises, hypotheses = _pairs(20)

    def sentence(i: int, texts: list[str]) -> str:  # distinct, exactly max_chars long
        return (f"{i}: " + " ".join(texts[i % len(texts)] for _ in range(400)))[:max_chars]

    with BatchAPIServer() as server:
        server.hold = True
        scorer = _scorer(server, tmp_path, max_wait_s=0.01)
        requests = [ChatRequest(scoring_messages(sentence(i, premises), sentence(i, hypotheses)), scorer.params)
                    for i in range(60_000)]
        report = scorer.backend.complete(requests)
        assert report.n_not_requested == 60_000  # still running: collected by the next run
        sizes = [len(data) for data in _uploaded_files(server)]
        counts = [data.count(b"\n") for data in _uploaded_files(server)]
    assert server.batch_creates == len(sizes) >= 2 and sum(counts) == 60_000
    assert sum(sizes) > 250 * 10**6  # one file of 50,000 lines would be over the limit
    assert all(size < OPENAI_MAX_FILE_BYTES for size in sizes), sizes  # under 200 MB, however a MB is counted


def test_max_completion_tokens_goes_out_in_the_batch_lines(tmp_path):
    """A reasoning model refuses max_tokens in a batch line as it does directly: with the default
    field the run stops with one line naming the setting; with max_completion_tokens every line
    carries it and is answered; the response cache is the same either way."""
    from multicsr_core.llm.openai_backend import APIParameterRejected

    premises, hypotheses = _pairs(6)
    with BatchAPIServer(refuse_max_tokens=True) as server:
        with pytest.raises(APIParameterRejected) as refused:
            _scorer(server, tmp_path).score_pairs(premises, hypotheses)
        assert "scoring.max_tokens_field=max_completion_tokens" in str(refused.value)
        scorer = _scorer(server, tmp_path, max_tokens_field="max_completion_tokens")
        assert [s.score for s in scorer.score_pairs(premises, hypotheses)] == _expected(premises, hypotheses)
        bodies = [json.loads(line)["body"] for line in _uploaded_files(server)[-1].splitlines()]
        assert len(bodies) == 6 and server.total_requests() == 0
        assert all(b["max_completion_tokens"] == scorer.params["max_tokens"] and "max_tokens" not in b for b in bodies)
        # the field is not in the cache key: the same pairs under the default field come from the cache
        again = _scorer(server, tmp_path)
        assert [s.score for s in again.score_pairs(premises, hypotheses)] == _expected(premises, hypotheses)
        assert again.last_report.n_cached == 6 and server.batch_creates == 2
