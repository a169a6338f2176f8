"""What each stage hands the next, typed: frozen dataclasses in place of dicts keyed ``"path"``,
``"stage_path"``, ``"kind"``, ``"rejects"``.

A stage run by the flow writes its output into the content-keyed cache (``<workdir>/stages/...``):
``path`` is that file (or folder), relative to the workdir where the cached result is stored and
absolute once the flow has it. A stage that also publishes a copy (curate: ``corpus.parquet``;
train: the ``model`` link) carries both: ``path`` the published copy, ``stage_path`` the cached one,
which the next stage reads (its content, not the published copy's config stamp, is the key).

Prefect persists task results with its JSON serializer: a dataclass goes out as its fields and
comes back through pydantic (``TypeAdapter``), so every field is a JSON type. ``dataclasses.replace`` gives a
copy with other paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CuratedCorpus", "EvaluatedModel", "GeneratedCorpus", "GeneratedShard", "LoadedInput", "ScoredShard",
           "StageFile", "TrainedModel", "sum_rejects"]


@dataclass(frozen=True)
class StageFile:
    """A file a stage wrote, and its rows."""

    path: str
    rows: int


@dataclass(frozen=True)
class LoadedInput(StageFile):
    """The run's input, read by the input rules: ``kind`` is ``premises`` (stage 1 runs) or
    ``triplets`` (the run enters at stage 2); ``stats``: rows read, empty, duplicates, kept."""

    kind: str = "premises"
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratedShard(StageFile):
    """One shard of stage 1: the rows cleaning kept, and the rejected ones counted by reason."""

    rejects: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratedCorpus(StageFile):
    """Stage 1's shards concatenated; ``rejects`` summed over them (they head the curation funnel)."""

    rejects: dict = field(default_factory=dict)
    kind: str = "generated"


@dataclass(frozen=True)
class ScoredShard(StageFile):
    """One shard of stage 2a and what scoring left in it (``scoring.apply.scoring_outcomes``):
    ``failed`` requests (retried by the next run) with their ``first_errors``, ``unparsable``
    replies and prompts over the context (``prompt_too_long``), both final."""

    failed: int = 0
    unparsable: int = 0
    first_errors: list = field(default_factory=list)
    prompt_too_long: int = 0


@dataclass(frozen=True)
class CuratedCorpus(StageFile):
    """Stage 2b: the curated corpus (``path``; ``stage_path`` the cached stage file it was
    published from), how many rows curation ``kept``, its ``funnel`` and the report's files."""

    kept: int = 0
    funnel: dict = field(default_factory=dict)
    stage_path: str | None = None
    report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedModel:
    """Stage 3: the model folder (``path``; ``stage_path`` the cached folder behind a published
    link), its cache ``key`` and the training report."""

    path: str
    key: str
    report: dict
    stage_path: str | None = None


@dataclass(frozen=True)
class EvaluatedModel:
    """Evaluation of one model: the results file (``path``), the results, and where they were
    published (None: not published)."""

    path: str
    results: dict
    published: str | None = None


def sum_rejects(shards) -> dict[str, int]:
    """Stage 1's reject counts by reason over its shards (:class:`GeneratedShard`)."""
    totals: dict[str, int] = {}
    for shard in shards:
        for reason, count in shard.rejects.items():
            totals[reason] = totals.get(reason, 0) + count
    return totals
