"""The OpenAI-compatible backend and API scorers against a real local HTTP server.

Every test talks HTTP to ``tests/openai_server.py`` on 127.0.0.1 through the official
``openai`` client, and stores into a real SQLite cache.
"""

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multicsr_core.llm.accounting import BudgetExceeded, Pricing
from multicsr_core.llm.cache import FAILED, OK, ResponseCache
from multicsr_core.llm.api_generation import CLAIF_GENERATION_PARAMS, generate_claif_with_api, generate_with_api
from multicsr_core.llm.openai_backend import NOT_REQUESTED, ChatRequest, OpenAIChatBackend
from multicsr_core.llm.settings import APISettings
from multicsr_core.prompts import format_claif_scoring_prompt, format_scoring_prompt
from multicsr_core.scoring.llm import APIScoringSettings, ClaifScorer, OpenAIScorer
from tests.openai_server import (
    ChatCompletionsServer,
    expected_claif_score,
    expected_generation,
    expected_score,
)

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-DO-NOT-LEAK-4f9c2e7b1a"
PREMISES = [f"A person number {i} is walking a dog in the park." for i in range(12)]
HYPOTHESES = [f"Someone {i} is outside with an animal." for i in range(12)]
PROMPTS = [format_scoring_prompt(p, h) for p, h in zip(PREMISES, HYPOTHESES)]


@pytest.fixture
def server():
    with ChatCompletionsServer(retry_after_s=0.3, timeout_sleep_s=1.5) as running:
        yield running


@pytest.fixture
def cache(tmp_path):
    with ResponseCache(tmp_path / "responses.sqlite") as opened:
        yield opened


def make_backend(server, cache, **kwargs):
    options = dict(base_url=server.base_url, timeout_s=0.75, max_retries=3, concurrency=4)
    options.update(kwargs)
    return OpenAIChatBackend("test-model", cache=cache, settings=APISettings(**options), api_key=SECRET)


def test_scores_from_logprobs_and_from_text(server, cache):
    scorer = OpenAIScorer(make_backend(server, cache))
    scores = scorer.score_pairs(PREMISES, HYPOTHESES)
    assert [s.score for s in scores] == [float(expected_score(p)) for p in PROMPTS]
    assert all(s.distribution and max(s.distribution, key=s.distribution.get) == s.raw for s in scores)
    assert all(body["logprobs"] is True and body["top_logprobs"] == 10 for body in server.bodies)

    server.logprobs = False  # an endpoint without logprobs: the reply text and the official parser
    text_scorer = OpenAIScorer(make_backend(server, cache), APIScoringSettings(top_logprobs=5))  # other params: other cache keys
    text_scores = text_scorer.score_pairs(PREMISES, HYPOTHESES)
    assert [s.score for s in text_scores] == [s.score for s in scores]
    assert all(s.distribution is None for s in text_scores)

    expected_mode = OpenAIScorer(make_backend(server, cache), APIScoringSettings(mode="expected", use_logprobs=False))
    assert expected_mode.fingerprint()["params"] == {"temperature": 0.0, "max_tokens": 8}


