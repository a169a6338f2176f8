"""Results files and Markdown tables in the papers' layout.

- :func:`write_results_json` writes the results contract (``{"STS12": .., ..., "SICKRelatedness": .., "avg": ..}``)
  atomically; metadata (config, model, versions) goes to a sidecar ``<name>.meta.json`` so the results file keeps
  exactly its contract keys. Keys that look like secrets are redacted from the metadata.
- :func:`markdown_sts_table` / :func:`markdown_comparison`: the STS table of SimCSE/MultiCSR papers
  (``| model | STS12 | STS13 | STS14 | STS15 | STS16 | STS-B | SICK-R | Avg |``, values ``"%.2f"``) with the
  reference rows of method.md, and a before/after delta row.
- :func:`markdown_transfer_table`: ``| model | MR | CR | SUBJ | MPQA | SST-2 | TREC | MRPC | Avg |``.
- :func:`markdown_sts_subsets`: per-subset Spearman/Pearson of one :class:`StsResults`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from multicsr_core.evaluation.sts import STS_TASKS, StsResults, senteval_average
from multicsr_core.io.atomic import write_text_atomic
from multicsr_core.io.senteval import TRANSFER_TASKS

__all__ = [
    "REFERENCE_STS",
    "STS_COLUMNS",
    "TRANSFER_COLUMNS",
    "markdown_comparison",
    "markdown_sts_subsets",
    "markdown_sts_table",
    "markdown_transfer_table",
    "meta_path_for",
    "read_results_json",
    "write_results_json",
]

# Column titles of the papers' STS table, keyed by the results-JSON key.
STS_COLUMNS: dict[str, str] = {
    "STS12": "STS12", "STS13": "STS13", "STS14": "STS14", "STS15": "STS15", "STS16": "STS16",
    "STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R",
}
TRANSFER_COLUMNS: dict[str, str] = {
    "MR": "MR", "CR": "CR", "SUBJ": "SUBJ", "MPQA": "MPQA", "SST2": "SST-2", "TREC": "TREC", "MRPC": "MRPC",
}


def _row(values: tuple[float, ...]) -> dict[str, float]:
    return {**dict(zip(STS_TASKS, values[:7])), "avg": values[7]}


# method.md, "Reference numbers" (Spearman x 100, SentEval "all"), as published.
REFERENCE_STS: dict[str, dict[str, float]] = {
    "unsup SimCSE BERT-base": _row((68.40, 82.41, 74.38, 80.91, 78.56, 76.85, 72.23, 76.25)),
    "unsup SimCSE RoBERTa-base": _row((70.16, 81.77, 73.24, 81.36, 80.65, 80.22, 68.56, 76.57)),
    "sup SimCSE BERT-base": _row((75.30, 84.67, 80.19, 85.40, 80.82, 84.25, 80.39, 81.57)),
    "sup SimCSE RoBERTa-base": _row((76.53, 85.21, 80.95, 86.03, 82.57, 85.83, 80.50, 82.52)),
    "SynCSE-partial RoBERTa-base": _row((76.11, 84.49, 79.61, 85.26, 82.60, 83.94, 81.57, 81.94)),
    "CLAIF BERT-base": _row((70.62, 81.51, 76.29, 85.05, 81.36, 84.34, 78.22, 79.63)),
}

# Metadata keys whose values never reach a file: api_key, OPENAI_API_KEY, hf_token, password... (not max_tokens).
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|passw(or)?d|authorization|(^|_)token$)", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------
# Files


def meta_path_for(path: str | Path) -> Path:
    """The metadata sidecar of a results file: ``results.json`` -> ``results.meta.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.meta.json")


def _redact(value: Any) -> Any:
    from multicsr_core.redaction import redact_secrets  # the one helper: secret keys and URL credentials

    return redact_secrets(value)


def _check_results(results: Mapping[str, Any]) -> None:
    for key, value in results.items():
        if key.startswith("_"):
            raise ValueError(f"results key {key!r}: metadata belongs in the sidecar (meta=...), not the results")
        if isinstance(value, Mapping):
            _check_results(value)
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"results[{key!r}] = {value!r} is not a finite number")


def write_results_json(
    results: Mapping[str, Any] | StsResults, path: str | Path, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``results`` (numbers, or nested mappings of numbers) to ``path`` atomically, keys in given order.

    ``meta`` (config, config hash, model id, versions...) goes to :func:`meta_path_for` ``(path)``, also
    atomically, with secret-looking keys (api_key, token, password...) redacted.
    """
    data = results.as_dict() if isinstance(results, StsResults) else dict(results)
    _check_results(data)
    if meta is not None:
        write_text_atomic(meta_path_for(path), json.dumps(_redact(meta), indent=2, default=str) + "\n")
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_results_json(path: str | Path) -> dict[str, Any]:
    """Read a results file written by :func:`write_results_json` (or any JSON object of results)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}:1: expected a JSON object of results")
    return data


