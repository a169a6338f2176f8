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


# ---------------------------------------------------------------- one set of rules, every format
def _write_triplets(path: Path, columns: dict) -> Path:
    """The same table as csv, tsv, jsonl or parquet (by the suffix)."""
    import csv
    import json

    names = list(columns)
    rows = [dict(zip(names, values)) for values in zip(*columns.values())]
    if path.suffix == ".parquet":
        pq.write_table(pa.table(columns), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writerow(names)
            writer.writerows([["" if v is None else v for v in r.values()] for r in rows])
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("naming", [("sent0", "sent1", "hard_neg"), ("premise", "entailment", "contradiction")])
def test_triplets_every_format_either_naming(tmp_path, suffix, naming):
    a, b, c = naming
    path = _write_triplets(tmp_path / f"t{suffix}", {
        a: ["  A dog runs. ", "A cat sleeps.", "A dog runs.", "Birds fly."],
        b: ["An animal moves.", None if suffix in (".jsonl", ".parquet") else "", "An animal moves.", "They move."],
        c: ["A dog sleeps.", "A cat runs.", "A dog sleeps.", "They sit on a branch."],
        "entailment_score": [4.5, 3.0, 4.5, 2.0],
        "contradiction_score": [1.0, 2.0, 1.0, 4.0],
    })
    table, stats = read_triplets(path)
    # stripped; the null/blank row skipped as empty; the duplicate dropped; scores carried over
    assert table.column("premise").to_pylist() == ["A dog runs.", "Birds fly."]
    assert table.column("entailment_score").to_pylist() == [4.5, 2.0]
    assert table.column("source_row").to_pylist()[1] == (5 if suffix in (".csv", ".tsv") else 4)
    assert stats.as_dict() == {"read": 4, "empty": 1, "duplicates": 1, "limited": 0, "kept": 2}
    where = r":5:" if suffix in (".csv", ".tsv") else (r": row 4:" if suffix == ".parquet" else r":4:")
    with pytest.raises(InputError, match=rf"t\{suffix}{where} sentence of 21 characters exceeds max_chars=20"):
        read_triplets(path, max_chars=20)


def test_triplet_types_are_checked_not_cast(tmp_path):
    ints = _write_triplets(tmp_path / "i.parquet", {"sent0": [1, 2], "sent1": ["b", "c"], "hard_neg": ["d", "e"]})
    with pytest.raises(InputError, match=r"i\.parquet: row 1: column 'sent0' has type int64 \(1\), not text"):
        read_triplets(ints)
    ints_json = _write_triplets(tmp_path / "i.jsonl", {"sent0": ["a", 7], "sent1": ["b", "c"], "hard_neg": ["d", "e"]})
    with pytest.raises(InputError, match=r"i\.jsonl:2: column 'sent0' holds int 7, not text"):
        read_triplets(ints_json)
    text_score = _write_triplets(tmp_path / "s.parquet", {"premise": ["a"], "entailment": ["b"], "contradiction": ["c"],
                                                           "entailment_score": ["high"]})
    with pytest.raises(InputError, match=r"s\.parquet: row 1: entailment_score='high' is str, not a number"):
        read_triplets(text_score)
    missing = _write_triplets(tmp_path / "m.jsonl", {"sent0": ["a"], "sent1": ["b"]})
    with pytest.raises(InputError, match=r"m\.jsonl:1: missing column\(s\) \['hard_neg'\]"):
        read_triplets(missing)
    ints_premises = _write_triplets(tmp_path / "p.parquet", {"sentence": [1, 2]})
    with pytest.raises(InputError, match=r"p\.parquet: row 1: column 'sentence' has type int64"):
        read_premises(ints_premises)


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(InputError, match=r"e\.txt: no usable sentences: the file is empty \(0 bytes\)"):
        read_premises(tmp_path / "e.txt")
    (tmp_path / "b.txt").write_text("  \n\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"b\.txt: no usable sentences: all 2 rows are empty or blank"):
        read_premises(tmp_path / "b.txt")
    (tmp_path / "h.csv").write_text("sent0,sent1,hard_neg\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"h\.csv: no usable triplets: the file holds no rows after its header"):
        read_triplets(tmp_path / "h.csv")


def test_parquet_that_is_not_parquet(tmp_path):
    from multicsr_core.io.corpus import read_corpus

    (tmp_path / "z.parquet").write_bytes(b"")
    (tmp_path / "x.parquet").write_text("sent0,sent1\n", encoding="utf-8")
    for name, what in (("z.parquet", r"is empty \(0 bytes\)"), ("x.parquet", r"is not a readable Parquet file")):
        with pytest.raises(InputError, match=rf"{name}: {what}"):
            read_triplets(tmp_path / name)
        with pytest.raises(InputError, match=rf"{name}: {what}"):
            read_corpus(tmp_path / name)
        with pytest.raises(InputError, match=rf"{name}: {what}"):
            read_premises(tmp_path / name)


def test_skipped_user_triplets_are_named_in_a_warning(tmp_path, caplog):
    """A user's Parquet triplets with a null premise and a duplicate row enter stage 2 without
    them, and a warning naming the file says how many were skipped."""
    import logging

    import pyarrow as pa
    import pyarrow.parquet as pq

    from multicsr_core.io.inputs import read_any_corpus

    path = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"premise": ["A man plays.", None, "A man plays."],
                             "entailment": ["A man is playing.", "x", "A man is playing."],
                             "contradiction": ["Nobody plays.", "y", "Nobody plays."]}), path)
    with caplog.at_level(logging.WARNING, logger="multicsr_core.io.inputs"):
        table = read_any_corpus(path)
    assert table.num_rows == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: {path}: skipped 1 row(s) with an empty or null field and 1 duplicate triplet(s); 1 of 3 kept"]
