"""Failures of the machine through the real `multicsr` CLI (issue "Failures on real machines"): a
full disk, a file-size limit, read-only paths, an unwritable Prefect home, a Prefect server that
cannot start, a `PREFECT_API_URL` that is not Prefect; and hints a user can follow (an export rerun
after a failed upload, `cache merge` of a cache whose table root page is damaged, the quarantine
warning's command).

Real mechanisms: small tmpfs file systems mounted for the test (``mount -t tmpfs -o size=...``;
filled up for ENOSPC, ``-o ro`` for EROFS), ``RLIMIT_FSIZE`` in the child (EFBIG), a real
``http.server`` on 127.0.0.1, a real temporary Prefect server, the local Hub of tests/hub_server.py.
Mounting needs root (CAP_SYS_ADMIN): without it the tmpfs cases are skipped, and read-only folders
fall back to ``chmod 555`` (which binds a non-root user: EACCES instead of EROFS); the EFBIG case
needs nothing. Every case asserts the exit code, one ``error:`` line without a traceback naming the
path and the option or variable that moves it, and never "unexpected".
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http.server
import json
import os
import re
import resource
import shlex
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import small_dev_senteval

pytest_plugins = ["card_fixtures"]

MINILM = "bundled:all-MiniLM-L6-v2"
SMALL_RUN = ["input.limit=48", "scoring.shard_size=24", "training.max_steps=2", "training.batch_size=16",
             "training.eval_steps=2", "evaluation.sts_tasks=[STS16]", "evaluation.evaluate_baseline=false",
             f"evaluation.data_dir={small_dev_senteval()}"]  # STS-B dev cut to 200 pairs for checkpoint selection
TOKEN = "hf_test_0123456789abcdefSECRET"


# ----------------------------------------------------------------------------- helpers
def cli(*args: str, env: dict | None = None, timeout: float = 300, preexec_fn=None) -> subprocess.CompletedProcess:
    """``multicsr ARGS`` in a real process (``python -m multicsr.cli``); ``env`` values of None unset."""
    full = {**os.environ, **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "multicsr.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full, preexec_fn=preexec_fn)


def run_args(workdir: Path, *extra: str) -> list[str]:
    return ["run", "--preset", "demo-snli", "--workdir", str(workdir),
            *[a for s in (*SMALL_RUN, *extra) for a in ("--set", s)]]


def one_error_line(done: subprocess.CompletedProcess, code: int, *needles: str, only_line: bool = True) -> str:
    """Exit ``code``; stderr holds exactly one ``error:`` line (the last; with ``only_line`` the
    only line at all), no traceback, not "unexpected", holding every needle."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], done.stderr[-3000:]
    if only_line:
        assert len(lines) == 1, done.stderr[-3000:]
    line = errors[0]
    assert "unexpected" not in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@functools.lru_cache(maxsize=1)
def _can_mount() -> bool:
    probe = Path(f"/tmp/multicsr-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    except OSError:
        return False
    finally:
        probe.rmdir()


@contextlib.contextmanager
def tmpfs(where: Path, size: str, read_only: bool = False, fill: bool = False):
    """A real tmpfs of ``size`` at ``where`` (``fill``: filled up to the last byte; ``read_only``:
    mounted ro), unmounted afterwards; skips the test where mounting is not permitted."""
    if not _can_mount():
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); the EFBIG case covers a full disk without it")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        if fill:
            with open(where / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def read_only_folder(where: Path):
    """A folder this process cannot write: a read-only tmpfs (root), else ``chmod 555`` (non-root)."""
    if _can_mount():
        with tmpfs(where, "1m", read_only=True):
            yield where, "read-only file system"
        return
    if os.geteuid() == 0:
        pytest.skip("root that cannot mount: no read-only folder to make")
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o555)
    try:
        yield where, "permission denied"
    finally:
        where.chmod(0o755)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Small real inputs: SNLI triplets, a scored and a curated corpus."""
    from tests.test_fault_matrix import make_inputs

    d = make_inputs(tmp_path_factory.mktemp("machine-inputs"))
    done = cli("curate", "--corpus", str(d / "scored.parquet"), "--out", str(d / "curated.parquet"))
    assert done.returncode == 0, done.stderr
    return d


# ----------------------------------------------------------------------------- a full disk
def test_curate_onto_a_full_disk_names_the_output_and_its_free_space(inputs, tmp_path):
    """pyarrow's ENOSPC names no file: the line names --out (the registered output), the space left."""
    with tmpfs(tmp_path / "full", "1m", fill=True) as full:
        done = cli("curate", "--corpus", str(inputs / "scored.parquet"), "--out", str(full / "c.parquet"))
    one_error_line(done, 2, str(tmp_path / "full" / "c.parquet"), "no space left", "free of",
                   "--out", "run the same command again")


