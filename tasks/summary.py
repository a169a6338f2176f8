"""A run summary per flow run: time per stage, counts per stage, LLM tokens and cost.

Written to ``<workdir>/run_summary.json`` and shown as a table artifact in the UI.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from prefect.artifacts import create_table_artifact

from multicsr_core.io.corpus import read_provenance


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

    def publish(self, corpus: dict) -> str:
        funnel = read_provenance(corpus["path"]).get("funnel", {})
        usage_path = self.workdir / "cache" / "llm_usage.json"
        usage = json.loads(usage_path.read_text()) if usage_path.is_file() else {}
        summary = {"stages": self.stages, "funnel": funnel, "llm_usage": usage}
        path = self.workdir / "run_summary.json"
        path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        rows = [{"stage": k, "seconds": v.get("seconds")} for k, v in self.stages.items()]
        rows += [{"stage": f"count:{k}", "seconds": None, "value": v} for k, v in funnel.items()]
        rows += [{"stage": f"llm:{k}", "seconds": None, "value": v} for k, v in usage.items()]
        create_table_artifact(rows, key="run-summary", description="Time per stage, counts, LLM tokens and cost")
        return str(path)
