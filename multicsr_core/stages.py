"""Each stage as one call from the typed config: shared by the CLI (whole files) and the
Prefect tasks (shards). The work itself lives in the concept modules; this maps config fields
to their arguments, so the mapping exists once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa

from multicsr_core.builders import build_scorer, cached_generator
from multicsr_core.config import PipelineConfig
from multicsr_core.errors import RetryableError
from multicsr_core.io.corpus import (corpus_table, make_provenance, read_corpus, read_provenance, with_provenance,
                                     write_parquet_atomic)
from multicsr_core.io.inputs import read_premises, read_triplets
from multicsr_core.models import model_provenance, resolve_model_ref
from multicsr_core.scoring.apply import score_corpus, scoring_outcomes

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- stage 1: generation
def _strip_credentials(url: str | None) -> str | None:
    from multicsr_core.redaction import redact_url

    return redact_url(url)


def generation_prompt_set(cfg: PipelineConfig):
    """The stage-1 prompt set the config selects, as a ``PromptSet``: a prompt file, or a built-in
    set; a local causal model without a chat template (a base model) asked for an instruction set
    gets ``base-2shot`` instead (``prompts.base_model_prompt_set``), with a log line saying so."""
    from multicsr_core.models import generator_traits
    from multicsr_core.prompts import base_model_prompt_set, resolve_prompt_set

    g = cfg.generation
    if Path(g.prompt_set).suffix in (".yaml", ".yml", ".json"):
        return resolve_prompt_set(template=g.template, prompt_file=g.prompt_set)
    name = g.prompt_set
    if g.backend == "local" and g.llm and g.mode == "multicsr":
        chat_template, encoder_decoder = generator_traits(g.llm, g.revision)
        name = base_model_prompt_set(name, chat_template=chat_template, encoder_decoder=encoder_decoder)
        if name != g.prompt_set:
            log.info("%s has no chat template (a base model): prompt set %s instead of %s", g.llm, name, g.prompt_set)
    return resolve_prompt_set(name, template=g.template)


def generation_fingerprint(cfg: PipelineConfig) -> dict:
    from multicsr_core.generation.engine import generation_fingerprint as fp

    g = cfg.generation
    return {"mode": g.mode, "backend": g.backend, "base_url": _strip_credentials(g.base_url), **fp(
        g.llm, g.revision, omega=g.omega, max_new_tokens=g.max_new_tokens, do_sample=g.do_sample,
        temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=g.seed,
        prompt_set=generation_prompt_set(cfg), use_chat_template=g.use_chat_template, dtype=g.dtype),
        # a GGUF model is named by its file and sha256 (never by the converted cache folder)
        **({} if g.backend == "openai" else model_provenance(g.llm))}


class GenerationFailures(RetryableError):  # a RuntimeError: rerunning retries the failed items
    """API generation left items without a reply after retries; answered ones are cached."""


def api_generation_params(cfg: PipelineConfig) -> dict:
    """The decoding parameters of API generation (greedy unless ``do_sample``); ``estimate`` uses them too."""
    g = cfg.generation
    sampling = {"top_p": g.top_p} if g.do_sample else {}
    return {"temperature": g.temperature if g.do_sample else 0.0, "max_tokens": g.max_new_tokens, **sampling}


def generation_prompts(cfg: PipelineConfig, premises: Sequence[str]):
    """The two stage-1 prompts of every premise, as the config builds them."""
    from multicsr_core.prompts import build_generation_prompts

    return build_generation_prompts(premises, prompt_set=generation_prompt_set(cfg), seed=cfg.generation.seed)


def _generate_with_api(cfg: PipelineConfig, prompts, workdir: str | Path, api_key: str | None,
                       progress: Progress | None):
    """Stage 1 through an OpenAI-compatible API: plain generation (API models expose no logits, so
    no contrast: the paper's ChatGPT path). Every reply goes through the workdir's response cache.

    With ``scoring.context_tokens`` set, each prompt is first counted in tokens as ``multicsr
    estimate`` counts it (``scoring.llm.api_over_long``): a premise with a prompt over that less
    ``generation.max_new_tokens`` is sent on neither side and comes back rejected as
    ``prompt_too_long`` on the side(s) over it, as a local model's premise does."""
    from multicsr_core.builders import build_openai_backend
    from multicsr_core.generation.cleaning import clean_generation
    from multicsr_core.generation.engine import REJECT_PROMPT_TOO_LONG, GeneratedTriplet
    from multicsr_core.scoring.llm import api_over_long, generate_with_api, generation_requests

    g = cfg.generation
    backend = build_openai_backend(cfg, workdir, g.llm, g.base_url, api_key, g.shard_size if g.batch_api else None)
    params = api_generation_params(cfg)
    over: dict[int, list[str]] = {}  # premise index -> the sides whose prompt is over the context
    if cfg.scoring.context_tokens is not None:
        sides = ([("entailment", k, p.entailment_prompt) for k, p in enumerate(prompts)]
                 + [("contradiction", k, p.contradiction_prompt) for k, p in enumerate(prompts)])
        measured = api_over_long(backend.model, generation_requests([text for *_, text in sides], **params),
                                 cfg.scoring.context_tokens)
        for j in sorted(measured):
            over.setdefault(sides[j][1], []).append(sides[j][0])
        if over:
            log.warning("%d of %d premises have a prompt longer than the context of model %r allows "
                        "(scoring.context_tokens %d less %d new tokens): rejected as %s, not sent", len(over),
                        len(prompts), backend.model, cfg.scoring.context_tokens, g.max_new_tokens,
                        REJECT_PROMPT_TOO_LONG)
    sent = [p for k, p in enumerate(prompts) if k not in over]
    texts = [p.entailment_prompt for p in sent] + [p.contradiction_prompt for p in sent]
    report = generate_with_api(backend, texts, progress=progress, **params) if texts else None
    failed = [r for r in report.results if not r.ok] if report is not None else []
    if failed:
        raise GenerationFailures(f"{len(failed)} of {len(texts)} API generations failed after retries "
                                 f"(first: {report.first_errors(3)}); replies received are cached: run again to retry")
    rows = []
    answered = iter(range(len(sent)))
    for k, p in enumerate(prompts):
        if k in over:
            rows.append(GeneratedTriplet(p.premise, "", "", p.entailment_prompt, p.contradiction_prompt,
                                         p.entailment_prompt_id, p.contradiction_prompt_id, "", "",
                                         ";".join(f"{side}:{REJECT_PROMPT_TOO_LONG}" for side in over[k]),
                                         entailment_finished=False, contradiction_finished=False))
            continue
        j = next(answered)
        ent, con = report.results[j].text, report.results[len(sent) + j].text
        ent_c, con_c = clean_generation(ent, p.premise), clean_generation(con, p.premise)
        reasons = [f"{side}:{c.reject_reason}" for side, c in (("entailment", ent_c), ("contradiction", con_c))
                   if c.reject_reason]
        rows.append(GeneratedTriplet(p.premise, ent_c.text, con_c.text, p.entailment_prompt, p.contradiction_prompt,
                                     p.entailment_prompt_id, p.contradiction_prompt_id, ent, con,
                                     ";".join(reasons) or None))
    return rows


def generate_triplets(cfg: PipelineConfig, premises: Sequence[str], progress: Progress | None = None,
                      workdir: str | Path = ".", api_key: str | None = None) -> list:
    """Stage 1's ``GeneratedTriplet`` for every premise, rejected ones included with their reason.

    A local model decodes contrastively (paper 3.1), stopping at the prompt set's stop strings;
    ``backend=openai`` generates plainly through the API. Outputs are cleaned
    (``generation/cleaning.py``: meta-text removed, the raw text kept in ``*_raw``).
    """
    from multicsr_core.generation.engine import generate_contrastive
    from multicsr_core.prompts import build_generation_prompts

    g = cfg.generation
    if not g.llm:
        raise ValueError("generation.llm is not set: name a generator model (hub id, path or API model)")
    if g.mode != "multicsr":
        raise ValueError("generation.mode=claif: CLAIF pair generation runs through multicsr_core.generation.claif")
    prompt_set = generation_prompt_set(cfg)
    prompts = build_generation_prompts(premises, prompt_set=prompt_set, seed=g.seed)
    if g.backend == "openai":
        return _generate_with_api(cfg, prompts, workdir, api_key, progress)
    model, tokenizer = cached_generator(g.llm, g.revision, g.dtype, g.device)
    return generate_contrastive(model, tokenizer, prompts, omega=g.omega, max_new_tokens=g.max_new_tokens,
                                batch_size=g.batch_size, do_sample=g.do_sample, temperature=g.temperature,
                                top_k=g.top_k, top_p=g.top_p, seed=g.seed, use_chat_template=g.use_chat_template,
                                progress=progress, stop_strings=prompt_set.stop_strings)


def _kept_rows_table(rows: Sequence, source_rows: Sequence[int]) -> pa.Table:
    """The corpus rows of the generated triplets cleaning kept (the rejected ones are counted, not kept)."""
    return corpus_table([{"premise": r.premise, "entailment": r.entailment, "contradiction": r.contradiction,
                          "entailment_prompt": r.entailment_prompt, "contradiction_prompt": r.contradiction_prompt,
                          "entailment_prompt_id": r.entailment_prompt_id,
                          "contradiction_prompt_id": r.contradiction_prompt_id, "source_row": src,
                          "entailment_raw": r.entailment_raw, "contradiction_raw": r.contradiction_raw}
                         for r, src in zip(rows, source_rows) if r.kept])


def generate_rows(cfg: PipelineConfig, premises: Sequence[str], source_rows: Sequence[int],
                  progress: Progress | None = None, workdir: str | Path = ".",
                  api_key: str | None = None) -> tuple[pa.Table, dict]:
    """Generate (x+, x-) for ``premises``; returns the corpus rows cleaning kept and the reject
    counts by reason (rows cleaning rejects, empty, a copy of the premise, meta-text only, ...,
    are dropped here)."""
    from multicsr_core.generation.engine import reject_counts

    rows = generate_triplets(cfg, premises, progress, workdir=workdir, api_key=api_key)
    return _kept_rows_table(rows, source_rows), reject_counts(rows)


def generate_corpus(cfg: PipelineConfig, out_path: str | Path, progress: Progress | None = None,
                    workdir: str | Path = ".") -> dict:
    """``multicsr generate``: a premise file in, a generated corpus Parquet out.

    The report adds how decoding ended (``decoding``: mean new tokens per side, the share of sides
    ended by EOS or a stop string) to the premise and reject counts."""
    from multicsr_core.generation.engine import decoding_summary, reject_counts

    i = cfg.input
    premise_set = read_premises(i.premises, fmt=i.premises_format, column=i.column, max_chars=i.max_chars, limit=i.limit)
    rows = generate_triplets(cfg, premise_set.premises, progress, workdir=workdir)
    table, rejects = _kept_rows_table(rows, premise_set.source_rows), reject_counts(rows)
    decoding = decoding_summary(rows) if cfg.generation.backend == "local" else None
    prov = make_provenance("generate", config=cfg.to_dict(), config_hash=cfg.config_hash(),
                           generation=generation_fingerprint(cfg), input=str(i.premises),
                           input_stats=premise_set.stats.as_dict(), generation_rejects=rejects)
    write_parquet_atomic(with_provenance(table, prov), out_path)
    report = {"out": str(out_path), "premises": premise_set.stats.as_dict(), "generated": table.num_rows,
              "rejects": rejects}
    if decoding is not None:
        report["decoding"] = decoding
    return report


# ---------------------------------------------------------------- stage 2: scoring
def read_any_corpus(path: str | Path, max_chars: int = 2000) -> pa.Table:
    """A corpus entering at stage 2 or 3: a corpus Parquet multicsr wrote (every row kept, as
    written), or a user's triplets (csv/tsv/jsonl/parquet, ``sent0,sent1,hard_neg`` or
    ``premise,entailment,contradiction``) read by the input rules of ``io.inputs``. Either way a
    sentence over ``max_chars`` and a file with no row are errors naming the file."""
    from multicsr_core.io.corpus import is_full_corpus, parquet_schema
    from multicsr_core.io.inputs import InputError, check_max_chars

    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq") and is_full_corpus(parquet_schema(path).names):
        table = read_corpus(path)
        if table.num_rows == 0:
            raise InputError("no usable triplets: the corpus has no rows", path=path,
                             hint="check the stage that wrote it")
        check_max_chars(table, path, max_chars)
        return table
    table, stats = read_triplets(path, max_chars=max_chars)
    if stats.empty or stats.duplicates:  # the input rules skip these; say so, or a user's rows vanish unseen
        log.warning("warning: %s: skipped %d row(s) with an empty or null field and %d duplicate triplet(s); "
                    "%d of %d kept", path, stats.empty, stats.duplicates, stats.kept, stats.read)
    return table


def scoring_chunk_rows(cfg: PipelineConfig, rows: int) -> int:
    """Rows per scorer call. Through the Batch API all ``rows`` go in one call, so every batch
    (one per ``scoring.shard_size`` rows) is submitted at once and they run side by side;
    otherwise small chunks, for progress."""
    return max(1, rows) if cfg.scoring.batch_api and cfg.scoring.scorer == "openai" else cfg.scoring.batch_size * 8


def score_corpus_file(cfg: PipelineConfig, corpus: str | Path, out_path: str | Path, workdir: str | Path,
                      progress: Progress | None = None) -> dict:
    """``multicsr score``: score every pair not yet scored; LLM replies are cached under ``workdir``."""
    table = read_any_corpus(corpus, cfg.input.max_chars)
    scorer = build_scorer(cfg, workdir)
    scored = score_corpus(table, scorer, progress=progress, chunk_size=scoring_chunk_rows(cfg, table.num_rows),
                          path=corpus)
    # failed: requests that got no answer (retried by the next run); unparsable: replies that are
    # not a score (final verdicts, rejected by curation as unparsable_score)
    outcomes = scoring_outcomes(scored)
    input_prov = read_provenance(corpus) if Path(corpus).suffix.lower() in (".parquet", ".pq") else {}
    prov = make_provenance("score", config=cfg.to_dict(), config_hash=cfg.config_hash(), scorer=scorer.fingerprint(),
                           input=str(corpus), input_provenance=input_prov, **outcomes)
    write_parquet_atomic(with_provenance(scored, prov), out_path)
    return {"out": str(out_path), "rows": scored.num_rows, **outcomes}


# ---------------------------------------------------------------- stage 3: training
def stsb_dev(cfg: PipelineConfig):
    """STS-B dev pairs for checkpoint selection (None when the SentEval data is not there)."""
    from multicsr_core.config import expand_path
    from multicsr_core.evaluation.runner import resolve_senteval_dir
    from multicsr_core.io.senteval import read_stsbenchmark

    try:
        return read_stsbenchmark(resolve_senteval_dir(expand_path(cfg.evaluation.data_dir)), "dev")
    except FileNotFoundError:
        return None


def check_trainable(table: pa.Table, corpus: str | Path) -> None:
    """Training needs a row curation kept (``kept`` false drops a row; null keeps it)."""
    from multicsr_core.io.inputs import InputError

    if "kept" in table.column_names and not any(k is not False for k in table.column("kept").to_pylist()):
        raise InputError(f"curation kept no triplet (0 of {table.num_rows} rows), nothing to train on", path=corpus,
                         hint="loosen the rule (--alpha/--beta/--gamma) or look at the scores with `multicsr inspect`")


def effective_loss(cfg: PipelineConfig) -> str:
    """``training.mask = false`` (the "without stage 3" ablation) trains the paper loss without its mask."""
    t = cfg.training
    return "simcse" if (not t.mask and t.loss == "paper") else t.loss


def train_from_corpus(cfg: PipelineConfig, corpus: str | Path, out_dir: str | Path, cache_dir: str | Path,
                      progress: Progress | None = None) -> dict:
    """Train ``training.base_model`` on the kept triplets of ``corpus`` and save it to ``out_dir``.

    The folder loads with ``SentenceTransformer(out_dir)``; ``multicsr_training.json`` inside
    records the full config, its hash, the dev history and the chosen checkpoint.
    """
    import json

    from multicsr_core.training import build_model, supervised_corpus, train

    t = cfg.training
    table = read_any_corpus(corpus, cfg.input.max_chars)
    if t.supervised_nli:
        from multicsr_core.config import expand_path

        table = supervised_corpus(table, expand_path(t.supervised_nli))
    check_trainable(table, corpus)
    loss = effective_loss(cfg)
    model = build_model(resolve_model_ref(t.base_model), pooling=t.pooling, mlp_only_train=t.mlp_only_train,
                        max_seq_length=t.max_seq_length, seed=t.seed)
    guide = None
    if loss in ("paper", "official"):
        from multicsr_core.builders import cached_guide

        guide = cached_guide(t.guide_model, t.guide_pooling)
    step_progress = (lambda step, total, metrics: progress(step, total)) if progress else None
    result = train(model, table, out_dir, loss=loss, guide=guide, sigma=t.sigma, phi=t.phi, tau=t.tau,
                   batch_size=t.batch_size, lr=t.learning_rate, epochs=t.epochs, max_steps=t.max_steps,
                   eval_steps=t.eval_steps, stsb_dev=stsb_dev(cfg), seed=t.seed, precision=t.precision,
                   guide_cache_dir=Path(cache_dir) / "guide", progress=step_progress,
                   save_max_seq_length=t.save_max_seq_length)
    report = {**result.to_dict(), "config": cfg.to_dict(), "config_hash": cfg.config_hash(), "corpus": str(corpus),
              # the rows that trained: kept == False rows are left out (null = not curated = used)
              "train_rows": (sum(flag is not False for flag in table.column("kept").to_pylist())
                             if "kept" in table.column_names else table.num_rows)}
    from multicsr_core.redaction import redact_secrets

    (Path(out_dir) / "multicsr_training.json").write_text(json.dumps(redact_secrets(report), indent=2, default=str),
                                                          encoding="utf-8")
    from multicsr_core.cards import write_model_card

    write_model_card(out_dir)  # our card (names, corpus, loss, lengths) over the trainer's stock one; files 0644
    return {k: report[k] for k in ("output_dir", "loss", "steps", "best_score", "best_step", "history",
                                   "seconds_per_step", "masked_fraction", "config_hash")}


def run_false_negatives_cli(output: str | Path, model: str, guide: str, ks: list[int],
                            triplets: str | Path | None = None) -> dict:
    """``multicsr experiment false-negatives``: paper Fig. 4 with small CPU defaults."""
    from multicsr_core.config import default_data_root
    from multicsr_core.experiments import false_negatives_experiment, write_false_negatives

    cfg = PipelineConfig()
    dev = stsb_dev(cfg)
    if dev is None:
        raise FileNotFoundError("STS-B dev not found: set --data-dir or MULTICSR_DATA_ROOT")
    triplets = triplets or default_data_root() / "nli" / "snli_devtest_for_simcse.csv"
    result = false_negatives_experiment(resolve_model_ref(model), triplets, dev, guide=resolve_model_ref(guide),
                                        duplications=ks, progress=print)
    paths = write_false_negatives(result, output)
    return {"result": result, "files": {k: str(v) for k, v in paths.items()}}
