"""Stage 3 from the typed config: ``train_stage`` (``multicsr train``, and the flow's train task):
the kept triplets of a corpus in, a SentenceTransformer folder out. Training itself lives in
``training``; this maps config fields to its arguments, once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from multicsr_core.cards import TRAINING_FILE, write_model_card
from multicsr_core.config import PipelineConfig, default_data_root, expand_path
from multicsr_core.config_facts import effective_loss
from multicsr_core.evaluation.runner import resolve_senteval_dir
from multicsr_core.experiments import FalseNegativesSettings, false_negatives_experiment, write_false_negatives
from multicsr_core.io.inputs import InputError, read_any_corpus
from multicsr_core.io.senteval import read_stsbenchmark
from multicsr_core.models import resolve_model_ref
from multicsr_core.pipeline.components import cached_guide
from multicsr_core.pipeline.generate import generation_prompt_set
from multicsr_core.progress import Progress
from multicsr_core.redaction import redact_secrets
from multicsr_core.losses import LOSSES, LossSettings
from multicsr_core.training import TrainingSettings, build_model, supervised_corpus, train



def stsb_dev(cfg: PipelineConfig):
    """STS-B dev pairs for checkpoint selection (None when the SentEval data is not there)."""
    try:
        return read_stsbenchmark(resolve_senteval_dir(expand_path(cfg.evaluation.data_dir)), "dev")
    except FileNotFoundError:
        return None


def check_trainable(table: pa.Table, corpus: str | Path) -> None:
    """Training needs a row curation kept (``kept`` false drops a row; null keeps it)."""
    if "kept" in table.column_names and not any(k is not False for k in table.column("kept").to_pylist()):
        raise InputError(f"curation kept no triplet (0 of {table.num_rows} rows), nothing to train on", path=corpus,
                         hint="loosen the rule (--alpha/--beta/--gamma) or look at the scores with `multicsr inspect`")


def training_table(cfg: PipelineConfig, corpus: str | Path) -> pa.Table:
    """The rows stage 3 reads: ``corpus`` (any corpus or triplet file), with the supervised NLI
    triplets of ``training.supervised_nli`` added when set; an error when curation kept none."""
    table = read_any_corpus(corpus, cfg.input.max_chars)
    if cfg.training.supervised_nli:
        table = supervised_corpus(table, expand_path(cfg.training.supervised_nli))
    check_trainable(table, corpus)
    return table


def _train_rows(table: pa.Table) -> int:
    """The rows that trained: kept == False rows are left out (null = not curated = used)."""
    if "kept" not in table.column_names:
        return table.num_rows
    return sum(flag is not False for flag in table.column("kept").to_pylist())


def train_stage(cfg: PipelineConfig, corpus: str | Path, out_dir: str | Path, cache_dir: str | Path,
                progress: Progress | None = None) -> dict:
    """Train ``training.base_model`` on the kept triplets of ``corpus`` and save it to ``out_dir``.

    The folder loads with ``SentenceTransformer(out_dir)``; ``multicsr_training.json`` inside
    records the full config, its hash, the dev history and the chosen checkpoint.
    """
    t = cfg.training
    table = training_table(cfg, corpus)
    loss = effective_loss(cfg)
    model = build_model(resolve_model_ref(t.base_model), pooling=t.pooling, mlp_only_train=t.mlp_only_train,
                        max_seq_length=t.max_seq_length, seed=t.seed)
    guide = cached_guide(t.guide_model, t.guide_pooling) if LOSSES[loss].guided else None
    step_progress = (lambda step, total, metrics: progress(step, total)) if progress else None
    settings = TrainingSettings(
        LossSettings(loss, sigma=t.sigma, phi=t.phi, tau=t.tau), batch_size=t.batch_size, lr=t.learning_rate,
        epochs=t.epochs, max_steps=t.max_steps, eval_steps=t.eval_steps, seed=t.seed, precision=t.precision,
        save_max_seq_length=t.save_max_seq_length)
    result = train(model, table, out_dir, settings, guide=guide, stsb_dev=stsb_dev(cfg),
                   guide_cache_dir=Path(cache_dir) / "guide", progress=step_progress)
    report = {**result.to_dict(), "config": cfg.to_dict(), "config_hash": cfg.config_hash(), "corpus": str(corpus),
              "train_rows": _train_rows(table)}
    (Path(out_dir) / TRAINING_FILE).write_text(json.dumps(redact_secrets(report), indent=2, default=str),
                                               encoding="utf-8")
    # our card (names, corpus, loss, lengths) over the trainer's stock one; files 0644
    write_model_card(out_dir, prompts_for=generation_prompt_set)
    return {k: report[k] for k in ("output_dir", "loss", "steps", "best_score", "best_step", "history",
                                   "seconds_per_step", "masked_fraction", "config_hash")}


def false_negatives_report(output: str | Path, model: str, guide: str, ks: list[int],
                           triplets: str | Path | None = None) -> dict:
    """``multicsr experiment false-negatives``: paper Fig. 4 with small CPU defaults."""
    dev = stsb_dev(PipelineConfig())
    if dev is None:
        raise FileNotFoundError("STS-B dev not found: set --data-dir or MULTICSR_DATA_ROOT")
    triplets = triplets or default_data_root() / "nli" / "snli_devtest_for_simcse.csv"
    result = false_negatives_experiment(resolve_model_ref(model), triplets, dev, guide=resolve_model_ref(guide),
                                        settings=FalseNegativesSettings(duplications=tuple(ks)), progress=print)
    paths = write_false_negatives(result, output)
    return {"result": result, "files": {k: str(v) for k, v in paths.items()}}
