"""Local LLM scoring: one forward pass over the score tokens against generate + parse.

Side by side in one run, the same model, the same SNLI pairs and the same batches:

- ``one-forward``: LocalLLMScorer(mode="argmax"): one forward pass per batch, reading the
  first answer token's distribution over 0-5.
- ``generate``:    LocalLLMScorer(mode="generate"): greedy ``model.generate`` with
  ``max_new_tokens`` per batch, then the official parser.

Three models, because the ratio depends on how long the model talks before it stops and on
how much of the cost is the prompt (which both methods pay once):

- ``T5 terse``:   a small random T5 taught for a few steps to reply "<digit></s>", as Flan-T5
  does when scoring: generate stops after two decoder steps.
- ``T5 verbose``: the same T5 untaught: it never emits EOS, so generate runs all
  ``--max-new-tokens`` steps.
- ``Llama verbose``: a small random decoder-only model, as a chatty chat model that writes
  ``--chat-max-new-tokens`` tokens before the parser gives up on it.

For an encoder-decoder model the encoder pass over the prompt dominates and both methods run
it once, so one forward saves only the extra decoder steps and generate's per-step overhead.

A sweep then holds the model and pairs fixed and varies only how many tokens generate runs
(``--sweep``, on the random models, which never stop early): the ratio as a function of reply
length, and the first length where it reaches 10x. A Flan-T5 reply such as ``4.0</s>`` is 4
decoder steps; a chat model that explains its score runs tens to hundreds; the official scripts
allow up to ``max_length=256``.

Reported: the time of each method (median of ``--repeats`` interleaved runs, no cache, so
both really compute), the ratio generate / one-forward, the fraction of pairs generate + parse
could score, and the agreement of the two scores on those pairs. Models are random-weight
configs (no LLM exists offline), on CPU (no GPU in this environment).

    python benchmarks/bench_local_scorer.py
    python benchmarks/bench_local_scorer.py --pairs 512 --d-model 256 --layers 4 --threads 2
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from multicsr_core.config import default_data_root  # noqa: E402
from multicsr_core.llm.local import LocalLM  # noqa: E402
from multicsr_core.prompts import format_scoring_prompt  # noqa: E402
from multicsr_core.scoring.llm import LocalLLMScorer  # noqa: E402
from tests.openai_server import expected_score  # noqa: E402
from tests.tiny_llm import teach_t5_to_answer, tiny_llama, tiny_t5, word_tokenizer  # noqa: E402

SNLI = default_data_root() / "nli" / "snli_devtest_for_simcse.csv"


def load_pairs(n: int) -> tuple[list[str], list[str]]:
    with open(SNLI, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[: (n + 1) // 2]
    premises = [row["sent0"] for row in rows for _ in (0, 1)][:n]
    hypotheses = [h for row in rows for h in (row["sent1"], row["hard_neg"])][:n]
    return premises, hypotheses


def timed(scorer: LocalLLMScorer, premises, hypotheses) -> tuple[float, list]:
    started = time.perf_counter()
    scores = scorer.score_pairs(premises, hypotheses)
    return time.perf_counter() - started, scores


def compare(name: str, lm: LocalLM, premises, hypotheses, max_new_tokens: int, repeats: int) -> dict:
    one_forward = LocalLLMScorer(lm, mode="argmax")
    generate = LocalLLMScorer(lm, mode="generate", max_new_tokens=max_new_tokens)
    timed(one_forward, premises[:8], hypotheses[:8])  # warm-up
    timed(generate, premises[:8], hypotheses[:8])
    forward_times, generate_times = [], []
    for _ in range(repeats):  # interleaved, so machine load hits both alike
        seconds, forward_scores = timed(one_forward, premises, hypotheses)
        forward_times.append(seconds)
        seconds, generate_scores = timed(generate, premises, hypotheses)
        generate_times.append(seconds)
    parsed = [(a.score, b.score) for a, b in zip(forward_scores, generate_scores) if b.score is not None]
    forward_s, generate_s = statistics.median(forward_times), statistics.median(generate_times)
    return {
        "model": name,
        "one_forward_s": forward_s,
        "generate_s": generate_s,
        "ratio": generate_s / forward_s,
        "parsed": len(parsed) / len(premises),
        "agreement": sum(a == b for a, b in parsed) / len(parsed) if parsed else float("nan"),
        "reply_example": generate_scores[0].raw,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--chat-max-new-tokens", type=int, default=32)
    parser.add_argument("--teach-steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", type=int, nargs="*", default=[2, 4, 8, 16, 32, 64, 128, 256],
                        help="generate lengths for the sweep (empty: no sweep)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("multicsr_core.llm.local").setLevel(logging.ERROR)  # no cache here on purpose

    premises, hypotheses = load_pairs(args.pairs)
    prompts = [format_scoring_prompt(p, h) for p, h in zip(premises, hypotheses)]
    tokenizer = word_tokenizer([p + " " + h for p, h in zip(premises, hypotheses)])
    verbose = tiny_t5(len(tokenizer), seed=0, d_model=args.d_model, layers=args.layers)
    terse = tiny_t5(len(tokenizer), seed=0, d_model=args.d_model, layers=args.layers)
    started = time.perf_counter()
    teach_t5_to_answer(terse, tokenizer, prompts[:32], [str(expected_score(p)) for p in prompts[:32]],
                       steps=args.teach_steps, lr=3e-3)
    teach_s = time.perf_counter() - started
    llama_tokenizer = word_tokenizer([p + " " + h for p, h in zip(premises, hypotheses)], bos=True)
    llama = tiny_llama(len(llama_tokenizer), seed=0, hidden=args.d_model, layers=args.layers)

    rows = []
    cases = (("T5 terse (taught)", terse, tokenizer, args.max_new_tokens),
             ("T5 verbose (random)", verbose, tokenizer, args.max_new_tokens),
             ("Llama verbose (random)", llama, llama_tokenizer, args.chat_max_new_tokens))
    for name, model, model_tokenizer, max_new_tokens in cases:
        lm = LocalLM(model, model_tokenizer, name=name, cache=None, batch_size=args.batch_size)
        row = compare(name, lm, premises, hypotheses, max_new_tokens, args.repeats)
        rows.append({**row, "max_new_tokens": max_new_tokens})

    print(f"{args.pairs} SNLI pairs, batch {args.batch_size}, T5 d_model {args.d_model} x {args.layers}+{args.layers} "
          f"layers (Llama: hidden {args.d_model} x {args.layers}), vocab {len(tokenizer)}, {args.threads} torch thread(s), CPU; "
          f"teaching the terse model took {teach_s:.1f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<24} {'max new':>7} {'one-forward (s)':>15} {'generate+parse (s)':>18} {'ratio':>6} {'parsed':>7} "
          f"{'agreement':>9}  first reply")
    for row in rows:
        print(f"{row['model']:<24} {row['max_new_tokens']:>7} {row['one_forward_s']:>15.3f} {row['generate_s']:>18.3f} {row['ratio']:>6.1f} "
              f"{row['parsed']:>7.0%} {row['agreement']:>9.1%}  {row['reply_example'][:60]!r}")
    if args.sweep:
        for name, model, model_tokenizer, _ in cases[1:]:
            lm = LocalLM(model, model_tokenizer, name=name, cache=None, batch_size=args.batch_size)
            length_sweep(name, lm, premises, hypotheses, args.sweep, args.repeats)


def length_sweep(name: str, lm: LocalLM, premises, hypotheses, lengths, repeats: int) -> None:
    """Ratio generate / one-forward as generate is made to run 2, 4, ... tokens on the same batches."""
    one_forward = LocalLLMScorer(lm, mode="argmax")
    forward_s = statistics.median(timed(one_forward, premises, hypotheses)[0] for _ in range(repeats))
    print(f"\n{name}: one forward {forward_s:.3f} s; generate+parse by reply length (a random model never "
          "stops early, so generate runs all max_new_tokens steps)")
    print(f"{'max new':>7} {'generate+parse (s)':>18} {'ratio':>6}")
    crossed = None
    for length in lengths:
        generate = LocalLLMScorer(lm, mode="generate", max_new_tokens=length)
        seconds, _ = min((timed(generate, premises, hypotheses) for _ in range(repeats)), key=lambda r: r[0])
        ratio = seconds / forward_s
        if crossed is None and ratio >= 10:
            crossed = length
        print(f"{length:>7} {seconds:>18.3f} {ratio:>6.1f}")
    print(f"first length with ratio >= 10: {crossed if crossed is not None else 'none in the sweep'}")


if __name__ == "__main__":
    main()
