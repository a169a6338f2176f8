import os

import pyarrow.parquet as pq
import pytest

from multicsr_core.io.corpus import (CORPUS_SCHEMA, corpus_table, kept_triplets, make_provenance, read_corpus,
                                     read_provenance, write_parquet_atomic)


def test_schema_roundtrip_and_provenance(tmp_path):
    prov = make_provenance("test", config={"a": 1}, config_hash="abc")
    t = corpus_table([{"premise": "p", "entailment": "e", "contradiction": "c", "kept": True}], prov)
    path = write_parquet_atomic(t, tmp_path / "c.parquet")
    assert pq.read_schema(path).remove_metadata() == CORPUS_SCHEMA
    back = read_corpus(path)
    assert back.column("entailment_score").to_pylist() == [None]
    p = read_provenance(path)
    assert p["config_hash"] == "abc" and p["stage"] == "test" and "torch" in p["versions"]
    assert kept_triplets(back) == (["p"], ["e"], ["c"])


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "c.parquet"
    write_parquet_atomic(corpus_table([{"premise": "old"}]), path)
    before = path.read_bytes()


    class BadTable:
        schema = None

    with pytest.raises(Exception):
        write_parquet_atomic(BadTable(), path)  # pq.write_table fails mid-way
    assert path.read_bytes() == before
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_unknown_column_rejected():
    with pytest.raises(ValueError, match="unknown corpus columns"):
        corpus_table({"premise": ["a"], "bogus": [1]})
