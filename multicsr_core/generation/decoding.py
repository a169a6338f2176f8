"""The contrastive decoding loop over token ids, for encoder-decoder and decoder-only models.

One batch of N sequences is decoded with 2N model rows stacked as ``[intended; opposite]``; each
step is ONE forward over those rows with the KV cache (transformers 5 ``DynamicCache`` /
``EncoderDecoderCache``), the next token comes from ``l - w * l_hat`` on the raw logits
(``ContrastiveLogitsProcessor``) and is appended to both branches of its sequence. With
``omega == 0`` the opposite rows are not run at all: that is plain decoding, and it matches
``model.generate`` greedy token for token.

- Encoder-decoder (T5): the encoder runs once, on the batch's distinct prompts (a premise's
  entailment prompt is the intended input of x+ and the opposite input of x-, so it is encoded
  once); the decoder starts from ``decoder_start_token_id``.
- Decoder-only: left padding, an attention mask, and position ids ``cumsum(mask) - 1`` (as
  ``generate`` builds them), then one token per step.
- A sequence stops at its first EOS (or stop token); finished sequences are dropped from the
  batch (cache rows included) once they make up an eighth of it, which saves work when output
  lengths differ and does not change any other row's tokens.

This module knows nothing of prompts or text; ``engine.py`` tokenizes and batches.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from .processors import ContrastiveLogitsProcessor, TokenSelector
from .settings import DecodingSettings, build_logits_processors


__all__ = ["contrastive_decode", "SpecialTokens", "special_token_ids", "model_rows", "shared_prefix_lengths",
           "cheapest_prefix_lengths", "SharedPrefixCache", "Seq2SeqRows", "DecoderOnlyRows"]


def _first_set(name: str, *sources):
    """The first non-None ``name`` attribute among ``sources`` (None sources skipped)."""
    for source in sources:
        value = getattr(source, name, None) if source is not None else None
        if value is not None:
            return value
    return None


def special_token_ids(model, tokenizer=None) -> tuple[list[int], int, int | None]:
    """(eos ids, pad id, decoder start id), looked up in the generation config, the model config,
    then the tokenizer."""
    sources = (getattr(model, "generation_config", None), model.config, tokenizer)
    eos = _first_set("eos_token_id", *sources)
    if eos is None:
        raise ValueError("the model defines no eos_token_id (generation_config, config or tokenizer)")
    eos_ids = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
    pad = _first_set("pad_token_id", *sources)
    if isinstance(pad, (list, tuple)):
        pad = pad[0]
    # no pad token is common for decoder-only models: padded positions are masked, any id will do
    pad = eos_ids[0] if pad is None else int(pad)
    start = _first_set("decoder_start_token_id", *sources[:2])
    if model.config.is_encoder_decoder and start is None:
        raise ValueError("encoder-decoder model without decoder_start_token_id")
    return eos_ids, pad, start


def _pad(rows: Sequence[Sequence[int]], pad_id: int, left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        else:
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


class Seq2SeqRows:
    """Encoder once on distinct prompts; decoder rows share its outputs through an index."""

    def __init__(self, model, rows: Sequence[Sequence[int]], pad_id: int, start_id: int):
        self.model = model
        device = model.device
        distinct: dict[tuple[int, ...], int] = {}
        row_to_distinct = [distinct.setdefault(tuple(r), len(distinct)) for r in rows]
        ids, mask = _pad(list(distinct), pad_id, left=False, device=device)
        hidden = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        index = torch.tensor(row_to_distinct, device=device)
        self.hidden = hidden.index_select(0, index)
        self.mask = mask.index_select(0, index)
        self.cache = EncoderDecoderCache(DynamicCache(config=model.config), DynamicCache(config=model.config))
        self.first_tokens = torch.full((len(rows),), start_id, dtype=torch.long, device=device)
        self.cache_kwarg = _cache_kwarg(model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=self.hidden),
            attention_mask=self.mask,
            decoder_input_ids=tokens[:, None],
            use_cache=True,
            **{self.cache_kwarg: self.cache},
        )
        return out.logits[:, -1]

    def first_logits(self) -> torch.Tensor:
        return self.forward(self.first_tokens)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.hidden = self.hidden.index_select(0, rows)
        self.mask = self.mask.index_select(0, rows)


#: Shortest token prefix worth sharing between prompts (below it the bookkeeping costs more than it saves).
MIN_SHARED_PREFIX = 8



def shared_prefix_lengths(prompts: Sequence[Sequence[int]], min_length: int = MIN_SHARED_PREFIX,
                          min_prompts: int = 2) -> list[int]:
    """For each prompt, the longest token prefix that at least ``min_prompts`` prompts (itself included)
    start with (0 if under ``min_length``), always leaving at least one token of its own.

    Sorted, the prompts starting with one prefix are consecutive, so a prompt's answer is the best
    common prefix of a run of ``min_prompts`` consecutive sorted prompts that holds it. Stage 1's
    prompts share the chat template's system turn, and each instruction of the pool (or each
    few-shot header) is shared by every premise that drew it."""
    order = sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
    # common[k]: the common prefix length of sorted neighbours k and k + 1
    common = []
    for left, right in zip(order, order[1:]):
        a, b = prompts[left], prompts[right]
        n, limit = 0, min(len(a), len(b))
        while n < limit and a[n] == b[n]:
            n += 1
        common.append(n)
    span = max(min_prompts, 2) - 1  # neighbour pairs in a run of min_prompts prompts
    # run[f]: the common prefix of the run of sorted prompts f .. f + span (the least of its pairs);
    # a prompt's answer is the best run that holds it. Both are sliding windows: linear in the prompts,
    # whatever min_prompts is (a shard of thousands of prompts asks for runs of all of them).
    run = _sliding(common, span, min)
    best = _sliding([0] * span + run + [0] * span, span + 1, max) if run else []
    shared = [0] * len(prompts)
    for position, index in enumerate(order[:len(best)]):  # no run of min_prompts prompts: all stay 0
        shared[index] = best[position]
    return [min(n, len(p) - 1) if n >= min_length else 0 for n, p in zip(shared, prompts)]


def _sliding(values: Sequence[int], width: int, pick) -> list[int]:
    """``pick`` (``min`` or ``max``) of every window of ``width`` consecutive ``values``, in one pass (a
    deque of the indices that can still be picked, the pick at its head)."""
    window: deque[int] = deque()
    out = []
    for i, value in enumerate(values):
        while window and pick(values[window[-1]], value) == value:  # the newer value is as good: drop the older
            window.pop()
        window.append(i)
        if window[0] <= i - width:
            window.popleft()
        if i >= width - 1:
            out.append(values[window[0]])
    return out


def cheapest_prefix_lengths(prompts: Sequence[Sequence[int]], min_length: int = MIN_SHARED_PREFIX) -> list[int]:
    """For each prompt, the shared prefix that makes the prefill cheapest. Candidates are the longest
    prefixes shared by 2, 4, 8, ... and all prompts, from the shallowest (shared by most) down: the first is
    always worth it (computed once instead of once per prompt); a deeper one of n tokens, shared by k
    prompts, is computed again whole, so it is taken only when it saves more than it costs:
    k * (n - current) > n. A premise's first words ("A man is", 3 tokens) deepen a 58-token
    instruction prefix only for some 20 prompts or more."""
    sizes = [2 ** e for e in range(1, max(len(prompts), 1).bit_length()) if 2 ** e < len(prompts)]
    candidates = [(k, shared_prefix_lengths(prompts, min_length, k)) for k in sizes + [len(prompts)]]
    chosen = [0] * len(prompts)
    for k, lengths in reversed(candidates):  # shared by the most prompts first
        for i, n in enumerate(lengths):
            if n > chosen[i] and (chosen[i] == 0 or k * (n - chosen[i]) > n):
                chosen[i] = n
    return chosen


class SharedPrefixCache:
    """Keys and values of the token prefixes that many prompts of one stage-1 call share, each computed
    once and reused by every batch that holds a prompt starting with it.

    Stage 1's prompts are mostly shared text: SmolLM2's chat prompts are ~80 tokens, ~55 of them the
    system turn and one of the pool's instructions; a base model's few-shot header is longer still.
    Prefilling only each prompt's rest on top of its prefix's cached keys and values cuts the prefill,
    most of stage 1's work, by that share. A prefix's tensors are freed after the last batch that uses
    it. Keys and values are those of the unpadded prefix at positions 0..n-1 (rotary embeddings are
    applied before caching), so the tokens are those of each prompt decoded alone."""

    def __init__(self, model, prompts: Sequence[Sequence[int]], pad_id: int, new_tokens: int,
                 min_length: int = MIN_SHARED_PREFIX):
        self.model = model
        self.pad_id = pad_id
        distinct = list(dict.fromkeys(tuple(p) for p in prompts))
        lengths = cheapest_prefix_lengths(distinct, min_length)
        window = _sliding_window(model)
        if window is not None and distinct and (max(lengths) + max(len(p) - n for p, n in zip(distinct, lengths))
                                                + new_tokens >= window - 1):
            # a sliding window counts cache slots, and the pads between prefix and rest would push keys
            # out of it that the unpadded prompt still sees: such calls prefill whole prompts
            lengths = [0] * len(distinct)
        self.prefix_length = {p: n for p, n in zip(distinct, lengths) if n}
        self._uses = Counter(p[:n] for p, n in self.prefix_length.items())  # prompts still to prefill
        self._layers: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def split(self, prompt: Sequence[int]) -> int:
        """The length of ``prompt``'s shared prefix (0: none)."""
        return self.prefix_length.get(tuple(prompt), 0)

    def _compute(self, prefixes: list[tuple[int, ...]]) -> None:
        """One forward over the prefixes not yet cached (left-padded among themselves); each keeps its
        real tokens' keys and values."""
        missing = [p for p in prefixes if p not in self._layers]
        if not missing:
            return
        ids, mask = _pad(missing, self.pad_id, left=True, device=self.model.device)
        cache = DynamicCache(config=self.model.config)
        self.model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True,
                   **{_cache_kwarg(self.model): cache}, **_logits_kwargs(self.model))
        width = ids.shape[1]
        for row, prefix in enumerate(missing):
            self._layers[prefix] = [(layer.keys[row, :, width - len(prefix):].clone(),
                                     layer.values[row, :, width - len(prefix):].clone())
                                    for layer in cache.layers]

    def prefill(self, prompts: Sequence[Sequence[int]], lengths: Sequence[int], cache: DynamicCache) -> torch.Tensor:
        """Fill ``cache`` with each prompt's prefix (``lengths[i]`` tokens; 0: none), left-padded to the
        longest; returns the attention mask of those slots. A prefix is released after its last batch."""
        prefixes = [tuple(p[:n]) for p, n in zip(prompts, lengths)]
        self._compute(sorted({p for p in prefixes if p}))
        width = max(lengths)
        mask = torch.zeros((len(prompts), width), dtype=torch.long, device=self.model.device)
        for layer_idx in range(len(cache.layers)):
            keys, values = [], []
            for row, prefix in enumerate(prefixes):
                k, v = self._layers[prefix][layer_idx] if prefix else self._empty(layer_idx)
                pad = width - k.shape[1]
                keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
                values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
            cache.update(torch.stack(keys), torch.stack(values), layer_idx)
        for row, n in enumerate(lengths):
            if n:
                mask[row, width - n:] = 1
        # a prefix's tensors go once every prompt starting with it has been prefilled (a prompt that comes
        # again in a later batch, a repeated premise, gets its prefix computed again)
        for prefix, count in Counter(p for p in prefixes if p).items():
            self._uses[prefix] -= count
            if self._uses[prefix] <= 0:
                self._layers.pop(prefix, None)
        return mask

    def _empty(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = next(iter(self._layers.values()))[layer_idx]
        return k[:, :0], v[:, :0]


class DecoderOnlyRows:
    """Prompts prefilled on top of their shared prefixes, then one token per step.

    - With contrast every prompt of a batch is in it twice: a premise's contradiction prompt is the
      intended row of x- and the opposite row of x+. Only the distinct prompts are prefilled; the
      cache rows are then repeated to one per model row.
    - Prompts share long prefixes (the chat template's system turn, the pool's instructions, a base
      model's few-shot header). ``SharedPrefixCache`` holds each shared prefix's keys and values, computed
      once for the whole call (or for this batch: ``contrastive_decode`` builds one); the prefix slots are gathered from it
      and only each prompt's own rest runs, left-padded among the rests. A row is laid out
      ``[pad][prefix][pad][rest]`` with the pads masked and position ids counting only real tokens, so
      every token sits at the position it has in its unpadded prompt, as in ``generate``.

    The prefill is most of stage 1's work when prompts are long next to the outputs (an ~80-token
    chat prompt for ~20 new tokens)."""

    def __init__(self, model, rows: Sequence[Sequence[int]], pad_id: int,
                 prefixes: SharedPrefixCache | None = None):
        self.model = model
        self.pad_id = pad_id
        distinct: dict[tuple[int, ...], int] = {}
        self.row_to_distinct = [distinct.setdefault(tuple(r), len(distinct)) for r in rows]
        self.prompts = list(distinct)
        self.prefixes = prefixes  # None: whole prompts
        self.cache = DynamicCache(config=model.config)
        self.cache_kwarg = _cache_kwarg(model)
        self.extra = _logits_kwargs(model)

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self.cache_kwarg: self.cache}, **self.extra)
        return out.logits[:, -1]

    def first_logits(self) -> torch.Tensor:
        device = self.model.device
        lengths = [self.prefixes.split(p) if self.prefixes is not None else 0 for p in self.prompts]
        prefix_mask = self.prefixes.prefill(self.prompts, lengths, self.cache) if any(lengths) else None
        rests = [p[n:] for p, n in zip(self.prompts, lengths)]
        ids, rest_mask = _pad(rests, self.pad_id, left=True, device=device)
        offsets = torch.tensor(lengths, device=device)[:, None]
        positions = (offsets + rest_mask.cumsum(-1) - 1).masked_fill(rest_mask == 0, 0)
        self.mask = torch.cat([prefix_mask, rest_mask], dim=-1) if prefix_mask is not None else rest_mask
        logits = self._run(ids, self.mask, positions)
        self.positions = positions[:, -1:]
        if len(self.row_to_distinct) != len(self.prompts):  # some prompts serve several rows
            index = torch.tensor(self.row_to_distinct, device=device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask.index_select(0, index)
            self.positions = self.positions.index_select(0, index)
            logits = logits.index_select(0, index)
        return logits

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=-1)
        self.positions = self.positions + 1
        return self._run(tokens[:, None], self.mask, self.positions)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.mask = self.mask.index_select(0, rows)
        self.positions = self.positions.index_select(0, rows)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows, as ``generate`` builds them: real tokens count from 0."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def model_rows(model, rows: Sequence[Sequence[int]], pad_token_id: int, decoder_start_token_id: int | None = None,
               prefixes: SharedPrefixCache | None = None):
    """The per-architecture state of a batch of prompt rows: ``first_logits()``, then
    ``forward(tokens)`` once per step, and ``keep(row_indices)`` to drop rows. ``prefixes`` (decoder-only
    models) holds the call's shared prompt prefixes."""
    if model.config.is_encoder_decoder:
        if decoder_start_token_id is None:
            raise ValueError("encoder-decoder decoding needs decoder_start_token_id")
        return Seq2SeqRows(model, rows, pad_token_id, decoder_start_token_id)
    return DecoderOnlyRows(model, rows, pad_token_id, prefixes)


