"""Input files on real machines, through the real ``multicsr`` console script (subprocesses): rows
with more (or fewer) fields than the header, control characters, quotes, line breaks that shift
line numbers, binary files, and inputs that are not regular files (``<(cmd)``, ``/dev/stdin``,
FIFOs with and without a writer, a terminal, an endless stream, symlink loops).

A user error is exit 2 and ONE ``error:`` line on stderr naming the file and the 1-based line where
there is one, no traceback, and no output written. Pipes are real (``bash -c`` process
substitution, ``os.mkfifo``, a pseudo-terminal); nothing of ours is mocked.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from multicsr_core.io.corpus import corpus_table, write_parquet_atomic
from multicsr_core.io.inputs import InputError, read_premises, read_triplets

MULTICSR = str(Path(sys.executable).with_name("multicsr"))
HEADER = "sent0,sent1,hard_neg,entailment_score,contradiction_score\n"
ROWS = ["A dog runs.,An animal moves.,A dog sleeps.,4.5,1.0\n",
        "A cat sits.,A pet rests.,A cat jumps.,4.0,1.5\n",
        "Birds fly.,Animals move.,Birds sit.,4.2,0.5\n",
        "Kids play.,Children have fun.,Kids sleep.,4.8,0.2\n"]
GOOD = HEADER + "".join(ROWS)
# `estimate` reads every premise (the max_chars rule included) and calls no LLM: a cheap full read
ESTIMATE = (f"{MULTICSR} estimate --set generation.llm=bundled:smollm2-135m-instruct --set scoring.scorer=guide "
            "--json --workdir {w} --set input.premises={premises}")


def sh(script: str, env: dict[str, str] | None = None, timeout: int = 120,
       stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """``script`` in bash (process substitution, pipes, redirects are bash's own)."""
    full_env = {**os.environ, "MULTICSR_FIFO_TIMEOUT_S": "20", **(env or {})}
    full_env.pop("MULTICSR_DEBUG", None)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=timeout, env=full_env,
                          stdin=stdin)


def curate(corpus: str, out: Path) -> str:
    """The cheapest stage that reads a whole triplet corpus (scores in, no model)."""
    return f"{MULTICSR} curate --rule paper --corpus {corpus} --out {out}"


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, stderr exactly one ``error:`` line holding every needle, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def curated_rows(out: Path) -> list[dict]:
    return pq.read_table(out, columns=["premise", "entailment", "contradiction", "entailment_score",
                                       "contradiction_score", "source_row"]).to_pylist()


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ----------------------------------------------------------------------------- field counts
@pytest.mark.parametrize("name,content,line,needles", [
    # an unquoted comma inside a sentence: the fields after it used to land in the wrong columns
    ("comma.csv", HEADER + ROWS[0] + "A cat sits, then stands.,A pet rests.,A cat jumps.,4.0,1.5\n" + ROWS[2], 3,
     ["row has 6 fields, the header 5", "unquoted comma"]),
    # a decimal comma: used to be read as entailment 4, contradiction 5, exit 0
    ("decimal.csv", HEADER + "A dog runs.,An animal moves.,A dog sleeps.,4,5,1,0\n", 2,
     ["row has 7 fields, the header 5"]),
    # a trailing delimiter: used to be accepted silently
    ("trailing.csv", HEADER + ROWS[0] + ROWS[1].rstrip("\n") + ",\n", 3, ["row has 6 fields, the header 5"]),
    ("tab.tsv", HEADER.replace(",", "\t") + ROWS[0].replace(",", "\t")
     + "A cat\tsits.\tA pet rests.\tA cat jumps.\t4.0\t1.5\n", 3, ["row has 6 fields, the header 5", "unquoted tab"]),
    ("fewer.csv", HEADER + ROWS[0] + "A cat sits.,A pet rests.\n", 3, ["row has 2 fields, the header 5"]),
])
def test_rows_with_another_field_count_than_the_header_are_refused(tmp_path, name, content, line, needles):
    path = write(tmp_path / name, content)
    out = tmp_path / "out.parquet"
    one_line_error(sh(curate(str(path), out)), f"{path}:{line}: ", *needles)
    assert not out.exists()


