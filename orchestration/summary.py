"""A run summary per flow run: time per stage, counts per stage, LLM tokens and cost.

Written to ``<workdir>/run_summary.json`` and shown as a table artifact in the UI.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from prefect.artifacts import create_table_artifact

from multicsr_core.config import PipelineConfig
from multicsr_core.io.corpus import read_provenance
from multicsr_core.llm.accounting import Pricing
from multicsr_core.llm.cache import ResponseCache, default_cache_path
from multicsr_core.pipeline.results import CuratedCorpus


class RunSummary:
    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.stages: dict[str, dict] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.stages.setdefault(name, {})["seconds"] = round(time.monotonic() - start, 3)

    def llm_usage(self, cfg: PipelineConfig) -> dict:
        """Tokens and cost of every LLM reply held in this workdir's response cache (all runs:
        a resumed run's earlier replies count once, since each is stored once)."""
        path = default_cache_path(self.workdir)
        if not path.is_file():
            return {}
        with ResponseCache(path) as cache:
            prompt_tokens, completion_tokens = cache.token_totals()
            batch_prompt, batch_completion = cache.token_totals(batch_api=True)
            counts = cache.counts()
        s = cfg.scoring
        pricing = Pricing(s.price_input_per_1m, s.price_output_per_1m)
        # replies through the OpenAI Batch API cost batch_price_factor of the price
        cost = (pricing.cost(prompt_tokens - batch_prompt, completion_tokens - batch_completion)
                + s.batch_price_factor * pricing.cost(batch_prompt, batch_completion))
        usage = {"replies_ok": counts.get("ok", 0), "replies_failed": counts.get("failed", 0),
                 "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "cost_usd": round(cost, 6)}
        if batch_prompt or batch_completion:
            usage.update(batch_api_prompt_tokens=batch_prompt, batch_api_completion_tokens=batch_completion)
        return usage

    def publish(self, corpus: CuratedCorpus, cfg: PipelineConfig, publish_dir: str | Path | None = None) -> str:
        """Write ``run_summary.json`` into ``publish_dir`` (the run's staging folder; default the
        workdir) and the table artifact; returns the published path."""
        funnel = read_provenance(corpus.path).get("funnel", {})
        usage = self.llm_usage(cfg)
        summary = {"config_hash": cfg.config_hash(), "stages": self.stages, "funnel": funnel, "llm_usage": usage}
        path = Path(publish_dir if publish_dir is not None else self.workdir) / "run_summary.json"
        path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        rows = [{"section": "time per stage", "item": k, "value": v.get("seconds"), "unit": "s"}
                for k, v in self.stages.items()]
        rows += [{"section": "funnel", "item": k, "value": v, "unit": "rows"} for k, v in funnel.items()]
        rows += [{"section": "LLM usage", "item": k, "value": v, "unit": _usage_unit(k)} for k, v in usage.items()]
        create_table_artifact(rows, key="run-summary", description="Time per stage (s), the funnel's counts, LLM "
                                                                   "tokens and cost")
        return str(self.workdir / "run_summary.json")


def _usage_unit(key: str) -> str:
    """The unit of an ``llm_usage`` entry: ``cost_usd`` -> USD, ``*_tokens`` -> tokens, ``replies_*`` -> replies."""
    if key.endswith("_usd"):
        return "USD"
    return "tokens" if key.endswith("_tokens") else "replies"
