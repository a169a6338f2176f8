"""Results JSON files and Markdown tables."""

from __future__ import annotations

import json

import pytest

from multicsr_core.evaluation.report import (
    REFERENCE_STS,
    markdown_comparison,
    markdown_sts_subsets,
    markdown_sts_table,
    markdown_transfer_table,
    meta_path_for,
    read_results_json,
    write_results_json,
)
from multicsr_core.evaluation.sts import STS_TASKS, StsResults, StsTaskResult, SubsetResult

# all-MiniLM-L6-v2 as measured by tests/test_evaluation_sts.py (unrounded).
MINILM = {
    "STS12": 72.36601, "STS13": 80.60317, "STS14": 75.58911, "STS15": 85.38968, "STS16": 78.98951,
    "STSBenchmark": 82.03247, "SICKRelatedness": 77.14689, "avg": 78.87,
}


def test_results_json_keeps_contract_keys_and_writes_meta_sidecar(tmp_path):
    path = tmp_path / "out" / "results.json"
    meta = {"model": "all-MiniLM-L6-v2", "config": {"llm": {"api_key": "sk-live-123", "max_tokens": 256},
                                                    "hf_token": "hf_abc", "OPENAI_API_KEY": "sk-2"}}
    write_results_json(MINILM, path, meta=meta)
    data = json.loads(path.read_text())
    assert list(data) == [*STS_TASKS, "avg"] and data == MINILM
    sidecar = meta_path_for(path)
    assert sidecar.name == "results.meta.json"
    text = sidecar.read_text()
    assert "sk-live-123" not in text and "hf_abc" not in text and "sk-2" not in text
    stored = json.loads(text)
    assert stored["config"]["llm"] == {"api_key": "<redacted>", "max_tokens": 256}
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json", "results.meta.json"]  # no temp files
    assert read_results_json(path) == MINILM


def test_invalid_results_leave_the_existing_file_untouched(tmp_path):
    path = tmp_path / "results.json"
    write_results_json(MINILM, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"results\['STS12'\] = nan is not a finite number"):
        write_results_json({**MINILM, "STS12": float("nan")}, path)
    with pytest.raises(ValueError, match="'_meta'.*sidecar"):
        write_results_json({**MINILM, "_meta": {"x": 1}}, path)
    assert path.read_bytes() == before
    nested = {**MINILM, "transfer": {"MR": 75.1, "avg": 75.1}}
    write_results_json(nested, path)
    assert read_results_json(path)["transfer"] == {"MR": 75.1, "avg": 75.1}


def test_read_results_errors_name_file_and_line(tmp_path):
    with pytest.raises(ValueError, match="missing.json: file not found"):
        read_results_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "STS12": 72.1,\n  "STS13": oops\n}\n')
    with pytest.raises(ValueError, match=r"bad\.json:3: not valid JSON"):
        read_results_json(bad)


def test_sts_table_paper_layout_with_reference_rows():
    table = markdown_sts_table({"all-MiniLM-L6-v2": {**MINILM, "transfer": {"MR": 1.0}, "_provenance": {}}})
    lines = table.splitlines()
    assert lines[0] == "| model | STS12 | STS13 | STS14 | STS15 | STS16 | STS-B | SICK-R | Avg |"
    assert lines[1] == "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    # the papers' rows are marked as published, and a note under the table says what that means
    assert lines[2] == ("| unsup SimCSE BERT-base (published) | 68.40 | 82.41 | 74.38 | 80.91 | 78.56 | 76.85 | 72.23 "
                        "| 76.25 |")
    assert all(line.split(" | ")[0].endswith("(published)") for line in lines[2:2 + len(REFERENCE_STS)])
    assert len(lines) == 2 + len(REFERENCE_STS) + 1 + 2
    assert lines[2 + len(REFERENCE_STS)] == ("| all-MiniLM-L6-v2 | 72.37 | 80.60 | 75.59 | 85.39 | 78.99 | 82.03 | 77.15 "
                                             "| 78.87 |")
    assert "(published)" not in lines[2 + len(REFERENCE_STS)]
    assert lines[-2] == "" and lines[-1].startswith("Rows marked (published) are the figures the papers report")
    only = markdown_sts_table({"partial": {"STS12": 70.0}}, include_reference=False).splitlines()
    assert only[2] == "| partial | 70.00 | - | - | - | - | - | - | - |"


def test_reference_rows_average_like_senteval():
    from multicsr_core.evaluation.sts import senteval_average

    for name, row in REFERENCE_STS.items():
        assert abs(senteval_average(row[t] for t in STS_TASKS) - row["avg"]) <= 0.01, name


def test_comparison_adds_delta_row_on_printed_values():
    after = {**MINILM, "STS12": 73.004, "avg": 78.96}
    table = markdown_comparison({"before": MINILM, "after": after}, include_reference=False)
    lines = table.splitlines()
    assert lines[-1] == "| delta (after - before) | +0.63 | +0.00 | +0.00 | +0.00 | +0.00 | +0.00 | +0.00 | +0.09 |"
    assert markdown_comparison({"only": MINILM}) == markdown_sts_table({"only": MINILM})
    with_reference = markdown_comparison({"before": MINILM, "after": after}).splitlines()
    assert with_reference[-3].startswith("| delta (after - before) |")  # the delta row stays in the table
    assert with_reference[-1].startswith("Rows marked (published)")
    assert "(published)" not in table


def test_transfer_table_accepts_plain_and_nested_results():
    scores = {"MR": 75.1, "CR": 80.0, "SUBJ": 90.5, "MPQA": 85.25, "SST2": 79.0, "TREC": 82.4, "MRPC": 70.0,
              "MRPC_F1": 80.1, "avg": 80.32}
    table = markdown_transfer_table({"plain": scores, "nested": {**MINILM, "transfer": scores}})
    lines = table.splitlines()
    assert lines[0] == "| model | MR | CR | SUBJ | MPQA | SST-2 | TREC | MRPC | Avg |"
    assert lines[2] == "| plain | 75.10 | 80.00 | 90.50 | 85.25 | 79.00 | 82.40 | 70.00 | 80.32 |"
    assert lines[3] == lines[2].replace("plain", "nested")


def test_subset_table_lists_subsets_and_the_all_row():
    results = StsResults({
        "STS13": StsTaskResult("STS13", 80.6, 81.0, 300, {"FNWN": SubsetResult(70.0, 71.0, 100),
                                                          "OnWN": SubsetResult(85.0, 86.5, 200)}),
        "STSBenchmark": StsTaskResult("STSBenchmark", 82.03, 83.0, 1379, {"test": SubsetResult(82.03, 83.0, 1379)}),
    })
    lines = markdown_sts_subsets(results).splitlines()
    assert lines[0] == "| task | subset | pairs | Spearman | Pearson |"
    assert lines[2:] == [
        "| STS13 | FNWN | 100 | 70.00 | 71.00 |",
        "| STS13 | OnWN | 200 | 85.00 | 86.50 |",
        "| STS13 | **all** | 300 | 80.60 | 81.00 |",
        "| STS-B | test | 1379 | 82.03 | 83.00 |",
    ]
    # (80.60 + 82.03) / 2 is 81.31499... in binary: "%.2f" prints 81.31, as SentEval's printout would.
    assert results.as_dict() == {"STS13": 80.6, "STSBenchmark": 82.03, "avg": 81.31}