def test_premise_table_with_an_extra_field_names_its_line(tmp_path):
    path = write(tmp_path / "p.csv", "sentence,id\nA dog runs.,1\nA cat sits, then stands.,2\n")
    one_line_error(sh(ESTIMATE.format(w=tmp_path / "w", premises=path)), f"{path}:3: row has 3 fields, the header 2")
    quoted = write(tmp_path / "q.csv", 'sentence,id\nA dog runs.,1\n"A cat sits, then stands.",2\n')
    assert read_premises(quoted).premises == ["A dog runs.", "A cat sits, then stands."]


# ----------------------------------------------------------------------------- control characters
@pytest.mark.parametrize("name,content,needles", [
    ("nul.csv", HEADER + ROWS[0] + ROWS[1] + "Birds\x00 fly.,Animals move.,Birds sit.,4.2,0.5\n",
     [":4: control character U+0000 (NUL) at column 6", "UTF-8"]),
    ("esc.csv", HEADER + ROWS[0] + "A cat sits.,A pet \x1b[31mrests.,A cat jumps.,4.0,1.5\n",
     [":3: control character U+001B (ESC) at column 19"]),
    # a JSON escape decodes to the same NUL
    ("nul.jsonl", json.dumps({"sent0": "A dog runs.", "sent1": "An animal moves.", "hard_neg": "A dog sleeps.",
                              "entailment_score": 4.5, "contradiction_score": 1.0}) + "\n"
     + json.dumps({"sent0": "A cat\u0000 sits.", "sent1": "A pet rests.", "hard_neg": "A cat jumps.",
                   "entailment_score": 4.0, "contradiction_score": 1.5}) + "\n",
     [":2: control character U+0000 (NUL) (a JSON escape) in 'sent0'"]),
    # UTF-16 without a byte-order mark is valid UTF-8 full of NULs
    ("utf16le.csv", GOOD.encode("utf-16-le"), [":1: control character U+0000 (NUL) at column 2"]),
])
def test_control_characters_are_refused_with_line_and_column(tmp_path, name, content, needles):
    path = write(tmp_path / name, content)
    out = tmp_path / "out.parquet"
    one_line_error(sh(curate(str(path), out)), str(path), *needles)
    assert not out.exists()


def test_control_characters_in_premises_and_line_breaks_that_are_not_lines(tmp_path):
    nul = write(tmp_path / "nul.txt", "A dog runs.\nA cat\x00 sits.\n")
    one_line_error(sh(ESTIMATE.format(w=tmp_path / "w", premises=nul)), f"{nul}:2: control character U+0000")
    feed = write(tmp_path / "feed.txt", "A dog runs.\nA cat\x0csits.\n")  # str.splitlines would split it
    one_line_error(sh(ESTIMATE.format(w=tmp_path / "w", premises=feed)), f"{feed}:2: control character U+000C")
    # U+2028 and U+0085 are no line breaks in a text file: the over-long sentence is on line 4
    seps = write(tmp_path / "seps.txt", "A dog runs.\nA cat\u2028sits.\nBirds\x85fly.\n" + "x" * 2500 + "\n")
    one_line_error(sh(ESTIMATE.format(w=tmp_path / "w", premises=seps)),
                   f"{seps}:4: sentence of 2500 characters exceeds max_chars=2000")
    assert read_premises(seps, max_chars=3000).premises[1] == "A cat\u2028sits."
    sep_json = write(tmp_path / "seps.jsonl", '{"text": "A dog\u2028runs."}\n{"text": 7}\n')
    with pytest.raises(InputError, match=r"seps\.jsonl:2: column 'text' holds int 7"):
        read_premises(sep_json)


