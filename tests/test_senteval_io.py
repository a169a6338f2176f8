"""SentEval readers on the real shared data, and their errors on broken copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from multicsr_core.io.senteval import (
    STS_SUBSETS,
    read_binary_task,
    read_mrpc,
    read_sick,
    read_sst2,
    read_sts_year,
    read_stsbenchmark,
    read_trec,
)

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "senteval"

# Pair counts SentEval evaluates (scored pairs only), per year.
EXPECTED_STS_PAIRS = {2012: 3108, 2013: 1500, 2014: 3750, 2015: 3000, 2016: 1186}


@pytest.mark.parametrize("year", sorted(EXPECTED_STS_PAIRS))
def test_sts_year_subsets_counts_and_sort_order(year):
    subsets = read_sts_year(DATA_DIR, year)
    assert tuple(subsets) == STS_SUBSETS[f"STS{year % 100}"]
    assert sum(len(p) for p in subsets.values()) == EXPECTED_STS_PAIRS[year]
    for pairs in subsets.values():
        keys = [
            (len(a.split()), len(b.split()), s)
            for a, b, s in zip(pairs.sentences1, pairs.sentences2, pairs.scores)
        ]
        assert keys == sorted(keys)
        assert pairs.scores.dtype == np.float64
        assert all("  " not in s and s == s.strip() for s in pairs.sentences1 + pairs.sentences2)


def test_sts_year_accepts_task_names_and_drops_unscored_pairs():
    by_name = read_sts_year(DATA_DIR, "STS15")
    by_year = read_sts_year(DATA_DIR, 2015)
    assert by_name["belief"].sentences1 == by_year["belief"].sentences1
    gold = (DATA_DIR / "STS" / "STS15-en-test" / "STS.gs.belief.txt").read_text().splitlines()
    assert len(gold) == 2000 and len(by_name["belief"]) == sum(1 for g in gold if g != "")
    with pytest.raises(ValueError, match="unknown STS year"):
        read_sts_year(DATA_DIR, 2017)


def test_stsbenchmark_keeps_file_order_and_columns():
    dev = read_stsbenchmark(DATA_DIR, "dev")
    assert len(dev) == 1500 and len(read_stsbenchmark(DATA_DIR, "test")) == 1379
    first = (DATA_DIR / "STS" / "STSBenchmark" / "sts-dev.csv").read_text().splitlines()[0].split("\t")
    assert dev.sentences1[0] == first[5] and dev.sentences2[0] == first[6]
    assert dev.scores[0] == float(first[4])
    assert dev.scores.min() >= 0.0 and dev.scores.max() <= 5.0


def test_sick_skips_header_and_maps_trial_to_dev():
    dev = read_sick(DATA_DIR, "dev")
    lines = (DATA_DIR / "SICK" / "SICK_trial.txt").read_text().splitlines()
    assert len(dev) == len(lines) - 1 == 500
    second = lines[1].split("\t")
    assert (dev.sentences1[0], dev.sentences2[0], dev.scores[0]) == (second[1], second[2], float(second[3]))
    assert len(read_sick(DATA_DIR, "test")) == 4927
    with pytest.raises(ValueError, match="unknown SICK split"):
        read_sick(DATA_DIR, "trial")


def _copy_sts13(tmp_path: Path) -> Path:
    root = tmp_path / "senteval"
    shutil.copytree(DATA_DIR / "STS" / "STS13-en-test", root / "STS" / "STS13-en-test")
    return root


def test_missing_file_names_the_file(tmp_path):
    root = _copy_sts13(tmp_path)
    (root / "STS" / "STS13-en-test" / "STS.gs.OnWN.txt").unlink()
    with pytest.raises(ValueError, match=r"STS\.gs\.OnWN\.txt: file not found"):
        read_sts_year(root, 2013)
    with pytest.raises(ValueError, match=r"sts-dev\.csv: file not found"):
        read_stsbenchmark(root, "dev")


def test_malformed_sts_lines_name_file_and_line(tmp_path):
    root = _copy_sts13(tmp_path)
    folder = root / "STS" / "STS13-en-test"
    inputs = folder / "STS.input.headlines.txt"
    lines = inputs.read_text().splitlines()
    lines[6] = lines[6].replace("\t", " ")
    inputs.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"STS\.input\.headlines\.txt:7: expected 2 tab-separated"):
        read_sts_year(root, 2013)

    shutil.copy(DATA_DIR / "STS" / "STS13-en-test" / "STS.input.headlines.txt", inputs)
    gold = folder / "STS.gs.FNWN.txt"
    glines = gold.read_text().splitlines()
    glines[2] = "four"
    gold.write_text("\n".join(glines) + "\n")
    with pytest.raises(ValueError, match=r"STS\.gs\.FNWN\.txt:3: score 'four' is not a number"):
        read_sts_year(root, 2013)

    gold.write_text("\n".join(glines[:-5]) + "\n")
    with pytest.raises(ValueError, match=r"STS\.gs\.FNWN\.txt: 184 gold lines but .* 189 sentence pairs"):
        read_sts_year(root, 2013)


def test_malformed_tsv_lines_name_file_and_line(tmp_path):
    folder = tmp_path / "STS" / "STSBenchmark"
    folder.mkdir(parents=True)
    lines = (DATA_DIR / "STS" / "STSBenchmark" / "sts-dev.csv").read_text().splitlines()[:20]
    lines[11] = "\t".join(lines[11].split("\t")[:5])
    (folder / "sts-dev.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"sts-dev\.csv:12: expected at least 7 tab-separated fields, found 5"):
        read_stsbenchmark(tmp_path, "dev")

    sick = tmp_path / "SICK"
    sick.mkdir()
    lines = (DATA_DIR / "SICK" / "SICK_trial.txt").read_text().splitlines()[:10]
    fields = lines[4].split("\t")
    fields[3] = "high"
    lines[4] = "\t".join(fields)
    (sick / "SICK_trial.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())  # CRLF must not matter
    with pytest.raises(ValueError, match=r"SICK_trial\.txt:5: score 'high' is not a number"):
        read_sick(tmp_path, "dev")


def test_non_utf8_bytes_name_the_line(tmp_path):
    folder = tmp_path / "STS" / "STSBenchmark"
    folder.mkdir(parents=True)
    lines = (DATA_DIR / "STS" / "STSBenchmark" / "sts-test.csv").read_bytes().splitlines()[:6]
    lines[3] = lines[3] + b"\xff"
    (folder / "sts-test.csv").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match=r"sts-test\.csv:4: not valid UTF-8"):
        read_stsbenchmark(tmp_path, "test")


# ---------------------------------------------------------------------------------------------------------
# Transfer-task readers


def test_binary_tasks_counts_and_label_convention():
    # SentEval's published sample counts (CR and MPQA keep their few empty lines).
    expected = {"MR": (10662, 5331), "CR": (3775, 2407), "SUBJ": (10000, 5000), "MPQA": (10606, 3312)}
    for task, (n, n_pos) in expected.items():
        data = read_binary_task(DATA_DIR, task)
        assert (len(data), int(data.labels.sum())) == (n, n_pos)
        assert data.labels[:n_pos].all() and not data.labels[n_pos:].any()
    subj = read_binary_task(DATA_DIR, "SUBJ")
    first_objective = (DATA_DIR / "SUBJ" / "subj.objective").read_text(encoding="latin-1").splitlines()[0]
    assert subj.sentences[0] == " ".join(first_objective.split()) and subj.labels[0] == 1
    with pytest.raises(ValueError, match="unknown binary task"):
        read_binary_task(DATA_DIR, "SST2")


def test_sst2_trec_mrpc_counts_and_labels():
    assert [len(read_sst2(DATA_DIR, s)) for s in ("train", "dev", "test")] == [67349, 872, 1821]
    train = read_trec(DATA_DIR, "train")
    assert len(train) == 5452 and set(train.labels.tolist()) == set(range(6))
    test = read_trec(DATA_DIR, "test")
    assert (len(test), test.sentences[0], test.labels[0]) == (500, "How far is it from Denver to Aspen ?", 5)
    mrpc = read_mrpc(DATA_DIR, "test")
    assert (len(read_mrpc(DATA_DIR, "train")), len(mrpc)) == (4076, 1725)
    assert mrpc.sentences1[0].startswith("PCCW 's chief operating officer") and mrpc.labels[0] == 1


def test_transfer_readers_name_file_and_line(tmp_path):
    (tmp_path / "TREC").mkdir()
    lines = (DATA_DIR / "TREC" / "TREC_10.label").read_text(encoding="latin-1").splitlines()[:10]
    lines[3] = "COLOR:dark What color is the sky ?"
    (tmp_path / "TREC" / "TREC_10.label").write_text("\n".join(lines) + "\n", encoding="latin-1")
    with pytest.raises(ValueError, match=r"TREC_10\.label:4: unknown TREC class 'COLOR'"):
        read_trec(tmp_path, "test")

    (tmp_path / "SST" / "binary").mkdir(parents=True)
    lines = (DATA_DIR / "SST" / "binary" / "sentiment-dev").read_text().splitlines()[:10]
    lines[8] = lines[8].rsplit("\t", 1)[0] + "\t2"
    (tmp_path / "SST" / "binary" / "sentiment-dev").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"sentiment-dev:9: label 2 not in \[0, 1\]"):
        read_sst2(tmp_path, "dev")

    (tmp_path / "MRPC").mkdir()
    lines = (DATA_DIR / "MRPC" / "msr_paraphrase_train.txt").read_text(encoding="utf-8-sig").splitlines()[:10]
    lines[5] = "\t".join(lines[5].split("\t")[:4])
    (tmp_path / "MRPC" / "msr_paraphrase_train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"msr_paraphrase_train\.txt:6: expected 5 tab-separated fields, found 4"):
        read_mrpc(tmp_path, "train")
    with pytest.raises(ValueError, match=r"MR[/\\]rt-polarity\.pos: file not found"):
        read_binary_task(tmp_path, "MR")
