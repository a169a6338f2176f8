"""Every GPU measurement of the project in one run: one JSON and one Markdown table.

``bash benchmarks/gpu_suite.sh --out DIR`` (this file does the work) measures, side by side in
one process, with random weights built from configs (no hub access needed):

1. **Stage 1 generation** on a Flan-T5-XL-shaped encoder-decoder (``T5Config``: d_model 2048,
   24 + 24 layers, 32 heads, d_ff 5120, gated-GELU, vocab 32128) and on a Llama-shaped
   decoder-only model of similar size (Llama-3.2-3B shape), in bf16, at batch 64 and 256
   sequences: ``model.generate`` (greedy, no contrast) against our loop
   (:func:`multicsr_core.generation.decoding.contrastive_decode`) at w = 0 and w = 0.3. Prompts
   are random token ids of one length; every sequence is forced to ``--new-tokens`` tokens (random
   weights would otherwise stop at random), so each method does the same work. As in stage 1,
   half the sequences of a batch are entailments and half contradictions of the same premises,
   each direction's prompt being the other's opposite (so T5's encoder sees each prompt once).
   Also reported: whether w = 0 equals ``generate`` token for token. On the decoder-only model also
   transformers' classifier-free guidance (``generate(guidance_scale=1/(1-w), negative_prompt_ids=
   the opposite prompts)``, the library decoder with the same rule, a second forward per step):
   its time against ours at w, and on how many sequences the tokens are equal.
2. **Stage 2 scoring** on the same T5 shape: the one-forward scorer
   (``LocalLLMScorer(mode="argmax")`` over :class:`multicsr_core.llm.local.LocalLM`) against
   generate + the official parser (``mode="generate"``), pairs/s, on real scoring prompts over
   synthetic sentences (a word-level tokenizer padded to the model's vocabulary).
3. **Projection** for the 275,601 NLI premises: stage 1 = 2 sequences per premise at the
   measured w = 0.3 rate (batch 256, T5), stage 2 = 2 pairs per premise at the one-forward rate;
   goal: both stages in <= 30 min on one H200.
4. **Stage 3 training step** on a BERT-base shape at batch 256 (seq len 32, AdamW, autocast):
   the masked loss (paper Eq. 7, ``MaskedInfoNCELoss``) against the unmasked one
   (``SupervisedSimCSELoss``; goal <= 1.05x), and the official BCE loss
   (``OfficialMaskedBCELoss``), on a model from :func:`multicsr_core.training.build_model`.

Every part records its memory high-water mark: ``torch.cuda.max_memory_allocated`` on a GPU
(reset before each part), else the process's peak RSS so far (``ru_maxrss``, cumulative). Times
are medians of ``--repeats`` runs after one warm-up, methods interleaved.

``--tiny`` runs every part at a tiny size on CPU in seconds (the test suite runs it); its figures
mean nothing. Without a GPU the full sizes would take hours: the script refuses unless ``--tiny``.

    bash benchmarks/gpu_suite.sh --out runs/gpu-suite          # on the GPU machine, < 8 min on one H200
    bash benchmarks/gpu_suite.sh --tiny --out /tmp/gpu-suite   # anywhere, seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NLI_PREMISES = 275_601  # SimCSE's nli_for_simcse.csv, column sent0
GOAL_STAGES_1_2_MIN = 30.0
GOAL_MASK_RATIO = 1.05


@dataclass(frozen=True)
class Sizes:
    """Every size the suite uses; ``FULL`` on a GPU, ``TINY`` for the CPU check."""

    t5: dict
    llama: dict
    bert: dict
    batches: tuple[int, ...]
    prompt_tokens: int
    new_tokens: int
    score_pairs: int
    score_batch: int
    score_new_tokens: int
    train_batch: int
    train_seq_len: int
    train_steps: int
    guide_rows: int
    repeats: int
    warmup: bool = True


FULL = Sizes(
    t5=dict(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_decoder_layers=24, num_heads=32,
            vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    llama=dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=4096, tie_word_embeddings=True),
    bert=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=30522),
    batches=(64, 256), prompt_tokens=64, new_tokens=32,
    score_pairs=2048, score_batch=256, score_new_tokens=8,
    train_batch=256, train_seq_len=32, train_steps=10, guide_rows=100_000, repeats=3,
)
TINY = Sizes(
    t5=dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=512,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    llama=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, tie_word_embeddings=True),
    bert=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=512),
    batches=(4, 8), prompt_tokens=8, new_tokens=4,
    score_pairs=16, score_batch=8, score_new_tokens=4,
    train_batch=8, train_seq_len=8, train_steps=1, guide_rows=64, repeats=1, warmup=False,
)


# ----------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def memory_high_water(device: torch.device) -> dict:
    """GPU: bytes allocated at the peak since the part started. CPU: the process's peak RSS so far."""
    if device.type == "cuda":
        return {"kind": "cuda.max_memory_allocated", "mib": torch.cuda.max_memory_allocated(device) / 2**20}
    return {"kind": "process peak RSS (cumulative)", "mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


def interleaved(methods: dict, repeats: int, device: torch.device, warmup: bool = True) -> tuple[dict[str, float], dict]:
    """Median seconds per method over ``repeats`` rounds (after one warm-up round), and each method's last output."""
    outputs = {name: fn() for name, fn in methods.items()} if warmup else {}  # kernels, allocator, cache shapes
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            seconds, outputs[name] = timed(fn, device)
            times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}, outputs


