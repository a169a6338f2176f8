"""API errors split by what a rerun can do, through the real `multicsr score` against the real
local servers (``tests/openai_server.py``, ``tests/openai_batch_server.py``) answering with
OpenAI's own error JSON.

Permanent (a rejected key, no permission, an unknown model, a prompt longer than the context, a
rejected parameter, an account without quota): the stage stops at the first one, with no retry
storm (at most ``scoring.concurrency`` requests reach the server, each once), ONE stderr line
naming the key's environment variable (never the key), the model or the row, and exit 2; the
run after the fix resumes from the response cache. Retryable (429 rate limits, 5xx): exit 1
with "run the same command again", as before.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from multicsr_core.llm.batch_api import BatchStore, default_state_dir
from multicsr_core.llm.api_errors import (APIKeyRejected, APIModelNotFound, APIParameterRejected,
                                          APIPermissionDenied, APIQuotaExhausted, ContextLengthExceeded,
                                          permanent_error_class)
from tests.conftest import openai_score_cmd, snli_triplets_csv
from tests.openai_batch_server import BatchAPIServer
from tests.openai_server import ChatCompletionsServer, openai_error

RIGHT_KEY = "sk-right-5b0e7d21c9a4-not-real"
WRONG_KEY = "sk-wrong-93f1aa0c6d2e-not-real"
N_ROWS = 20  # 40 pairs
CONCURRENCY = 4
MAX_RETRIES = 2
RESUME = "run the same command again"


@pytest.fixture
def corpus(tmp_path) -> Path:
    return snli_triplets_csv(tmp_path / "triplets.csv", N_ROWS)


def _rows(corpus: Path) -> list[list[str]]:
    with corpus.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))[1:]


def _score(corpus: Path, workdir: Path, server, *options: str, key: str | None = RIGHT_KEY,
           key_env: str = "OPENAI_API_KEY") -> subprocess.CompletedProcess:
    cmd = openai_score_cmd(corpus, workdir, workdir / "scored.parquet", server.base_url,
                           "--set", f"scoring.concurrency={CONCURRENCY}", "--set", f"scoring.max_retries={MAX_RETRIES}",
                           "--set", "scoring.timeout_s=20", "--set", f"scoring.api_key_env={key_env}", *options)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", key_env)}
    env["PYTHONUNBUFFERED"] = "1"
    if key is not None:
        env[key_env] = key
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _batch(server: BatchAPIServer, corpus: Path, workdir: Path, **kwargs) -> subprocess.CompletedProcess:
    return _score(corpus, workdir, server, "--batch-api", "--set", "scoring.batch_poll_interval_s=0.05", **kwargs)


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    """stderr without the progress lines ("[score] 10/20 triplets ...")."""
    return [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("[score]")]


def _one_line_exit_2(done: subprocess.CompletedProcess, *names: str) -> str:
    """Exit 2 and exactly one error line, naming each of ``names``; no key, no resume hint."""
    lines = _error_lines(done)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-4000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert RESUME not in " ".join(done.stderr.split()).lower() and "Traceback" not in done.stderr
    for key in (RIGHT_KEY, WRONG_KEY):
        assert key not in done.stdout + done.stderr
        assert key[:12] not in done.stderr  # not even the start of it (OpenAI's 401 echoes a masked key)
    return lines[0]


def _cached_ok(workdir: Path) -> set[str]:
    """The last user message of every ok row in the workdir's response cache."""
    db = workdir / "llm" / "responses.sqlite"
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT request FROM responses WHERE status = 'ok'").fetchall()
    return {[m for m in json.loads(r)["messages"] if m["role"] == "user"][-1]["content"] for (r,) in rows}


# -- direct requests -----------------------------------------------------------------------