# ---------------------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: Any) -> str:
    return "%.2f" % value if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _avg(row: Mapping[str, Any], tasks: tuple[str, ...]) -> float | None:
    if isinstance(row.get("avg"), (int, float)):
        return row["avg"]
    if all(isinstance(row.get(t), (int, float)) for t in tasks):
        return senteval_average(row[t] for t in tasks)
    return None


def _sts_cells(row: Mapping[str, Any] | StsResults) -> list[str]:
    data = row.as_dict() if isinstance(row, StsResults) else row
    return [_fmt(data.get(t)) for t in STS_TASKS] + [_fmt(_avg(data, STS_TASKS))]


PUBLISHED_MARK = " (published)"
PUBLISHED_NOTE = ("Rows marked (published) are the figures the papers report (SimCSE, SynCSE, CLAIF; "
                  "Spearman x 100, SentEval \"all\"), copied, not measured by this run; the other rows are this run's.")


def _sts_table_lines(rows: Mapping[str, Mapping[str, Any] | StsResults], include_reference: bool) -> str:
    header = ["model", *STS_COLUMNS.values(), "Avg"]
    body = []
    if include_reference:
        body += [[name + PUBLISHED_MARK, *_sts_cells(ref)] for name, ref in REFERENCE_STS.items()]
    body += [[name, *_sts_cells(row)] for name, row in rows.items()]
    return _table(header, body)


def _with_note(table: str, include_reference: bool) -> str:
    return table + f"\n{PUBLISHED_NOTE}\n" if include_reference else table


def markdown_sts_table(
    rows: Mapping[str, Mapping[str, Any] | StsResults], include_reference: bool = True
) -> str:
    """The papers' STS table: reference rows of method.md (optional), then ``rows`` (name -> results dict).

    The reference rows are marked ``(published)`` and a note under the table says they are the
    papers' figures, not this run's. Extra keys in a results dict (``transfer``, provenance...) are
    ignored; missing tasks print as ``-``.
    """
    return _with_note(_sts_table_lines(rows, include_reference), include_reference)


def markdown_comparison(
    rows: Mapping[str, Mapping[str, Any] | StsResults], include_reference: bool = True
) -> str:
    """Before/after STS table: :func:`markdown_sts_table` plus, with two or more rows, a delta row
    (last minus first, on the printed 2-decimal values, as a reader of the table would compute it)."""
    table = _sts_table_lines(rows, include_reference)
    if len(rows) >= 2:
        names = list(rows)
        first, last = (_sts_cells(rows[n]) for n in (names[0], names[-1]))
        delta = [
            "%+.2f" % (float(b) - float(a)) if a != "-" and b != "-" else "-" for a, b in zip(first, last)
        ]
        table += f"| delta ({names[-1]} - {names[0]}) | " + " | ".join(delta) + " |\n"
    return _with_note(table, include_reference)


def markdown_transfer_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Transfer accuracies: ``| model | MR | CR | SUBJ | MPQA | SST-2 | TREC | MRPC | Avg |``.

    A row is :func:`~multicsr_core.evaluation.transfer.evaluate_transfer`'s dict, or a results dict holding it
    under ``"transfer"``.
    """
    header = ["model", *TRANSFER_COLUMNS.values(), "Avg"]
    body = []
    for name, row in rows.items():
        data = row.get("transfer", row) if isinstance(row.get("transfer"), Mapping) else row
        body.append([name, *(_fmt(data.get(t)) for t in TRANSFER_TASKS), _fmt(_avg(data, TRANSFER_TASKS))])
    return _table(header, body)


def markdown_sts_subsets(results: StsResults) -> str:
    """Per-subset figures of one evaluation: ``| task | subset | pairs | Spearman | Pearson |``."""
    body = []
    for name, task in results.tasks.items():
        for sub, r in task.subsets.items():
            body.append([STS_COLUMNS[name], sub, str(r.n_pairs), _fmt(r.spearman), _fmt(r.pearson)])
        if len(task.subsets) > 1:
            body.append([STS_COLUMNS[name], "**all**", str(task.n_pairs), _fmt(task.spearman), _fmt(task.pearson)])
    return _table(["task", "subset", "pairs", "Spearman", "Pearson"], body)
