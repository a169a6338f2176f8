"""How much evaluating at the 32-token training length moves a model's STS-B test figure.

SentEval (SimCSE's fork) reads every sentence in full; a model folder that kept SimCSE's training
length of 32 tokens would be evaluated truncated. This prints, for one model, STS-B test Spearman
x 100 untruncated (what ``multicsr evaluate`` does) and truncated at ``--max-seq-length``, and how
many distinct sentences of the seven STS test sets are longer than that in the model's tokens.

    python benchmarks/eval_truncation.py --model bundled:all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multicsr_core.config import default_data_root  # noqa: E402
from multicsr_core.evaluation.runner import evaluate_model, load_sentence_model, resolve_senteval_dir  # noqa: E402
from multicsr_core.evaluation.sts import load_sts_tasks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--max-seq-length", type=int, default=32)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data = resolve_senteval_dir(args.data_dir or default_data_root())
    model = load_sentence_model(args.model)
    out = {"model": args.model}
    for label, length in (("untruncated", None), (f"at_{args.max_seq_length}", args.max_seq_length)):
        out[f"stsb_test_{label}"] = evaluate_model(model, data, sts_tasks=["STSBenchmark"], max_seq_length=length)["STSBenchmark"]
    sentences = sorted({s for subsets in load_sts_tasks(data).values() for p in subsets.values()
                        for s in (*p.sentences1, *p.sentences2)})
    lengths = [len(ids) for ids in model.tokenizer(sentences, truncation=False, verbose=False)["input_ids"]]
    out.update({"distinct_sts_test_sentences": len(sentences),
                f"longer_than_{args.max_seq_length}_tokens": sum(n > args.max_seq_length for n in lengths),
                "longest_tokens": max(lengths)})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