@pytest.mark.parametrize("key_env", ["OPENAI_API_KEY", "MY_LLM_KEY"])
def test_a_rejected_key_stops_at_once_names_the_variable_and_the_fixed_rerun_resumes(tmp_path, corpus, key_env):
    workdir = tmp_path / "w"
    half = snli_triplets_csv(tmp_path / "half.csv", N_ROWS // 2)
    with ChatCompletionsServer(api_key=RIGHT_KEY, latency_s=0.01) as server:
        assert _score(half, workdir, server, key_env=key_env).returncode == 0  # half the pairs answered, cached
        assert server.total_requests() == N_ROWS
        server.reset_counts()

        done = _score(corpus, workdir, server, key=WRONG_KEY, key_env=key_env)
        line = _one_line_exit_2(done, key_env, server.base_url)
        assert "rejected the API key" in line and "401" in line
        # the client does not retry a 401, and no other request follows the first refusal
        assert 1 <= server.total_requests() <= CONCURRENCY
        assert set(server.status_counts) == {401}

        server.reset_counts()
        fixed = _score(corpus, workdir, server, key_env=key_env)
        assert fixed.returncode == 0, fixed.stderr[-3000:]
        assert server.total_requests() == N_ROWS  # only the pairs of the second half: the first came from the cache


def test_no_key_at_all_says_the_variable_is_not_set(tmp_path, corpus):
    with ChatCompletionsServer(api_key=RIGHT_KEY) as server:
        done = _score(corpus, tmp_path / "w", server, key=None)
        line = _one_line_exit_2(done, "OPENAI_API_KEY")
        assert "is not set" in line
        assert server.total_requests() <= CONCURRENCY


@pytest.mark.parametrize("fault, names", [
    ("forbidden_403", ["'test-model'", "OPENAI_API_KEY", "403"]),
    ("param_400", ["top_logprobs", "'test-model'", "400"]),
    ("quota_429", ["OPENAI_API_KEY", "insufficient_quota", "no quota left"]),
])
def test_errors_about_the_whole_endpoint_stop_at_once(tmp_path, corpus, fault, names):
    with ChatCompletionsServer(latency_s=0.01) as server:
        server.inject("", [fault] * 1000)  # every request
        done = _score(corpus, tmp_path / "w", server)
        _one_line_exit_2(done, *names)
        # each of the first requests went out once: no client retries (a 429 insufficient_quota
        # included, which the client would retry max_retries times), no further requests
        assert 1 <= server.total_requests() <= CONCURRENCY
        assert all(n == 1 for n in server.requests.values())


def test_an_unknown_model_is_named_and_nothing_else_is_asked(tmp_path, corpus):
    with ChatCompletionsServer(models=("gpt-served",)) as server:
        done = _score(corpus, tmp_path / "w", server)
        line = _one_line_exit_2(done, "'test-model'", "404", "--llm")
        assert "does not serve model" in line
        assert 1 <= server.total_requests() <= CONCURRENCY


def test_a_prompt_over_the_context_names_its_row_and_the_fixed_rerun_resumes(tmp_path, corpus):
    rows = _rows(corpus)
    bad = 12  # a row far enough in that earlier pairs were answered before it
    with ChatCompletionsServer(latency_s=0.02) as server:
        server.inject(rows[bad][0], ["context_400"] * 10)  # both pairs of the row, on any attempt
        workdir = tmp_path / "w"
        done = _score(corpus, workdir, server)
        line = _one_line_exit_2(done, rows[bad][0][:30], rows[bad][1][:30], "'test-model'", "context_length_exceeded")
        assert f"pair {bad + 1} of {2 * N_ROWS}" in line
        # the stage stopped at that row: the failing request went out once, and the requests
        # after it are at most the ones in flight when it failed
        assert server.count(rows[bad][0]) == 1
        assert server.total_requests() <= bad + CONCURRENCY
        answered = _cached_ok(workdir)  # replies of requests cancelled in flight are not among them
        assert bad - CONCURRENCY <= len(answered) <= server.status_counts[200]

        # the fix: that row's premise shortened (a new request); everything answered is not asked again
        rows[bad][0] = "A short premise."
        with corpus.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([["sent0", "sent1", "hard_neg"], *rows])
        first_counts = dict(server.requests)
        fixed = _score(corpus, workdir, server)
        assert fixed.returncode == 0, fixed.stderr[-3000:]
        assert all(server.requests[prompt] == 1 for prompt in answered)
        assert server.total_requests() - sum(first_counts.values()) == 2 * N_ROWS - len(answered)


def test_api_generation_stops_at_a_prompt_over_the_context_and_names_it(tmp_path):
    premises = tmp_path / "premises.txt"
    premises.write_text("".join(f"A man number {i} walks a small dog in the park.\n" for i in range(12)),
                        encoding="utf-8")
    with ChatCompletionsServer(latency_s=0.02) as server:
        server.inject("number 7 walks", ["context_400"] * 4)
        cmd = [sys.executable, "-m", "multicsr.cli", "generate",
               "--llm", "test-model", "--premises", str(premises), "--out", str(tmp_path / "gen.parquet"),
               "--backend", "openai", "--base-url", server.base_url, "--workdir", str(tmp_path / "w"),
               "--set", f"scoring.concurrency={CONCURRENCY}"]
        done = subprocess.run(cmd, env={**os.environ, "OPENAI_API_KEY": RIGHT_KEY}, capture_output=True, text=True,
                              timeout=300)
        lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("[")]
        assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
        assert "number 7 walks a small dog in the park." in lines[0] and "context_length_exceeded" in lines[0]
        assert "request 8 of 24" in lines[0]  # the entailment prompt of premise 8 (1-based)
        assert server.count("number 7 walks") == 1 and server.total_requests() <= 8 + CONCURRENCY


