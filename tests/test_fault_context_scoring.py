"""A scoring (stage 2) or API generation (stage 1) prompt longer than the model's context: measured
in tokens before it is run or sent, and a named verdict, ``prompt_too_long``, in the corpus and the
funnel; never run, never sent, and no failure (exit 0, no retry).

- a local scorer measures each prompt as the model is fed it (chat template applied) against its
  ``max_position_embeddings`` (less the new tokens when it generates): the bundled
  SmolLM2-135M-Instruct (8,192 positions) through the real ``multicsr score``, with a premise of
  40,000 characters of real SNLI sentences beside an ordinary SNLI triplet;
- an API model's prompt is counted as ``multicsr estimate`` counts it against the configured
  ``scoring.context_tokens`` less ``max_tokens``: the real local OpenAI-compatible server
  (``tests/openai_server.py``) counts the requests, and the over-long one never arrives;
- a prompt the server itself refuses (400 ``context_length_exceeded``, the safety net) stops the
  stage with one line naming the corpus row;
- in the flow, a shard failing with such a permanent error ends the scoring stage: the shards
  after it never start, and the error is logged once, not once per shard.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import SHARED_DATA, openai_score_cmd, snli_triplets_csv
from tests.openai_server import ChatCompletionsServer

CLI = [sys.executable, "-m", "multicsr.cli"]
KEY = "sk-test-4c1d9e2a-not-real"
SIDES = ("entailment", "contradiction")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return {**env, "OPENAI_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}


def _json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"): stdout.rindex("}") + 1])


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("[")]


def _snli_sentences(start: int, chars: int) -> str:
    """Real SNLI premises from line ``start`` on, joined, up to about ``chars`` characters."""
    sentences = (SHARED_DATA / "nli" / "snli_devtest_premises.txt").read_text(encoding="utf-8").splitlines()
    text = ""
    for sentence in sentences[start:]:
        if len(text) + len(sentence) + 1 > chars:
            break
        text += sentence + " "
    return text.strip()


def _rows(corpus: Path) -> list[list[str]]:
    with corpus.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))[1:]


def _write_rows(corpus: Path, rows: list[list[str]]) -> None:
    with corpus.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["sent0", "sent1", "hard_neg"], *rows])


def _curate_and_inspect(scored: Path, tmp_path: Path, *options: str, inspect: bool = True
                        ) -> tuple[dict, list[dict], dict | None]:
    """`multicsr curate` on the scored file (its funnel and rows), then `multicsr inspect --json` on the result."""
    curated = tmp_path / "curated.parquet"
    done = subprocess.run([*CLI, "curate", "--corpus", str(scored), "--out", str(curated), *options], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    if not inspect:
        return _json(done.stdout), pq.read_table(curated).to_pylist(), None
    seen = subprocess.run([*CLI, "inspect", str(curated), "--json"], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert seen.returncode == 0, seen.stderr[-3000:]
    return _json(done.stdout), pq.read_table(curated).to_pylist(), _json(seen.stdout)


# -- the verdict itself: curation and the outcome counts (pure functions) ------------------------------


def test_prompt_too_long_is_a_final_verdict_that_curation_names_and_unparsable_stays_as_it_was():
    from multicsr_core.curation import REASON_PROMPT_TOO_LONG, REASON_UNPARSABLE, curate_table, curation_funnel
    from multicsr_core.io.corpus import corpus_table
    from multicsr_core.scoring.apply import scoring_outcomes
    from multicsr_core.scoring.base import (PROMPT_TOO_LONG, PairScore, is_prompt_too_long_error,
                                            prompt_too_long_error)

    too_long = prompt_too_long_error(9712, 8192)
    assert too_long == "prompt_too_long: 9712 tokens > 8192" and is_prompt_too_long_error(too_long)
    verdict = PairScore(score=None, error=too_long)
    assert verdict.too_long and not verdict.failed and not verdict.unparsable
    prose = "unparsable_score: reply 'I would rather not say.' is not a score (official parser)"
    rows = [  # (entailment score, its error, contradiction score, its error)
        (4.0, None, 1.0, None),
        (None, too_long, None, too_long),  # both prompts hold the premise
        (None, too_long, 1.0, None),  # only the entailment side is over
        (None, prose, 1.0, None),  # unparsable, exactly as before
        (None, "HTTP 503", None, too_long),  # a verdict decides over a transport failure
        (None, prose, None, too_long),  # both verdicts: the input's length is named
        (None, "HTTP 503", 1.0, None),  # a transport failure: unscored, retried
    ]
    table = corpus_table([{"premise": f"premise {i}", "entailment": "e", "contradiction": "c",
                           "entailment_score": a, "entailment_score_error": ea,
                           "contradiction_score": b, "contradiction_score_error": eb}
                          for i, (a, ea, b, eb) in enumerate(rows)])
    for rule in ("paper", "official"):
        for enabled in (True, False):
            curated = curate_table(table, rule=rule, enabled=enabled)
            reasons = curated.column("reject_reason").to_pylist()
            assert reasons[1:] == [REASON_PROMPT_TOO_LONG, REASON_PROMPT_TOO_LONG, REASON_UNPARSABLE,
                                   REASON_PROMPT_TOO_LONG, REASON_PROMPT_TOO_LONG, "unscored"], (rule, enabled)
            assert curation_funnel(curated)["rejected:prompt_too_long"] == 4
    assert REASON_PROMPT_TOO_LONG == PROMPT_TOO_LONG == "prompt_too_long"
    outcomes = scoring_outcomes(table)
    assert outcomes == {"failed": 2, "unparsable": 2, "prompt_too_long": 5, "first_errors": ["HTTP 503", "HTTP 503"]}


# -- a local scorer: measured as fed, a verdict, cached, never run ---------------------------------


def test_local_prompts_are_measured_as_fed_cached_as_verdicts_and_never_run(tmp_path):
    """A tiny Llama with a chat template (512 positions): the one-forward limit is 512, generate's
    512 less max_new_tokens, measured on the chat-templated text; the verdict is cached (a second
    call runs nothing) and no forward ever sees the long prompt (a forward hook counts them)."""
    import torch

    from multicsr_core.llm.cache import ResponseCache
    from multicsr_core.llm.local import TOO_LONG, LocalLM
    from multicsr_core.scoring.llm import ClaifScorer, LocalLLMScorer
    from tests.tiny_llm import LLAMA_CHAT_TEMPLATE, tiny_llama, word_tokenizer

    short, hypothesis = "A man walks a dog in the park .", "Two women embrace ."
    words = _snli_sentences(0, 3000).split()
    tokenizer = word_tokenizer([short, hypothesis, " ".join(words)] + list("012345"))
    tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    torch.manual_seed(0)
    model = tiny_llama(len(tokenizer))
    lm = LocalLM(model, tokenizer, name="tiny-llama", cache=ResponseCache(tmp_path / "cache.sqlite"))
    assert lm.use_chat_template and lm.context_limit(0) == 512 and lm.context_limit(8) == 504
    scorer = LocalLLMScorer(lm, min_score_mass=0.0)

    # measured as fed: the chat template's own tokens count too
    prompt = scorer.prompts([" ".join(words[:400])], [hypothesis])[0]
    assert lm.prompt_tokens([prompt])[0] > len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    def fed_tokens(premise: str) -> int:
        return lm.prompt_tokens(scorer.prompts([premise], [hypothesis]))[0]

    # the fewest premise words that take the scoring prompt over 512 tokens
    n = next(k for k in range(300, 520) if fed_tokens(" ".join(words[:k])) > 512)
    at_limit = " ".join(words[:n - 1])  # the longest premise that still fits one forward
    over = " ".join(words[:n])
    assert fed_tokens(at_limit) <= 512

    forwards: list[int] = []
    model.register_forward_pre_hook(lambda module, args, kwargs: forwards.append(kwargs["input_ids"].shape[1]),
                                    with_kwargs=True)
    scores = scorer.score_pairs([short, at_limit, over], [hypothesis] * 3)
    assert scores[0].ok and scores[1].ok  # the one at the limit is run
    assert scores[2].too_long and not scores[2].failed and scores[2].score is None
    tokens = fed_tokens(over)
    assert scores[2].error == f"prompt_too_long: {tokens} tokens > 512"
    assert forwards and max(forwards) <= 512  # the over-long prompt never reached the model

    forwards.clear()
    again = scorer.score_pairs([short, at_limit, over], [hypothesis] * 3)
    assert [s.error for s in again] == [s.error for s in scores] and forwards == []  # all from the cache
    cached = lm.next_token_distribution(scorer.prompts([over], [hypothesis]), list("012345"))[0]
    assert cached.cached and cached.status == TOO_LONG and not cached.ok

    # generate mode leaves room for the new tokens: the prompt at the one-forward limit is over now
    generating = LocalLLMScorer(lm, mode="generate", max_new_tokens=8)
    assert generating.score_pairs([at_limit], [hypothesis])[0].error.endswith("tokens > 504")
    longer = " ".join(words[:n + 40])  # over 496 tokens in CLAIF's own (shorter) prompt too
    assert ClaifScorer(lm, max_tokens=16).score_pairs([longer], [hypothesis])[0].too_long
    assert forwards == []  # nothing over-long was generated from either


@pytest.mark.slow
def test_a_local_scoring_prompt_over_the_context_is_rejected_as_prompt_too_long_not_run(tmp_path):
    """The bundled SmolLM2 (8,192 positions) through `multicsr score`: the 40,000-character premise's
    two pairs (about 9,000 tokens each) are prompt_too_long verdicts, never run (before, the
    forward over them, past the context, took 12 minutes on a loaded 2-core machine and came back
    as an unparsable_score verdict read off positions the model has none for), the ordinary row is
    scored, exit 0; the rerun recomputes nothing; curation names the reason."""
    rows = _rows(snli_triplets_csv(tmp_path / "first.csv", 2))
    long_premise = _snli_sentences(0, 40_000)
    assert len(long_premise) > 39_000
    corpus = tmp_path / "triplets.csv"
    _write_rows(corpus, [rows[0], [long_premise, rows[1][1], rows[1][2]]])
    scored, workdir = tmp_path / "scored.parquet", tmp_path / "work"
    # few-shot: SmolLM2 answers it with a digit (the zero-shot prompt gets prose: unparsable)
    cmd = [*CLI, "score", "--corpus", str(corpus), "--scorer", "local", "--llm", "bundled:smollm2-135m-instruct",
           "--prompt", "few-shot", "--workdir", str(workdir), "--out", str(scored), "--set", "input.max_chars=50000"]
    started = time.monotonic()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert seconds < 300, seconds  # one forward over the 10k-token prompt alone takes many minutes here
    report = _json(done.stdout)
    assert report["failed"] == 0 and report["prompt_too_long"] == 2, report
    assert "prompt_too_long" in done.stderr and "Traceback" not in done.stderr
    table = pq.read_table(scored).to_pylist()
    assert [row["premise"] for row in table] == [rows[0][0], long_premise]
    for side in SIDES:
        assert table[0][f"{side}_score"] is not None, table[0]  # the rest is scored
        error = table[1][f"{side}_score_error"]
        assert table[1][f"{side}_score"] is None and error.startswith("prompt_too_long: ") and \
            error.endswith(" tokens > 8192"), error
        assert int(error.split()[1]) > 8192

    # a verdict, not a failure: the same command again is exit 0 and recomputes nothing
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _json(again.stdout)["prompt_too_long"] == 2 and _json(again.stdout)["failed"] == 0

    # (not `multicsr inspect`: it reads with the default input.max_chars, and has no --set to raise it)
    funnel, curated, _ = _curate_and_inspect(scored, tmp_path, "--set", "input.max_chars=50000", inspect=False)
    assert funnel["rejected:prompt_too_long"] == 1 and funnel["total"] == 2 and funnel["scored"] == 1
    assert curated[1]["kept"] is False and curated[1]["reject_reason"] == "prompt_too_long"
    assert curated[0]["reject_reason"] != "prompt_too_long"
    report = json.loads((tmp_path / "curated_report" / "curation_funnel.json").read_text(encoding="utf-8"))
    assert report["rejected:prompt_too_long"] == 1  # the curation report's funnel names it too


# -- an API model: the configured context, never sent -----------------------------------------------


N_ROWS = 12
LONG_ROW = 4  # 0-based


def _api_corpus(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    """12 SNLI triplets; row 5 (1-based) with a premise of about 1,900 characters of real SNLI
    sentences: about 500 tokens as `multicsr estimate` counts, the others under 100."""
    corpus = snli_triplets_csv(tmp_path / "triplets.csv", N_ROWS)
    rows = _rows(corpus)
    rows[LONG_ROW][0] = _snli_sentences(300, 1900)
    _write_rows(corpus, rows)
    return corpus, rows


def _prompt_tokens(premise: str, hypothesis: str) -> int:
    """The prompt tokens of a scoring request, counted as `multicsr estimate` counts them."""
    from multicsr_core.llm.tokens import api_prompt_tokens, api_token_counter
    from multicsr_core.llm.openai_backend import ChatRequest
    from multicsr_core.prompts import scoring_messages

    return api_prompt_tokens(api_token_counter("test-model"), ChatRequest(scoring_messages(premise, hypothesis)))


def test_an_api_prompt_over_the_configured_context_is_never_sent_and_rejected_as_prompt_too_long(tmp_path):
    corpus, rows = _api_corpus(tmp_path)
    longest_ordinary = max(_prompt_tokens(row[0], row[k]) for i, row in enumerate(rows) if i != LONG_ROW
                           for k in (1, 2))
    long_tokens = [_prompt_tokens(rows[LONG_ROW][0], rows[LONG_ROW][k]) for k in (1, 2)]
    context = 300  # max_tokens (8) less: 292 for the prompt
    assert longest_ordinary <= context - 8 < min(long_tokens), (longest_ordinary, long_tokens)
    workdir = tmp_path / "w"
    scored = workdir / "scored.parquet"
    with ChatCompletionsServer() as server:
        cmd = openai_score_cmd(corpus, workdir, scored, server.base_url, "--set", f"scoring.context_tokens={context}")
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.count(rows[LONG_ROW][0][:80]) == 0  # never sent
        assert server.total_requests() == 2 * (N_ROWS - 1)  # every other pair was
        report = _json(done.stdout)
        assert report["failed"] == 0 and report["prompt_too_long"] == 2, report
        table = pq.read_table(scored).to_pylist()
        for i, row in enumerate(table):
            for k, side in enumerate(SIDES):
                if i == LONG_ROW:
                    assert row[f"{side}_score"] is None
                    assert row[f"{side}_score_error"] == f"prompt_too_long: {long_tokens[k]} tokens > {context - 8}"
                else:
                    assert row[f"{side}_score"] is not None and row[f"{side}_score_error"] is None

        again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and server.total_requests() == 2 * (N_ROWS - 1)  # nothing asked again

    funnel, curated, inspected = _curate_and_inspect(scored, tmp_path)
    assert funnel["rejected:prompt_too_long"] == 1 and funnel["scored"] == N_ROWS - 1
    assert curated[LONG_ROW]["reject_reason"] == "prompt_too_long" and curated[LONG_ROW]["kept"] is False
    assert inspected["funnel"]["rejected:prompt_too_long"] == 1


def test_api_generation_never_sends_a_premise_over_the_configured_context(tmp_path):
    long_premise = _snli_sentences(300, 1900)
    premises = tmp_path / "premises.txt"
    premises.write_text(f"A man is playing a guitar.\n{long_premise}\nTwo dogs run on the beach.\n", encoding="utf-8")
    out = tmp_path / "gen.parquet"
    with ChatCompletionsServer() as server:
        cmd = [*CLI, "generate", "--backend", "openai", "--llm", "test-model", "--base-url", server.base_url,
               "--premises", str(premises), "--out", str(out), "--workdir", str(tmp_path / "w"),
               "--set", "scoring.context_tokens=300"]
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.count(long_premise[:80]) == 0 and server.total_requests() == 4  # two premises, two sides
    rejects = _json(done.stdout)["rejects"]
    assert rejects["entailment:prompt_too_long"] == rejects["contradiction:prompt_too_long"] == 1
    assert rejects["rejected"] >= 1 and rejects["kept"] + rejects["rejected"] == 3
    assert long_premise not in pq.read_table(out).column("premise").to_pylist()


# -- the server's own refusal: the safety net names the corpus row -----------------------------------


def test_a_prompt_the_server_refuses_names_its_corpus_row_even_with_other_rows_not_sent(tmp_path):
    """Row 3 is over the configured context (not sent); row 5's prompt fits it but the server says
    400 context_length_exceeded: the one error line names row 5 and its pair 5 (of all 24 pairs,
    not of the 22 sent)."""
    corpus, rows = _api_corpus(tmp_path)
    rows[2][0] = _snli_sentences(600, 1900)  # row 3: over the configured context
    rows[LONG_ROW][0] = "A woman in a red coat reads a newspaper on a crowded train at dawn."
    _write_rows(corpus, rows)
    with ChatCompletionsServer() as server:
        server.inject(rows[LONG_ROW][0], ["context_400"] * 4)
        cmd = openai_score_cmd(corpus, tmp_path / "w", tmp_path / "w" / "scored.parquet", server.base_url,
                               "--set", "scoring.context_tokens=300", "--set", "scoring.concurrency=2")
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert server.count(rows[2][0][:80]) == 0 and server.count(rows[LONG_ROW][0]) == 1
    lines = _error_lines(done)
    errors = [line for line in lines if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1 and lines[-1] == errors[0], done.stderr[-3000:]
    assert "2 of 24 pairs have a prompt longer than the context" in lines[0]  # row 3, not sent
    assert f"row {LONG_ROW + 1}: pair {LONG_ROW + 1} of {2 * N_ROWS} in this call" in errors[0], errors[0]
    assert "context_length_exceeded" in errors[0] and rows[LONG_ROW][0][:30] in errors[0]
    assert "Traceback" not in done.stderr


# -- the flow: a permanent error ends the scoring stage at once ----------------------------------------


@pytest.mark.slow
def test_a_permanent_error_in_one_shard_starts_no_other_shard_and_is_logged_once(tmp_path):
    """`multicsr run` scoring 20 rows in 4 shards of 5 through a server that rejects the key: the
    first shard fails for good, the 3 after it never start (no request of theirs arrives), and the
    error is logged by one shard, not by four."""
    corpus = snli_triplets_csv(tmp_path / "triplets.csv", 20)
    with ChatCompletionsServer(api_key="sk-the-right-one-not-real") as server:
        cmd = [*CLI, "run", "--preset", "demo-snli", "--workdir", str(tmp_path / "run"),
               "--set", f"input.triplets={corpus}", "--set", "scoring.scorer=openai", "--set", "scoring.llm=test-model",
               "--set", f"scoring.base_url={server.base_url}", "--set", "scoring.shard_size=5",
               "--set", "scoring.max_retries=0", "--set", "scoring.concurrency=2",
               "--set", "training.enabled=false", "--set", "evaluation.enabled=false"]
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 2, done.stderr[-4000:]
        assert 1 <= server.total_requests() <= 2  # the first shard's requests in flight, nothing after
    lines = done.stderr.splitlines()
    # task runs are named score-shard-N-of-M (the UI's names)
    failed_shards = [line for line in lines if "score-shard-" in line and "failed with exception" in line]
    started = {line.split("'")[1] for line in lines if "Task run 'score-shard-" in line}
    assert len(failed_shards) == 1 and len(started) == 1, done.stderr[-4000:]
    assert "3 of 4 shards not started" in done.stderr
    assert lines[-1].startswith("error: ") and "OPENAI_API_KEY" in lines[-1]


_STARTED: list[int] = []


def _shard_flow():
    """A flow of 4 shards (one at a time, as `multicsr run` runs them) through ShardFamily and
    gather_with_progress; shard 1 fails with the error the parameter names."""
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from multicsr.orchestration.progress import ShardFamily, gather_with_progress
    from multicsr_core.errors import UserError

    @task(persist_result=True, result_serializer="json")
    def shard(i: int, fault: str) -> dict:
        _STARTED.append(i)
        time.sleep(0.2)
        if i == 1 and fault == "permanent":
            raise UserError("the endpoint rejected the key")
        if i == 1 and fault == "retryable":
            raise RuntimeError("503 after retries")
        return {"shard": i}

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def shards(fault: str) -> list:
        family = ShardFamily()
        for i in range(4):
            family.add(shard.submit(i, fault))
        return gather_with_progress(family.futures, "test shards")

    return shards


@pytest.mark.parametrize("fault, started, raised", [("permanent", [0, 1], "UserError"),
                                                     ("retryable", [0, 1, 2, 3], "RuntimeError"),
                                                     ("none", [0, 1, 2, 3], None)])
def test_only_an_error_no_rerun_fixes_stops_the_shards_not_started(prefect_server, fault, started, raised):
    """A UserError in shard 2 of 4: shards 3 and 4 never start. A retryable failure lets every other
    shard finish (their work is kept for the rerun); no failure returns every result in order."""
    _STARTED.clear()
    state = _shard_flow()(fault, return_state=True)
    assert sorted(_STARTED) == started
    if raised is None:
        assert state.is_completed() and state.result() == [{"shard": i} for i in range(4)]
    else:
        assert state.is_failed()
        with pytest.raises(Exception) as caught:
            state.result()
        assert type(caught.value).__name__ == raised
