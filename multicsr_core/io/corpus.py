"""The triplet corpus: one explicit pyarrow schema, provenance metadata, atomic writes.

Every stage exchanges this table (never pickles or CSV). Columns a stage has not reached yet
are null: a freshly generated shard has no scores, a scored one is not yet curated. The
provenance (config, its hash, package versions, model ids) travels in the Parquet schema
metadata under the key ``multicsr``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"multicsr"

CORPUS_SCHEMA = pa.schema(
    [
        pa.field("premise", pa.string(), nullable=False),
        pa.field("entailment", pa.string()),
        pa.field("contradiction", pa.string()),
        pa.field("entailment_score", pa.float64()),
        pa.field("contradiction_score", pa.float64()),
        pa.field("entailment_score_error", pa.string()),
        pa.field("contradiction_score_error", pa.string()),
        pa.field("entailment_reply", pa.string()),
        pa.field("contradiction_reply", pa.string()),
        pa.field("kept", pa.bool_()),
        pa.field("reject_reason", pa.string()),
        pa.field("swapped", pa.bool_()),
        pa.field("entailment_prompt_id", pa.string()),
        pa.field("contradiction_prompt_id", pa.string()),
        pa.field("entailment_prompt", pa.string()),
        pa.field("contradiction_prompt", pa.string()),
        pa.field("source_row", pa.int64()),
    ]
)
COLUMNS = [f.name for f in CORPUS_SCHEMA]

# The columns a premise file becomes before generation.
PREMISE_SCHEMA = pa.schema([pa.field("premise", pa.string(), nullable=False), pa.field("source_row", pa.int64())])


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("multicsr", "torch", "transformers", "sentence-transformers", "openai", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def make_provenance(stage: str, config: dict | None = None, config_hash: str | None = None, **extra: Any) -> dict:
    """What made a file: stage, config and its hash, versions, models, time. Never secrets."""
    prov = {"stage": stage, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": package_versions()}
    if config is not None:
        prov["config"] = config
    if config_hash is not None:
        prov["config_hash"] = config_hash
    prov.update(extra)
    return prov


def empty_columns(n: int) -> dict[str, list]:
    return {name: [None] * n for name in COLUMNS}


def corpus_table(rows: dict[str, Sequence] | Iterable[dict], provenance: dict | None = None) -> pa.Table:
    """Build a corpus table from column lists (or row dicts); missing columns become null."""
    if not isinstance(rows, dict):
        rows = list(rows)
        cols = {name: [r.get(name) for r in rows] for name in COLUMNS}
    else:
        unknown = set(rows) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown corpus columns: {sorted(unknown)}")
        n = len(next(iter(rows.values()))) if rows else 0
        cols = {name: list(rows[name]) if name in rows else [None] * n for name in COLUMNS}
    table = pa.table(cols, schema=CORPUS_SCHEMA)
    return with_provenance(table, provenance) if provenance else table


def with_provenance(table: pa.Table, provenance: dict) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode("utf-8")
    return table.replace_schema_metadata(meta)


def read_provenance(path: str | Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_parquet_atomic(table: pa.Table, path: str | Path, row_group_size: int = 65536) -> Path:
    """Write to a temporary file beside ``path``, fsync, then ``os.replace``: readers never see
    a partial file, and a crash mid-write leaves the previous file untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs are ordinary files
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_corpus(path: str | Path) -> pa.Table:
    """Read a corpus file, checking it has our schema's columns (extra columns are an error)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus file not found")
    table = pq.read_table(path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a multicsr corpus (missing columns {missing}); "
                         "triplet csv/tsv files enter through read_triplets")
    return table.select(COLUMNS).cast(CORPUS_SCHEMA.with_metadata(table.schema.metadata))


def concat_corpus(tables: Sequence[pa.Table], provenance: dict | None = None) -> pa.Table:
    if not tables:
        return corpus_table({}, provenance)
    out = pa.concat_tables([t.select(COLUMNS).cast(CORPUS_SCHEMA) for t in tables])
    return with_provenance(out, provenance) if provenance else out


def kept_triplets(table: pa.Table) -> tuple[list[str], list[str], list[str]]:
    """The (anchor, positive, hard negative) lists of the rows curation kept."""
    kept = table.column("kept").to_pylist()
    cols = [table.column(c).to_pylist() for c in ("premise", "entailment", "contradiction")]
    idx = [i for i, k in enumerate(kept) if k]
    return tuple([col[i] for i in idx] for col in cols)  # type: ignore[return-value]
