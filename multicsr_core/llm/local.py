"""A local Hugging Face LLM for stage-2 scoring: one forward pass per batch, through the cache.

Scoring with ``generate`` decodes token after token and then parses the text. The answer the
paper wants is one of the characters ``0``-``5``, and its first token already decides it, so
:meth:`LocalLM.next_token_distribution` reads the model's next-token distribution over the
score tokens in ONE forward pass:

- encoder-decoder (Flan-T5): the encoder runs on the prompt, the decoder on the start token
  alone; the logits of that first decoder step are the distribution of the first answer token.
- decoder-only (Llama, Qwen, Mistral...): prompts are left-padded, position ids follow the
  attention mask (so padding does not shift positions), and the logits at the last prompt
  position are the distribution of the first answer token. Where the tokenizer has a chat
  template, the prompt is wrapped as one user turn with the generation prompt appended.

Each score string may be produced by more than one token: GPT-style BPE may have both ``3``
and ``Ġ3`` (`` 3``), SentencePiece (T5, Llama-2) both ``▁3`` and the bare piece ``3``. Its
probability is the sum over every single-token spelling: the vocabulary entries ``s``,
``▁s`` and ``Ġs`` and whatever ``s`` and ``" " + s`` encode to when that is one token, each
kept only if it decodes back to ``s`` (after stripping the space), so it is a first token
whose reply the official parser reads as ``s``. Where a score string has no single-token
spelling at all, one forward pass cannot answer, and callers fall back to
:meth:`LocalLM.generate` plus the official parser.

The *mass*, the probability of all these tokens together, says whether the model was going to
answer with a number at all; the scorer calls a pair unparsable below ``min_score_mass``.

Both methods go through the :class:`~multicsr_core.llm.cache.ResponseCache`; the cache key holds
the model name (and revision), the exact prompt and the mode with its parameters, so a
distribution and a generated text for the same prompt are separate items.

Before any forward, each prompt not answered by the cache is measured in tokens as the model
is fed it (chat template applied where used) against :meth:`LocalLM.context_limit`: the
model's ``max_position_embeddings``, less the new tokens in ``generate`` (no limit for an
encoder-decoder model, whose positions are relative). A prompt over it is never run: it comes
back with status ``prompt_too_long`` and the error ``"prompt_too_long: <n> tokens > <limit>"``
(a verdict, scoring/base.py), and that verdict is cached like an answer, so no later run
measures it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import torch

from multicsr_core.llm.cache import FAILED, OK, CacheEntry, ResponseCache, cache_key
from multicsr_core.llm.tokens import PROMPT_TOO_LONG, prompt_too_long_error

log = logging.getLogger(__name__)

DISTRIBUTION_MODE = "next-token-distribution"
GENERATE_MODE = "greedy-generate"

#: ``LocalResult.status`` of a prompt longer than the model's context: never run (a verdict).
TOO_LONG = PROMPT_TOO_LONG

# A prompt: a text (sent as one user turn where there is a chat template) or chat messages.
Prompt = Union[str, Sequence[Mapping[str, str]]]

# Validates a result: returns None if usable, else the error that makes it a failure.
TextValidator = Callable[[str], "str | None"]
DistributionValidator = Callable[[Mapping[str, float], float], "str | None"]


#: Word-start markers of the common subword vocabularies: SentencePiece and byte-level BPE.
WORD_START_MARKERS = ("\u2581", "\u0120")  # "▁", "Ġ"


def candidate_token_ids(tokenizer, candidates: Sequence[str], name: str = "tokenizer") -> dict[str, list[int]] | None:
    """Token ids that spell each candidate on their own, or None if some candidate has none.

    A token spells ``s`` if decoding it alone gives ``s`` up to surrounding whitespace. The
    tokens looked at are the vocabulary entries ``s``, ``▁s`` and ``Ġs`` and the encodings of
    ``s`` and ``" " + s`` when those are a single token (which covers other vocabularies).
    """
    vocab = tokenizer.get_vocab()
    unk = tokenizer.unk_token_id
    found: dict[str, list[int]] = {}
    owners: dict[int, str] = {}
    for candidate in candidates:
        ids: list[int] = []
        looked_at = [vocab.get(marker + candidate) for marker in ("", *WORD_START_MARKERS)]
        for spelling in (candidate, " " + candidate):
            encoded = tokenizer.encode(spelling, add_special_tokens=False)
            if len(encoded) == 1:
                looked_at.append(encoded[0])
        for token_id in looked_at:
            if token_id is None or token_id == unk or token_id in ids:
                continue
            if tokenizer.decode([token_id]).strip() != candidate:
                continue
            if token_id in owners:
                raise ValueError(f"{name}: candidates {owners[token_id]!r} and {candidate!r} share token {token_id}")
            owners[token_id] = candidate
            ids.append(token_id)
        if not ids:
            return None
        found[candidate] = sorted(ids)
    return found


@dataclass(frozen=True)
class LocalResult:
    """One prompt's outcome: a text (generate) or a distribution over candidates (one forward)."""

    status: str  # ok | failed | prompt_too_long (not run: longer than the context; ``error`` says by how much)
    text: str | None = None
    distribution: dict[str, float] | None = None  # candidate -> probability, renormalised over candidates
    mass: float | None = None  # probability the model put on all candidates together, before renormalising
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == OK


