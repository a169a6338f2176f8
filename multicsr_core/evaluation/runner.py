"""Evaluate a model reference (SentenceTransformer folder, hub id, or ``bundled:...``) end to end.

This is the glue the CLI and the pipeline share: load the model once, run the STS suite (and the
transfer tasks when asked), and write the results JSON in the project's contract shape::

    {"STS12": .., "STS13": .., "STS14": .., "STS15": .., "STS16": .., "STSBenchmark": ..,
     "SICKRelatedness": .., "avg": .., ["transfer": {...},] "_provenance": {...}}

Per-task values are Spearman x 100, unrounded; ``avg`` is the mean of the seven values rounded
to 2 decimals, as SentEval prints it. ``_provenance`` records what produced the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from multicsr_core.models import resolve_model_ref


def resolve_senteval_dir(path: str | Path) -> Path:
    """Accept the SentEval folder itself (holding ``STS/``) or a data root holding ``senteval/``."""
    path = Path(path).expanduser()
    if (path / "STS").is_dir():
        return path.resolve()
    if (path / "senteval" / "STS").is_dir():
        return (path / "senteval").resolve()
    from multicsr_core.io.download import data_root_hint

    raise FileNotFoundError(f"{path}: no SentEval data here (no STS/ folder, nor senteval/STS/); {data_root_hint()}")


def load_sentence_model(ref: str, device: str | None = None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_ref(ref), device=device or "cpu")


def evaluate_model(model_ref_or_model, data_dir: str | Path, tasks: Sequence[str] = ("sts",), batch_size: int = 128,
                   progress: Callable[[int, int], None] | None = None, device: str | None = None,
                   sts_tasks: Sequence[str] | None = None, max_seq_length: int | None = None) -> dict:
    """Results dict in the contract shape (without ``_provenance``); ``sts_tasks`` restricts the STS suite.

    Sentences are encoded untruncated, up to the backbone's own limit, as SentEval does, whatever
    ``max_seq_length`` the model folder holds (a model trained at 32 tokens is still read in full);
    an explicit ``max_seq_length`` truncates there instead.

    ``progress(done, total)`` is called after every encoded batch, in sentences, with one count that
    runs on from the STS suite into the transfer tasks (``total`` grows as each task is read).
    """
    from multicsr_core.evaluation.sts import RunningProgress, encoder_from_sentence_transformer, evaluate_sts

    unknown = set(tasks) - {"sts", "transfer"}
    if unknown:
        raise ValueError(f"unknown evaluation task group(s) {sorted(unknown)}; use sts and/or transfer")
    data_dir = resolve_senteval_dir(data_dir)
    model = load_sentence_model(model_ref_or_model, device) if isinstance(model_ref_or_model, str) else model_ref_or_model
    encode = encoder_from_sentence_transformer(model, batch_size=batch_size, max_seq_length=max_seq_length)
    results: dict = {}
    running = RunningProgress(progress)
    if "sts" in tasks:
        results.update(evaluate_sts(encode, data_dir, tasks=sts_tasks, batch_size=batch_size, progress=running).as_dict())
        running.next_phase()
    if "transfer" in tasks:
        from multicsr_core.evaluation.transfer import evaluate_transfer

        results["transfer"] = evaluate_transfer(encode, data_dir, progress=running)
    return results


def write_results(results: dict, path: str | Path, provenance: dict | None = None) -> Path:
    """Write the results JSON atomically; ``provenance`` (secret-looking keys redacted) goes under
    ``_provenance`` in the same file, so the numbers and what produced them never drift apart."""
    from multicsr_core.evaluation.report import _redact
    from multicsr_core.io.atomic import write_text_atomic

    payload = {k: v for k, v in results.items() if k != "_provenance"}
    if provenance:
        payload["_provenance"] = _redact(provenance)
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")
