"""Stage 1 from the typed config: ``generate_stage`` (``multicsr generate``: a premise file in, a
corpus Parquet out) and ``generate_shard`` (one shard of a flow run). The work itself lives in
``generation/``, ``prompts`` and ``llm/``; this maps config fields to their arguments, once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from multicsr_core.config import PipelineConfig
from multicsr_core.config_facts import is_prompt_file
from multicsr_core.errors import RetryableError
from multicsr_core.generation.cleaning import clean_generation
from multicsr_core.generation.engine import (REJECT_PROMPT_TOO_LONG, GeneratedTriplet, decoding_summary,
                                             generate_contrastive, generation_fingerprint, reject_counts)
from multicsr_core.generation.settings import DecodingSettings
from multicsr_core.io.corpus import corpus_table, make_provenance, with_provenance, write_parquet_atomic
from multicsr_core.io.inputs import read_premises
from multicsr_core.llm.api_generation import generate_with_api, generation_requests
from multicsr_core.llm.tokens import api_over_long
from multicsr_core.models import generator_traits, model_provenance
from multicsr_core.pipeline.components import build_openai_backend, cached_generator
from multicsr_core.progress import Progress
from multicsr_core.prompts import base_model_prompt_set, build_generation_prompts, resolve_prompt_set
from multicsr_core.redaction import redact_url

log = logging.getLogger(__name__)


def generation_prompt_set(cfg: PipelineConfig):
    """The stage-1 prompt set the config selects, as a ``PromptSet``: a prompt file, or a built-in
    set; a local causal model without a chat template (a base model) asked for an instruction set
    gets ``base-2shot`` instead (``prompts.base_model_prompt_set``), with a log line saying so."""
    g = cfg.generation
    if is_prompt_file(g.prompt_set):
        return resolve_prompt_set(template=g.template, prompt_file=g.prompt_set)
    name = g.prompt_set
    if g.backend == "local" and g.llm and g.mode == "multicsr":
        chat_template, encoder_decoder = generator_traits(g.llm, g.revision)
        name = base_model_prompt_set(name, chat_template=chat_template, encoder_decoder=encoder_decoder)
        if name != g.prompt_set:
            log.info("%s has no chat template (a base model): prompt set %s instead of %s", g.llm, name, g.prompt_set)
    return resolve_prompt_set(name, template=g.template)


def decoding_settings(cfg: PipelineConfig, prompt_set) -> DecodingSettings:
    """Stage 1's decoding as the config sets it, stopping at the prompt set's stop strings: built here
    only, passed whole to the decoder, and its fields are the decoding part of the fingerprint."""
    g = cfg.generation
    return DecodingSettings(omega=g.omega, max_new_tokens=g.max_new_tokens, do_sample=g.do_sample,
                            temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=g.seed,
                            use_chat_template=g.use_chat_template, stop_strings=prompt_set.stop_strings,
                            batch_size=g.batch_size)


def generation_identity(cfg: PipelineConfig) -> dict:
    """What determines stage 1's rows: mode, backend, the API's URL (credentials stripped) and the
    decoding fingerprint (``generation.engine.generation_fingerprint``), plus the model's file
    identity for a local model. A generation shard is cached on it; the corpus records it."""
    g = cfg.generation
    prompt_set = generation_prompt_set(cfg)
    return {"mode": g.mode, "backend": g.backend, "base_url": redact_url(g.base_url), **generation_fingerprint(
        g.llm, g.revision, decoding_settings(cfg, prompt_set), prompt_set=prompt_set, dtype=g.dtype),
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
    return build_generation_prompts(premises, prompt_set=generation_prompt_set(cfg), seed=cfg.generation.seed)


def _over_context(cfg: PipelineConfig, model: str, prompts, params: dict) -> dict[int, list[str]]:
    """Premise index -> the sides whose prompt is over ``scoring.context_tokens`` less
    ``generation.max_new_tokens``, counted as ``multicsr estimate`` counts (``api_over_long``)."""
    over: dict[int, list[str]] = {}
    if cfg.scoring.context_tokens is None:
        return over
    sides = ([("entailment", k, p.entailment_prompt) for k, p in enumerate(prompts)]
             + [("contradiction", k, p.contradiction_prompt) for k, p in enumerate(prompts)])
    measured = api_over_long(model, generation_requests([text for *_, text in sides], **params),
                             cfg.scoring.context_tokens)
    for j in sorted(measured):
        over.setdefault(sides[j][1], []).append(sides[j][0])
    if over:
        log.warning("%d of %d premises have a prompt longer than the context of model %r allows "
                    "(scoring.context_tokens %d less %d new tokens): rejected as %s, not sent", len(over),
                    len(prompts), model, cfg.scoring.context_tokens, cfg.generation.max_new_tokens,
                    REJECT_PROMPT_TOO_LONG)
    return over


def _api_triplet(p, ent: str, con: str) -> GeneratedTriplet:
    """One premise's API replies, cleaned (the raw text kept), with the sides cleaning rejected."""
    ent_c, con_c = clean_generation(ent, p.premise), clean_generation(con, p.premise)
    reasons = [f"{side}:{c.reject_reason}" for side, c in (("entailment", ent_c), ("contradiction", con_c))
               if c.reject_reason]
    return GeneratedTriplet(p.premise, ent_c.text, con_c.text, p.entailment_prompt, p.contradiction_prompt,
                            p.entailment_prompt_id, p.contradiction_prompt_id, ent, con, ";".join(reasons) or None)


