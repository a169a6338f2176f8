"""Stage 2b from the typed config: the keep rule over scored triplets, the curated corpus with its
provenance, and the curation report. ``curate_stage`` is ``multicsr curate`` (one file in, one
out); a flow run curates its scored shards (``curate_shards``, cached) and publishes the result
(``publish_curated_stage``). Both write through :func:`publish_curated`, so the funnel, the
provenance and the report are made one way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa

from multicsr_core.config import CurationConfig, PipelineConfig
from multicsr_core.curation import curate_table, curation_funnel
from multicsr_core.curation_report import write_curation_report
from multicsr_core.io.corpus import (concat_corpus, make_provenance, read_corpus, read_provenance, with_provenance,
                                     write_parquet_atomic)
from multicsr_core.io.inputs import read_any_corpus
from multicsr_core.pipeline.results import CuratedCorpus


def curate_rows(table: pa.Table, curation: CurationConfig, swap_mode: str) -> tuple[pa.Table, dict]:
    """``table`` with ``kept``, ``reject_reason`` and ``swapped`` filled by the configured rule, and
    its funnel (scored, kept, each reject reason)."""
    c = curation
    curated = curate_table(table, c.rule, c.alpha, c.beta, c.gamma, c.enabled, swap_mode)
    return curated, curation_funnel(curated)


def funnel_with_generation(funnel: dict, generation_rejects: dict | None) -> dict:
    """The curation funnel headed by stage 1's counts (premises, rows cleaning rejected by reason)
    when the corpus was generated."""
    if not generation_rejects:
        return funnel
    # imported here: the generation package loads torch and transformers, which `multicsr curate` never needs
    from multicsr_core.generation.engine import generation_funnel

    return {**generation_funnel(generation_rejects), **funnel}


def publish_curated(table: pa.Table, provenance: dict, out_path: str | Path, report_dir: str | Path,
                    curation: CurationConfig, generation_rejects: dict | None = None) -> dict:
    """Write the curated ``table`` to ``out_path`` with ``provenance`` (its funnel headed by stage 1's
    reject counts, when there are any) and the curation report into ``report_dir``; returns the
    report (``curation_report.write_curation_report``: files, funnel, markdown)."""
    if generation_rejects:
        provenance = {**provenance,
                      "funnel": funnel_with_generation(provenance.get("funnel", {}), generation_rejects)}
    write_parquet_atomic(with_provenance(table, provenance), out_path)
    return write_curation_report(table, report_dir, curation, generation_rejects=generation_rejects)


def curate_stage(cfg: PipelineConfig, corpus: str | Path, out_path: str | Path, report_dir: str | Path,
                 swap_mode: str = "generation") -> dict:
    """``multicsr curate``: apply the keep rule to a scored corpus (a corpus Parquet, or scored
    triplets of any format); write the curated corpus and its report. Returns the funnel; a corpus
    that stage 1 generated (``generate -> score -> curate``) has stage 1's reject counts at its head."""
    table = read_any_corpus(corpus, cfg.input.max_chars)
    curated, funnel = curate_rows(table, cfg.curation, swap_mode)
    input_prov = read_provenance(corpus) if Path(corpus).suffix.lower() in (".parquet", ".pq") else {}
    generation_rejects = (input_prov.get("input_provenance") or {}).get("generation_rejects")
    prov = make_provenance("curate", config=cfg.to_dict(), config_hash=cfg.config_hash(), input=str(corpus),
                           input_provenance=input_prov, funnel=funnel, swap_mode=swap_mode)
    publish_curated(curated, prov, out_path, report_dir, cfg.curation, generation_rejects)
    return funnel_with_generation(funnel, generation_rejects)


def curate_shards(shard_paths: Sequence[str | Path], shard_hashes: Sequence[str], curation: CurationConfig,
                  swap_mode: str, out_path: str | Path) -> CuratedCorpus:
    """A flow run's curation: the scored shards (``shard_hashes``: their content hashes, recorded)
    concatenated and curated into ``out_path``, whose provenance holds only what determined it
    (the curation section, the swap mode, the shards), so it is the same file whatever run wrote it."""
    table = concat_corpus([read_corpus(p) for p in shard_paths])
    curated, funnel = curate_rows(table, curation, swap_mode)
    prov = make_provenance("curate", curation=curation.model_dump(mode="json"), swap_mode=swap_mode, funnel=funnel,
                           shards=list(shard_hashes))
    write_parquet_atomic(concat_corpus([curated], prov), out_path)
    return CuratedCorpus(str(out_path), curated.num_rows, kept=funnel["kept"], funnel=funnel)


def publish_curated_stage(stage_path: str | Path, cfg: PipelineConfig, publish_dir: str | Path,
                          generation_rejects: dict | None = None) -> dict:
    """Publish a flow run's curated stage file as ``publish_dir/corpus.parquet`` stamped with the
    run's whole config (and its hash), and the report into ``publish_dir/reports``; returns the
    report (:func:`publish_curated`)."""
    publish_dir = Path(publish_dir)
    prov = {**read_provenance(stage_path), "config": cfg.to_dict(), "config_hash": cfg.config_hash()}
    return publish_curated(read_corpus(stage_path), prov, publish_dir / "corpus.parquet", publish_dir / "reports",
                           cfg.curation, generation_rejects)