@pytest.mark.parametrize("fault", ["429", "503"])
def test_rate_limits_and_server_errors_stay_retryable(tmp_path, corpus, fault):
    rows = _rows(corpus)
    with ChatCompletionsServer(retry_after_s=0.05) as server:
        server.inject(rows[3][0], [fault] * 2 * (1 + MAX_RETRIES))  # both pairs of row 3, every attempt
        workdir = tmp_path / "w"
        done = _score(corpus, workdir, server)
        assert done.returncode == 1, done.stderr[-3000:]
        assert RESUME in " ".join(done.stderr.split()).lower()
        assert server.count(rows[3][0]) == 2 * (1 + MAX_RETRIES)  # the client retried them
        assert server.total_requests() == 2 * N_ROWS + 2 * MAX_RETRIES  # and every other pair was asked once

        again = _score(corpus, workdir, server)
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.total_requests() == 2 * N_ROWS + 2 * MAX_RETRIES + 2  # only the two failed pairs


# -- the Batch API ---------------------------------------------------------------------------


def test_batch_api_upload_with_a_rejected_key_stops_and_the_fixed_rerun_submits(tmp_path, corpus):
    with BatchAPIServer(api_key=RIGHT_KEY) as server:
        workdir = tmp_path / "w"
        done = _batch(server, corpus, workdir, key=WRONG_KEY)
        line = _one_line_exit_2(done, "OPENAI_API_KEY", "Batch API upload", "401")
        assert sum(server.batch_authorization.values()) == 1  # one upload, not retried; nothing after it
        assert not server.files and server.batch_creates == 0 and server.total_requests() == 0
        assert "cannot take --batch-api" not in line

        fixed = _batch(server, corpus, workdir)
        assert fixed.returncode == 0, fixed.stderr[-3000:]
        assert server.batch_creates == 1 and server.lines_submitted() == 2 * N_ROWS and server.total_requests() == 0


def test_batch_api_create_forbidden_stops_and_abandons_the_upload(tmp_path, corpus):
    with BatchAPIServer(route_faults={"create": "forbidden_403"}) as server:
        workdir = tmp_path / "w"
        done = _batch(server, corpus, workdir)
        _one_line_exit_2(done, "OPENAI_API_KEY", "'test-model'", "Batch API create", "403")
        assert server.batch_creates == 0 and server.total_requests() == 0
        store = BatchStore(default_state_dir(workdir))
        assert [r.status for r in store.records()] == ["abandoned"]  # no batch exists: the next run uploads anew
        store.close()

        server.route_faults.clear()  # the fix (a key whose project may use the model)
        fixed = _batch(server, corpus, workdir)
        assert fixed.returncode == 0, fixed.stderr[-3000:]
        assert server.batch_creates == 1 and server.total_requests() == 0


