from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from multicsr_core.io.inputs import InputError, read_premises, read_triplets

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_lines_strip_empty_duplicates(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("  a cat sits.  \n\nA dog runs.\na cat sits.\n   \nBirds fly.\n", encoding="utf-8")
    ps = read_premises(f)
    assert ps.premises == ["a cat sits.", "A dog runs.", "Birds fly."]
    assert ps.source_rows == [1, 3, 6]
    assert ps.stats.as_dict() == {"read": 6, "empty": 2, "duplicates": 1, "limited": 0, "kept": 3}


def test_real_simcse_nli_csv_and_txt():
    ps = read_premises(SHARED / "nli" / "snli_devtest_for_simcse.csv", fmt="simcse-nli")
    assert ps.stats.read == 5864 and ps.stats.kept + ps.stats.duplicates == 5864
    assert all(p.strip() == p and p for p in ps.premises)
    txt = read_premises(SHARED / "nli" / "snli_devtest_premises.txt")
    assert txt.stats.kept == 6641


def test_named_columns_csv_tsv_jsonl_parquet(tmp_path):
    (tmp_path / "a.tsv").write_text("id\tbody\n1\tHello there.\n2\tGeneral Kenobi.\n", encoding="utf-8")
    assert read_premises(tmp_path / "a.tsv", column="body").premises == ["Hello there.", "General Kenobi."]
    (tmp_path / "a.jsonl").write_text('{"text": "One."}\n{"text": "Two."}\n', encoding="utf-8")
    assert read_premises(tmp_path / "a.jsonl").premises == ["One.", "Two."]
    pq.write_table(pa.table({"sentence": ["x y.", "z."]}), tmp_path / "a.parquet")
    assert read_premises(tmp_path / "a.parquet").premises == ["x y.", "z."]


def test_errors_name_file_and_line(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_premises(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nsecond\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"bad\.txt:3: not valid UTF-8"):
        read_premises(bad)
    long = tmp_path / "long.txt"
    long.write_text("short\n" + "x" * 50 + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"long\.txt:2: sentence of 50 characters exceeds max_chars=10"):
        read_premises(long, max_chars=10)
    (tmp_path / "c.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.csv: no column 'body'"):
        read_premises(tmp_path / "c.csv", column="body")
    (tmp_path / "j.jsonl").write_text('{"text": "ok"}\n{broken\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"j\.jsonl:2: not valid JSON"):
        read_premises(tmp_path / "j.jsonl")


def test_triplets_real_snli_and_scores(tmp_path):
    table, stats = read_triplets(SHARED / "nli" / "snli_devtest_for_simcse.csv")
    assert stats.read == 5864 and table.num_rows == stats.kept > 5000
    assert table.column("source_row").to_pylist()[0] == 2  # first data line after the header
    f = tmp_path / "t.csv"
    f.write_text("sent0,sent1,hard_neg,entailment_score,contradiction_score\na,b,c,4.0,1.0\nd,,f,3,3\na,b,c,4.0,1.0\n")
    t, s = read_triplets(f)
    assert t.num_rows == 1 and s.empty == 1 and s.duplicates == 1
    assert t.column("entailment_score").to_pylist() == [4.0]
    g = tmp_path / "g.csv"
    g.write_text("sent0,sent1\na,b\n")
    with pytest.raises(InputError, match=r"g\.csv:1: missing column"):
        read_triplets(g)
    h = tmp_path / "h.csv"
    h.write_text("sent0,sent1,hard_neg,entailment_score\na,b,c,high\n")
    with pytest.raises(InputError, match=r"h\.csv:2: entailment_score='high' is not a number"):
        read_triplets(h)