def test_faults_are_retried_and_answered_items_never_asked_again(server, cache):
    faults = {0: ["429"], 1: ["500", "500"], 2: ["timeout"], 3: ["malformed"], 4: ["empty_choices"],
              5: ["non_numeric"], 6: ["500", "500", "500", "500"], 7: ["400"]}
    for index, kinds in faults.items():
        server.inject(PREMISES[index], kinds)
    scorer = OpenAIScorer(make_backend(server, cache))
    scores = scorer.score_pairs(PREMISES, HYPOTHESES)
    report = scorer.last_report

    ok_indices = [0, 1, 2, 3, 4] + list(range(8, 12))
    for i in ok_indices:
        assert scores[i].score == expected_score(PROMPTS[i]), (i, scores[i])
    # 429 once, 500 twice, a timeout, malformed JSON (tenacity), no choices (tenacity): one extra try each
    assert [server.count(PREMISES[i]) for i in range(5)] == [2, 3, 2, 2, 2]
    # Retry-After: 0.3 s was honoured between the two attempts of item 0
    arrivals = [t for t, prompt in server.arrivals if PREMISES[0] in prompt]
    assert arrivals[1] - arrivals[0] >= 0.27
    # a non-numeric reply is the model's answer: the unparsable_score verdict, kept with its reply
    assert scores[5].score is None and scores[5].raw == "I would rather not say." and scores[5].unparsable
    assert scores[5].error.startswith("unparsable_score") and "not a score" in scores[5].error
    assert server.count(PREMISES[5]) == 1
    # 500 on every attempt (1 + max_retries) and a 400 (never retried) are failures with the error
    assert scores[6].score is None and "InternalServerError" in scores[6].error and server.count(PREMISES[6]) == 4
    assert scores[7].score is None and "BadRequestError" in scores[7].error and server.count(PREMISES[7]) == 1
    assert report.n_ok == 10 and report.n_failed == 2 and report.n_cached == 0
    assert any("InternalServerError" in error for error in report.first_errors())
    rows = cache.get_many([OpenAIChatBackend.key_for(scorer.backend, r) for r in
                           [ChatRequest.from_prompt(p, **scorer.params) for p in PROMPTS]])
    assert sorted(row.status for row in rows.values()) == [FAILED] * 2 + [OK] * 10
    assert {row.raw for row in rows.values() if row.status == FAILED} == {None}

    # Next run: only the two failed items are asked again (their faults are used up now); the
    # prose reply is a final verdict, answered from the cache.
    counts_before = {p: server.count(p) for p in PREMISES}
    rerun = OpenAIScorer(make_backend(server, cache))
    second = rerun.score_pairs(PREMISES, HYPOTHESES)
    assert [s.score for s in second] == [None if i == 5 else float(expected_score(p)) for i, p in enumerate(PROMPTS)]
    assert second[5].unparsable and second[5].raw == "I would rather not say."
    for i, premise in enumerate(PREMISES):
        assert server.count(premise) - counts_before[premise] == (1 if i in (6, 7) else 0), i
    assert rerun.last_report.n_cached == 10 and rerun.last_report.usage.requests == 2


def test_unusable_200_replies_are_retried_then_failed_with_their_cost(server, cache):
    # A 200 that is not a completion: content null, an HTML page, a body that is not JSON.
    # Each is retried (1 + invalid_reply_retries attempts), then stored failed; never an ok row.
    server.inject(PREMISES[0], ["null_content"])
    server.inject(PREMISES[1], ["html"])
    server.inject(PREMISES[2], ["null_content"] * 3)
    server.inject(PREMISES[3], ["html"] * 3)
    scorer = OpenAIScorer(make_backend(server, cache, invalid_reply_retries=2))
    scores = scorer.score_pairs(PREMISES[:4], HYPOTHESES[:4])
    assert [scores[i].score for i in (0, 1)] == [float(expected_score(PROMPTS[i])) for i in (0, 1)]
    assert [server.count(PREMISES[i]) for i in range(4)] == [2, 2, 3, 3]
    assert scores[2].score is None and "no message content" in scores[2].error
    assert scores[3].score is None and "not a JSON object" in scores[3].error
    # the null-content replies reported usage, so every attempt is paid for: 2 for item 0 (one
    # bad, one good), 3 for item 2; the HTML pages reported none
    per_attempt = len(PROMPTS[0].split())  # the test server counts prompt words as tokens
    assert scorer.last_report.results[0].prompt_tokens == 2 * per_attempt
    assert scorer.last_report.results[2].prompt_tokens == 3 * len(PROMPTS[2].split())
    assert scorer.last_report.results[3].prompt_tokens == 0
    assert scorer.last_report.n_ok == 2 and scorer.last_report.n_failed == 2


def test_concurrency_limit_and_duplicate_requests(server, cache):
    server.latency_s = 0.15
    backend = make_backend(server, cache, concurrency=5)
    requests = [ChatRequest.from_prompt(f"item {i % 10}", max_tokens=4) for i in range(20)]  # each twice
    started = time.perf_counter()
    report = backend.complete(requests)
    elapsed = time.perf_counter() - started
    assert server.total_requests() == 10  # duplicates within a batch are sent once
    assert server.max_in_flight == 5
    assert elapsed >= 0.29  # 10 requests / 5 in flight * 0.15 s (max_in_flight shows they overlapped)
    assert [r.text for r in report.results] == [expected_generation(f"item {i % 10}") for i in range(20)]


