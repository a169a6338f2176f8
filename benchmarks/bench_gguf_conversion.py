"""GGUF conversion with one shared ``GGUFReader`` per file against transformers' own re-parsing.

transformers parses a GGUF file anew for the config, the tokenizer's config, the tokenizer and the
weights; :func:`multicsr_core.models.shared_gguf_reader` makes those parses share one reader.
This script converts the same file into fresh temporary caches both ways, interleaved, and checks
that both folders hold the same weights and the same tokenizer:

    python benchmarks/bench_gguf_conversion.py --llm bundled:smollm2-135m-instruct --repeats 3
    python benchmarks/bench_gguf_conversion.py --llm bundled:gemma-3-270m --repeats 1

Prints the load average (a ratio measured under load can be off), each conversion's seconds, the
median of each way and their ratio, and writes them as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multicsr_core import models  # noqa: E402


def convert_once(gguf: Path, shared: bool) -> tuple[float, Path]:
    out = Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    started = time.perf_counter()
    with models.shared_gguf_reader() if shared else contextlib.nullcontext():
        models._check_gguf_header(gguf)  # as ensure_gguf_converted does before converting
        models._dequantize_gguf(gguf, out)
    return time.perf_counter() - started, out


def folder_digest(folder: Path) -> str:
    """The weights and the tokenizer, whatever the write order: sha256 over the sorted files' bytes."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.suffix in (".safetensors", ".json") and path.name != "generation_config.json":
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", default="bundled:smollm2-135m-instruct", help="a .gguf file or a bundled GGUF ref")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    try:
        gguf = models.gguf_file_for(args.llm)
    except models.ModelRefError as exc:
        raise SystemExit(f"error: {exc}") from None
    if gguf is None:
        raise SystemExit(f"error: {args.llm} is not a GGUF file or a bundled GGUF model")
    print(f"load average at start: {os.getloadavg()}  file: {gguf} ({gguf.stat().st_size / 2**20:.0f} MiB)", flush=True)
    times: dict[str, list[float]] = {"transformers alone": [], "one shared reader": []}
    digests: dict[str, set[str]] = {k: set() for k in times}
    for repeat in range(args.repeats):
        for label, shared in (("transformers alone", False), ("one shared reader", True)):
            seconds, out = convert_once(gguf, shared)
            times[label].append(seconds)
            digests[label].add(folder_digest(out))
            for path in out.iterdir():
                path.unlink()
            out.rmdir()
            print(f"repeat {repeat + 1}: {label:20s} {seconds:7.1f} s", flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    same = digests["transformers alone"] == digests["one shared reader"] and len(digests["one shared reader"]) == 1
    ratio = medians["one shared reader"] / medians["transformers alone"]
    print(f"median: transformers alone {medians['transformers alone']:.1f} s, one shared reader "
          f"{medians['one shared reader']:.1f} s: {ratio:.2f}x the time; same folder contents: {same}")
    print(f"load average at end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"file": str(gguf), "times_s": times, "median_s": medians, "ratio": ratio,
                                         "same_contents": same, "load_average_end": os.getloadavg()}, indent=2))
    if not same:
        raise SystemExit("the two ways wrote different folders")


if __name__ == "__main__":
    main()
