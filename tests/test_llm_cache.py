"""The SQLite response cache: keys, statuses, durability and concurrent writers."""

import multiprocessing
import sqlite3
import threading

import pytest

from multicsr_core.llm.cache import FAILED, OK, CacheEntry, ResponseCache, cache_key, default_cache_path

MESSAGES = [{"role": "user", "content": "Scoring ... (a) x (b) y"}]


def entry(key, status=OK, text="3", error=None):
    return CacheEntry(key, "m", {"prompt": "p"}, status, response={"text": text} if text else None, raw=text,
                      error=error, prompt_tokens=5, completion_tokens=1)


def test_key_depends_on_model_prompt_and_params_only():
    base = cache_key("gpt", MESSAGES, {"temperature": 0.0, "max_tokens": 8})
    assert base == cache_key("gpt", [dict(MESSAGES[0])], {"max_tokens": 8, "temperature": 0.0})  # order-free
    assert base != cache_key("gpt-4", MESSAGES, {"temperature": 0.0, "max_tokens": 8})
    assert base != cache_key("gpt", [{"role": "user", "content": "other"}], {"temperature": 0.0, "max_tokens": 8})
    assert base != cache_key("gpt", MESSAGES, {"temperature": 0.7, "max_tokens": 8})
    assert base != cache_key("gpt", "Scoring ... (a) x (b) y", {"temperature": 0.0, "max_tokens": 8})
    assert len(base) == 64 and int(base, 16) >= 0


def test_roundtrip_and_wal_mode(tmp_path):
    path = default_cache_path(tmp_path / "workdir")
    assert path.is_relative_to(tmp_path / "workdir") and not path.exists()
    with ResponseCache(path) as cache:
        cache.put(entry("k1"))
        cache.put(entry("k2", FAILED, text="no idea", error="does not parse"))
        rows = cache.get_many(["k1", "k2", "missing", "k1"])
    assert set(rows) == {"k1", "k2"}
    assert rows["k1"].ok and rows["k1"].response == {"text": "3"} and rows["k1"].prompt_tokens == 5
    assert rows["k2"].status == FAILED and rows["k2"].raw == "no idea" and rows["k2"].error == "does not parse"
    # A fresh process-level connection sees committed rows, and the journal is WAL.
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 2
    conn.close()


def test_failed_rows_are_retried_and_ok_rows_are_final(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put(entry("k", FAILED, text=None, error="timeout"))
        cache.put(entry("k", FAILED, text=None, error="500"))
        row = cache.get("k")
        assert row.status == FAILED and row.error == "500" and row.attempts == 2
        cache.put(entry("k", OK, text="4"))
        assert cache.get("k").ok and cache.get("k").attempts == 3
        cache.put(entry("k", FAILED, text=None, error="late failure"))  # must not clobber the answer
        cache.put(entry("k", OK, text="5"))  # nor may a second answer replace the first
        row = cache.get("k")
        assert row.ok and row.response == {"text": "4"} and row.error is None
        assert cache.counts() == {OK: 1, FAILED: 0}


def test_put_many_is_one_transaction_and_get_many_chunks(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([entry(f"k{i}") for i in range(1200)])  # more than one SQL variable chunk
        assert len(cache.get_many([f"k{i}" for i in range(1200)])) == 1200
        assert cache.token_totals() == (1200 * 5, 1200 * 1)
        with pytest.raises(ValueError):
            cache.put_many([entry("a"), entry("b", status="pending")])
        assert cache.get("a") is None  # nothing of the bad batch was written


def test_threads_share_a_cache(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    errors = []

    def write(worker):
        try:
            for i in range(100):
                cache.put(entry(f"w{worker}-{i}"))
                assert cache.get(f"w{worker}-{i}").ok
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert cache.counts()[OK] == 800
    cache.close()


def _process_writer(path, worker, n):
    with ResponseCache(path) as cache:
        for i in range(n):
            # every process also writes the shared keys: exactly one answer must survive each
            cache.put(entry(f"p{worker}-{i}"))
            cache.put(entry(f"shared-{i}", text=str(worker)))


def test_processes_write_concurrently(tmp_path):
    path = tmp_path / "c.sqlite"
    ResponseCache(path).close()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_process_writer, args=(path, w, 150)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert all(process.exitcode == 0 for process in processes)
    with ResponseCache(path) as cache:
        assert cache.counts()[OK] == 4 * 150 + 150
        shared = cache.get_many([f"shared-{i}" for i in range(150)])
        assert all(row.attempts >= 1 and row.response["text"] in {"0", "1", "2", "3"} for row in shared.values())


def test_non_sqlite_and_empty_files_are_moved_aside_not_recreated(tmp_path, caplog):
    """A damaged cache is quarantined (never deleted: it holds paid answers), named in a warning,
    and a new one started."""
    for name, content in (("bad.sqlite", b"this is not a database" * 100), ("empty.sqlite", b"")):
        path = tmp_path / name
        path.write_bytes(content)
        with caplog.at_level("WARNING"), ResponseCache(path) as cache:
            assert cache.counts() == {OK: 0, FAILED: 0}
            cache.put(CacheEntry("k", "m", {"p": 1}, OK, response={"text": "x"}))
        moved = cache.quarantined
        assert moved is not None and moved.name.startswith(f"{name}.corrupt-")
        assert moved.read_bytes() == content  # kept byte for byte
        assert str(path) in caplog.text and str(moved) in caplog.text
        with ResponseCache(path) as again:  # the rebuilt cache is healthy: nothing moved a second time
            assert again.quarantined is None and again.get("k").ok


def _damaged_cache(tmp_path, rows: int = 2000):
    """A real cache file with one 4 KiB page in the middle overwritten (what a bad sector does)."""
    import sqlite3

    path = tmp_path / "llm" / "responses.sqlite"
    with ResponseCache(path) as cache:
        cache.put_many([CacheEntry(f"k{i}", "m", {"p": i}, OK, response={"text": f"answer {i} " + "x" * 200},
                                   prompt_tokens=10, completion_tokens=i) for i in range(rows)])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as fh:
        fh.seek(4096 * 40)
        fh.write(b"\xde\xad\xbe\xef" * 1024)
    return path


def test_damaged_cache_is_quarantined_and_merged_back(tmp_path):
    from multicsr_core.llm.cache import merge_quarantined

    path = _damaged_cache(tmp_path)
    with ResponseCache(path) as cache:
        moved = cache.quarantined
        assert moved is not None and cache.counts()[OK] == 0
        cache.put(CacheEntry("k5", "m", {"p": 5}, FAILED, error="timeout"))  # a newer failure for a recovered key
        counts = merge_quarantined(moved, cache)
        assert 1900 < counts["recovered"] < 2000 and counts["unreadable"] > 0
        assert counts["merged"] == counts["recovered"]
        assert cache.counts()[OK] == counts["recovered"]
        rows = cache.get_many([f"k{i}" for i in range(2000)])
        assert all(r.ok and r.response["text"].startswith(f"answer {r.key[1:]} ") for r in rows.values())
        assert rows["k5"].ok  # the recovered answer replaced the failed row


def test_cache_merge_command(tmp_path):
    import json
    import subprocess
    import sys

    path = _damaged_cache(tmp_path)
    with ResponseCache(path) as cache:
        moved = cache.quarantined
    done = subprocess.run([sys.executable, "-m", "multicsr.cli", "cache", "merge", str(moved), "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["merged"] > 1900
    with ResponseCache(path) as cache:
        assert cache.counts()[OK] == report["merged"]