# ----------------------------------------------------------------------------- quotes, line numbers
def test_quote_errors_and_multi_line_rows_name_the_right_line(tmp_path):
    out = tmp_path / "out.parquet"
    unclosed = write(tmp_path / "unclosed.csv", HEADER + ROWS[0] + '"A cat sits.,A pet rests.,A cat jumps.,4.0,1.5\n'
                     + ROWS[2] + ROWS[3])
    one_line_error(sh(curate(str(unclosed), out)),
                   f"{unclosed}:3: a quoted field opens in this row and is never closed")
    # a quoted field with a line break (lines 2-3): a row is named by the line it starts on
    multi = write(tmp_path / "multi.csv", HEADER + '"A dog\nruns.",An animal moves.,A dog sleeps.,high,1.0\n' + ROWS[1])
    one_line_error(sh(curate(str(multi), out)), f"{multi}:2: entailment_score='high' is not a number")
    after = write(tmp_path / "after.csv", HEADER + '"A dog\nruns.",An animal moves.,A dog sleeps.,4.5,1.0\n'
                  + ROWS[1] + "Birds fly.,Animals move.,Birds sit.,high,0.5\n")
    one_line_error(sh(curate(str(after), out)), f"{after}:5: entailment_score='high' is not a number")
    glued = write(tmp_path / "glued.csv", HEADER + ROWS[0] + '"A cat" sits.,A pet rests.,A cat jumps.,4.0,1.5\n')
    one_line_error(sh(curate(str(glued), out)), f"{glued}:3: a quoted field has text after its closing quote")
    assert not out.exists()
    # an unclosed quote that a later quote closes: named at the line it opens on
    paired = write(tmp_path / "paired.csv", 'sent0,sent1,hard_neg\n"A dog runs.,b,c\nd,e,f\n"g",h,i\n')
    with pytest.raises(InputError, match=r"paired\.csv:2: a quoted field opens in this row and runs to line 4"):
        read_triplets(paired)
    # blank lines and a multi-line field keep later source rows right
    ok = write(tmp_path / "ok.csv", HEADER + "\n" + '"A dog\nruns.",An animal moves.,A dog sleeps.,4.5,1.0\n' + ROWS[1])
    assert read_triplets(ok)[0].column("source_row").to_pylist() == [3, 5]


@pytest.mark.parametrize("name,content", [
    ("bom.csv", b"\xef\xbb\xbf" + GOOD.encode()),
    ("cr.csv", GOOD.replace("\n", "\r").encode()),
    ("crlf.csv", GOOD.replace("\n", "\r\n").encode()),
])
def test_bom_and_old_line_endings_are_read(tmp_path, name, content):
    path = write(tmp_path / name, content)
    out = tmp_path / "out.parquet"
    done = sh(curate(str(path), out))
    assert done.returncode == 0, done.stderr
    rows = curated_rows(out)
    assert [r["premise"] for r in rows] == ["A dog runs.", "A cat sits.", "Birds fly.", "Kids play."]
    assert [r["source_row"] for r in rows] == [2, 3, 4, 5]


@pytest.mark.parametrize("name,content,needles", [
    ("zipped.csv", gzip.compress(GOOD.encode()), [":1: is gzip-compressed, not text", "gunzip"]),
    ("utf16.csv", GOOD.encode("utf-16"), [":1: is UTF-16 text", "save it as UTF-8"]),
])
def test_binary_files_with_a_text_name_say_what_they_are(tmp_path, name, content, needles):
    path = write(tmp_path / name, content)
    one_line_error(sh(curate(str(path), tmp_path / "out.parquet")), str(path), *needles)


