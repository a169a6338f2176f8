"""Stages 1 and 2 through a real OpenAI-compatible server: ``transformers serve`` (it ships with
transformers; its serving extras are in our ``dev`` extra) serving the bundled SmolLM2 folder on
127.0.0.1, offline.

The server returns no logprobs (it ignores the fields), so the API scorer reads the reply text:
SmolLM2 answers the official zero-shot prompt with prose, which must end as an
``unparsable_score`` verdict (a rejected, cached row) with exit status 0. Greedy decoding of the
same model and chat template in-process (our LocalLM) gives the same reply text, which checks
that what we stored is what the server said. About 3.5 s per request on a 2-core CPU, so only a
handful of items.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.slow  # a real server and real generation: ~1-2 minutes in all

READY_TIMEOUT_S = 240  # loading 135M parameters on a busy 2-core box
# The server generates one request at a time: sent together they would queue past the client's
# timeout on a busy CPU. (API generation takes its client settings from the scoring section.)
ONE_AT_A_TIME = ("--set", "scoring.concurrency=1", "--set", "scoring.timeout_s=300", "--set", "scoring.max_retries=1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _transformers_cli() -> list[str]:
    script = Path(sys.executable).parent / "transformers"
    if script.exists():
        return [str(script)]
    found = shutil.which("transformers")
    if found is None:
        pytest.fail("the `transformers` console script is not installed (pip install 'transformers[serving]')")
    return [found]


@pytest.fixture(scope="session")
def smollm2_folder() -> str:
    from multicsr_core.models import resolve_model_ref

    return resolve_model_ref("bundled:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def served_smollm2(smollm2_folder, tmp_path_factory):
    """``transformers serve`` pinned to the SmolLM2 folder; yields (base_url, model name)."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(
        [*_transformers_cli(), "serve", smollm2_folder, "--host", "127.0.0.1", "--port", str(port),
         "--device", "cpu", "--dtype", "float32", "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)  # own process group
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                log.flush()
                pytest.fail(f"transformers serve exited with {proc.returncode}: "
                            f"{Path(log.name).read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as reply:
                    models = json.loads(reply.read())
                if any(m.get("id") == smollm2_folder for m in models.get("data", [])):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready after {READY_TIMEOUT_S} s")
            time.sleep(1.0)
        yield f"http://127.0.0.1:{port}/v1", smollm2_folder
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _cli(*args: str, workdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_API_KEY": "sk-local-not-checked", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "multicsr.cli", *args, "--workdir", str(workdir)], env=env,
                          capture_output=True, text=True, timeout=600)


def _json_out(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"): stdout.rindex("}") + 1])


def test_stage1_generate_through_transformers_serve(served_smollm2, tmp_path):
    base_url, model = served_smollm2
    premises = tmp_path / "premises.txt"
    premises.write_text("A man is playing a guitar on stage.\nTwo dogs run along the beach.\n", encoding="utf-8")
    out = tmp_path / "generated.parquet"
    args = ("generate", "--backend", "openai", "--llm", model, "--base-url", base_url, "--premises", str(premises),
            "--out", str(out), "--max-new-tokens", "16", *ONE_AT_A_TIME)
    done = _cli(*args, workdir=tmp_path / "w")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    from multicsr_core.llm.cache import ResponseCache

    cache = ResponseCache(tmp_path / "w" / "llm" / "responses.sqlite")
    assert cache.counts() == {"ok": 4, "failed": 0}  # the server answered all four requests
    rows = pq.read_table(out).to_pylist()
    # stage-1 cleaning may reject a reply (meta-text, a copy of the premise): the rows left are whole
    assert {r["premise"] for r in rows} <= {"A man is playing a guitar on stage.", "Two dogs run along the beach."}
    for row in rows:
        assert row["entailment"] and row["contradiction"]
    again = _cli(*args, workdir=tmp_path / "w")  # every reply from the cache
    assert again.returncode == 0, again.stderr[-3000:]
    assert pq.read_table(out).to_pylist() == rows and cache.counts() == {"ok": 4, "failed": 0}


def test_stage2_prose_replies_are_rejected_verdicts_and_exit_zero(served_smollm2, tmp_path):
    from multicsr_core.llm.cache import ResponseCache
    from multicsr_core.llm.local import LocalLM
    from multicsr_core.prompts import format_scoring_prompt

    base_url, model = served_smollm2
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    corpus = tmp_path / "triplets.csv"
    corpus.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")  # header + 3 triplets: 6 requests
    workdir, out = tmp_path / "w", tmp_path / "scored.parquet"
    args = ("score", "--corpus", str(corpus), "--scorer", "openai", "--llm", model, "--base-url", base_url,
            "--out", str(out), *ONE_AT_A_TIME)
    done = _cli(*args, workdir=workdir)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "run the same command again" not in (done.stdout + done.stderr).lower()
    report = _json_out(done.stdout)
    assert report["failed"] == 0
    table = pq.read_table(out).to_pylist()
    replies, prompts = [], []
    for row in table:
        for side in ("entailment", "contradiction"):
            score, error, reply = row[f"{side}_score"], row[f"{side}_score_error"], row[f"{side}_reply"]
            assert reply is not None
            assert (score is None and error.startswith("unparsable_score")) or (score is not None and 0 <= score <= 5)
            replies.append(reply)
            prompts.append(format_scoring_prompt(row["premise"], row[side]))
    assert report["unparsable"] == sum(r[f"{s}_score"] is None for r in table for s in ("entailment", "contradiction"))

    # what was stored is what the model says: greedy decoding in-process, same chat template
    lm = LocalLM.from_pretrained(model, cache=ResponseCache(tmp_path / "local.sqlite"), batch_size=1)
    local = [r.text for r in lm.generate(prompts, max_new_tokens=8)]
    assert local == replies

    curated_path = tmp_path / "curated.parquet"
    curate = subprocess.run([sys.executable, "-m", "multicsr.cli", "curate", "--corpus", str(out), "--out",
                             str(curated_path)], capture_output=True, text=True, timeout=300)
    assert curate.returncode == 0, curate.stderr[-3000:]
    for row in pq.read_table(curated_path).to_pylist():
        if row["entailment_score"] is None or row["contradiction_score"] is None:
            assert row["kept"] is False and row["reject_reason"] == "unparsable_score"

    cached = ResponseCache(workdir / "llm" / "responses.sqlite").counts()
    again = _cli(*args, workdir=workdir)  # nothing is asked again: the verdicts are final
    assert again.returncode == 0, again.stderr[-3000:]
    assert ResponseCache(workdir / "llm" / "responses.sqlite").counts() == cached == {"ok": 6, "failed": 0}
