"""The GPU suite runs every part at a tiny size on CPU, so it cannot fail for a trivial reason on the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def suite(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), *args], capture_output=True, text=True,
                          timeout=900, env=env, cwd=REPO)


def _memory(record: dict) -> None:
    assert record["kind"] and record["mib"] > 0


@pytest.mark.slow
def test_tiny_suite_writes_every_measurement(tmp_path):
    done = suite("--tiny", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["meta"]["tiny"] is True

    for key in ("t5", "decoder_only"):
        part = report["generation"][key]
        assert part["parameters_b"] > 0 and part["omega"] == 0.3
        assert [row["batch_sequences"] for row in part["batches"]] == [4, 8]
        for row in part["batches"]:
            # the decoder-only model also runs transformers' CFG configured to the same rule
            cfg = {"hf_cfg"} if key == "decoder_only" else set()
            assert set(row["seconds"]) == {"generate", "ours_w0", "ours_w0.3"} | cfg
            if cfg:  # float32 on CPU, equal-length prompts: the same tokens as ours at w = 0.3
                assert row["contrast_equals_hf_cfg"] == f"{row['batch_sequences']}/{row['batch_sequences']}"
                assert row["ours_vs_hf_cfg"] > 0
            assert all(v > 0 for v in row["seconds"].values())
            assert row["ratio_vs_generate"]["generate"] == 1.0
            # our loop at w = 0 is plain greedy decoding: token for token what generate writes (fp32 on CPU)
            assert row["w0_equals_generate"] == f"{row['batch_sequences']}/{row['batch_sequences']}"
            _memory(row["memory"])

    scoring = report["scoring"]
    assert set(scoring["pairs_per_s"]) == {"one_forward", "generate_parse"}
    assert all(v > 0 for v in scoring["pairs_per_s"].values())
    assert scoring["one_forward_scored"] == scoring["pairs"]  # min_score_mass 0: every pair gets a score
    _memory(scoring["memory"])

    projection = report["projection"]
    assert projection["premises"] == 275_601
    assert projection["total_minutes"] == pytest.approx(projection["stage1_minutes"] + projection["stage2_minutes"])
    assert projection["total_minutes"] > 0 and isinstance(projection["meets_goal"], bool)

    training = report["training"]
    assert set(training["losses"]) == {"unmasked (SupervisedSimCSELoss)", "masked Eq. 7 (MaskedInfoNCELoss)",
                                       "official BCE (OfficialMaskedBCELoss)"}
    for row in training["losses"].values():
        assert row["seconds_per_step"] > 0 and torch.isfinite(torch.tensor(row["last_loss"]))
        _memory(row["memory"])
    assert training["masked_ratio"] == training["losses"]["masked Eq. 7 (MaskedInfoNCELoss)"]["ratio_vs_unmasked"]

    table = (tmp_path / "gpu_suite.md").read_text()
    for heading in ("Stage 1: generation", "Stage 2: scoring", "Projection", "Stage 3: training step"):
        assert heading in table


def test_full_sizes_refuse_to_run_without_a_gpu(tmp_path):
    done = suite("--out", str(tmp_path))
    assert done.returncode == 2 and "need a CUDA GPU" in done.stderr
    assert not (tmp_path / "gpu_suite.json").exists()
