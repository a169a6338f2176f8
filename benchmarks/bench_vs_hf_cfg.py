"""Stage 1's decoder against transformers' classifier-free guidance, the one library decoder with the same rule.

``generate(guidance_scale=g, negative_prompt_ids=..., negative_prompt_attention_mask=...)`` runs
``UnbatchedClassifierFreeGuidanceLogitsProcessor``: at each step the argmax of
``g * s - (g - 1) * u`` over the log-softmaxes of the prompt (s) and the negative prompt (u), the
negative branch being a second forward with its own cache. With ``g = 1 / (1 - w)`` that argmax
is the argmax of ``l - w * l_hat``; with the opposite instruction as the negative prompt greedy
decoding gives stage 1's tokens. Our loop (``contrastive_decode``) runs both branches in ONE
forward per step over the stacked rows, prefills each distinct prompt once and each shared
prompt prefix once.

1. Token equality at batch 1 (where HF's handling of left padding in the negative branch cannot
   interfere), both sides of ``--equal-premises`` SNLI premises, decoding until EOS or
   ``--new-tokens``.
2. Time at ``--batches`` sequences (half entailments, half contradictions of the same premises,
   each the other's negative prompt, as stage 1 batches them), every sequence forced to
   ``--new-tokens`` tokens (EOS suppressed, so both do the same work), median of ``--repeats``
   interleaved runs; the load average printed before and after.

    python benchmarks/bench_vs_hf_cfg.py --out runs/vs-hf-cfg            # bundled SmolLM2, CPU
    python benchmarks/bench_vs_hf_cfg.py --model bundled:gemma-3-270m --out runs/vs-hf-cfg-gemma

Prompts are the syncse-pool prompts of SNLI premises through the model's chat template (a base
model without one gets ``base-2shot``, as stage 1 gives it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_PREMISES = REPO.parent / "shared" / "data" / "nli" / "snli_devtest_premises.txt"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"


def stage1_prompt_ids(tokenizer, premises: list[str]) -> tuple[list[list[int]], list[list[int]], str]:
    """(intended, opposite) prompt ids as stage 1 builds them: x+ of each premise, then x-."""
    from multicsr_core.generation.engine import encode_prompt
    from multicsr_core.prompts import base_model_prompt_set, build_generation_prompts

    chat = bool(getattr(tokenizer, "chat_template", None))
    prompt_set = base_model_prompt_set("syncse-pool", chat_template=chat, encoder_decoder=False)
    prompts = build_generation_prompts(premises, prompt_set=prompt_set, seed=42)
    intended = [p.entailment_prompt for p in prompts] + [p.contradiction_prompt for p in prompts]
    opposite = [p.contradiction_prompt for p in prompts] + [p.entailment_prompt for p in prompts]
    encode = lambda texts: [encode_prompt(tokenizer, t, use_chat_template=chat)[0] for t in texts]  # noqa: E731
    return encode(intended), encode(opposite), prompt_set


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def hf_cfg(model, intended, opposite, omega, new_tokens, min_new_tokens, eos, pad) -> list[list[int]]:
    """transformers' classifier-free guidance with the opposite prompts as negative prompts."""
    ids, mask = left_pad(intended, pad)
    negative, negative_mask = left_pad(opposite, pad)
    out = model.generate(input_ids=ids, attention_mask=mask, guidance_scale=1.0 / (1.0 - omega),
                         negative_prompt_ids=negative, negative_prompt_attention_mask=negative_mask,
                         do_sample=False, num_beams=1, max_new_tokens=new_tokens, min_new_tokens=min_new_tokens,
                         pad_token_id=pad, eos_token_id=eos)
    rows = []
    for row in out[:, ids.shape[1]:].tolist():
        cut = next((k for k, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


def ours(model, intended, opposite, omega, new_tokens, min_new_tokens, eos, pad) -> list[list[int]]:
    from multicsr_core.generation.decoding import SpecialTokens, contrastive_decode
    from multicsr_core.generation.settings import DecodingSettings

    return contrastive_decode(model, intended, opposite,
                              DecodingSettings(omega=omega, max_new_tokens=new_tokens, min_new_tokens=min_new_tokens),
                              SpecialTokens(eos, pad))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct", help="a decoder-only LLM ref")
    parser.add_argument("--premises-file", type=Path, default=DEFAULT_PREMISES)
    parser.add_argument("--omega", type=float, default=0.3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--equal-premises", type=int, default=6, help="premises for the batch-1 equality check")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="sequences per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 0 < args.omega < 1:
        parser.error("--omega must be in (0, 1): HF's guidance scale 1 / (1 - w) is > 1 only there")
    if not args.premises_file.is_file():
        parser.error(f"--premises-file {args.premises_file}: no such file (one premise per line)")
    if any(b % 2 for b in args.batches):
        parser.error("--batches must be even (half entailments, half contradictions)")

    from multicsr_core.generation.decoding import special_token_ids
    from multicsr_core.generation.engine import load_generator
    from multicsr_core.models import resolve_model_ref

    torch.set_num_threads(args.threads)
    model, tokenizer = load_generator(resolve_model_ref(args.model))
    if model.config.is_encoder_decoder:
        parser.error(f"{args.model} is an encoder-decoder model: HF's CFG is for decoder-only models")
    eos, pad, _ = special_token_ids(model, tokenizer)
    premises = [s.strip() for s in args.premises_file.read_text(encoding="utf-8").splitlines() if s.strip()]
    report = {"model": args.model, "omega": args.omega, "guidance_scale": 1 / (1 - args.omega),
              "new_tokens": args.new_tokens, "threads": args.threads, "load_before": loadavg(),
              "transformers": __import__("transformers").__version__, "torch": torch.__version__}
    print(f"bench_vs_hf_cfg: load average {report['load_before']}", flush=True)

    # 1. equality at batch 1
    intended, opposite, prompt_set = stage1_prompt_ids(tokenizer, premises[: args.equal_premises])
    report["prompt_set"] = prompt_set
    equal, examples = 0, []
    with torch.inference_mode():
        for a, b in zip(intended, opposite):
            theirs = hf_cfg(model, [a], [b], args.omega, args.new_tokens, 0, eos, pad)[0]
            mine = ours(model, [a], [b], args.omega, args.new_tokens, 0, eos, pad)[0]
            equal += theirs == mine
            examples.append({"ours": tokenizer.decode(mine, skip_special_tokens=True),
                             "hf_cfg": tokenizer.decode(theirs, skip_special_tokens=True), "equal": theirs == mine})
    report["batch1_equal_tokens"] = f"{equal}/{len(intended)}"
    report["batch1_outputs"] = examples
    print(f"batch 1: {equal}/{len(intended)} sequences with equal tokens", flush=True)

    # 2. time at each batch size, both forced to new_tokens
    report["timing"] = []
    for batch in args.batches:
        intended, opposite, _ = stage1_prompt_ids(tokenizer, premises[args.equal_premises: args.equal_premises + batch // 2])
        methods = {"ours": ours, "hf_cfg": hf_cfg}
        times = {name: [] for name in methods}
        with torch.inference_mode():
            for fn in methods.values():  # warm-up on a slice
                fn(model, intended[:2], opposite[:2], args.omega, 2, 2, eos, pad)
            for _ in range(args.repeats):
                for name, fn in methods.items():
                    started = time.perf_counter()
                    fn(model, intended, opposite, args.omega, args.new_tokens, args.new_tokens, eos, pad)
                    times[name].append(time.perf_counter() - started)
        seconds = {name: statistics.median(t) for name, t in times.items()}
        row = {"sequences": batch, "seconds": {k: round(v, 3) for k, v in seconds.items()},
               "all_runs": {k: [round(x, 3) for x in v] for k, v in times.items()},
               "ours_vs_hf": round(seconds["ours"] / seconds["hf_cfg"], 3),
               "mean_prompt_tokens": round(sum(map(len, intended)) / len(intended), 1)}
        report["timing"].append(row)
        print(f"batch {batch}: ours {seconds['ours']:.2f} s, HF CFG {seconds['hf_cfg']:.2f} s, "
              f"ours/HF {row['ours_vs_hf']:.2f}  (load {loadavg()})", flush=True)
    report["load_after"] = loadavg()

    lines = [f"# Stage 1 vs transformers' CFG ({args.model}, w = {args.omega}, g = {report['guidance_scale']:.4f})", "",
             f"transformers {report['transformers']}, torch {report['torch']}, {args.threads} threads; "
             f"load average before {report['load_before']}, after {report['load_after']}", "",
             f"Batch 1, until EOS or {args.new_tokens} tokens: **{report['batch1_equal_tokens']}** sequences with "
             f"equal tokens ({prompt_set} prompts).", "",
             f"| sequences | ours (s) | HF CFG (s) | ours / HF |", "| --- | --- | --- | --- |"]
    for row in report["timing"]:
        lines.append(f"| {row['sequences']} | {row['seconds']['ours']:.2f} | {row['seconds']['hf_cfg']:.2f} "
                     f"| {row['ours_vs_hf']:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vs_hf_cfg.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "vs_hf_cfg.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