def _too_long_triplet(p, sides: list[str]) -> GeneratedTriplet:
    """A premise whose prompt was not sent: rejected as ``prompt_too_long`` on the side(s) over it."""
    return GeneratedTriplet(p.premise, "", "", p.entailment_prompt, p.contradiction_prompt,
                            p.entailment_prompt_id, p.contradiction_prompt_id, "", "",
                            ";".join(f"{side}:{REJECT_PROMPT_TOO_LONG}" for side in sides),
                            entailment_finished=False, contradiction_finished=False)


def _generate_with_api(cfg: PipelineConfig, prompts, workdir: str | Path, api_key: str | None,
                       progress: Progress | None) -> list[GeneratedTriplet]:
    """Stage 1 through an OpenAI-compatible API: plain generation (API models expose no logits, so
    no contrast: the paper's ChatGPT path). Every reply goes through the workdir's response cache.

    With ``scoring.context_tokens`` set, a premise with a prompt over that less
    ``generation.max_new_tokens`` is sent on neither side and comes back rejected as
    ``prompt_too_long`` on the side(s) over it, as a local model's premise does."""
    g = cfg.generation
    backend = build_openai_backend(cfg, workdir, g.llm, g.base_url, api_key, g.shard_size if g.batch_api else None)
    params = api_generation_params(cfg)
    over = _over_context(cfg, backend.model, prompts, params)
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
            rows.append(_too_long_triplet(p, over[k]))
            continue
        j = next(answered)
        rows.append(_api_triplet(p, report.results[j].text, report.results[len(sent) + j].text))
    return rows


def generate_triplets(cfg: PipelineConfig, premises: Sequence[str], progress: Progress | None = None,
                      workdir: str | Path = ".", api_key: str | None = None) -> list[GeneratedTriplet]:
    """Stage 1's ``GeneratedTriplet`` for every premise, rejected ones included with their reason.

    A local model decodes contrastively (paper 3.1), stopping at the prompt set's stop strings;
    ``backend=openai`` generates plainly through the API. Outputs are cleaned
    (``generation/cleaning.py``: meta-text removed, the raw text kept in ``*_raw``).
    """
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
    return generate_contrastive(model, tokenizer, prompts, decoding_settings(cfg, prompt_set), progress)


def _kept_rows_table(rows: Sequence[GeneratedTriplet], source_rows: Sequence[int]) -> pa.Table:
    """The corpus rows of the generated triplets cleaning kept (the rejected ones are counted, not kept)."""
    return corpus_table([{"premise": r.premise, "entailment": r.entailment, "contradiction": r.contradiction,
                          "entailment_prompt": r.entailment_prompt, "contradiction_prompt": r.contradiction_prompt,
                          "entailment_prompt_id": r.entailment_prompt_id,
                          "contradiction_prompt_id": r.contradiction_prompt_id, "source_row": src,
                          "entailment_raw": r.entailment_raw, "contradiction_raw": r.contradiction_raw}
                         for r, src in zip(rows, source_rows) if r.kept])


def generate_shard(cfg: PipelineConfig, premises: Sequence[str], source_rows: Sequence[int],
                   progress: Progress | None = None, workdir: str | Path = ".",
                   api_key: str | None = None) -> tuple[pa.Table, dict]:
    """Generate (x+, x-) for ``premises``; returns the corpus rows cleaning kept and the reject
    counts by reason (rows cleaning rejects, empty, a copy of the premise, meta-text only, ...,
    are dropped here)."""
    rows = generate_triplets(cfg, premises, progress, workdir=workdir, api_key=api_key)
    return _kept_rows_table(rows, source_rows), reject_counts(rows)


def generate_stage(cfg: PipelineConfig, out_path: str | Path, progress: Progress | None = None,
                   workdir: str | Path = ".") -> dict:
    """``multicsr generate``: a premise file in, a generated corpus Parquet out.

    The report adds how decoding ended (``decoding``: mean new tokens per side, the share of sides
    ended by EOS or a stop string) to the premise and reject counts."""
    i = cfg.input
    premise_set = read_premises(i.premises, fmt=i.premises_format, column=i.column, max_chars=i.max_chars, limit=i.limit)
    rows = generate_triplets(cfg, premise_set.premises, progress, workdir=workdir)
    table, rejects = _kept_rows_table(rows, premise_set.source_rows), reject_counts(rows)
    decoding = decoding_summary(rows) if cfg.generation.backend == "local" else None
    prov = make_provenance("generate", config=cfg.to_dict(), config_hash=cfg.config_hash(),
                           generation=generation_identity(cfg), input=str(i.premises),
                           input_stats=premise_set.stats.as_dict(), generation_rejects=rejects)
    write_parquet_atomic(with_provenance(table, prov), out_path)
    report = {"out": str(out_path), "premises": premise_set.stats.as_dict(), "generated": table.num_rows,
              "rejects": rejects}
    if decoding is not None:
        report["decoding"] = decoding
    return report
