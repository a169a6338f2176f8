"""A premise longer than the LLM's context: measured in tokens before stage 1, rejected with a
named reason, never decoded (it ran over 6 minutes with no progress and no error before).

Through the real CLI on the bundled SmolLM2-135M-Instruct (8,192 positions): a 40,000-character
premise (``input.max_chars`` raised to let it in) beside an ordinary one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MULTICSR_DATA_ROOT", REPO.parent / "shared" / "data"))
CLI = Path(sys.executable).with_name("multicsr")


def test_a_premise_longer_than_the_context_is_rejected_as_prompt_too_long_not_decoded(tmp_path):
    sentences = (DATA / "nli" / "snli_devtest_premises.txt").read_text(encoding="utf-8").splitlines()
    long_premise = ""
    for sentence in sentences:  # real text, 40,000 characters: far more than 8,192 tokens
        if len(long_premise) >= 40_000:
            break
        long_premise += sentence + " "
    premises = tmp_path / "premises.txt"
    premises.write_text(sentences[100] + "\n" + long_premise.strip() + "\n", encoding="utf-8")
    out = tmp_path / "generated.parquet"
    started = time.monotonic()
    proc = subprocess.run([str(CLI), "generate", "--llm", "bundled:smollm2-135m-instruct", "--premises", str(premises),
                           "--out", str(out), "--max-new-tokens", "8", "--workdir", str(tmp_path / "work"),
                           "--set", "input.max_chars=50000"], capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    rejects = report["rejects"]
    assert rejects["kept"] + rejects["rejected"] == 2
    # both prompts hold the premise: both sides are over, and the row is rejected once
    assert rejects["entailment:prompt_too_long"] == rejects["contradiction:prompt_too_long"] == 1
    assert "prompt_too_long" in proc.stderr and "Traceback" not in proc.stderr
    # never decoded: the ordinary premise's 8 tokens are all the work there was (decoding 8 tokens
    # over a 10k-token prompt alone would take minutes on 2 cores)
    assert seconds < 240, seconds
    assert report["decoding"]["sides"] == 4