def build_t5(sizes: Sizes, device: torch.device, dtype: torch.dtype):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(**sizes.t5, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    with torch.device(device):
        model = T5ForConditionalGeneration(config)
    return model.to(dtype).eval()


def build_llama(sizes: Sizes, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**sizes.llama, pad_token_id=0, bos_token_id=3, eos_token_id=1)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def parameters_b(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e9


# ----------------------------------------------------------------------------- 1. generation


def generation_part(name: str, model, sizes: Sizes, device: torch.device, omega: float = 0.3) -> dict:
    """generate vs our loop at w = 0 and w = omega, at each batch size (sequences per call)."""
    from multicsr_core.generation.decoding import SpecialTokens, contrastive_decode
    from multicsr_core.generation.settings import DecodingSettings

    config = model.config
    eos, pad = int(config.eos_token_id), int(config.pad_token_id)
    start = getattr(config, "decoder_start_token_id", None)
    seq2seq = bool(config.is_encoder_decoder)
    n_tokens = sizes.new_tokens
    rng = random.Random(0)
    rows = []
    for batch in sizes.batches:
        premises = batch // 2
        entail = [[rng.randrange(4, config.vocab_size) for _ in range(sizes.prompt_tokens)] for _ in range(premises)]
        contra = [[rng.randrange(4, config.vocab_size) for _ in range(sizes.prompt_tokens)] for _ in range(premises)]
        intended, opposite = entail + contra, contra + entail  # x+ then x-; each is the other's opposite
        input_ids = torch.tensor(intended, device=device)
        attention = torch.ones_like(input_ids)

        def hf_generate():
            out = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False, num_beams=1,
                                 max_new_tokens=n_tokens, min_new_tokens=n_tokens, pad_token_id=pad, eos_token_id=eos)
            return out[:, 1:] if seq2seq else out[:, input_ids.shape[1]:]

        def ours(w):
            settings = DecodingSettings(omega=w, max_new_tokens=n_tokens, min_new_tokens=n_tokens)
            return lambda: contrastive_decode(model, intended, opposite, settings, SpecialTokens([eos], pad, start))

        def hf_cfg():  # transformers' classifier-free guidance configured to the same rule (g = 1 / (1 - w))
            negative = torch.tensor(opposite, device=device)
            out = model.generate(input_ids=input_ids, attention_mask=attention, guidance_scale=1.0 / (1.0 - omega),
                                 negative_prompt_ids=negative, negative_prompt_attention_mask=torch.ones_like(negative),
                                 do_sample=False, num_beams=1, max_new_tokens=n_tokens, min_new_tokens=n_tokens,
                                 pad_token_id=pad, eos_token_id=eos)
            return out[:, input_ids.shape[1]:]

        methods = {"generate": hf_generate, "ours_w0": ours(0.0), f"ours_w{omega}": ours(omega)}
        if not seq2seq:
            methods["hf_cfg"] = hf_cfg
        reset_memory(device)
        seconds, outputs = interleaved(methods, sizes.repeats, device, sizes.warmup)
        reference = outputs["generate"].tolist()
        same = sum(a == b for a, b in zip(reference, outputs["ours_w0"]))
        tokens = batch * n_tokens
        extra = {}
        if "hf_cfg" in outputs:
            equal = sum(a == b for a, b in zip(outputs["hf_cfg"].tolist(), outputs[f"ours_w{omega}"]))
            extra = {"contrast_equals_hf_cfg": f"{equal}/{batch}",
                     "ours_vs_hf_cfg": seconds[f"ours_w{omega}"] / seconds["hf_cfg"]}
        rows.append({**extra, 
            "batch_sequences": batch,
            "seconds": seconds,
            "output_tokens_per_s": {k: tokens / v for k, v in seconds.items()},
            "ratio_vs_generate": {k: v / seconds["generate"] for k, v in seconds.items()},
            "w0_equals_generate": f"{same}/{batch}",
            "memory": memory_high_water(device),
        })
    return {"model": name, "parameters_b": parameters_b(model), "dtype": str(next(model.parameters()).dtype),
            "prompt_tokens": sizes.prompt_tokens, "new_tokens_forced": n_tokens, "omega": omega, "batches": rows}


# ----------------------------------------------------------------------------- 2. scoring

_WORDS = ("a man woman child dog cat is are was playing running sitting standing eating holding looking at on in "
          "the street park beach table ball water red blue small large old young two three group people near "
          "with while outside inside wearing shirt hat car bike tree grass").split()


def synthetic_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    sentence = lambda: " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 16))) + " ."  # noqa: E731
    return [sentence() for _ in range(n)], [sentence() for _ in range(n)]


def padded_word_tokenizer(texts: list[str], vocab_size: int):
    """The tests' word-level tokenizer (digits are single tokens), its vocabulary filled up to ``vocab_size``
    so that every id a random model emits decodes."""
    from tests.tiny_llm import word_tokenizer, word_vocab

    fillers = max(0, vocab_size - len(word_vocab(texts)))
    return word_tokenizer([*texts, " ".join(f"w{i}" for i in range(fillers))])


def scoring_part(model, sizes: Sizes, device: torch.device) -> dict:
    import logging

    from multicsr_core.llm.local import LocalLM
    from multicsr_core.scoring.llm import LocalLLMScorer

    logging.getLogger("multicsr_core.llm.local").setLevel(logging.ERROR)  # no response cache, on purpose
    premises, hypotheses = synthetic_pairs(sizes.score_pairs)
    tokenizer = padded_word_tokenizer(premises + hypotheses, model.config.vocab_size)
    if len(tokenizer) > model.config.vocab_size:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens for a vocabulary of {model.config.vocab_size}")
    lm = LocalLM(model, tokenizer, name="random-t5-xl-shape", cache=None, batch_size=sizes.score_batch)
    one_forward = LocalLLMScorer(lm, mode="argmax", min_score_mass=0.0)
    generate = LocalLLMScorer(lm, mode="generate", max_new_tokens=sizes.score_new_tokens)
    reset_memory(device)
    seconds, outputs = interleaved({"one_forward": lambda: one_forward.score_pairs(premises, hypotheses),
                                    "generate_parse": lambda: generate.score_pairs(premises, hypotheses)},
                                   sizes.repeats, device, sizes.warmup)
    n = len(premises)
    return {
        "model": "T5 (Flan-T5-XL shape)", "pairs": n, "batch_size": sizes.score_batch,
        "generate_max_new_tokens": sizes.score_new_tokens,
        "prompt_tokens_mean": statistics.mean(len(ids) for ids in tokenizer(one_forward.prompts(premises, hypotheses))["input_ids"]),
        "seconds": seconds,
        "pairs_per_s": {k: n / v for k, v in seconds.items()},
        "ratio_generate_vs_one_forward": seconds["generate_parse"] / seconds["one_forward"],
        "one_forward_scored": sum(s.score is not None for s in outputs["one_forward"]),
        "memory": memory_high_water(device),
    }


# ----------------------------------------------------------------------------- 3. projection


def projection(t5_generation: dict, scoring: dict, omega: float) -> dict:
    """Stages 1 + 2 for the NLI premises at the measured rates (2 sequences and 2 pairs per premise)."""
    largest = max(t5_generation["batches"], key=lambda r: r["batch_sequences"])
    key = f"ours_w{omega}"
    seconds_per_sequence = largest["seconds"][key] / largest["batch_sequences"]
    stage1 = 2 * NLI_PREMISES * seconds_per_sequence
    stage2 = 2 * NLI_PREMISES / scoring["pairs_per_s"]["one_forward"]
    total_min = (stage1 + stage2) / 60
    return {
        "premises": NLI_PREMISES,
        "assumes": (f"{t5_generation['new_tokens_forced']} new tokens per sequence (forced), "
                    f"{t5_generation['prompt_tokens']}-token prompts, batch {largest['batch_sequences']} sequences, "
                    f"w = {omega}, one-forward scoring at batch {scoring['batch_size']}, one GPU"),
        "stage1_minutes": stage1 / 60,
        "stage2_minutes": stage2 / 60,
        "total_minutes": total_min,
        "goal_minutes": GOAL_STAGES_1_2_MIN,
        "meets_goal": total_min <= GOAL_STAGES_1_2_MIN,
    }


# ----------------------------------------------------------------------------- 4. training step


def training_part(sizes: Sizes, device: torch.device) -> dict:
    from transformers import BertConfig, BertModel

    from multicsr_core.losses import MaskedInfoNCELoss, OfficialMaskedBCELoss, SupervisedSimCSELoss
    from multicsr_core.training import build_model

    with tempfile.TemporaryDirectory() as folder:  # a random BERT-base checkpoint, as build_model takes one
        torch.manual_seed(0)
        BertModel(BertConfig(**sizes.bert)).save_pretrained(folder)
        padded_word_tokenizer(["a"], sizes.bert["vocab_size"]).save_pretrained(folder)
        model = build_model(folder, pooling="cls", mlp_only_train=True, max_seq_length=sizes.train_seq_len,
                            device=str(device))
    model.train()
    b, length, vocab = sizes.train_batch, sizes.train_seq_len, sizes.bert["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    features = [{"input_ids": torch.randint(4, vocab, (b, length), generator=generator).to(device),
                 "attention_mask": torch.ones(b, length, dtype=torch.long, device=device),
                 "token_type_ids": torch.zeros(b, length, dtype=torch.long, device=device)} for _ in range(3)]
    guide = torch.nn.functional.normalize(torch.randn(sizes.guide_rows, sizes.bert["hidden_size"], generator=generator), dim=-1)
    labels = torch.randperm(sizes.guide_rows, generator=generator)[: 3 * b].view(b, 3).to(device)
    losses = {
        "unmasked (SupervisedSimCSELoss)": SupervisedSimCSELoss(model, tau=0.05),
        "masked Eq. 7 (MaskedInfoNCELoss)": MaskedInfoNCELoss(model, guide.to(device), sigma=0.9, tau=0.05),
        "official BCE (OfficialMaskedBCELoss)": OfficialMaskedBCELoss(model, guide.to(device), phi=0.95, tau=0.05),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    amp_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step(loss_module):
        def run():
            for _ in range(sizes.train_steps):
                with torch.autocast(device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
                    loss = loss_module([dict(f) for f in features], labels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            return float(loss.detach())
        return run

    results = {}
    for name, loss_module in losses.items():  # one at a time for per-loss memory; order A B C, then interleaved timing
        reset_memory(device)
        step(loss_module)()
        results[name] = {"memory": memory_high_water(device)}
    seconds, last = interleaved({name: step(module) for name, module in losses.items()}, sizes.repeats, device, sizes.warmup)
    base = seconds["unmasked (SupervisedSimCSELoss)"]
    for name in losses:
        results[name].update({"seconds_per_step": seconds[name] / sizes.train_steps,
                              "ratio_vs_unmasked": seconds[name] / base, "last_loss": last[name]})
    ratio = results["masked Eq. 7 (MaskedInfoNCELoss)"]["ratio_vs_unmasked"]
    return {"model": "BERT-base shape (random)", "batch": b, "seq_len": length, "autocast": str(amp_dtype),
            "optimizer": "AdamW", "guide_rows": sizes.guide_rows, "steps_per_timing": sizes.train_steps,
            "losses": results, "masked_ratio": ratio, "goal_masked_ratio": GOAL_MASK_RATIO,
            "meets_goal": ratio <= GOAL_MASK_RATIO}


# ----------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = [f"# GPU suite ({report['meta']['device']}, {'tiny' if report['meta']['tiny'] else 'full'} sizes)", "",
             "## Stage 1: generation (bf16 on GPU), time per batch, median", "",
             "| model | batch | generate | ours w=0 | ours w=0.3 | w=0.3 / generate | w=0 == generate | peak MiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    failed = [f"{name}: {value['error']}" for name, value in [*report["generation"].items(), *(
        (k, report[k]) for k in ("scoring", "projection", "training"))] if _failed(value)]
    generation = [part for part in report["generation"].values() if not _failed(part)]
    for part in generation:
        for row in part["batches"]:
            s, r = row["seconds"], row["ratio_vs_generate"]
            contrast = next(k for k in s if k.startswith("ours_w") and k != "ours_w0")
            lines.append(f"| {part['model']} | {row['batch_sequences']} | {s['generate']:.3f} s | {s['ours_w0']:.3f} s "
                         f"| {s[contrast]:.3f} s | {r[contrast]:.2f} | {row['w0_equals_generate']} "
                         f"| {row['memory']['mib']:.0f} |")
    for part in generation:
        for row in part["batches"]:
            if "ours_vs_hf_cfg" in row:
                lines.append(f"\n{part['model']}, batch {row['batch_sequences']}: transformers' CFG (guidance_scale "
                             f"1/(1-w), opposite prompts as negative prompts) {row['seconds']['hf_cfg']:.3f} s; ours / CFG "
                             f"{row['ours_vs_hf_cfg']:.2f}; equal tokens {row['contrast_equals_hf_cfg']}")
    sc = report["scoring"]
    if not _failed(sc):
        lines += ["", "## Stage 2: scoring", "", "| method | pairs/s | peak MiB |", "| --- | --- | --- |",
                  f"| one forward (argmax) | {sc['pairs_per_s']['one_forward']:.1f} | {sc['memory']['mib']:.0f} |",
                  f"| generate + parse ({sc['generate_max_new_tokens']} tokens) | {sc['pairs_per_s']['generate_parse']:.1f} | |",
                  "", f"generate / one forward: {sc['ratio_generate_vs_one_forward']:.2f}x"]
    pr = report["projection"]
    if not _failed(pr):
        lines += ["", "## Projection: 275,601 NLI premises, stages 1 + 2", "",
                  f"stage 1 {pr['stage1_minutes']:.1f} min + stage 2 {pr['stage2_minutes']:.1f} min = "
                  f"**{pr['total_minutes']:.1f} min** (goal <= {pr['goal_minutes']:.0f}: {'met' if pr['meets_goal'] else 'not met'}); "
                  f"assumes {pr['assumes']}."]
    tr = report["training"]
    if not _failed(tr):
        lines += ["", f"## Stage 3: training step, {tr['model']}, batch {tr['batch']}, seq len {tr['seq_len']}", "",
                  "| loss | s/step | vs unmasked | peak MiB |", "| --- | --- | --- | --- |"]
        for name, row in tr["losses"].items():
            lines.append(f"| {name} | {row['seconds_per_step']:.4f} | {row['ratio_vs_unmasked']:.3f} | {row['memory']['mib']:.0f} |")
        lines += ["", f"masked / unmasked {tr['masked_ratio']:.3f} (goal <= {tr['goal_masked_ratio']}: "
                  f"{'met' if tr['meets_goal'] else 'not met'})"]
    if failed:
        lines += ["", "## Parts that failed", ""] + [f"- {line}" for line in failed]
    lines += ["", f"Memory: {report['meta']['memory_kind']}. Total wall time {report['meta']['total_seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on CPU: a check that every part runs")
    parser.add_argument("--omega", type=float, default=0.3)
    parser.add_argument("--device", default=None, help="default: cuda if available (never with --tiny), else cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    if device.type != "cuda" and not args.tiny:
        parser.error("full sizes need a CUDA GPU (they would take hours on CPU); use --tiny for the CPU check")
    sizes = TINY if args.tiny else FULL
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.tiny:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(0)
    started = time.perf_counter()
    report: dict = {"meta": {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "tiny": args.tiny, "torch": torch.__version__, "python": platform.python_version(),
        "generation_dtype": str(dtype), "repeats": sizes.repeats,
        "memory_kind": "torch.cuda.max_memory_allocated per part" if device.type == "cuda"
                       else "process peak RSS (ru_maxrss), cumulative over the run",
    }}
    timings = {}

    def part(name, fn):
        """Run one part; a part that fails is recorded (its error) and the others still run, so
        one missing library on a lent machine does not cost the whole run."""
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as error:  # noqa: BLE001 - recorded in the report, printed, and the exit code says so
            value = {"error": f"{type(error).__name__}: {error}"}
            report.setdefault("failed_parts", []).append(name)
        timings[name] = time.perf_counter() - t0
        print(f"[gpu_suite] {name}: {timings[name]:.1f} s" + (f" FAILED {value['error']}" if _failed(value) else ""),
              flush=True)
        return value

    t5 = build_t5(sizes, device, dtype)
    report["generation"] = {"t5": part("generation T5", lambda: generation_part("T5 (Flan-T5-XL shape)", t5, sizes, device, args.omega))}
    report["scoring"] = part("scoring T5", lambda: scoring_part(t5, sizes, device))
    del t5
    reset_memory(device)
    llama = build_llama(sizes, device, dtype)
    report["generation"]["decoder_only"] = part(
        "generation Llama", lambda: generation_part("Llama (3B shape, decoder-only)", llama, sizes, device, args.omega))
    del llama
    reset_memory(device)
    report["projection"] = part("projection", lambda: projection(report["generation"]["t5"], report["scoring"], args.omega))
    report["training"] = part("training step", lambda: training_part(sizes, device))
    report["meta"]["part_seconds"] = timings
    report["meta"]["total_seconds"] = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    table = markdown(report)
    (args.out / "gpu_suite.md").write_text(table, encoding="utf-8")
    print(table, flush=True)
    if report.get("failed_parts"):
        raise SystemExit(f"gpu_suite: parts failed: {', '.join(report['failed_parts'])} (errors in gpu_suite.json)")
    return report


def _failed(value) -> bool:
    return isinstance(value, dict) and "error" in value


if __name__ == "__main__":
    main()
