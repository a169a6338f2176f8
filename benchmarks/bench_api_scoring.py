"""API scoring throughput: N requests at fixed server latency L and concurrency C.

The server (tests/openai_server.py) runs in its own process on 127.0.0.1 and sleeps L seconds
per request; the client is our OpenAIChatBackend scoring N distinct pairs through the real
``openai`` client and a fresh SQLite response cache (every answer committed as it arrives).
The ideal wall time is N * L / C (C requests always in flight, zero overhead); the figure
reported is measured / ideal (goal <= 1.2). A second pass over the same pairs, all cache hits,
is timed too.

    python benchmarks/bench_api_scoring.py                      # the default grid
    python benchmarks/bench_api_scoring.py --n 1000 --latency 0.2 --concurrency 64
    python benchmarks/bench_api_scoring.py --compare-typed      # also the typed client method

``--compare-typed`` runs every point a second time with the backend sending through the openai
client's typed ``chat.completions.create`` (request transformed through its TypedDicts, response
built as pydantic models) instead of the low-level ``post`` our backend uses, side by side in
the same run: the client CPU per request and the wall/ideal of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from multicsr_core.llm.cache import ResponseCache  # noqa: E402
from multicsr_core.llm.chat import parse_completion  # noqa: E402
from multicsr_core.llm.direct import DirectTransport  # noqa: E402
from multicsr_core.llm.openai_backend import OpenAIChatBackend  # noqa: E402
from multicsr_core.llm.settings import APISettings  # noqa: E402
from multicsr_core.scoring.llm import OpenAIScorer  # noqa: E402


class TypedCreateTransport(DirectTransport):
    """The baseline for --compare-typed: the same transport, sending through ``chat.completions.create``."""

    async def _create(self, client, request):
        completion = await client.chat.completions.create(model=self.connection.model, messages=list(request.messages),
                                                          **dict(request.params))
        return parse_completion(completion.model_dump())  # the same fields and checks as ours, from the typed object


# L = 0.5 s is a typical chat-API latency for a one-token reply; L = 0.1 s stresses the client.
DEFAULT_GRID = [(256, 0.1, 8), (512, 0.1, 32), (512, 0.5, 32), (1024, 0.5, 64)]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(REPO / "tests" / "openai_server.py"), "--latency", str(latency)],
                               stdout=subprocess.PIPE, text=True)
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http://127.0.0.1:"):
        process.kill()
        raise RuntimeError(f"test server did not start (printed {base_url!r})")
    return process, base_url


def run_one(n: int, latency: float, concurrency: int, typed: bool = False) -> dict:
    server, base_url = start_server(latency)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            cache = ResponseCache(Path(workdir) / "responses.sqlite")
            backend = OpenAIChatBackend("bench-model", cache=cache, api_key="sk-bench",
                                        settings=APISettings(base_url=base_url, concurrency=concurrency, timeout_s=30.0))
            if typed:
                backend.transport = TypedCreateTransport(backend.connection, backend.replies)
            scorer = OpenAIScorer(backend)
            premises = [f"premise {i}: a man is playing a guitar on a stage" for i in range(n)]
            hypotheses = [f"hypothesis {i}: someone makes music" for i in range(n)]
            scorer.score_pairs(premises[:concurrency], hypotheses[:concurrency])  # warm up connections
            premises, hypotheses = premises[concurrency:] + [f"extra {i}" for i in range(concurrency)], \
                hypotheses[concurrency:] + [f"extra hypothesis {i}" for i in range(concurrency)]
            started, cpu_started = time.perf_counter(), time.process_time()
            scores = scorer.score_pairs(premises, hypotheses)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            assert all(score.ok for score in scores), scorer.last_report.first_errors()
            assert scorer.last_report.usage.requests == n
            started = time.perf_counter()
            scorer.score_pairs(premises, hypotheses)
            cached_wall = time.perf_counter() - started
            assert scorer.last_report.n_cached == n
            cache.close()
    finally:
        server.kill()
        server.wait()
    ideal = n * latency / concurrency
    return {"client": "typed create" if typed else "post (ours)", "n": n, "latency_s": latency, "concurrency": concurrency, "ideal_s": round(ideal, 3),
            "wall_s": round(wall, 3), "ratio": round(wall / ideal, 3), "requests_per_s": round(n / wall, 1),
            "client_cpu_ms_per_request": round(1000 * cpu / n, 2),
            "cached_rerun_s": round(cached_wall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int)
    parser.add_argument("--latency", type=float)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--compare-typed", action="store_true", help="also run each point through the typed method")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    grid = [(args.n, args.latency, args.concurrency)] if args.n else DEFAULT_GRID
    rows = []
    for point in grid:
        rows.append(run_one(*point))
        if args.compare_typed:
            rows.append(run_one(*point, typed=True))
    print(f"{'client':<13} {'N':>6} {'L (s)':>6} {'C':>4} {'ideal (s)':>10} {'wall (s)':>9} {'wall/ideal':>10} {'req/s':>7} "
          f"{'client CPU ms/req':>17} {'cached rerun (s)':>17}")
    for row in rows:
        print(f"{row['client']:<13} {row['n']:>6} {row['latency_s']:>6} {row['concurrency']:>4} {row['ideal_s']:>10} {row['wall_s']:>9} "
              f"{row['ratio']:>10} {row['requests_per_s']:>7} {row['client_cpu_ms_per_request']:>17} "
              f"{row['cached_rerun_s']:>17}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (the server runs in "
          "its own process on the same machine)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
