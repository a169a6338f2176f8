"""The Fig. 4 false-negatives experiment: triplet choice, input errors, report files.

The training runs themselves go through train(), which tests/test_training.py covers; the
experiment at its defaults is run and reported by hand (it takes minutes).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from multicsr_core.experiments import (  # noqa: E402
    _choose_duplicated,
    false_negatives_markdown,
    read_snli_triplets,
    write_false_negatives,
)

SNLI = "../shared/data/nli/snli_devtest_for_simcse.csv"


def test_duplicated_triplet_is_one_the_mask_can_catch():
    cos = np.array([0.2, 0.95, 0.5, 0.91, 0.89])
    assert _choose_duplicated(cos, 0.9, seed=0) in (1, 3)
    with pytest.raises(ValueError, match="no triplet has guide cosine"):
        _choose_duplicated(cos, 0.99, seed=0)


def test_read_snli_triplets_real_file_and_bad_file(tmp_path):
    anchors, positives, negatives = read_snli_triplets(SNLI)
    assert len(anchors) == len(positives) == len(negatives) == 5864
    bad = tmp_path / "bad.csv"
    bad.write_text("sent0,sent1,hard_neg\na,b,c\nd,,f\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv:3: empty field"):
        read_snli_triplets(bad)
    (tmp_path / "cols.csv").write_text("premise,hypothesis\na,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"cols.csv:1: missing column"):
        read_snli_triplets(tmp_path / "cols.csv")


def test_report_files(tmp_path):
    result = {"duplications": [1, 64], "with_mask": [80.5, 80.25], "without_mask": [80.5, 78.0],
              "base_model_stsb_dev": 81.0}
    paths = write_false_negatives(result, tmp_path / "fig4.json")
    assert json.loads(paths["json"].read_text()) == result
    assert "| 64 | 80.25 | 78.00 | +2.25 |" in paths["markdown"].read_text()
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert false_negatives_markdown(result).count("\n| ") == 4  # header, separator, 2 rows