def test_requests_per_minute_limit_spaces_requests(server, cache):
    backend = make_backend(server, cache, concurrency=8, requests_per_minute=1200)  # 20/s, burst 20
    backend.complete([ChatRequest.from_prompt(f"rpm {i}") for i in range(50)])
    times = sorted(t for t, _ in server.arrivals)
    assert len(times) == 50
    # the first 20 may burst; the other 30 need >= 1.5 s at 20/s
    assert times[-1] - times[0] >= 1.35
    window = [t for t in times if t - times[0] <= 1.0]
    assert len(window) <= 20 + 20 + 1


def test_tokens_per_minute_limit(server, cache):
    # 60 one-letter words: estimated (120 chars // 3 + 8) + max_tokens 1 = 49 tokens; the server
    # reports 60 + 1 = 61, and the bucket books the difference once the usage is known.
    backend = make_backend(server, cache, concurrency=8, tokens_per_minute=6000)  # 100/s, burst 100
    requests = [ChatRequest.from_prompt(f"{i} " + "a " * 59, max_tokens=1) for i in range(5)]
    started = time.perf_counter()
    backend.complete(requests)
    # the first four requests really use 4 * 61 tokens and the fifth needs 49 more: >= 1.9 s
    assert 1.7 <= time.perf_counter() - started < 10.0


def test_budget_cap_stops_cleanly_and_resumes(server, cache):
    # server usage: prompt tokens = words of the prompt (~25), completion 1; $1 per 1k prompt tokens
    pricing = Pricing(prompt_per_million=1000.0, completion_per_million=1000.0)
    budget = 0.25  # pessimistic estimate ~ (200 chars/3 + 8 + 8 tokens) * $0.001 = $0.08 per request
    scorer = OpenAIScorer(make_backend(server, cache, pricing=pricing, budget_usd=budget, concurrency=2),
                          APIScoringSettings(use_logprobs=False))
    scores = scorer.score_pairs(PREMISES, HYPOTHESES)
    report = scorer.last_report
    assert report.budget_exceeded and 0 < report.n_ok < len(PREMISES)
    assert report.n_not_requested == len(PREMISES) - report.n_ok
    assert report.usage.cost_usd <= budget
    assert report.usage.cost_usd == pytest.approx(pricing.cost(report.usage.prompt_tokens, report.usage.completion_tokens))
    assert all(s.score is None and "budget" in s.error for s in scores if s.score is None)
    assert server.total_requests() == report.n_ok  # nothing was sent past the cap
    with pytest.raises(BudgetExceeded, match="budget cap"):
        report.raise_for_budget()
    answered = [p for p, s in zip(PREMISES, scores) if s.score is not None]

    bigger = OpenAIScorer(make_backend(server, cache, pricing=pricing, budget_usd=10.0),
                          APIScoringSettings(use_logprobs=False))
    final = bigger.score_pairs(PREMISES, HYPOTHESES)
    assert [s.score for s in final] == [float(expected_score(p)) for p in PROMPTS]
    assert all(server.count(p) == 1 for p in PREMISES)  # answered items were not asked again
    assert bigger.last_report.n_cached == len(answered) and not bigger.last_report.budget_exceeded


def test_budget_without_prices_is_rejected(cache):
    with pytest.raises(ValueError, match="prices"):
        OpenAIChatBackend("m", cache=cache, settings=APISettings(base_url="http://127.0.0.1:9/v1", budget_usd=1.0))


def test_missing_api_key_names_the_variable(cache, monkeypatch):
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    with pytest.raises(ValueError, match="MY_LLM_KEY"):
        OpenAIChatBackend("gpt-4o-mini", cache=cache, settings=APISettings(api_key_env="MY_LLM_KEY"))