def _accepts(model, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters


def _batch_prefixes(model, prompts: Sequence[Sequence[int]], pad_id: int, new_tokens: int):
    """Without a call-wide cache, the prefixes one batch's prompts share are still computed once."""
    return None if model.config.is_encoder_decoder else SharedPrefixCache(model, prompts, pad_id, new_tokens)


def _sliding_window(model) -> int | None:
    """The attention window of a model with sliding-window layers (Gemma 3, Mistral), else None."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    window = getattr(config, "sliding_window", None)
    return int(window) if window else None


def _cache_kwarg(model) -> str:
    """The forward keyword of the KV cache (transformers renames ``past_key_values`` to ``cache``)."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


def _logits_kwargs(model) -> dict:
    """Only the last position's logits are needed (the vocabulary projection of every prompt token is not)."""
    return {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}


@dataclass(frozen=True)
class SpecialTokens:
    """The token ids that end, pad and start a batch's sequences (``special_token_ids`` finds the first
    three); ``stop_token_ids`` end a sequence like EOS but stay in its output (the caller cuts the
    text at the stop string)."""

    eos_token_ids: Sequence[int]
    pad_token_id: int
    decoder_start_token_id: int | None = None
    stop_token_ids: Sequence[int] = ()


def _check_prompts(intended: Sequence[Sequence[int]], opposite: Sequence[Sequence[int]] | None, contrast: bool) -> None:
    if contrast and (opposite is None or len(opposite) != len(intended)):
        raise ValueError("omega != 0 needs one opposite prompt per intended prompt")
    if any(len(r) == 0 for r in intended) or (contrast and any(len(r) == 0 for r in opposite)):
        raise ValueError("empty prompt (no token ids)")


@torch.inference_mode()
def contrastive_decode(
    model,
    intended: Sequence[Sequence[int]],
    opposite: Sequence[Sequence[int]] | None,
    settings: DecodingSettings,
    special: SpecialTokens,
    row_seeds: Sequence[int] | None = None,
    prefixes: SharedPrefixCache | None = None,
) -> list[list[int]]:
    """Decode one batch as ``settings`` say; returns the new token ids of each sequence, without its
    final EOS/stop token. ``intended[i]`` / ``opposite[i]`` are the prompt token ids of sequence i's two
    branches (``opposite`` may be None only when ``settings.omega == 0``). ``row_seeds`` seed sampling per
    sequence; ``prefixes``: a call's shared prompt prefixes across its batches (``engine.py`` batches)."""
    n = len(intended)
    if n == 0:
        return []
    contrast = settings.omega != 0.0
    _check_prompts(intended, opposite, contrast)
    max_new_tokens, pad_token_id, eos_token_ids = settings.max_new_tokens, special.pad_token_id, special.eos_token_ids
    prompts = list(intended) + (list(opposite) if contrast else [])
    rows = model_rows(model, prompts, pad_token_id, special.decoder_start_token_id,
                      prefixes or _batch_prefixes(model, prompts, pad_token_id, max_new_tokens))
    device = model.device
    combine = ContrastiveLogitsProcessor(settings.omega)
    processors = build_logits_processors(settings, eos_token_ids, device)
    select = TokenSelector(settings.do_sample, row_seeds)
    eos = torch.tensor(list(eos_token_ids), device=device)
    terminal = torch.tensor(list(eos_token_ids) + list(special.stop_token_ids), device=device)

    tokens = torch.full((n, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    lengths = torch.full((n,), max_new_tokens, dtype=torch.long, device=device)
    active = torch.arange(n, device=device)  # original index of each sequence still in the batch
    running = torch.ones(n, dtype=torch.bool, device=device)  # per active sequence: not yet finished

    logits = rows.first_logits()
    for step in range(max_new_tokens):
        # generate() scores in float32 whatever the model dtype; so do we (w = 0 must match it)
        scores = logits.to(dtype=torch.float32)
        scores = combine(None, scores) if contrast else scores
        scores = processors(tokens.index_select(0, active)[:, :step], scores)
        next_tokens = select(scores, active)
        next_tokens = torch.where(running, next_tokens, pad_token_id)
        tokens[active, step] = next_tokens

        ended = running & torch.isin(next_tokens, terminal)
        # stop tokens stay in the output, EOS does not; written without a host sync
        ended_length = step + (~torch.isin(next_tokens, eos)).long()
        lengths[active] = torch.where(ended, ended_length, lengths[active])
        running = running & ~ended
        n_running = int(running.sum())  # the one host sync of the step
        if step == max_new_tokens - 1 or n_running == 0:
            break

        if (running.numel() - n_running) * 8 >= running.numel():
            keep = running.nonzero().squeeze(-1)
            rows.keep(torch.cat([keep, keep + running.numel()]) if contrast else keep)
            active, running, next_tokens = active[keep], running[keep], next_tokens[keep]
        logits = rows.forward(torch.cat([next_tokens, next_tokens]) if contrast else next_tokens)

    return [tokens[i, : lengths[i]].tolist() for i in range(n)]