class LocalLM:
    """A Hugging Face causal or seq2seq LM, batched, with every result cached.

    Args:
        model, tokenizer: loaded objects (see :meth:`from_pretrained` for loading by id).
        name: the model's identity in cache keys and fingerprints (hub id or path, plus revision).
        cache: where results go; None disables caching (a warning: nothing survives a crash).
        batch_size: prompts per forward pass.
        use_chat_template: wrap prompts in the tokenizer's chat template; None means "if it has one"
            (never for encoder-decoder models).
        source: what identifies the weights beyond ``name`` (``models.model_provenance``: a GGUF
            file's name and sha256); part of fingerprints and cache keys.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        name: str,
        cache: ResponseCache | None = None,
        batch_size: int = 16,
        use_chat_template: bool | None = None,
        source: dict | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.source = dict(source or {})
        self.cache = cache
        self.batch_size = batch_size
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template and (self.is_seq2seq or not has_template):
            raise ValueError(f"{name}: use_chat_template=True but the tokenizer has no chat template "
                             "(or the model is encoder-decoder)")
        self.use_chat_template = has_template and not self.is_seq2seq if use_chat_template is None else use_chat_template
        if not self.is_seq2seq:
            tokenizer.padding_side = "left"  # the last position must be the prompt's last token
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(f"{name}: the tokenizer has neither a pad nor an eos token to pad batches with")
            tokenizer.pad_token = tokenizer.eos_token
        if cache is None:
            log.warning("%s: no response cache; results will not survive a crash", name)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        revision: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        cache: ResponseCache | None = None,
        **kwargs,
    ) -> "LocalLM":
        """Load a hub id, local folder, GGUF file or ``bundled:`` model (seq2seq if its config says
        encoder-decoder)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from multicsr_core.models import model_provenance, resolve_model_ref

        folder = resolve_model_ref(model_id)
        config = AutoConfig.from_pretrained(folder, revision=revision)
        model_class = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        model = model_class.from_pretrained(folder, revision=revision, dtype=getattr(torch, dtype)).to(device)
        tokenizer = AutoTokenizer.from_pretrained(folder, revision=revision)
        name = f"{model_id}@{revision}" if revision else model_id
        return cls(model, tokenizer, name=name, cache=cache, source=model_provenance(model_id), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> str:
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def fingerprint(self) -> dict:
        return {"model": self.name, **self.source, "dtype": self.dtype, "chat_template": self.use_chat_template}

    # -- tokens ------------------------------------------------------------------------
    def candidate_token_ids(self, candidates: Sequence[str]) -> dict[str, list[int]] | None:
        """Every single-token spelling of each candidate (module docstring); None if one has none."""
        return candidate_token_ids(self.tokenizer, candidates, self.name)

    def _model_input(self, prompts: Sequence[Prompt]) -> list[str]:
        """A prompt is a text (one user turn) or a list of chat messages (a few-shot exchange)."""
        if not self.use_chat_template:
            if any(not isinstance(p, str) for p in prompts):
                raise ValueError(f"{self.name}: chat-message prompts need a chat template; pass text")
            return list(prompts)
        return [
            self.tokenizer.apply_chat_template([{"role": "user", "content": p}] if isinstance(p, str) else list(p),
                                               tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]

    def _encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        # A chat template already holds the special tokens; adding them again would double BOS.
        batch = self.tokenizer(self._model_input(prompts), return_tensors="pt", padding=True,
                               add_special_tokens=not self.use_chat_template)
        return {name: batch[name].to(self.device) for name in ("input_ids", "attention_mask")}

    def context_limit(self, new_tokens: int = 0) -> int | None:
        """The most prompt tokens the model takes with ``new_tokens`` more: its config's
        ``max_position_embeddings`` less ``new_tokens`` (stage 1's ``context_limit``); None for an
        encoder-decoder model or a config with no absolute limit."""
        from multicsr_core.generation.engine import context_limit

        return context_limit(self.model, new_tokens)

    def prompt_tokens(self, prompts: Sequence[Prompt]) -> list[int]:
        """Each prompt's length in tokens as the model is fed it (chat template applied where used)."""
        texts = self._model_input(prompts)
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=not self.use_chat_template)["input_ids"]
        return [len(row) for row in ids]

    def over_long(self, prompts: Sequence[Prompt], limit: int | None) -> dict[int, int]:
        """{index: tokens} of the prompts longer than ``limit`` tokens as fed (None: no limit).

        Byte-level vocabularies give at most one token per UTF-8 byte (SentencePiece with byte
        fallback too, plus a word-start piece), and a chat template adds a few dozen: a prompt of
        no more bytes than half the limit fits without being templated and tokenized.
        """
        if limit is None:
            return {}
        size = [len(p.encode("utf-8")) if isinstance(p, str) else
                sum(len(str(m.get("content", "")).encode("utf-8")) for m in p) for p in prompts]
        candidates = [i for i, n in enumerate(size) if n > limit // 2]
        tokens = self.prompt_tokens([prompts[i] for i in candidates])
        return {i: n for i, n in zip(candidates, tokens) if n > limit}

    def _batches(self, prompts: Sequence[str]) -> list[list[int]]:
        """Indices grouped into batches of similar length (less padding), longest first."""
        length = [len(p) if isinstance(p, str) else sum(len(m["content"]) for m in p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -length[i])
        return [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    # -- one forward -------------------------------------------------------------------
    @torch.inference_mode()
    def first_token_logits(self, prompts: Sequence[str]) -> torch.Tensor:
        """Logits of the first answer token for each prompt, one forward pass: [len(prompts), vocab]."""
        batch = self._encode(prompts)
        if self.is_seq2seq:
            start = self.model.config.decoder_start_token_id
            if start is None:
                raise ValueError(f"{self.name}: config has no decoder_start_token_id")
            decoder_input_ids = torch.full((len(prompts), 1), start, dtype=torch.long, device=self.device)
            logits = self.model(**batch, decoder_input_ids=decoder_input_ids, use_cache=False).logits
            return logits[:, 0, :].float()
        # Left padding: positions count real tokens only, as generate() does.
        position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits = self.model(**batch, position_ids=position_ids, use_cache=False, logits_to_keep=1).logits
        return logits[:, -1, :].float()

    def _key(self, prompt: str, params: Mapping) -> str:
        return cache_key(self.name, prompt, {**params, "dtype": self.dtype, "chat_template": self.use_chat_template,
                                             **self.source})

    def _cached(self, keys: Sequence[str]) -> dict:
        if self.cache is None:
            return {}
        return {key: row for key, row in self.cache.get_many(keys).items() if row.ok}

    def _store(self, entries: list[CacheEntry]) -> None:
        if self.cache is not None:
            self.cache.put_many(entries)

    def next_token_distribution(
        self,
        prompts: Sequence[str],
        candidates: Sequence[str],
        *,
        validate: DistributionValidator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[LocalResult]:
        """The next-token probability of each candidate string, renormalised over the candidates.

        Each result also holds ``mass``, the probability of all candidate tokens together before
        renormalising. ``validate`` may turn a result into a failure (stored as failed, computed
        again by the next run); scorers do not use it for low mass, which is a verdict (see
        :mod:`multicsr_core.scoring.base`). A prompt longer than ``max_position_embeddings``
        tokens is not run (status ``prompt_too_long``). Raises ValueError if a candidate has no
        single-token spelling (use :meth:`generate`).
        """
        token_ids = self.candidate_token_ids(candidates)
        if token_ids is None:
            raise ValueError(f"{self.name}: not every candidate in {list(candidates)} is a single token; "
                             "score with generate + parse instead")
        # The spellings enter the key: a distribution summed over other tokens is another answer.
        params = {"mode": DISTRIBUTION_MODE, "candidates": list(candidates), "spellings": token_ids}
        return self._run(prompts, params, lambda idx: self._distribution_batch(prompts, idx, token_ids, validate),
                         progress, self.context_limit(0))

    def _distribution_batch(self, prompts, indices, token_ids, validate) -> list[tuple[str, dict, str | None, str | None]]:
        probs = torch.softmax(self.first_token_logits([prompts[i] for i in indices]), dim=-1)
        rows = []
        for row in probs:
            raw = {candidate: float(row[ids].sum()) for candidate, ids in token_ids.items()}
            mass = sum(raw.values())
            distribution = {candidate: p / mass for candidate, p in raw.items()} if mass > 0 else raw
            error = validate(distribution, mass) if validate is not None else None
            rows.append((OK if error is None else FAILED, {"distribution": distribution, "mass": mass}, None, error))
        return rows

    # -- generate ----------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 8,
        validate: TextValidator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[LocalResult]:
        """Greedy ``model.generate`` per batch; the decoded reply of each prompt (cached). A prompt
        that leaves no room for ``max_new_tokens`` in the context is not run (``prompt_too_long``)."""
        params = {"mode": GENERATE_MODE, "max_new_tokens": max_new_tokens}
        return self._run(prompts, params, lambda idx: self._generate_batch(prompts, idx, max_new_tokens, validate),
                         progress, self.context_limit(max_new_tokens))

    @torch.inference_mode()
    def _generate_batch(self, prompts, indices, max_new_tokens, validate) -> list:
        batch = self._encode([prompts[i] for i in indices])
        output = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=self.tokenizer.pad_token_id)
        if not self.is_seq2seq:
            output = output[:, batch["input_ids"].shape[1] :]
        rows = []
        for text in self.tokenizer.batch_decode(output, skip_special_tokens=True):
            error = validate(text) if validate is not None else None
            rows.append((OK if error is None else FAILED, {"text": text}, text, error))
        return rows

    # -- shared batching and caching ---------------------------------------------------
    def _run(self, prompts, params, compute, progress, limit: int | None = None) -> list[LocalResult]:
        keys = [self._key(prompt, params) for prompt in prompts]
        cached = self._cached(keys)
        results: list[LocalResult | None] = [None] * len(prompts)
        todo: dict[str, int] = {}  # first index of each distinct uncached prompt
        for index, key in enumerate(keys):
            if key in cached:
                results[index] = self._result(cached[key].status, cached[key].response, cached[key].error, True)
            else:
                todo.setdefault(key, index)
        done = len(prompts) - len(todo)
        if progress is not None:
            progress(done, len(prompts))
        unique = list(todo.values())
        # measured before any forward: a prompt over the context is a verdict, cached, never run
        over = self.over_long([prompts[i] for i in unique], limit)
        if over:
            log.warning("%s: %d of %d prompts are longer than its context allows (%d tokens): rejected as %s, "
                        "not run", self.name, len(over), len(unique), limit, PROMPT_TOO_LONG)
            entries = []
            for j, tokens in over.items():
                index = unique[j]
                response = {PROMPT_TOO_LONG: {"tokens": tokens, "limit": limit}}
                results[index] = self._result(OK, response, None, False)
                entries.append(CacheEntry(keys[index], self.name, {"prompt": prompts[index], "params": params}, OK,
                                          response=response, error=results[index].error))
            self._store(entries)
            done += len(over)
            if progress is not None:
                progress(done, len(prompts))
            unique = [index for j, index in enumerate(unique) if j not in over]
        for batch in self._batches([prompts[i] for i in unique]):
            indices = [unique[j] for j in batch]
            rows = compute(indices)
            entries = []
            for index, (status, response, raw, error) in zip(indices, rows):
                results[index] = self._result(status, response, error, False)
                entries.append(CacheEntry(keys[index], self.name, {"prompt": prompts[index], "params": params},
                                          status, response=response, raw=raw, error=error))
            self._store(entries)  # one committed transaction per batch
            done += len(indices)
            if progress is not None:
                progress(done, len(prompts))
        # duplicates of a prompt share its result
        for index, key in enumerate(keys):
            if results[index] is None:
                results[index] = results[todo[key]]
        if progress is not None and done != len(prompts):
            progress(len(prompts), len(prompts))
        return results  # type: ignore[return-value]

    @staticmethod
    def _result(status: str, response: dict | None, error: str | None, cached: bool) -> LocalResult:
        response = response or {}
        if PROMPT_TOO_LONG in response:  # the verdict on a prompt over the context (stored ok: final)
            measured = response[PROMPT_TOO_LONG]
            return LocalResult(TOO_LONG, error=prompt_too_long_error(measured["tokens"], measured["limit"]),
                               cached=cached)
        return LocalResult(status, text=response.get("text"), distribution=response.get("distribution"),
                           mass=response.get("mass"), error=error, cached=cached)
