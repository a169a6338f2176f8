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


# ---------------------------------------------------------------------------------------------------------
# The curation report's figures, `inspect --json`, `--version`


def _curated(rows: list[tuple[float | None, float | None]]):
    """A corpus table with these (a, b) scores, curated by the real paper rule (alpha 3, beta 3, gamma 1)."""
    from multicsr_core.curation import curate_table
    from multicsr_core.io.corpus import corpus_table

    table = corpus_table({"premise": [f"premise {i}" for i in range(len(rows))],
                          "entailment": [f"entailment {i}" for i in range(len(rows))],
                          "contradiction": [f"contradiction {i}" for i in range(len(rows))],
                          "entailment_score": [a for a, _ in rows], "contradiction_score": [b for _, b in rows]})
    return curate_table(table, "paper", 3.0, 3.0, 1.0, True, "corpus")


SCORES = [(4.5, 1.0), (3.2, 2.0), (2.0, 1.0), (4.0, 3.5), (3.5, 3.0), (5.0, 0.0), (1.0, 4.0)]


def test_histograms_split_kept_and_rejected_with_threshold_lines():
    from multicsr_core.curation_report import score_histograms

    table = _curated(SCORES)
    kept = table.column("kept").to_pylist()
    pairs = [(a, b, k) for (a, b), k in zip(SCORES, kept)]
    fig = score_histograms(pairs, "paper", alpha=3.0, beta=3.0)
    for ax, threshold, name in zip(fig.axes, (3.0, 3.0), ("alpha", "beta")):
        kept_bars, rejected_bars = ax.containers  # stacked: kept, then rejected on top
        assert sum(p.get_height() for p in kept_bars) == sum(kept) == 3
        assert sum(p.get_height() for p in rejected_bars) == len(SCORES) - 3
        lines = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(lines) == 1 and list(lines[0].get_xdata()) == [threshold, threshold]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["kept", "rejected", f"{name} = 3"] or set(labels) == {"kept", "rejected", f"{name} = 3"}
        assert ax.get_ylim()[0] == 0 and ax.get_xlim() == (0.0, 5.0)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_empty_corpus_plots_say_no_rows_without_negative_ticks(tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image

    from multicsr_core.curation_report import funnel_figure, score_histograms, write_curation_report

    fig = score_histograms([], "paper")
    for ax in fig.axes:
        assert ax.get_ylim() == (0.0, 1.0) and min(ax.get_yticks()) >= 0 and min(ax.get_xticks()) >= 0
        assert "no rows" in [t.get_text() for t in ax.texts]
    plt.close(fig)
    fig = funnel_figure({"total": 0, "scored": 0, "kept": 0, "swapped": 0})
    ax = fig.axes[0]
    assert ax.get_xlim()[0] == 0 and min(ax.get_xticks()) >= 0 and "no rows" in [t.get_text() for t in ax.texts]
    plt.close(fig)
    report = write_curation_report(_curated([]), tmp_path)
    for name in ("curation_funnel.png", "score_histograms.png", "score_scatter.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert report["funnel"]["total"] == 0


def test_funnel_chart_and_figures_inlined_for_the_ui(tmp_path):
    import base64
    import re

    import matplotlib.pyplot as plt

    from multicsr_core.curation_report import funnel_figure, inline_figures, write_curation_report

    rejects = {"kept": 7, "rejected": 2, "entailment:empty": 2}
    report = write_curation_report(_curated(SCORES), tmp_path, generation_rejects=rejects)
    assert list(report["funnel"])[:2] == ["premises", "generation_rejected"] and report["funnel"]["premises"] == 9
    assert str(tmp_path / "curation_funnel.png") in report["files"]
    assert "![funnel](curation_funnel.png)" in report["markdown"]
    fig = funnel_figure(report["funnel"])
    ax = fig.axes[0]
    bars = {label.get_text(): patch.get_width() for label, patch in zip(ax.get_yticklabels(), ax.patches)}
    assert bars["premises"] == 9 and bars["kept"] == 3 and bars["total"] == 7
    assert bars["rejected: entailment_below_alpha"] == report["funnel"]["rejected:entailment_below_alpha"]
    plt.close(fig)
    inlined = inline_figures(report["markdown"], tmp_path)
    images = re.findall(r"!\[(\w+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", inlined)
    assert [name for name, _ in images] == ["funnel", "histograms", "scatter"]
    assert base64.b64decode(images[0][1]) == (tmp_path / "curation_funnel.png").read_bytes()
    assert ".png)" not in inlined  # no relative link left for the UI to miss


def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "multicsr.cli", *args], capture_output=True, text=True, timeout=300)


def test_inspect_json_and_version(tmp_path):
    import json
    from importlib import metadata

    from multicsr_core.curation import curation_funnel
    from multicsr_core.io.corpus import with_provenance, write_parquet_atomic

    table = _curated(SCORES)
    path = tmp_path / "corpus.parquet"
    write_parquet_atomic(with_provenance(table, {"stage": "curate", "config_hash": "abc123", "config": {"name": "x"}}),
                         path)
    done = _cli("inspect", str(path), "--json", "--rows", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # the whole stdout is one JSON object
    assert summary["rows"] == len(SCORES) and len(summary["sample"]) == 2
    assert summary["funnel"] == curation_funnel(table)
    assert summary["scores"]["entailment_score"]["max"] == 5.0
    assert summary["provenance"]["config_hash"] == "abc123" and summary["provenance"]["config"] == {"name": "x"}

    done = _cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith(f"multicsr {metadata.version('multicsr')} (python ")
    assert f"sentence-transformers {metadata.version('sentence-transformers')}" in done.stdout
    assert _cli("--debug", "--version").stdout == done.stdout  # beside ERR's --debug on the same callback
