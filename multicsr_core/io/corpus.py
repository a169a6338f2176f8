"""The triplet corpus: one explicit pyarrow schema, provenance metadata, atomic writes.

Every stage exchanges this table (never pickles or CSV). Columns a stage has not reached yet
are null: a freshly generated shard has no scores, a scored one is not yet curated. The
provenance (config, its hash, package versions, model ids) travels in the Parquet schema
metadata under the key ``multicsr``.
"""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from multicsr_core.errors import InputError
from multicsr_core.io.atomic import atomic_path
from multicsr_core.redaction import redact_secrets

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
        # One-forward LLM scoring: probability on the score tokens (scoring/llm.py); null otherwise.
        pa.field("entailment_score_mass", pa.float64()),
        pa.field("contradiction_score_mass", pa.float64()),
        pa.field("kept", pa.bool_()),
        pa.field("reject_reason", pa.string()),
        pa.field("swapped", pa.bool_()),
        pa.field("entailment_prompt_id", pa.string()),
        pa.field("contradiction_prompt_id", pa.string()),
        pa.field("entailment_prompt", pa.string()),
        pa.field("contradiction_prompt", pa.string()),
        pa.field("source_row", pa.int64()),
        # Stage 1: the decoded outputs before cleaning (generation/cleaning.py); null otherwise.
        pa.field("entailment_raw", pa.string()),
        pa.field("contradiction_raw", pa.string()),
    ]
)
COLUMNS = [f.name for f in CORPUS_SCHEMA]
# Columns added after files were first written: a file without them reads as null there.
OPTIONAL_COLUMNS = ("entailment_score_mass", "contradiction_score_mass", "entailment_raw", "contradiction_raw")

# The columns a premise file becomes before generation.
PREMISE_SCHEMA = pa.schema([pa.field("premise", pa.string(), nullable=False), pa.field("source_row", pa.int64())])


def package_versions() -> dict[str, str]:
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
    return redact_secrets(prov)  # a config's base URL may carry user:key


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
    # every provenance reaches the file through here: URL credentials and secret keys never do
    meta[METADATA_KEY] = json.dumps(redact_secrets(provenance), sort_keys=True, default=str).encode("utf-8")
    return table.replace_schema_metadata(meta)


def read_provenance(path: str | Path) -> dict:
    meta = parquet_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_parquet_atomic(table: pa.Table, path: str | Path, row_group_size: int = 65536) -> Path:
    """Write to a temporary file beside ``path``, fsync, then ``os.replace``: readers never see
    a partial file, and a crash mid-write leaves the previous file untouched."""
    with atomic_path(path, fsync=True) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
    return Path(path)


def _parquet_error(path: Path, exc: Exception) -> InputError:
    size = path.stat().st_size
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    what = "is empty (0 bytes)" if size == 0 else f"is not a readable Parquet file ({size} bytes: {detail})"
    return InputError(f"{what}; it may be truncated or of another format: give a Parquet file "
                      "(or a .csv/.tsv/.jsonl with the matching extension)", path=path)


def _check_parquet_path(path: Path) -> None:
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("is a directory; give a Parquet file", path=path)


def parquet_schema(path: str | Path) -> pa.Schema:
    """The schema of a Parquet file (its footer only), or an :class:`InputError` naming the file."""
    path = Path(path)
    _check_parquet_path(path)
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise _parquet_error(path, exc) from None


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet table (or some columns), or an :class:`InputError` naming the file."""
    path = Path(path)
    _check_parquet_path(path)
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise _parquet_error(path, exc) from None


def _kind_ok(target: pa.DataType, source: pa.DataType) -> bool:
    """Whether ``source`` holds the same kind of value as ``target`` (text, number, flag): a cast
    between kinds (an integer column read as text) would silently change the data."""
    if pa.types.is_null(source):
        return True
    if pa.types.is_dictionary(source):
        source = source.value_type
    if pa.types.is_string(target):
        return pa.types.is_string(source) or pa.types.is_large_string(source)
    if pa.types.is_floating(target):
        return pa.types.is_floating(source) or pa.types.is_integer(source)
    if pa.types.is_integer(target):
        return pa.types.is_integer(source)
    if pa.types.is_boolean(target):
        return pa.types.is_boolean(source)
    return source == target


def check_corpus_columns(table: pa.Table, path: str | Path, columns: list[str] | None = None) -> None:
    """Each of ``columns`` (default: all present) holds the kind of value the corpus schema says,
    and ``premise`` has no nulls; else an :class:`InputError` naming the file, row and column."""
    for name in columns or [c for c in COLUMNS if c in table.column_names]:
        target = CORPUS_SCHEMA.field(name).type
        column = table.column(name)
        if not _kind_ok(target, column.type):
            values = column.to_pylist()
            row = next((i for i, v in enumerate(values, start=1) if v is not None), 1)
            kind = {"string": "text", "double": "a number", "int64": "an integer", "bool": "true/false"}.get(
                str(target), str(target))
            raise InputError(f"column {name!r} holds {column.type} values ({values[row - 1]!r}), not {kind}",
                             path=path, row=row, hint="fix the column's type (it is not converted)")
    if "premise" in table.column_names and table.column("premise").null_count:
        row = table.column("premise").to_pylist().index(None) + 1
        raise InputError("premise is null; every row needs a premise", path=path, row=row)


def is_full_corpus(names: Sequence[str]) -> bool:
    """Whether a table has every column of the corpus schema (a file multicsr wrote)."""
    return all(c in names for c in COLUMNS if c not in OPTIONAL_COLUMNS)


def with_optional_columns(table: pa.Table) -> pa.Table:
    """``table`` with every :data:`OPTIONAL_COLUMNS` column it lacks added as nulls."""
    for name in OPTIONAL_COLUMNS:
        if name not in table.column_names:
            field = CORPUS_SCHEMA.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


def read_corpus(path: str | Path) -> pa.Table:
    """Read a corpus file multicsr wrote: every schema column present (extra ones are dropped),
    each of the right kind, no null premise; else an :class:`InputError` naming the file."""
    path = Path(path)
    table = with_optional_columns(read_parquet(path))
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"not a multicsr corpus (missing column(s) {', '.join(missing)})", path=path,
                         hint="a triplet file needs sent0,sent1,hard_neg or premise,entailment,contradiction "
                              "(read it with multicsr_core.io.inputs.read_triplets)")
    check_corpus_columns(table, path)
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