def test_file_size_limit_efbig(inputs, tmp_path):
    """RLIMIT_FSIZE in the child (`ulimit -f`): EFBIG, which needs no mount (Python ignores SIGXFSZ)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    done = cli("curate", "--corpus", str(inputs / "scored.parquet"), "--out", str(tmp_path / "c.parquet"),
               preexec_fn=limit)
    one_error_line(done, 2, str(tmp_path / "c.parquet"), "file too large", "ulimit -f", "--out",
                   "run the same command again")


def test_score_with_its_workdir_on_a_full_disk_sqlite_full(inputs, tmp_path):
    """SQLite says "database or disk is full" (no errno, no file): one line naming --workdir."""
    with tmpfs(tmp_path / "full", "1m", fill=True) as full:
        done = cli("score", "--corpus", str(inputs / "triplets.csv"), "--scorer", "guide", "--llm", MINILM,
                   "--workdir", str(full / "w"), "--out", str(tmp_path / "s.parquet"))
    one_error_line(done, 2, str(tmp_path / "full"), "no space left", "--workdir", "run the same command again",
                   only_line=False)


def test_torch_write_failure_on_a_full_disk_is_classified(tmp_path):
    """torch.save onto a full disk fails with "unexpected pos N vs M" and no errno: with a registered
    output on a file system with no space left it is the full disk, not a bug."""
    import torch

    from multicsr_core import errors

    with tmpfs(tmp_path / "full", "1m", fill=True) as full:
        (full / "model").mkdir()
        errors.clear_outputs()
        errors.register_output(full / "model", "--out")
        try:
            with pytest.raises(errors.DiskFullError) as caught:
                with errors.machine_errors():
                    torch.save({"w": torch.zeros(100_000)}, full / "model" / "w.pt")
        finally:
            errors.clear_outputs()
    assert "--out" in str(caught.value) and "no space left" in str(caught.value)


@pytest.mark.slow
def test_train_checkpoint_onto_a_full_disk_safetensors(inputs, tmp_path):
    """safetensors' SafetensorError ("No space left on device (os error 28)") while the trainer
    writes the model: one line naming --out, exit 2 (about 30 s: one training step)."""
    with tmpfs(tmp_path / "small", "20m") as small:
        done = cli("train", "--corpus", str(inputs / "triplets.csv"), "--model", MINILM, "--guide", MINILM,
                   "--out", str(small / "model"), "--max-steps", "1", "--batch-size", "8",
                   "--set", f"evaluation.data_dir={tmp_path / 'no-senteval'}", timeout=600)
    one_error_line(done, 2, str(tmp_path / "small" / "model"), "no space left", "--out",
                   "run the same command again", only_line=False)


@pytest.mark.slow
def test_run_with_its_workdir_filling_up_inside_prefect(tmp_path):
    """The disk fills while Prefect tasks write (SQLite caches, results): the flow's failure reaches
    the CLI as one line naming --workdir (about 30 s)."""
    with tmpfs(tmp_path / "tiny", "200k") as tiny:
        done = cli(*run_args(tiny / "w"), env={"PREFECT_API_URL": None}, timeout=600)
    one_error_line(done, 2, str(tmp_path / "tiny" / "w"), "no space left", "--workdir",
                   "run the same command again", only_line=False)


# ----------------------------------------------------------------------------- read-only, forbidden
def test_export_to_a_read_only_folder(inputs, tmp_path):
    with read_only_folder(tmp_path / "ro") as (ro, what):
        done = cli("export", "--corpus", str(inputs / "curated.parquet"), "--to", str(ro / "x"))
    one_error_line(done, 2, str(tmp_path / "ro"), what, "--to")


def test_model_cache_on_a_read_only_mount(inputs, tmp_path):
    """A GGUF model is converted into MULTICSR_MODEL_CACHE: read-only, the line names the variable."""
    with read_only_folder(tmp_path / "ro") as (ro, what):
        done = cli("generate", "--llm", "bundled:smollm2-135m-instruct", "--premises", str(inputs / "premises.csv"),
                   "--out", str(tmp_path / "g.parquet"), "--workdir", str(tmp_path / "w"), "--max-new-tokens", "4",
                   env={"MULTICSR_MODEL_CACHE": str(ro / "models")})
    one_error_line(done, 2, str(tmp_path / "ro"), what, "MULTICSR_MODEL_CACHE", only_line=False)


@pytest.mark.parametrize("case", ["read-only PREFECT_HOME", "read-only HOME", "PREFECT_HOME is a file"])
def test_unwritable_prefect_home_fails_at_once(case, tmp_path):
    """Before: the temporary server failed to open its database, restarted over and over with a
    traceback each time (thousands of lines), and the run ended (if at all) as "unexpected"."""
    env: dict = {"PREFECT_API_URL": None}
    with contextlib.ExitStack() as stack:
        if case == "PREFECT_HOME is a file":
            (tmp_path / "home-file").write_text("x")
            env["PREFECT_HOME"] = str(tmp_path / "home-file")
            home, what = tmp_path / "home-file", "is a file"
        else:
            ro, what = stack.enter_context(read_only_folder(tmp_path / "ro"))
            if case == "read-only HOME":
                env.update(HOME=str(ro), PREFECT_HOME=None)  # Prefect's default: ~/.prefect
                home = ro / ".prefect"
            else:
                env["PREFECT_HOME"] = str(ro / "prefect")
                home = ro / "prefect"
        started = time.monotonic()
        done = cli(*run_args(tmp_path / "w"), env=env, timeout=120)
    one_error_line(done, 2, str(home), what, "PREFECT_HOME")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "w").exists()  # nothing started


def test_prefect_server_that_cannot_start_fails_with_one_line(tmp_path):
    """A temporary server whose database cannot be reached exits at startup: one line naming the
    cause and its log, at once (Prefect's own start restarts it for as long as the timeout runs)."""
    started = time.monotonic()
    done = cli(*run_args(tmp_path / "w"), env={"PREFECT_API_URL": None,
                                               "PREFECT_SERVER_DATABASE_CONNECTION_URL":
                                                   "postgresql+asyncpg://u:p@127.0.0.1:9/prefect"}, timeout=200)
    line = one_error_line(done, 2, "exited at startup", "Connect call failed",
                          str(tmp_path / "w" / ".multicsr" / "prefect-server.log"), "PREFECT_API_URL")
    assert time.monotonic() - started < 90, line
    assert (tmp_path / "w" / ".multicsr" / "prefect-server.log").stat().st_size > 0


def test_prefect_server_startup_deadline(tmp_path):
    """The server's start has a deadline in wall-clock time, named by its variable."""
    done = cli(*run_args(tmp_path / "w"), env={"PREFECT_API_URL": None,
                                               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}, timeout=120)
    one_error_line(done, 2, "did not answer within 1 s", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")


# ----------------------------------------------------------------------------- PREFECT_API_URL
@contextlib.contextmanager
def web_server(folder: Path):
    """A real http.server (not Prefect) serving ``folder`` on 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))

    class Quiet(handler.func):  # type: ignore[misc]
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", ["404 at /health", "a web page at /health", "closed port"])
def test_prefect_api_url_that_is_not_prefect(case, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    if case == "a web page at /health":
        (site / "health").write_text("<html><body>OK</body></html>")
    with web_server(site) as url:
        if case == "closed port":
            url = f"http://127.0.0.1:{_closed_port()}/api"
        done = cli(*run_args(tmp_path / "w"), env={"PREFECT_API_URL": url}, timeout=120)
    if case == "closed port":
        one_error_line(done, 2, f"PREFECT_API_URL={url}", "no Prefect server answers")
    else:
        one_error_line(done, 2, f"PREFECT_API_URL={url}", "not as a Prefect API", f"PREFECT_API_URL={url}/api")


def test_prefect_server_url_without_api_path(tmp_path):
    """A real Prefect server given without /api: the line says to add it, and the /api URL passes."""
    from multicsr.run_guard import _server_class
    from multicsr_core.pipeline.preflight import check_prefect_server

    server = _server_class()()
    server.log_path = tmp_path / "server.log"
    server.start()
    try:
        check_prefect_server(server.api_url)  # a real Prefect API is accepted
        done = cli(*run_args(tmp_path / "w"), env={"PREFECT_API_URL": server.address}, timeout=120)
    finally:
        server.stop()
    one_error_line(done, 2, f"PREFECT_API_URL={server.address}", "without its API path",
                   f"export PREFECT_API_URL={server.address}/api")


# ----------------------------------------------------------------------------- hints a user can follow
def test_export_rerun_after_a_failed_push_works(trained, tmp_path):
    """The failed upload says "run the same command again": doing so (the Hub back) succeeds in the
    folder the first attempt wrote; a folder the export did not write is still refused."""
    from tests.hub_server import FakeHub

    _, model_dir, _, _ = trained
    out = tmp_path / "export"
    args = ["export", "--model", str(model_dir), "--to", str(out), "--push-to-hub", "someone/model"]
    hub_env = {"HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": ""}
    done = cli(*args, env={**hub_env, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    one_error_line(done, 1, "upload to someone/model failed", "run the same command again", only_line=False)
    assert (out / "model.safetensors").is_file()
    with FakeHub(TOKEN) as hub:
        done = cli(*args, env={**hub_env, "HF_ENDPOINT": hub.endpoint})
        assert done.returncode == 0, done.stderr[-3000:]
        uploaded = hub.repos[("model", "someone/model")]
    assert "model.safetensors" in uploaded and not any(name.startswith(".multicsr") for name in uploaded)
    assert json.loads(done.stdout)["pushed"]
    (out / "notes.txt").write_text("mine")
    done = cli("export", "--model", str(model_dir), "--to", str(out))
    one_error_line(done, 2, str(out), "notes.txt")
    assert (out / "notes.txt").read_text() == "mine"
    other = tmp_path / "user-folder"
    other.mkdir()
    (other / "x").write_text("x")
    one_error_line(cli("export", "--model", str(model_dir), "--to", str(other)), 2, "folder exists and is not empty")


def _damaged_cache(workdir: Path, rows: int = 2000, leaf: bool = False) -> tuple[Path, int]:
    """A real response cache whose `responses` table root page is overwritten (what a bad sector
    does); with ``leaf`` one leaf page of the table too. Returns (path, rows on that leaf)."""
    from multicsr_core.llm.cache import OK, CacheEntry, ResponseCache, default_cache_path

    path = default_cache_path(workdir)
    with ResponseCache(path) as cache:
        cache.put_many([CacheEntry(f"k{i}", "m", {"p": i}, OK, response={"text": f"answer {i} " + "x" * 200},
                                   prompt_tokens=10, completion_tokens=i) for i in range(rows)])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'responses'").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaf_page = conn.execute("SELECT pageno FROM dbstat WHERE name = 'responses' AND pagetype = 'leaf' "
                                 "ORDER BY pageno LIMIT 1 OFFSET 3").fetchone()[0] if leaf else None
        on_leaf = conn.execute("SELECT ncell FROM dbstat WHERE pageno = ?", (leaf_page,)).fetchone()[0] if leaf else 0
    with open(path, "r+b") as fh:
        for page in [root] + ([leaf_page] if leaf else []):
            fh.seek(page_size * (page - 1))
            fh.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    return path, on_leaf


@pytest.mark.parametrize("leaf", [False, True], ids=["root page", "root and a leaf page"])
def test_cache_merge_of_a_damaged_table_root_page(leaf, tmp_path):
    """Before: `recovered 0, merged 0, unreadable 0` while the index still listed every key."""
    from multicsr_core.llm.cache import ResponseCache, default_cache_path

    workdir = tmp_path / "w"
    path, on_leaf = _damaged_cache(workdir, leaf=leaf)
    moved = path.with_name(path.name + ".corrupt-test")
    for suffix in ("", "-wal", "-shm"):
        if Path(str(path) + suffix).exists():
            os.replace(str(path) + suffix, str(moved) + suffix)
    done = cli("cache", "merge", str(moved), "--workdir", str(workdir))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["recovered"] == 2000 - on_leaf and report["unreadable"] == on_leaf
    assert report["merged"] == report["recovered"]
    with ResponseCache(default_cache_path(workdir)) as cache:
        rows = cache.get_many([f"k{i}" for i in range(2000)])
    assert len(rows) == 2000 - on_leaf
    for r in rows.values():
        assert r.ok and r.response["text"] == f"answer {r.key[1:]} " + "x" * 200 and r.completion_tokens == int(r.key[1:])


def test_quarantine_warning_names_the_real_workdir_and_its_command_works(tmp_path):
    """The warning's `multicsr cache merge ... --workdir ...` is the user's workdir (a path with a
    space, quoted), and running it as printed recovers the rows."""
    workdir = tmp_path / "my work"
    _damaged_cache(workdir)
    from multicsr_core.llm.cache import ResponseCache

    elsewhere = tmp_path / "elsewhere.sqlite"  # any cache: opening the workdir's own is what quarantines it
    ResponseCache(elsewhere).close()
    done = cli("cache", "merge", str(elsewhere), "--workdir", str(workdir))
    assert done.returncode == 0, done.stderr
    warning = next(line for line in done.stderr.splitlines() if line.startswith("warning: cache"))
    assert "--workdir DIR" not in warning and "\n" not in warning
    command = warning.split("recover its rows with: ", 1)[1]
    assert f"--workdir {shlex.quote(str(workdir))}" in command
    argv = shlex.split(command)
    assert argv[:3] == ["multicsr", "cache", "merge"]
    followed = cli(*argv[1:])
    assert followed.returncode == 0, followed.stderr
    assert json.loads(followed.stdout)["recovered"] == 2000


# ----------------------------------------------------------------------------- the classifier itself
@pytest.mark.parametrize("exc, kind", [
    (OSError(errno.ENOSPC, "No space left on device", "/x/y"), "no space left"),
    (OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device"), "no space left"),
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), "no space left"),
    (RuntimeError("Os { code: 28, kind: StorageFull, message: \"No space left on device\" }"), "no space left"),
    (sqlite3.OperationalError("database or disk is full"), "no space left"),
    (OSError(errno.EFBIG, "File too large", "/x/y"), "file too large"),
    (OSError(errno.EROFS, "Read-only file system", "/x/y"), "read-only file system"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied", "/x/y"), "permission denied"),
])
def test_machine_errors_are_user_errors_naming_the_path(exc, kind, tmp_path):
    from multicsr_core.errors import MachineError, clear_outputs, machine_error_of, register_output, user_error_of

    clear_outputs()
    register_output(tmp_path / "out", "--out")
    try:
        found = machine_error_of(exc)
        assert isinstance(found, MachineError) and user_error_of(exc) is not None
        assert kind in str(found)
        assert ("/x/y" in str(found)) if getattr(exc, "filename", None) else (str(tmp_path / "out") in str(found)
                                                                               and "--out" in str(found))
    finally:
        clear_outputs()
    assert machine_error_of(ValueError("No such column: 28")) is None
    assert machine_error_of(RuntimeError("unexpected pos 576 vs 534")) is None  # no output without space: a bug


def test_a_model_cache_path_names_its_variable(tmp_path, monkeypatch):
    from multicsr_core.errors import READ_ONLY, access_error, flag_for

    monkeypatch.setenv("MULTICSR_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    assert flag_for(tmp_path / "cache" / "gguf-1.lock") == "MULTICSR_MODEL_CACHE"
    assert flag_for(tmp_path / "prefect" / "prefect.db") == "PREFECT_HOME"
    assert "set MULTICSR_MODEL_CACHE" in str(access_error(tmp_path / "cache", READ_ONLY))


def test_machine_error_survives_pickle(tmp_path):
    """Dask workers and Prefect's result serializer rebuild exceptions from their message."""
    import pickle

    from multicsr_core.errors import DiskFullError, disk_full_error

    error = disk_full_error(tmp_path, "--workdir")
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, DiskFullError) and str(again) == str(error)


def test_prefect_home_check_writes_nothing(tmp_path):
    """The home check only probes (a temporary file): a writable home is left as it was."""
    from multicsr_core.pipeline.preflight import check_prefect_home

    home = tmp_path / "prefect"
    home.mkdir()
    before = sorted(home.iterdir()), stat.S_IMODE(home.stat().st_mode)
    env = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_API_URL")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    try:
        check_prefect_home()
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert (sorted(home.iterdir()), stat.S_IMODE(home.stat().st_mode)) == before


def test_no_other_line_before_the_error(tmp_path):
    """The home check runs before Prefect is imported (Prefect warns on stderr about a home it
    cannot create): the line is the only output."""
    (tmp_path / "f").write_text("x")
    done = cli(*run_args(tmp_path / "w"), env={"PREFECT_HOME": str(tmp_path / "f" / "sub"), "PREFECT_API_URL": None})
    line = one_error_line(done, 2, "PREFECT_HOME")
    assert re.search(r"is a file, not a folder", line), line