def test_batch_api_line_over_the_context_names_its_row_and_is_not_retried_directly(tmp_path, corpus):
    rows = _rows(corpus)
    bad = 7
    with BatchAPIServer(line_faults={rows[bad][0]: "context_400"}) as server:
        server.inject(rows[bad][0], ["context_400"] * 10)  # a direct request would fail the same way
        workdir = tmp_path / "w"
        done = _batch(server, corpus, workdir)
        line = _one_line_exit_2(done, rows[bad][0][:30], "context_length_exceeded", "'test-model'")
        assert f"pair {bad + 1} of {2 * N_ROWS}" in line
        assert server.total_requests() == 0  # no line went out again as an ordinary request
        answered = _cached_ok(workdir)
        assert len(answered) == 2 * N_ROWS - 2  # every other line of the batch was ingested and cached

        rows[bad][0] = "A short premise."  # the fix
        with corpus.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([["sent0", "sent1", "hard_neg"], *rows])
        fixed = _batch(server, corpus, workdir)
        assert fixed.returncode == 0, fixed.stderr[-3000:]
        assert server.batch_creates == 2 and server.lines_submitted() == 2 * N_ROWS + 2  # only the fixed row's pairs


def test_batch_api_line_with_a_rejected_key_stops_without_direct_requests(tmp_path, corpus):
    rows = _rows(corpus)
    with BatchAPIServer(line_faults={rows[2][0]: "auth_401"}) as server:
        server.inject(rows[2][0], ["auth_401"] * 10)
        done = _batch(server, corpus, tmp_path / "w")
        _one_line_exit_2(done, "OPENAI_API_KEY", "401")
        assert server.total_requests() == 0


def test_batch_api_batch_failed_for_an_unknown_model_names_it(tmp_path, corpus):
    with BatchAPIServer(models=("gpt-served",)) as server:
        done = _batch(server, corpus, tmp_path / "w")
        line = _one_line_exit_2(done, "'test-model'", "model_not_found")
        assert "does not serve model" in line
        assert server.batch_creates == 1 and server.total_requests() == 0  # no line retried directly


# -- how other servers word the same errors ----------------------------------------------------


@pytest.mark.parametrize("status, body, expected", [
    # OpenAI (the test servers' shapes)
    *[(openai_error(kind)[0], openai_error(kind)[1], cls) for kind, cls in [
        ("auth_401", APIKeyRejected), ("forbidden_403", APIPermissionDenied), ("model_404", APIModelNotFound),
        ("context_400", ContextLengthExceeded), ("param_400", APIParameterRejected),
        ("quota_429", APIQuotaExhausted), ("503", None)]],
    (429, {"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}},
     None),
    (400, {"error": {"message": "bad request"}}, None),  # nothing says what is wrong: retried next run
    (500, {"error": {"message": "internal error"}}, None),
    # vLLM: no "error" wrapper, the HTTP status as the code
    (400, {"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you requested "
           "2100 tokens (2092 in the messages, 8 in the completion).", "type": "BadRequestError", "param": None,
           "code": 400}, ContextLengthExceeded),
    (404, {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404},
     APIModelNotFound),
    # llama.cpp server
    (400, {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                     "type": "exceed_context_size_error"}}, ContextLengthExceeded),
    # Ollama
    (404, {"error": {"message": 'model "llama9" not found, try pulling it first', "type": "api_error"}},
     APIModelNotFound),
    (400, {"error": {"message": "The model `o9` does not exist", "type": "invalid_request_error",
                     "code": "model_not_found"}}, APIModelNotFound),
])
def test_which_errors_are_permanent(status, body, expected):
    assert permanent_error_class(status, body, {"top_logprobs": 10, "logprobs": True}) is expected
