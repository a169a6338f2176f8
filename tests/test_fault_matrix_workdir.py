"""Fault matrix, workdir half (issue 12, items 4-11), through the real `multicsr` CLI in real
processes: a real ephemeral Prefect server, the real MiniLM, real SNLI and SentEval files.

One small successful `multicsr run` is made once (module fixture); each case works on a copy of
its workdir, injects one fault, reruns the real command and asserts the exit code, the message
(naming the file where there is one) and that nothing already published changed.
Companion of ERR's ``tests/test_fault_matrix.py`` (user errors, preflight, input validation).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import SHARED_DATA, small_dev_senteval
from tests.openai_server import ChatCompletionsServer

SECRET = "Zq7-not-a-real-url-password-41"
SMALL = [
    "input.limit=48",
    "scoring.shard_size=24",
    "training.max_steps=2",
    "training.batch_size=16",
    "training.eval_steps=2",
    "evaluation.sts_tasks=[STS16]",
    "evaluation.evaluate_baseline=false",
    f"evaluation.data_dir={small_dev_senteval()}",  # STS-B dev cut to 200 pairs for checkpoint selection
    # credentials in a base URL (unused by the guide scorer, but part of the config every output records)
    f"scoring.base_url=http://alice:{SECRET}@127.0.0.1:9/v1",
    f"generation.base_url=http://alice:{SECRET}@127.0.0.1:9/v1",
]
CARD_FILES = ("README.md", "multicsr_evaluation.json")  # the trained folder's model card, updated by each run
PUBLISHED = ("corpus.parquet", "model", "results.json", "baseline_results.json", "reports", "run_summary.json",
             "run_manifest.json")

pytestmark = pytest.mark.slow


def _env() -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)  # `multicsr run` starts its own temporary server
    return env


def _run_cmd(workdir: Path, *extra: str) -> list[str]:
    sets = [a for s in (*SMALL, *extra) for a in ("--set", s)]
    return [sys.executable, "-m", "multicsr.cli", "run", "--preset", "demo-snli", "--workdir", str(workdir), *sets]


def _cli(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _published(workdir: Path) -> dict[str, str]:
    """{published path: sha256 of its bytes (a link: its target)}, reports/ file by file."""
    snap = {}
    for name in PUBLISHED:
        path = workdir / name
        if path.is_symlink():
            snap[name] = "link:" + os.readlink(path)
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    snap[str(f.relative_to(workdir))] = hashlib.sha256(f.read_bytes()).hexdigest()
        elif path.is_file():
            snap[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return snap


def _stage_files(workdir: Path, stage: str | None = None) -> dict[str, tuple[int, int]]:
    root = workdir / "stages" / (stage or "")
    return {str(f.relative_to(workdir)): (f.stat().st_mtime_ns, f.stat().st_size)
            for f in sorted(root.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("base") / "run"
    done = _cli(_run_cmd(workdir))
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir, done


def _copy(base: Path, to: Path) -> Path:
    shutil.copytree(base, to, symlinks=True)
    return to


def test_run_stdout_is_one_json_report_and_every_output_names_the_run(base_run):
    """Items 4 and 11: stdout of `run` is the JSON report (logs on stderr); the manifest, the
    corpus, the results and the summary all carry the config hash of the run that made them."""
    workdir, done = base_run
    report = json.loads(done.stdout)
    config_hash = report["config_hash"]
    manifest = json.loads((workdir / "run_manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["config_hash"] == config_hash
    assert set(manifest["outputs"]) == {"corpus.parquet", "reports", "model", "results.json", "run_summary.json"}
    corpus_prov = json.loads(pq.read_schema(workdir / "corpus.parquet").metadata[b"multicsr"])
    assert corpus_prov["config_hash"] == config_hash
    assert json.loads((workdir / "results.json").read_text())["_provenance"]["config_hash"] == config_hash
    assert json.loads((workdir / "run_summary.json").read_text())["config_hash"] == config_hash
    assert report["model"] == str(workdir / "model") and (workdir / "model" / "modules.json").is_file()
    # the trainer's log lines are not on stdout; inside a flow run they go to the run's debug log
    assert "{'loss'" not in done.stdout and "{'loss'" not in done.stderr
    assert not any((workdir / ".multicsr" / "staging").iterdir())  # nothing left half-published


def test_url_credentials_reach_no_file_of_a_run(base_run):
    """Item 10: the password of a base URL in the config is in no file of the workdir, nor in the
    command's output; the host stays, so provenance still says where the endpoint was."""
    workdir, done = base_run
    files = [p for p in workdir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 20
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaked, leaked
    assert SECRET not in done.stdout and SECRET not in done.stderr
    # nor in Prefect's own database: the flow's parameters carry the redacted URL only
    prefect_home = Path(os.environ["PREFECT_HOME"])
    in_prefect = [str(p) for p in prefect_home.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not in_prefect, in_prefect
    corpus_prov = json.loads(pq.read_schema(workdir / "corpus.parquet").metadata[b"multicsr"])
    assert corpus_prov["config"]["scoring"]["base_url"] == "http://127.0.0.1:9/v1"


def test_url_credentials_reach_no_file_of_score(tmp_path):
    """Item 10 for `multicsr score --base-url http://user:key@host/v1` against a real local server."""
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    corpus = tmp_path / "triplets.csv"
    corpus.write_text("\n".join(lines[:9]) + "\n", encoding="utf-8")
    out = tmp_path / "scored.parquet"
    with ChatCompletionsServer() as server:
        url = server.base_url.replace("://", f"://alice:{SECRET}@")
        done = _cli([sys.executable, "-m", "multicsr.cli", "score", "--corpus", str(corpus), "--scorer", "openai",
                     "--llm", "test-model", "--base-url", url, "--workdir", str(tmp_path / "w"), "--out", str(out)],
                    timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["rows"] == 8
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in done.stdout + done.stderr


def test_failed_rerun_leaves_the_published_outputs_as_they_were(base_run, tmp_path):
    """Item 4: a rerun with another curation alpha whose training then fails changes none of
    corpus.parquet, reports/, model, results.json, run_summary.json, run_manifest.json."""
    workdir = _copy(base_run[0], tmp_path / "run")
    before = _published(workdir)
    broken = tmp_path / "broken-model"  # exists (passes any existence check), cannot be loaded
    broken.mkdir()
    (broken / "config.json").write_text("{}", encoding="utf-8")
    done = _cli(_run_cmd(workdir, "curation.alpha=4", f"training.base_model={broken}"))
    assert done.returncode != 0, done.stdout
    assert _published(workdir) == before
    assert json.loads((workdir / "run_manifest.json").read_text())["state"] == "complete"
    assert not any((workdir / ".multicsr" / "staging").iterdir())


def _card_bytes(workdir: Path) -> dict[str, bytes]:
    """The model card files of every trained folder under the workdir's stage cache."""
    return {str(f.relative_to(workdir)): f.read_bytes() for f in sorted((workdir / "stages" / "train").rglob("*"))
            if f.name in CARD_FILES}


# The real entry point, with one fault injected: the publishing step (after every stage and the
# model card's evaluation) raises, as a full disk or a kill at that moment would end the run.
FAIL_AT_PUBLISH = """
import sys
from multicsr.orchestration import publish
def commit(self):
    raise OSError(28, "No space left on device (injected by the test)")
publish.Publication.commit = commit
from multicsr.cli import main
sys.argv = ["multicsr", *sys.argv[1:]]
main()
"""


def test_run_failing_at_publish_leaves_the_model_card_as_it_was(base_run, tmp_path):
    """Item 4 for the model card: it lives in the content-keyed trained folder that ``model``
    links to, so a run that fails after evaluating must not have rewritten it. A copied workdir
    reruns from cache, and its new card (whose usage snippet names the new place) must wait for
    the run to publish."""
    workdir = _copy(base_run[0], tmp_path / "copied")
    published, cards = _published(workdir), _card_bytes(workdir)
    assert cards and all(str(base_run[0] / "model").encode() in text for name, text in cards.items()
                         if name.endswith("README.md"))
    failed = _cli([sys.executable, "-c", FAIL_AT_PUBLISH, *_run_cmd(workdir)[3:]])
    assert failed.returncode != 0, failed.stdout
    assert "No space left on device" in failed.stderr
    assert _card_bytes(workdir) == cards and _published(workdir) == published
    # a successful rerun at a new place writing the new card: see the moved-workdir test below


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_folder_of_the_users_named_model_is_refused_before_any_work(base_run, tmp_path):
    """`run` publishes `model` as a link and will not replace a real folder: found in preflight,
    one line naming it, exit 2, and the folder untouched."""
    workdir = _copy(base_run[0], tmp_path / "run")
    (workdir / "model").unlink()
    (workdir / "model").mkdir()
    (workdir / "model" / "mine.txt").write_text("a user's file", encoding="utf-8")
    started = time.monotonic()
    done = _cli(_run_cmd(workdir), timeout=300)
    assert done.returncode == 2, (done.stdout, done.stderr[-3000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(workdir / "model") in lines[0], done.stderr
    assert time.monotonic() - started < 60  # before any stage (and the Prefect server) started
    assert (workdir / "model" / "mine.txt").read_text(encoding="utf-8") == "a user's file"


def test_moved_workdir_with_damaged_caches_and_a_recomputed_stage_resumes(base_run, tmp_path):
    """Items 5, 6, 7 in one rerun of the same command:
    - the workdir was moved (its cached task results were computed at another path);
    - its guide-embedding cache is damaged and its response cache is a 0-byte file: both are moved
      aside (bytes kept), named in a warning, rebuilt;
    - curate's stage file was deleted, so curate recomputes a file with identical content (and a
      new created_at): training, keyed by content, stays cached.
    """
    moved_from = _copy(base_run[0], tmp_path / "first")
    workdir = tmp_path / "moved" / "run"
    workdir.parent.mkdir()
    shutil.move(moved_from, workdir)
    guide_cache = workdir / "cache" / "guide" / "guide_embeddings.sqlite"
    damaged = b"not a database any more " * 64
    guide_cache.write_bytes(damaged)
    for companion in ("-wal", "-shm"):
        Path(str(guide_cache) + companion).unlink(missing_ok=True)
    responses = workdir / "llm" / "responses.sqlite"
    responses.parent.mkdir(exist_ok=True)
    responses.write_bytes(b"")
    curate_files = list((workdir / "stages" / "curate").glob("*.parquet"))
    assert len(curate_files) == 1
    curate_files[0].unlink()
    # curate's file is recomputed; the trained folder's model card (README.md, multicsr_evaluation.json)
    # is rewritten by every run's evaluation; everything else must stay as it is
    untouched = {k: v for k, v in _stage_files(workdir).items()
                 if not k.startswith("stages/curate") and Path(k).name not in CARD_FILES}
    results_before = json.loads((workdir / "results.json").read_text())

    done = _cli(_run_cmd(workdir))
    assert done.returncode == 0, done.stderr[-4000:]
    # 6: resumed at the new place; 7: only curate ran again, nothing downstream of it
    assert curate_files[0].is_file()
    now = _stage_files(workdir)
    changed = sorted(k for k, v in untouched.items() if now.get(k) != v)
    assert not changed, f"recomputed downstream of curate: {changed}; new: {sorted(set(now) - set(untouched))}"
    assert {k for k in _stage_files(workdir, "train") if Path(k).name not in CARD_FILES} == {
        k for k in untouched if k.startswith("stages/train")}  # no new trained folder
    results = json.loads((workdir / "results.json").read_text())
    assert results["STS16"] == results_before["STS16"]
    # the model card, written when the run published, names the new place, with an ordinary mode
    readme = workdir / "model" / "README.md"
    assert str(workdir / "model") in readme.read_text(encoding="utf-8")
    assert str(base_run[0] / "model") not in readme.read_text(encoding="utf-8")
    assert oct(readme.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    # 5: both damaged caches moved aside with their bytes, named in a warning, and rebuilt
    for cache, content in ((guide_cache, damaged), (responses, b"")):
        moved = list(cache.parent.glob(cache.name + ".corrupt-*"))
        assert [m.read_bytes() for m in moved if not m.name.endswith(("-wal", "-shm"))] == [content], moved
        assert f"cache {cache} is damaged" in done.stderr
        assert cache.is_file() and cache.read_bytes().startswith(b"SQLite format 3")
    assert f"multicsr cache merge {responses}.corrupt-" in done.stderr  # the way back for paid answers


def _children(pid: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (waiting for a reaper that may never come in a container)


def test_second_run_is_refused_and_sigkill_leaves_no_prefect_server(base_run, tmp_path):
    """Items 9 and 8 with real processes: while run A holds the workdir, run B exits 2 naming A's
    pid and changes nothing; SIGKILL of A takes its temporary Prefect server down with it."""
    workdir = _copy(base_run[0], tmp_path / "run")
    before = _published(workdir)
    # A trains anew (another seed, many steps), so it is still running when B starts and when killed
    first = subprocess.Popen(_run_cmd(workdir, "training.seed=7", "training.max_steps=400"), env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        servers: dict[int, str] = {}
        while time.monotonic() < deadline and first.poll() is None:
            servers = {p: c for p, c in _children(first.pid).items() if "uvicorn" in c}
            if servers and (workdir / ".multicsr" / "run.owner").is_file():
                break
            time.sleep(0.2)
        assert servers and first.poll() is None, "run A never started its server"

        second = _cli(_run_cmd(workdir), timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        message = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(message) == 1 and f"workdir {workdir} is in use by pid {first.pid}" in message[0], message
        assert _published(workdir) == before

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in servers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in servers), f"orphaned Prefect server(s): {servers}"
    finally:
        if first.poll() is None:
            first.kill()
    assert _published(workdir) == before  # the killed run published nothing


def test_sigterm_during_generation_ends_the_run_within_seconds(tmp_path):
    """`docker stop`, a cancel: SIGTERM while a stage-1 batch runs in the task runner's thread.
    Prefect alone waits for the running shard (33.6 s here for the 48 premises left of this one);
    the run must end within 5 s + slack, exit 143, say so on stderr and leave no Prefect server."""
    workdir = tmp_path / "run"
    stderr_path = tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "multicsr.cli", "run", "--preset", "demo-offline", "--workdir", str(workdir),
           "--set", "input.limit=64", "--set", "generation.shard_size=64", "--set", "evaluation.sts_tasks=[STS16]",
           "--set", "generation.batch_size=4"]  # progress after 4 premises, not 16: the signal comes sooner
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None \
                and "8/64 premises" not in stderr_path.read_text(errors="replace"):
            time.sleep(0.2)
        assert proc.poll() is None, stderr_path.read_text()[-3000:]
        servers = [p for p, c in _children(proc.pid).items() if "uvicorn" in c]
        assert servers, "no temporary Prefect server seen"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    text = stderr_path.read_text(errors="replace")
    assert code in (143, -signal.SIGTERM), (code, text[-3000:])
    assert took < 12, f"SIGTERM took {took:.1f} s to end the run"
    assert "terminated (SIGTERM)" in text and "same command resumes" in text
    assert not (workdir / "corpus.parquet").exists()  # nothing half-published
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in servers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in servers), "orphaned Prefect server"


def test_wait_lock_waits_for_the_holder(tmp_path):
    """Item 9, ``--wait-lock``: the lock is taken only once the other process lets go."""
    from multicsr.run_guard import WorkdirBusy, workdir_lock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from multicsr.run_guard import workdir_lock\n"
        f"with workdir_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(4)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirBusy, match=f"in use by pid {holder.pid}"):
        with workdir_lock(tmp_path):
            pass
    started = time.monotonic()
    with workdir_lock(tmp_path, wait=True):
        waited = time.monotonic() - started
        assert holder.poll() is not None or waited > 1  # we got it because the holder let go
    holder.wait(timeout=30)
    assert waited > 1


def test_train_stdout_is_json(base_run, tmp_path):
    """Item 11: `multicsr train` prints only its JSON report on stdout; the trainer's dict log
    lines go to stderr."""
    workdir, _ = base_run
    done = _cli([sys.executable, "-m", "multicsr.cli", "train", "--corpus", str(workdir / "corpus.parquet"),
                 "--model", "bundled:all-MiniLM-L6-v2", "--guide", "bundled:all-MiniLM-L6-v2", "--out",
                 str(tmp_path / "model"), "--max-steps", "2", "--batch-size", "16", "--preset", "demo-snli",
                 "--set", "training.eval_steps=2", "--set", f"evaluation.data_dir={small_dev_senteval()}"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["steps"] == 2
    assert "{'loss'" in done.stderr
