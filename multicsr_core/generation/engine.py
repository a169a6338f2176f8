"""Stage 1 of MultiCSR: text in, text out, around the contrastive decoding loop.

``generate_contrastive`` writes, for each premise x, an entailment x+ (intended: the entailment
prompt; opposite: the contradiction prompt) and a contradiction x- (the other way round). Both
directions of a premise run in the same batch, so for encoder-decoder models each prompt is
encoded once and serves as intended input of one direction and opposite input of the other.

Batching: premises are sorted by the token length of their longer prompt (less the prefix it shares
with many other prompts, which decoder-only models prefill once per call) and cut into batches of
``batch_size`` premises (2 * batch_size sequences, 4 * batch_size model rows when w != 0);
results come back in input order. A premise's output does not depend on its batch-mates:
padding is masked, and sampling draws from a generator seeded by (seed, the premise's prompts).

Chat templates: with ``use_chat_template=True`` and a tokenizer that has one, each prompt is sent
as one user message with the generation prompt appended; ``*_prompt`` in the output is then the
templated text, i.e. exactly the text that was tokenized.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..prompts import GenerationPrompts, PromptSet, resolve_prompt_set
from .cleaning import clean_generation
from .decoding import SharedPrefixCache, SpecialTokens, contrastive_decode, special_token_ids
from .processors import row_seed
from .settings import DecodingSettings

__all__ = [
    "ENGINE_VERSION",
    "GeneratedText",
    "GeneratedTriplet",
    "load_generator",
    "resolve_dtype",
    "encode_prompt",
    "length_buckets",
    "generate_texts",
    "generate_contrastive",
    "reject_counts",
    "decoding_summary",
    "generation_funnel",
    "generation_fingerprint",
]

#: Bump when a change of this package changes generated text for the same inputs (cache keys).
ENGINE_VERSION = "2"  # 2: cleaning extracts the sentence from chat-model meta-text (cleaning.py)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16") from None


def load_generator(
    model_id_or_path: str | Path,
    revision: str | None = None,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
):
    """Load a generator LLM and its tokenizer with ``from_pretrained`` (hub id or local folder).

    The architecture is picked from the config: ``AutoModelForSeq2SeqLM`` for encoder-decoder
    models (Flan-T5), ``AutoModelForCausalLM`` otherwise. ``device="auto"`` means CUDA when
    available. Returns ``(model, tokenizer)`` with the model in eval mode.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    source = str(model_id_or_path)
    config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = model_class.from_pretrained(
        source, revision=revision, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code
    )
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    return model, tokenizer