# ----------------------------------------------------------------------------- not a regular file
def test_process_substitution_is_read_once_in_every_text_format(tmp_path):
    good = write(tmp_path / "good.csv", GOOD)
    names = HEADER.strip().split(",")
    records = [dict(zip(names, [*r.strip().split(",")[:3], *map(float, r.strip().split(",")[3:])])) for r in ROWS]
    jsonl = write(tmp_path / "good.jsonl", "".join(json.dumps(record) + "\n" for record in records))
    for source in (f"cat {good}", f"tr , '\\t' < {good}", f"cat {jsonl}"):
        out = tmp_path / "out.parquet"
        done = sh(curate(f"<({source})", out))  # preflight, the score check and the stage read the same bytes
        assert done.returncode == 0, (source, done.stderr)
        rows = curated_rows(out)
        assert [r["premise"] for r in rows] == ["A dog runs.", "A cat sits.", "Birds fly.", "Kids play."], source
        assert [r["contradiction_score"] for r in rows] == [1.0, 1.5, 0.5, 0.2]
        out.unlink()


def test_process_substitution_errors_name_the_pipe_and_line(tmp_path):
    bad = write(tmp_path / "bad.csv", HEADER + ROWS[0] + "A cat sits, then stands.,A pet rests.,A cat jumps.,4.0,1.5\n")
    line = one_line_error(sh(curate(f"<(cat {bad})", tmp_path / "out.parquet")), "row has 6 fields, the header 5")
    assert re.search(r"error: /dev/fd/\d+:3: ", line), line
    # no extension and no triplet columns: the error says the format was told from the content
    one_line_error(sh(curate("<(printf 'a,b\\nc,d\\n')", tmp_path / "out.parquet")), "missing column(s)",
                   "read as csv", "told from the content")


def test_premises_through_a_pipe_sniff_lines_or_a_table(tmp_path):
    lines = sh(ESTIMATE.format(w=tmp_path / "w", premises="<(printf 'A dog runs.\\nA cat, it sits.\\n')"))
    assert lines.returncode == 0, lines.stderr
    assert json.loads(lines.stdout)["input_rows"] == 2
    csv_source = "<(printf 'sentence,id\\nA dog runs.,1\\n\"A cat, it sits.\",2\\n')"
    table = sh(ESTIMATE.format(w=tmp_path / "w", premises=csv_source))
    assert table.returncode == 0, table.stderr
    assert json.loads(table.stdout)["input_rows"] == 2  # the header is no premise


def test_dev_stdin_piped_or_redirected(tmp_path):
    good = write(tmp_path / "good.csv", GOOD)
    out = tmp_path / "out.parquet"
    for script in (f"cat {good} | {curate('/dev/stdin', out)}", f"{curate('/dev/stdin', out)} < {good}"):
        done = sh(script)
        assert done.returncode == 0, (script, done.stderr)
        assert len(curated_rows(out)) == 4
        out.unlink()


def test_parquet_through_a_pipe_is_refused_with_the_reason(tmp_path):
    scored = tmp_path / "scored.parquet"
    write_parquet_atomic(corpus_table([dict(premise="A dog runs.", entailment="An animal moves.",
                                            contradiction="A dog sleeps.", entailment_score=4.5,
                                            contradiction_score=1.0)]), scored)
    line = one_line_error(sh(curate(f"<(cat {scored})", tmp_path / "out.parquet")),
                          "Parquet cannot be read from one", "write it to a file first")
    assert re.search(r"error: /dev/fd/\d+: ", line), line


def test_fifo_without_a_writer_fails_after_the_deadline(tmp_path):
    fifo = tmp_path / "nobody.csv"
    os.mkfifo(fifo)
    start = time.monotonic()
    done = sh(curate(str(fifo), tmp_path / "out.parquet"), env={"MULTICSR_FIFO_TIMEOUT_S": "1"}, timeout=90)
    one_line_error(done, f"{fifo}: nothing came through it for 1 s", "MULTICSR_FIFO_TIMEOUT_S")
    assert time.monotonic() - start < 60


