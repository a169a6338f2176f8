"""`multicsr score --scorer openai` through the real CLI against a real local chat-completions
server: a SIGKILL mid-scoring resumes without re-asking answered items, failures exit non-zero
and are retried by the next run, and the API key reaches no file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import SHARED_DATA, openai_score_cmd, snli_triplets_csv
from tests.openai_server import ChatCompletionsServer

SECRET = "sk-test-7c1d9e-not-a-real-key"
N_TRIPLETS = 60


@pytest.fixture
def corpus_csv(tmp_path) -> Path:
    return snli_triplets_csv(tmp_path / "triplets.csv", N_TRIPLETS)


def _score_cmd(corpus: Path, workdir: Path, out: Path, base_url: str) -> list[str]:
    return openai_score_cmd(corpus, workdir, out, base_url, "--set", "scoring.concurrency=4", "--set", "scoring.max_retries=2", "--set", "scoring.timeout_s=10")


def _env() -> dict:
    return {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONUNBUFFERED": "1"}


def _cached_prompts(workdir: Path) -> set[str]:
    db = workdir / "llm" / "responses.sqlite"
    if not db.exists():
        return set()
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            rows = conn.execute("SELECT request FROM responses WHERE status = 'ok'").fetchall()
        except sqlite3.OperationalError:  # table not created yet
            return set()
    prompts = set()
    for (request,) in rows:
        messages = json.loads(request)["messages"] if request.startswith("{") else json.loads(request)
        prompts.add([m for m in messages if m["role"] == "user"][-1]["content"])
    return prompts


def _scores(path: Path) -> list:
    t = pq.read_table(path, columns=["premise", "entailment_score", "contradiction_score"])
    return list(zip(*(t.column(c).to_pylist() for c in t.column_names)))


@pytest.mark.slow
def test_sigkill_mid_scoring_then_resume(tmp_path, corpus_csv):
    # The uninterrupted reference run.
    with ChatCompletionsServer(latency_s=0.02) as server:
        ref_out = tmp_path / "ref.parquet"
        done = subprocess.run(_score_cmd(corpus_csv, tmp_path / "ref", ref_out, server.base_url), env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.total_requests() == 2 * N_TRIPLETS

    with ChatCompletionsServer(latency_s=0.15) as server:
        workdir, out = tmp_path / "run", tmp_path / "scored.parquet"
        proc = subprocess.Popen(_score_cmd(corpus_csv, workdir, out, server.base_url), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while len(_cached_prompts(workdir)) < 30 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        answered = _cached_prompts(workdir)
        assert 30 <= len(answered) < 2 * N_TRIPLETS, "the kill must land mid-scoring"
        assert not out.exists()

        again = subprocess.run(_score_cmd(corpus_csv, workdir, out, server.base_url), env=_env(),
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        # no request repeated for an item answered (cached) before the kill
        assert all(server.requests[p] == 1 for p in answered), {p: server.requests[p] for p in answered if server.requests[p] != 1}
        # only requests in flight at the kill (at most the concurrency) were sent twice
        assert sum(n - 1 for n in server.requests.values() if n > 1) <= 4
        assert len(server.requests) == 2 * N_TRIPLETS

    assert _scores(out) == _scores(ref_out)
    # the server's scores are a function of the prompt: check one row end to end
    first = _scores(out)[0]
    assert first[1] is not None and 0 <= first[1] <= 5
    # the key is nowhere on disk
    for path in [*workdir.rglob("*"), out]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_failed_items_exit_nonzero_and_are_retried(tmp_path, corpus_csv):
    with ChatCompletionsServer(latency_s=0.0) as server:
        # the first premise's two pairs fail with HTTP 500 on every attempt of the first run
        # (1 try + scoring.max_retries=2 retries each): a transport failure, retried next run
        first_premise = corpus_csv.read_text().splitlines()[1].split(",")[0].strip('"')
        server.inject(first_premise, ["500"] * 6)
        workdir, out = tmp_path / "run", tmp_path / "scored.parquet"
        first = subprocess.run(_score_cmd(corpus_csv, workdir, out, server.base_url), env=_env(),
                               capture_output=True, text=True, timeout=300)
        assert first.returncode == 1, first.stdout + first.stderr
        assert "still unscored" in first.stderr
        report = json.loads(first.stdout[first.stdout.index("{"): first.stdout.rindex("}") + 1])
        assert report["failed"] >= 1 and report["first_errors"]
        table = pq.read_table(out)
        errors = [e for e in table.column("entailment_score_error").to_pylist() if e]
        assert errors, "the failure is stored with the item"
        requests_before = server.total_requests()

        second = subprocess.run(_score_cmd(corpus_csv, workdir, out, server.base_url), env=_env(),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        # only the failed items were asked again
        assert server.total_requests() - requests_before == report["failed"]
        scores = pq.read_table(out).column("entailment_score").to_pylist()
        assert None not in scores


@pytest.mark.slow
def test_prose_replies_are_cached_rejected_verdicts_and_exit_zero(tmp_path, corpus_csv):
    """A reply that is not a score is the model's answer: cached, rejected by curation as
    unparsable_score with the reply kept, never requested again; the run succeeds."""
    with ChatCompletionsServer(latency_s=0.0) as server:
        first_premise = corpus_csv.read_text().splitlines()[1].split(",")[0].strip('"')
        server.inject(first_premise, ["non_numeric", "non_numeric"])  # both pairs of that premise
        workdir, out = tmp_path / "run", tmp_path / "scored.parquet"
        first = subprocess.run(_score_cmd(corpus_csv, workdir, out, server.base_url), env=_env(),
                               capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "still unscored" not in first.stderr and "again" not in first.stderr
        report = json.loads(first.stdout[first.stdout.index("{"): first.stdout.rindex("}") + 1])
        assert report["failed"] == 0 and report["unparsable"] == 2
        assert server.total_requests() == 2 * N_TRIPLETS
        row = pq.read_table(out).to_pylist()[0]
        for side in ("entailment", "contradiction"):
            assert row[f"{side}_score"] is None and row[f"{side}_reply"] == "I would rather not say."
            assert row[f"{side}_score_error"].startswith("unparsable_score")

        curated = tmp_path / "curated.parquet"
        done = subprocess.run([sys.executable, "-m", "multicsr.cli", "curate", "--corpus", str(out), "--out",
                               str(curated)], env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        funnel = json.loads(done.stdout[done.stdout.index("{"): done.stdout.rindex("}") + 1])
        assert funnel["rejected:unparsable_score"] == 1
        rows = pq.read_table(curated).to_pylist()
        assert rows[0]["kept"] is False and rows[0]["reject_reason"] == "unparsable_score"
        assert rows[0]["entailment_reply"] == "I would rather not say."

        second = subprocess.run(_score_cmd(corpus_csv, workdir, out, server.base_url), env=_env(),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        assert server.total_requests() == 2 * N_TRIPLETS  # the prose replies were not asked again
        assert server.count(first_premise) == 2


@pytest.mark.slow
def test_a_server_failing_every_request_exits_nonzero(tmp_path):
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    corpus = tmp_path / "triplets.csv"
    corpus.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    with ChatCompletionsServer(latency_s=0.0) as server:
        server.inject("", ["500"] * 1000)  # every request
        cmd = _score_cmd(corpus, tmp_path / "run", tmp_path / "scored.parquet", server.base_url)
        done = subprocess.run(cmd + ["--set", "scoring.max_retries=0"], env=_env(), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "still unscored" in done.stderr and "again" in done.stderr
        report = json.loads(done.stdout[done.stdout.index("{"): done.stdout.rindex("}") + 1])
        assert report["failed"] == 6 and report["unparsable"] == 0
        assert server.total_requests() == 6


def test_generate_through_api_backend(tmp_path):
    """Stage 1 with an API model: plain generation through the CLI against the real local server."""
    from tests.openai_server import expected_generation

    premises = tmp_path / "p.txt"
    premises.write_text("A man is playing a guitar.\nTwo dogs run on the beach.\n", encoding="utf-8")
    out = tmp_path / "gen.parquet"
    with ChatCompletionsServer(latency_s=0.0) as server:
        cmd = [sys.executable, "-m", "multicsr.cli", "generate", "--backend", "openai", "--llm", "test-model",
               "--base-url", server.base_url, "--premises", str(premises), "--out", str(out),
               "--workdir", str(tmp_path / "w")]
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.total_requests() == 4
        again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and server.total_requests() == 4  # every reply came from the cache
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 2
    for row in rows:
        assert row["entailment"] == expected_generation(row["entailment_prompt"])
        assert row["contradiction"] == expected_generation(row["contradiction_prompt"])
    assert SECRET.encode() not in out.read_bytes()


@pytest.mark.slow
def test_pipeline_completes_when_every_reply_is_prose(prefect_server, tmp_path, monkeypatch):
    """The flow's scoring shards follow the same rule: prose is a rejected verdict, the run completes,
    and a second run asks the server nothing."""
    from multicsr.flows.pipeline import multicsr_pipeline
    from multicsr_core.config import load_config, parse_override
    from multicsr_core.io.corpus import read_corpus

    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    corpus = tmp_path / "triplets.csv"
    corpus.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with ChatCompletionsServer(latency_s=0.0, reply_fn=lambda prompt: "These sentences are related.") as server:
        overrides = [f"input.triplets={corpus}", "scoring.scorer=openai", "scoring.llm=test-model",
                     f"scoring.base_url={server.base_url}", "training.enabled=false", "evaluation.enabled=false"]
        config = load_config("demo-snli", [parse_override(o) for o in overrides]).to_dict()
        for attempt in range(2):
            state = multicsr_pipeline(config=config, workdir=str(tmp_path / "run"), return_state=True)
            assert state.is_completed(), state.message
            assert server.total_requests() == 6  # the second run asked nothing
        rows = read_corpus(tmp_path / "run" / "corpus.parquet").to_pylist()
    assert len(rows) == 3
    for row in rows:
        assert row["kept"] is False and row["reject_reason"] == "unparsable_score"
        assert row["entailment_reply"] == "These sentences are related."