def test_api_key_never_reaches_disk_logs_or_errors(server, cache, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    server.inject(PREMISES[0], ["500", "500", "500", "500"])
    server.inject(PREMISES[1], ["non_numeric"])
    backend = OpenAIChatBackend("test-model", cache=cache, settings=APISettings(
        base_url=server.base_url, api_key_env="MY_LLM_KEY", timeout_s=0.75, max_retries=3))
    scorer = OpenAIScorer(backend)
    scores = scorer.score_pairs(PREMISES, HYPOTHESES)
    assert server.authorization == {f"Bearer {SECRET}": server.total_requests()}  # the key was used...
    texts = [caplog.text, repr(backend), repr(scorer.fingerprint()), json.dumps(backend.fingerprint()),
             scorer.last_report.summary(), *(s.error or "" for s in scores), *(s.raw or "" for s in scores)]
    assert all(SECRET not in text for text in texts)  # ...and is nowhere else
    cache.close()
    for path in tmp_path.iterdir():  # the SQLite file and its WAL / shared-memory files
        assert SECRET.encode() not in path.read_bytes(), path
    conn = sqlite3.connect(tmp_path / "responses.sqlite")
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert "test-model" in dump and SECRET not in dump


def test_key_in_server_error_is_redacted(server, cache):
    def echo_auth_reply(prompt):  # a hostile proxy echoing the key in a reply must not leak via errors
        return f"key was {SECRET}"

    server.reply_fn = echo_auth_reply
    server.inject("leaky", ["400"])
    backend = make_backend(server, cache)
    report = backend.complete([ChatRequest.from_prompt("leaky prompt")])
    assert report.n_failed == 1 and SECRET not in (report.results[0].error or "")


def test_sync_facade_inside_a_running_loop(server, cache):
    backend = make_backend(server, cache)

    async def caller():
        return backend.complete([ChatRequest.from_prompt("from a coroutine")])

    report = asyncio.run(caller())
    assert report.results[0].text == expected_generation("from a coroutine")


def test_api_generation_plain_and_claif(server, cache):
    backend = make_backend(server, cache)
    prompts = ["Paraphrase: the cat sat on the mat.", "Paraphrase: a dog barks."]
    report = generate_with_api(backend, prompts, max_tokens=64)
    assert [r.text for r in report.results] == [expected_generation(p) for p in prompts]
    assert server.bodies[-1]["temperature"] == 0.0 and server.bodies[-1]["max_tokens"] == 64

    server.inject("masked", ["empty_choices", "empty_choices", "empty_choices"])
    claif = generate_claif_with_api(backend, ['Replace all <mask> tokens in "a <mask> sat" masked', "plain"])
    assert claif.results[0].status == FAILED and "no choices" in claif.results[0].error
    assert claif.results[1].text == expected_generation("plain")
    body = server.bodies[-1]
    assert {k: body[k] for k in CLAIF_GENERATION_PARAMS} == CLAIF_GENERATION_PARAMS


def test_claif_scorer_first_number_and_range(server, cache):
    scorer = ClaifScorer(make_backend(server, cache))
    server.inject(PREMISES[1], ["non_numeric"])
    scores = scorer.score_pairs(PREMISES[:4], HYPOTHESES[:4])
    prompts = [format_claif_scoring_prompt(a, b) for a, b in zip(PREMISES[:4], HYPOTHESES[:4])]
    assert scores[1].unparsable and "holds no number" in scores[1].error and scores[1].raw == "I would rather not say."
    assert [s.score for i, s in enumerate(scores) if i != 1] == [expected_claif_score(prompts[i]) for i in (0, 2, 3)]
    server.reply_fn = lambda prompt: "7.5"
    scores = ClaifScorer(make_backend(server, cache), max_tokens=17).score_pairs(["x"], ["y"])
    assert scores[0].unparsable and "outside" in scores[0].error


# -- crash and resume: a real process killed with SIGKILL mid-scoring ----------------------

WORKER = r"""
import json, sys
from multicsr_core.llm.cache import ResponseCache
from multicsr_core.llm.openai_backend import OpenAIChatBackend
from multicsr_core.llm.settings import APISettings
from multicsr_core.scoring.llm import OpenAIScorer
base_url, cache_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
premises = [f"premise {i}: a child is riding a red bicycle down the street" for i in range(n)]
hypotheses = [f"hypothesis {i}: a kid is on a bike" for i in range(n)]
backend = OpenAIChatBackend("resume-model", cache=ResponseCache(cache_path),
                            settings=APISettings(base_url=base_url, concurrency=4))
scores = OpenAIScorer(backend).score_pairs(premises, hypotheses)
print(json.dumps([s.score for s in scores]))
"""


def run_worker(base_url, cache_path, n):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": SECRET}
    return subprocess.Popen([sys.executable, "-c", WORKER, base_url, str(cache_path), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def ok_prompts(cache_path):
    conn = sqlite3.connect(cache_path)
    try:
        rows = conn.execute("SELECT request FROM responses WHERE status = 'ok'").fetchall()
    except sqlite3.OperationalError:  # the worker has not created the table yet
        rows = []
    finally:
        conn.close()
    return [json.loads(request)["messages"][-1]["content"] for (request,) in rows]


def test_sigkill_mid_scoring_then_resume(tmp_path):
    n = 80
    workers = []
    try:
        with ChatCompletionsServer(latency_s=0.04) as server:
            reference = run_worker(server.base_url, tmp_path / "reference.sqlite", n)
            workers.append(reference)
            out, err = reference.communicate(timeout=120)
            assert reference.returncode == 0, err
            uninterrupted = json.loads(out)
            server.reset_counts()

            cache_path = tmp_path / "run.sqlite"
            victim = run_worker(server.base_url, cache_path, n)
            workers.append(victim)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # kill once a good part, but not all, is answered
                if cache_path.exists() and len(ok_prompts(cache_path)) >= n // 3:
                    break
                time.sleep(0.02)
            victim.send_signal(signal.SIGKILL)
            victim.communicate(timeout=30)
            assert victim.returncode == -signal.SIGKILL
            answered = ok_prompts(cache_path)
            assert n // 3 <= len(answered) < n

            resumed = run_worker(server.base_url, cache_path, n)
            workers.append(resumed)
            out, err = resumed.communicate(timeout=120)
            assert resumed.returncode == 0, err
            assert json.loads(out) == uninterrupted
            assert all(server.requests[prompt] == 1 for prompt in answered)  # no answered item was asked again
            assert len(server.requests) == n  # every item asked, at most the in-flight ones (<= 4) twice
            assert sum(server.requests.values()) - n <= 4
    finally:
        for worker in workers:  # never leave a worker behind when an assertion fails
            if worker.poll() is None:
                worker.kill()
                worker.communicate(timeout=30)


def test_max_completion_tokens_for_reasoning_models(cache, tmp_path, monkeypatch):
    """A reasoning model refuses max_tokens (OpenAI's 400 unsupported_parameter): with the default
    field the call stops at once with one line naming the setting; with scoring.max_tokens_field=
    max_completion_tokens (the config, through the builder the pipeline uses) every request carries
    it with the same value; the cache key is the same either way."""
    from multicsr_core.pipeline.components import build_openai_backend
    from multicsr_core.config import load_config
    from multicsr_core.llm.openai_backend import APIParameterRejected

    with ChatCompletionsServer(refuse_max_tokens=True) as server:
        with pytest.raises(APIParameterRejected) as refused:
            OpenAIScorer(make_backend(server, cache)).score_pairs(PREMISES, HYPOTHESES)
        message = str(refused.value)
        assert "max_tokens = 8" in message and "--set scoring.max_tokens_field=max_completion_tokens" in message
        assert server.total_requests() <= make_backend(server, cache).settings.concurrency  # stopped at the first refusal
        # requests already sent when the refusal stopped the call can reach the server after it: let them land
        # before counting afresh (a fresh-clone CI run once counted one of them in the second call)
        settled, deadline = -1, time.monotonic() + 10
        while server.total_requests() != settled and time.monotonic() < deadline:
            settled = server.total_requests()
            time.sleep(0.5)
        server.reset_counts()

        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        cfg = load_config(None, [{"scoring": {"max_tokens_field": "max_completion_tokens"}}])
        scorer = OpenAIScorer(build_openai_backend(cfg, tmp_path, "test-model", server.base_url))
        assert [s.score for s in scorer.score_pairs(PREMISES, HYPOTHESES)] == [float(expected_score(p)) for p in PROMPTS]
        assert len(server.bodies) == 12
        assert all(b["max_completion_tokens"] == 8 and "max_tokens" not in b for b in server.bodies)
        # the field is not in the cache key: the default field finds every reply cached, sends nothing
        again = OpenAIScorer(build_openai_backend(load_config(), tmp_path, "test-model", server.base_url))
        assert [s.score for s in again.score_pairs(PREMISES, HYPOTHESES)] == [float(expected_score(p)) for p in PROMPTS]
        assert again.last_report.n_cached == 12 and len(server.bodies) == 12

    with ChatCompletionsServer() as plain:  # and an endpoint that knows only max_tokens gets max_tokens
        scorer = OpenAIScorer(make_backend(plain, cache))
        scorer.score_pairs(PREMISES[:1], HYPOTHESES[:1])
        assert plain.bodies[0]["max_tokens"] == 8 and "max_completion_tokens" not in plain.bodies[0]