def _writer(fifo: Path, pieces: list[tuple[float, bytes]]) -> threading.Thread:
    """A thread that opens ``fifo`` for writing (blocks until the reader opens it) and writes
    each piece after its pause; a reader that went away ends it."""
    def run():
        try:
            with open(fifo, "wb", buffering=0) as fh:
                for pause, data in pieces:
                    time.sleep(pause)
                    fh.write(data)
        except BrokenPipeError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_fifo_with_a_slow_writer_is_read_whole(tmp_path):
    fifo = tmp_path / "slow.csv"
    os.mkfifo(fifo)
    data = GOOD.encode()
    thread = _writer(fifo, [(0.5, data[:70]), (1.5, data[70:150]), (1.0, data[150:])])
    out = tmp_path / "out.parquet"
    done = sh(curate(str(fifo), out), env={"MULTICSR_FIFO_TIMEOUT_S": "10"})
    thread.join(5)
    assert done.returncode == 0, done.stderr
    assert len(curated_rows(out)) == 4


def test_fifo_whose_writer_stalls_names_what_came(tmp_path):
    fifo = tmp_path / "stalled"  # no extension: the format comes from the content
    os.mkfifo(fifo)
    thread = _writer(fifo, [(0, GOOD.encode()[:70]), (6, b"x")])
    done = sh(curate(str(fifo), tmp_path / "out.parquet"), env={"MULTICSR_FIFO_TIMEOUT_S": "1"})
    one_line_error(done, f"{fifo}: 70 bytes came through it, then nothing for 1 s")
    thread.join(10)


def test_endless_stream_stops_at_the_size_limit(tmp_path):
    done = sh(curate("<(yes 'a,b,c')", tmp_path / "out.parquet"), env={"MULTICSR_STREAM_MAX_MB": "1"})
    one_line_error(done, "more than 1 MiB came through it", "MULTICSR_STREAM_MAX_MB")


def test_a_terminal_as_stdin_is_refused_at_once(tmp_path):
    import pty

    leader, follower = pty.openpty()
    try:
        start = time.monotonic()
        done = sh(curate("/dev/stdin", tmp_path / "out.parquet"), stdin=follower, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    one_line_error(done, "/dev/stdin: is a terminal", "redirect a file")
    assert time.monotonic() - start < 15  # no wait for a deadline


def test_paths_that_are_no_file(tmp_path):
    out = tmp_path / "out.parquet"
    (tmp_path / "loop_a.csv").symlink_to("loop_b.csv")
    (tmp_path / "loop_b.csv").symlink_to("loop_a.csv")
    one_line_error(sh(curate(str(tmp_path / "loop_a.csv"), out)), "loop_a.csv: symlink loop", "--corpus")
    (tmp_path / "dangling.csv").symlink_to("nowhere.csv")
    one_line_error(sh(curate(str(tmp_path / "dangling.csv"), out)),
                   "dangling.csv: is a symlink to nowhere.csv, which does not exist")
    (tmp_path / "folder.csv").mkdir()
    one_line_error(sh(curate(str(tmp_path / "folder.csv"), out)), "folder.csv: is a directory, not a file",
                   "--corpus")
    one_line_error(sh(curate("/dev/null", out)), "/dev/null: no usable triplets: nothing came through it (0 bytes)")
    assert not out.exists()


def test_run_reads_a_piped_input_once_into_the_workdir_and_resumes_from_it(tmp_path):
    """`multicsr run` with its triplets on a pipe: the stream is read once into the workdir
    (named by its sha256), so the run completes and the same command again is served from cache."""
    csv_path = tmp_path / "in.csv"
    csv_path.write_text(GOOD)
    workdir = tmp_path / "w"
    command = (f"cat {csv_path} | {MULTICSR} run --preset demo-snli --workdir {workdir} "
               "--set input.triplets=/dev/stdin --set training.enabled=false")
    done = sh(command, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (copy,) = (workdir / ".multicsr" / "inputs").iterdir()
    assert copy.name.startswith("stream-") and copy.read_text() == GOOD
    summary = json.loads((workdir / "run_summary.json").read_text())
    assert summary["funnel"]["total"] == len(ROWS)
    again = sh(command, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((workdir / ".multicsr" / "inputs").iterdir())) == 1