def encode_prompt(tokenizer, prompt: str, use_chat_template: bool = True) -> tuple[list[int], str]:
    """Token ids and the exact text they came from (the chat-templated text when one applies)."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        # the template already holds BOS and role markers
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]), text
    return list(tokenizer(prompt)["input_ids"]), prompt


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (longest first, ties in input order) cut into batches.

    Longest first so that a batch too large for the device fails at once, not hours in.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _stop_token_ids(tokenizer, stop_strings: Sequence[str]) -> list[int]:
    """Tokens whose text contains a stop string (stop strings must fit in one token to stop early)."""
    if not stop_strings:
        return []
    vocab_size = len(tokenizer)
    texts = tokenizer.batch_decode([[v] for v in range(vocab_size)], skip_special_tokens=True)
    return [v for v, t in enumerate(texts) if any(s in t for s in stop_strings)]


@dataclass(frozen=True)
class GeneratedText:
    prompt: str  # the exact text fed to the model for the intended branch
    text: str  # decoded output, cut at the first stop string
    num_tokens: int  # generated tokens, EOS not counted
    finished: bool  # ended by EOS or a stop string (False: hit max_new_tokens)


def _special_tokens(model, tokenizer, stop_strings: Sequence[str]) -> SpecialTokens:
    eos_ids, pad_id, start_id = special_token_ids(model, tokenizer)
    stop_ids = [v for v in _stop_token_ids(tokenizer, stop_strings) if v not in eos_ids]
    return SpecialTokens(eos_ids, pad_id, start_id, stop_ids)


def _group_lengths(intended_enc: list, opposite_enc: list | None, group_size: int,
                   prefixes: SharedPrefixCache | None) -> list[int]:
    """The longest prompt (either branch) of each group of ``group_size`` consecutive items, less its
    shared prefix where ``prefixes`` prefills that once: the rest is what a batch pads and runs."""
    def own(ids: list[int]) -> int:
        return len(ids) - (prefixes.split(ids) if prefixes is not None else 0)

    group_lengths = []
    for g in range(len(intended_enc) // group_size):
        members = range(g * group_size, (g + 1) * group_size)
        group_lengths.append(
            max(max(own(intended_enc[i][0]), own(opposite_enc[i][0]) if opposite_enc is not None else 0)
                for i in members)
        )
    return group_lengths


def _generated_text(tokenizer, prompt: str, ids: list[int], settings: DecodingSettings,
                    special: SpecialTokens) -> GeneratedText:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for stop in settings.stop_strings:
        text = text.split(stop, 1)[0]
    finished = len(ids) < settings.max_new_tokens or (bool(ids) and ids[-1] in special.stop_token_ids)
    return GeneratedText(prompt, text, len(ids), finished)


def _generate(
    model,
    tokenizer,
    intended: Sequence[str],
    opposite: Sequence[str] | None,
    keys: Sequence[str],
    group_size: int,
    settings: DecodingSettings,
    progress: ProgressCallback | None,
) -> list[GeneratedText]:
    """Decode ``intended[i]`` against ``opposite[i]``; consecutive groups of ``group_size`` items
    stay in one batch of ``settings.batch_size`` groups."""
    contrast = settings.omega != 0
    intended_enc = [encode_prompt(tokenizer, p, settings.use_chat_template) for p in intended]
    opposite_enc = [encode_prompt(tokenizer, p, settings.use_chat_template) for p in opposite] if contrast else None
    special = _special_tokens(model, tokenizer, settings.stop_strings)
    # the prompt prefixes that many prompts share (system turn + instruction, a few-shot header) are
    # prefilled once for the whole call, not once per batch
    prefixes = None if model.config.is_encoder_decoder else SharedPrefixCache(
        model, [ids for ids, _ in intended_enc + (opposite_enc or [])], special.pad_token_id, settings.max_new_tokens)
    group_lengths = _group_lengths(intended_enc, opposite_enc, group_size, prefixes)
    n_groups = len(group_lengths)

    results: list[GeneratedText | None] = [None] * len(intended)
    done = 0
    if progress is not None:
        progress(0, n_groups)
    for batch in length_buckets(group_lengths, settings.batch_size):
        items = [i for g in batch for i in range(g * group_size, (g + 1) * group_size)]
        new_ids = contrastive_decode(
            model,
            [intended_enc[i][0] for i in items],
            [opposite_enc[i][0] for i in items] if contrast else None,
            settings,
            special,
            row_seeds=[row_seed(settings.seed, keys[i]) for i in items] if settings.do_sample else None,
            prefixes=prefixes,
        )
        for i, ids in zip(items, new_ids):
            results[i] = _generated_text(tokenizer, intended_enc[i][1], ids, settings, special)
        done += len(batch)
        if progress is not None:
            progress(done, n_groups)
    return results  # type: ignore[return-value]


def generate_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    opposite_prompts: Sequence[str] | None = None,
    settings: DecodingSettings = DecodingSettings(omega=0.0, batch_size=32),
    *,
    sample_keys: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
) -> list[GeneratedText]:
    """One output per prompt, in input order, decoded as ``settings`` say (default: plain decoding);
    contrasted with ``opposite_prompts[i]`` when ``settings.omega != 0``.

    ``sample_keys[i]`` (default: the prompt pair) names prompt i's random stream when sampling,
    so two equal prompts that must differ need different keys. ``settings.stop_strings`` end a
    sequence when a generated token contains one, and the text is cut at its first occurrence.
    ``progress(n_done, n_total)`` is called after each batch, counting prompts.
    """
    if settings.omega != 0 and opposite_prompts is None:
        raise ValueError("omega != 0 needs opposite prompts")
    if opposite_prompts is not None and len(opposite_prompts) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(opposite_prompts)} opposite prompts")
    if sample_keys is None:
        sample_keys = [f"{p}\x00{opposite_prompts[i] if opposite_prompts else ''}" for i, p in enumerate(prompts)]
    elif len(sample_keys) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(sample_keys)} sample keys")
    return _generate(model, tokenizer, list(prompts), list(opposite_prompts) if opposite_prompts is not None else None,
                     list(sample_keys), 1, settings, progress)


@dataclass(frozen=True)
class GeneratedTriplet:
    """One premise with its generated entailment and contradiction (one row of stage 1's output)."""

    premise: str
    entailment: str  # cleaned text ("" when empty)
    contradiction: str
    entailment_prompt: str  # exact text fed to the model to write the entailment
    contradiction_prompt: str  # ... the contradiction (each is the other's opposite instruction)
    entailment_prompt_id: str
    contradiction_prompt_id: str
    entailment_raw: str  # decoded output before cleaning
    contradiction_raw: str
    reject_reason: str | None  # None if both sides are usable, else e.g. "entailment:empty"
    entailment_finished: bool = True  # ended by EOS or a stop string (False: cut at max_new_tokens)
    contradiction_finished: bool = True
    entailment_new_tokens: int = 0  # tokens decoded (EOS not counted)
    contradiction_new_tokens: int = 0

    @property
    def kept(self) -> bool:
        return self.reject_reason is None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def generate_contrastive(
    model,
    tokenizer,
    prompts: Sequence[GenerationPrompts],
    settings: DecodingSettings = DecodingSettings(),
    progress: ProgressCallback | None = None,
) -> list[GeneratedTriplet]:
    """Stage 1: an entailment and a contradiction per premise by contrastive decoding (paper 3.1),
    decoded as ``settings`` say (``DecodingSettings``: w, lengths, greedy or sampling, stop strings;
    ``settings.batch_size`` counts premises).

    ``progress(n_done, n_total)`` counts premises, called after each batch. Outputs are cleaned
    with ``clean_generation``; rejected rows are returned with ``reject_reason`` set (see
    ``reject_counts``), never silently dropped. ``stop_strings`` (a prompt set's, e.g. the
    closing quote of a base model's 2-shot answer) end a side's decoding at the first token that
    holds one; its text is cut at the first of them. A premise whose prompt does not fit the
    model's context with ``max_new_tokens`` more (``context_limit``) is not decoded: it comes back
    rejected as ``prompt_too_long`` on the side(s) whose prompt is too long.
    """
    prompts = list(prompts)
    max_new_tokens = settings.max_new_tokens
    over = _over_long_sides(tokenizer, prompts, context_limit(model, max_new_tokens), settings.use_chat_template)
    if over:
        log.warning("%d of %d premises have a prompt longer than %s's context allows (%s tokens with %d new): "
                    "rejected as prompt_too_long, not decoded", len(over), len(prompts),
                    getattr(model.config, "_name_or_path", "the model"), context_limit(model, max_new_tokens),
                    max_new_tokens)
    decoded = _decode_triplets(model, tokenizer, [p for k, p in enumerate(prompts) if k not in over], settings,
                               progress)
    rows = []
    for k, p in enumerate(prompts):
        if k in over:
            rows.append(GeneratedTriplet(p.premise, "", "", p.entailment_prompt, p.contradiction_prompt,
                                         p.entailment_prompt_id, p.contradiction_prompt_id, "", "",
                                         ";".join(f"{side}:{REJECT_PROMPT_TOO_LONG}" for side in over[k]),
                                         entailment_finished=False, contradiction_finished=False))
        else:
            rows.append(next(decoded))
    return rows


#: Reject reason of a premise whose prompt does not fit the model's context with the new tokens.
REJECT_PROMPT_TOO_LONG = "prompt_too_long"


def context_limit(model, max_new_tokens: int) -> int | None:
    """The most prompt tokens a decoder-only model can take with ``max_new_tokens`` more
    (``max_position_embeddings`` of its config); None where the config sets no absolute limit
    (T5's relative positions)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if model.config.is_encoder_decoder or not positions:
        return None
    return int(positions) - int(max_new_tokens)


def _over_long_sides(tokenizer, prompts: Sequence[GenerationPrompts], limit: int | None,
                     use_chat_template: bool) -> dict[int, list[str]]:
    """{premise index: the sides whose prompt is longer than ``limit`` tokens} (measured as fed)."""
    if limit is None:
        return {}
    over: dict[int, list[str]] = {}
    for k, p in enumerate(prompts):
        # byte-level tokenizers give at most one token per UTF-8 byte (plus the template's few):
        # a prompt of fewer bytes than half the limit fits without running the tokenizer
        sides = [side for side, text in (("entailment", p.entailment_prompt), ("contradiction", p.contradiction_prompt))
                 if len(text.encode("utf-8")) > limit // 2
                 and len(encode_prompt(tokenizer, text, use_chat_template)[0]) > limit]
        if sides:
            over[k] = sides
    return over


def _decode_triplets(model, tokenizer, prompts: Sequence[GenerationPrompts], settings: DecodingSettings,
                     progress: ProgressCallback | None):
    """Decode and clean both sides of every premise; yields one ``GeneratedTriplet`` per premise."""
    intended, opposite, keys = [], [], []
    for p in prompts:
        intended += [p.entailment_prompt, p.contradiction_prompt]
        opposite += [p.contradiction_prompt, p.entailment_prompt]
        keys += [f"entailment\x00{p.entailment_prompt}\x00{p.contradiction_prompt}",
                 f"contradiction\x00{p.contradiction_prompt}\x00{p.entailment_prompt}"]
    outputs = _generate(model, tokenizer, intended, opposite, keys, 2, settings, progress)
    for k, p in enumerate(prompts):
        ent, con = outputs[2 * k], outputs[2 * k + 1]
        # not finished=...: tiny random test models always hit max_new_tokens mid-"sentence", and a
        # length cut is no verdict on the text by itself (the truncated rule still catches open quotes)
        ent_clean, con_clean = clean_generation(ent.text, p.premise), clean_generation(con.text, p.premise)
        reasons = [f"{side}:{c.reject_reason}" for side, c in (("entailment", ent_clean), ("contradiction", con_clean))
                   if c.reject_reason]
        yield (
            GeneratedTriplet(
                premise=p.premise,
                entailment=ent_clean.text,
                contradiction=con_clean.text,
                entailment_prompt=ent.prompt,
                contradiction_prompt=con.prompt,
                entailment_prompt_id=p.entailment_prompt_id,
                contradiction_prompt_id=p.contradiction_prompt_id,
                entailment_raw=ent.text,
                contradiction_raw=con.text,
                reject_reason=";".join(reasons) or None,
                entailment_finished=ent.finished,
                contradiction_finished=con.finished,
                entailment_new_tokens=ent.num_tokens,
                contradiction_new_tokens=con.num_tokens,
            )
        )


def decoding_summary(rows: Sequence[GeneratedTriplet]) -> dict:
    """How decoding ended over both sides of every row: the mean new tokens per side and the share
    of sides that ended by EOS or a stop string (the rest ran to ``max_new_tokens``)."""
    sides = [(r.entailment_new_tokens, r.entailment_finished) for r in rows] + \
            [(r.contradiction_new_tokens, r.contradiction_finished) for r in rows]
    if not sides:
        return {"sides": 0, "mean_new_tokens": 0.0, "finished_share": 0.0}
    return {"sides": len(sides), "mean_new_tokens": round(sum(n for n, _ in sides) / len(sides), 2),
            "finished_share": round(sum(1 for _, f in sides if f) / len(sides), 4)}


def reject_counts(rows: Sequence[GeneratedTriplet]) -> dict[str, int]:
    """{"kept": n, "entailment:empty": n, "contradiction:copy_of_premise": n, ...} over the rows.

    A row rejected for both sides counts under each reason once; "rejected" counts rows.
    """
    counts: Counter[str] = Counter(kept=0, rejected=0)
    for row in rows:
        if row.kept:
            counts["kept"] += 1
        else:
            counts["rejected"] += 1
            counts.update(row.reject_reason.split(";"))
    return dict(counts)


def generation_funnel(rejects: dict[str, int]) -> dict[str, int]:
    """The stage-1 head of the curation funnel, from ``reject_counts`` (summed over shards).

    ``{"premises": n, "generation_rejected": m, "generation_rejected:entailment:meta_only": k, ...}``:
    the premises that went in, the rows cleaning rejected, and each side's reason (a row rejected
    on both sides counts under each). The generated rows that stay are the curation funnel's
    ``total``.
    """
    if not rejects:
        return {}
    funnel = {"premises": rejects.get("kept", 0) + rejects.get("rejected", 0),
              "generation_rejected": rejects.get("rejected", 0)}
    funnel.update({f"generation_rejected:{k}": v for k, v in sorted(rejects.items()) if k not in ("kept", "rejected")})
    return funnel


def _prompt_set_digest(prompt_set: PromptSet) -> str:
    fields = {"entailment": prompt_set.entailment, "contradiction": prompt_set.contradiction,
              "template": prompt_set.template}
    if prompt_set.stop_strings:  # only when set: the digests of sets without them stay as they were
        fields["stop_strings"] = list(prompt_set.stop_strings)
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def generation_fingerprint(
    model_id_or_path: str | Path,
    revision: str | None = None,
    settings: DecodingSettings = DecodingSettings(),
    *,
    prompt_set: str | PromptSet = "syncse-pool",
    template: str | None = None,
    prompt_file: str | Path | None = None,
    dtype: str | torch.dtype = "float32",
) -> dict:
    """Everything that determines stage 1's output for a given premise, as a JSON-able dict.

    Use it (plus the batch's premises) as a cache key. The decoding part is
    ``settings.fingerprint()``: every field that changes the output, the sampling ones only when
    sampling (so changing them under greedy decoding keeps the cache); batch size is not part of it
    (outputs do not depend on batch-mates). The prompt set is recorded by name and by a digest of its
    pools, template and stop strings (so an edited prompt file changes the key). ``versions`` holds
    the engine and library versions; numerics can change with them.
    """
    import transformers

    resolved = resolve_prompt_set(prompt_set, template=template, prompt_file=prompt_file)
    return {
        "model": str(model_id_or_path),
        "revision": revision,
        "dtype": str(resolve_dtype(dtype)).replace("torch.", ""),
        **settings.fingerprint(),
        "prompt_set": resolved.name,
        "prompt_set_sha256": _prompt_set_digest(resolved),
        "versions": {"engine": ENGINE_VERSION, "transformers": transformers.__version__, "torch": torch.__version__},
    }
