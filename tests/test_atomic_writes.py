"""``multicsr_core.io.atomic``: the one atomic write every writer of the package goes through, and
the typed stage results Prefect persists with its JSON serializer."""

import os

import pytest

from multicsr_core.io.atomic import (atomic_directory, atomic_path, atomic_symlink, current_umask, write_bytes_atomic,
                                     write_text_atomic)


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "out" / "results.json", "old\n")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(path) as tmp:
            tmp.write_text("half a fi", encoding="utf-8")
            raise RuntimeError("writer failed")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_written_files_have_ordinary_or_private_modes_and_keep_their_suffix(tmp_path):
    text = write_text_atomic(tmp_path / "a.md", "x", fsync=False)
    assert text.read_text(encoding="utf-8") == "x" and _mode(text) == 0o666 & ~current_umask()
    private = write_bytes_atomic(tmp_path / "requests.jsonl.gz", b"\x1f\x8b", private=True)
    assert private.read_bytes() == b"\x1f\x8b" and _mode(private) == 0o600
    with atomic_path(tmp_path / "plot.png", fsync=True) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".plot.png.")
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "gguf-abc"
    with pytest.raises(OSError):
        with atomic_directory(target, prefix=".gguf-abc-") as tmp:
            (tmp / "config.json").write_text("{}")
            raise OSError("disk full")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target, mode=0o755) as tmp:
        (tmp / "config.json").write_text("{}")
    assert (target / "config.json").is_file() and _mode(target) == 0o755


def test_a_link_is_repointed_in_one_rename(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    link = atomic_symlink(tmp_path / "model", "v1")
    atomic_symlink(link, "v2")
    assert os.readlink(link) == "v2" and sorted(p.name for p in tmp_path.iterdir()) == ["model", "v1", "v2"]


def test_stage_results_come_back_from_prefects_json_serializer_as_they_went():
    from prefect.serializers import JSONSerializer

    from multicsr_core.pipeline.results import CuratedCorpus, GeneratedShard, ScoredShard, sum_rejects

    serializer = JSONSerializer()
    results = [CuratedCorpus("stages/curate/k.parquet", 12, kept=9, funnel={"total": 12, "kept": 9},
                             stage_path="stages/curate/k.parquet", report={"markdown": "reports/r.md"}),
               ScoredShard("stages/score/s.parquet", 12, failed=1, unparsable=2, first_errors=["HTTP 500"]),
               GeneratedShard("stages/generate/g.parquet", 3, rejects={"entailment:empty": 1})]
    for result in results:
        again = serializer.loads(serializer.dumps(result))
        assert type(again) is type(result) and again == result
    assert sum_rejects([results[2], GeneratedShard("b", 1, rejects={"entailment:empty": 2, "copy": 1})]) == \
        {"entailment:empty": 3, "copy": 1}
