"""The errors a user can fix, and the ones a rerun can fix.

Every problem the user causes (a bad option or config value, an unreadable or malformed input
file, an output that cannot be written, a model that cannot be found, data that is missing)
raises a :class:`UserError` subclass. Its message is ONE line: the file (with ``:line`` or
``:row N`` where there is one), what is wrong, and what to do. The CLI prints that line and
exits 2; anything else is a real failure (exit 1).

:class:`RetryableError` marks failures that the same command can finish when run again
(transport failures of an API, items left unanswered after retries): only those get the
"run the same command again to resume" hint.

:class:`MachineError` (a :class:`UserError`) is the machine's part: a full disk (``ENOSPC``, also
as the text of safetensors, SQLite, pyarrow and torch errors), a file-size limit, a read-only or
forbidden path, a process that cannot start. Its line names the path, the free space there (a full
disk), and the option or variable that moves it (``--workdir``, ``--out``, ``MULTICSR_MODEL_CACHE``,
``PREFECT_HOME``...). "unexpected" (exit 1) is left to bugs.

The message is built once, in ``__init__``, and is the exception's only argument: Prefect's
JSON result serializer and pickle (Dask workers) both rebuild an exception as ``cls(message)``,
and the rebuilt one must read the same.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def location(path: str | Path | None, line: int | None = None, row: int | None = None) -> str:
    """``file:line`` (text files: 1-based line), ``file: row N`` (tables: 1-based row), or ``file``."""
    if path is None:
        return ""
    if line is not None:
        return f"{path}:{line}"
    if row is not None:
        return f"{path}: row {row}"
    return str(path)


class UserError(ValueError):
    """A problem the user can fix; ``str(exc)`` is the one line the CLI prints.

    ``UserError("no such column 'x'", path=p, line=3, hint="name one with --column")`` reads
    ``p:3: no such column 'x'; name one with --column``. A ``ValueError`` so callers that caught
    ``ValueError`` before keep working.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 row: int | None = None, hint: str | None = None) -> None:
        where = location(path, line, row)
        text = f"{where}: {message}" if where else message
        if hint:
            text = f"{text}; {hint}"
        # one line, whatever the parts held (a multi-line library message, a path with a newline)
        text = " ".join(part.strip() for part in text.splitlines() if part.strip())
        super().__init__(text)
        self.path = None if path is None else str(path)
        self.line = line
        self.row = row
        self.hint = hint

    def __reduce__(self):  # pickle (Dask): rebuild from the finished message alone
        return (type(self), (str(self),))


class ConfigError(UserError):
    """A config that cannot be used: the message names the file and key."""


class InputError(UserError):
    """An input file that cannot be used; the message names the file and line (or row)."""


class OutputError(UserError):
    """An output path that cannot be written (a directory where a file is wanted, no permission)."""


class ModelRefError(UserError):
    """A model reference (hub id, local path, ``bundled:`` name) that cannot be resolved."""


class DataDirError(UserError):
    """The public data (SentEval, NLI files) is not where the pipeline looks."""


class ServerError(UserError):
    """A configured server (``PREFECT_API_URL``, an API ``--base-url``) does not answer."""


class RetryableError(RuntimeError):
    """A failure the same command finishes when run again (work done so far is cached)."""


# Exceptions of libraries that mean "the network failed", recognised by qualified name so this
# module imports none of them.
_TRANSPORT_NAMES = {
    "openai.APIConnectionError", "openai.APITimeoutError", "openai.RateLimitError",
    "openai.InternalServerError", "httpx.TransportError", "httpx.TimeoutException",
    "requests.exceptions.ConnectionError", "urllib.error.URLError",
}


def is_retryable(exc: BaseException) -> bool:
    """Whether running the same command again can help: a :class:`RetryableError`, a
    connection or timeout error, or a transport error of the HTTP/API clients."""
    if isinstance(exc, UserError):
        return False
    if isinstance(exc, (RetryableError, ConnectionError, TimeoutError)):
        return True
    for cls in type(exc).__mro__:
        if f"{cls.__module__.split('._')[0]}.{cls.__qualname__}" in _TRANSPORT_NAMES:
            return True
    return False


_OS_ERRORS = ((FileNotFoundError, "not found"), (IsADirectoryError, "is a directory, not a file"),
              (NotADirectoryError, "a part of this path is a file, not a folder"),
              (PermissionError, "permission denied"))


def user_error_of(exc: BaseException) -> UserError | None:
    """The :class:`UserError` an exception is or was raised from (``raise ... from``), else None.
    Errors of the machine (a full disk, a read-only or forbidden path: :func:`machine_error_of`)
    and operating-system errors about a file (not found, a directory, no permission) count as user
    errors too: they name the file, and the user can fix them."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError):
            return current
        current = current.__cause__
    machine = machine_error_of(exc)
    if machine is not None:
        return machine
    for cls, what in _OS_ERRORS:
        if isinstance(exc, cls):
            if exc.filename is None:
                return UserError(str(exc) or what)
            return UserError(exc.strerror or what, path=exc.filename)
    return None


# ------------------------------------------------------------------------------ the machine
# A full disk, a file-size limit, a read-only or forbidden path: the user (or the machine's admin)
# must act, so they are user errors (exit 2) whose one line names the path, the option or variable
# that moves it elsewhere, and (a full disk) the free space there. They are recognised where they
# happen (``with machine_errors(path, flag):`` around a write, the response cache, the export) and,
# for errors that reach the CLI from a library that names no file (pyarrow, safetensors, torch,
# SQLite), by their errno or text; the path is then the output the command registered
# (:func:`register_output`) that is on the fullest (or the unwritable) file system.


class MachineError(UserError):
    """The machine, not the input: a full disk, a read-only or forbidden path, a process that
    cannot start. The message names the path and the option or variable that moves it."""


class DiskFullError(MachineError):
    """No space left (or a quota or file-size limit reached) where the command writes."""


class PathAccessError(MachineError):
    """A path on a read-only file system, or one this user may not write."""


DISK_FULL, FILE_TOO_LARGE, READ_ONLY, NO_PERMISSION = "disk full", "file too large", "read-only", "permission denied"
_ERRNO_KINDS = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EFBIG: FILE_TOO_LARGE,
                errno.EROFS: READ_ONLY, errno.EACCES: NO_PERMISSION, errno.EPERM: NO_PERMISSION}
# Libraries that name no errno in their exception (safetensors: "I/O error: No space left on device
# (os error 28)" or "Os { code: 28, kind: StorageFull }"; SQLite: "database or disk is full";
# pyarrow's text "[errno 28]"): their text says it.
_TEXT_KINDS = (
    (DISK_FULL, re.compile(r"No space left on device|Disk quota exceeded|StorageFull|QuotaExceeded|"
                           r"database or disk is full|os error (?:28|122)\b|errno:? ?(?:28|122)\b|code: ?(?:28|122)\b",
                           re.I)),
    (FILE_TOO_LARGE, re.compile(r"File too large|FileTooLarge|os error 27\b|errno:? ?27\b|code: ?27\b", re.I)),
    (READ_ONLY, re.compile(r"Read-only file system|ReadOnlyFilesystem|attempt to write a readonly database|"
                           r"os error 30\b|errno:? ?30\b|code: ?30\b", re.I)),
    (NO_PERMISSION, re.compile(r"\[Errno 13\]|os error 13\b|code: ?13\b|kind: ?PermissionDenied", re.I)),
)
# A write that failed without saying why (torch's zip writer: "unexpected pos 576 vs 534",
# "PytorchStreamWriter failed writing file"): a full disk when a registered output has no space left.
_SILENT_WRITE_FAILURE = re.compile(r"PytorchStreamWriter failed writing|inline_container\.cc.*unexpected pos|"
                                   r"file write failed", re.I)
_LOW_SPACE_BYTES = 8 << 20

_outputs: list[tuple[Path, str]] = []  # (folder or file, the option that names it) of the running command


def register_output(path: str | Path | None, flag: str) -> None:
    """Record that the running command writes at ``path`` (named by option ``flag``), so an error
    that names no file (a full disk inside pyarrow or safetensors) can name it."""
    if path is not None:
        _outputs.append((Path(path).expanduser().absolute(), flag))


def clear_outputs() -> None:
    _outputs.clear()


def _env_locations() -> list[tuple[Path, str]]:
    """The folders the pipeline writes besides the command's own outputs, with their variable."""
    home = Path.home()
    places = [
        (os.environ.get("MULTICSR_MODEL_CACHE") or home / ".cache" / "multicsr" / "models", "MULTICSR_MODEL_CACHE"),
        (os.environ.get("PREFECT_HOME") or home / ".prefect", "PREFECT_HOME"),
        (os.environ.get("HF_HUB_CACHE") or "", "HF_HUB_CACHE"),
        (os.environ.get("HF_HOME") or home / ".cache" / "huggingface", "HF_HOME"),
        (os.environ.get("MULTICSR_DATA_ROOT") or home / ".cache" / "multicsr" / "data", "MULTICSR_DATA_ROOT"),
    ]
    return [(Path(p).expanduser().absolute(), flag) for p, flag in places if str(p)]


def _within(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([path, root]) == str(root)
    except ValueError:
        return False


def flag_for(path: str | Path) -> str | None:
    """The option or variable that moves ``path`` elsewhere: the most specific registered output
    or known folder (model cache, Prefect home, Hugging Face cache, data root) holding it."""
    path = Path(path).expanduser().absolute()
    best: tuple[int, str] | None = None
    for root, flag in [*_outputs, *_env_locations()]:
        if _within(path, root) and (best is None or len(str(root)) > best[0]):
            best = (len(str(root)), flag)
    return best[1] if best else None


def _existing(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def free_space(path: str | Path) -> str:
    """``"12.0 MiB free of 2.0 GiB"`` on the file system holding ``path`` (or its nearest existing folder)."""
    try:
        usage = shutil.disk_usage(_existing(Path(path).expanduser().absolute()))
    except OSError:
        return "free space unknown"
    return f"{_size(usage.free)} free of {_size(usage.total)}"


_WHAT = {"MULTICSR_MODEL_CACHE": "the converted-model cache, default ~/.cache/multicsr/models",
         "PREFECT_HOME": "Prefect's home, default ~/.prefect: the temporary Prefect server keeps its database there",
         "HF_HOME": "the Hugging Face cache, default ~/.cache/huggingface",
         "HF_HUB_CACHE": "the Hugging Face hub cache",
         "MULTICSR_DATA_ROOT": "the data root, also --data-dir",
         "TMPDIR": "temporary files"}


def _move(flag: str | None, where: str) -> str:
    if flag is None:
        return ""
    if flag.startswith("-"):
        return f"give {flag} {where}"
    what = f" ({_WHAT[flag]})" if flag in _WHAT else ""
    return f"set {flag}{what} to {where}"


def disk_full_error(path: str | Path, flag: str | None = None, kind: str = DISK_FULL) -> DiskFullError:
    """The one line of a full disk (or a file-size limit) at ``path``."""
    path = Path(path).expanduser()
    flag = flag or flag_for(path)
    resume = "then run the same command again: it resumes from the work already finished"
    if kind == FILE_TOO_LARGE:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        shown = "unlimited" if limit == resource.RLIM_INFINITY else _size(limit)
        move = _move(flag, "a file system that takes larger files")
        return DiskFullError(f"file too large: the file-size limit of this process (ulimit -f: {shown}) or of the "
                             f"file system was reached ({free_space(path)})", path=path,
                             hint=f"raise the limit (ulimit -f unlimited){' or ' + move if move else ''}, {resume}")
    move = _move(flag, "a disk with space")
    return DiskFullError(f"no space left on the device (now {free_space(path)} there)", path=path,
                         hint=f"free some space there{' or ' + move if move else ''}, {resume}")


def access_error(path: str | Path, kind: str, flag: str | None = None) -> PathAccessError:
    """The one line of a read-only or forbidden ``path``."""
    path = Path(path).expanduser()
    flag = flag or flag_for(path)
    move = _move(flag, "a writable folder")
    if kind == READ_ONLY:
        return PathAccessError("cannot write: read-only file system", path=path,
                               hint=move or "write somewhere else, or remount it read-write")
    who = f"user {os.getuid()}" if hasattr(os, "getuid") else "this user"
    return PathAccessError(f"permission denied for {who}", path=path,
                           hint=f"{move}, or fix its permissions" if move else "fix its permissions, or use another path")


def _kind_of(exc: BaseException) -> str | None:
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if code in _ERRNO_KINDS:
        return _ERRNO_KINDS[code]
    text = f"{type(exc).__name__}: {exc}"
    for kind, pattern in _TEXT_KINDS:
        if pattern.search(text):
            return kind
    return None


_QUOTED_PATH = re.compile(r"""['"]((?:/|[A-Za-z]:\\|\.{1,2}/)[^'"]*)['"]""")


def _path_in(exc: BaseException) -> Path | None:
    if isinstance(exc, OSError):
        for name in (exc.filename, exc.filename2):
            if name:
                return Path(os.fsdecode(name))
    match = _QUOTED_PATH.search(str(exc))
    return Path(match.group(1)) if match else None


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=_existing(folder), prefix=".multicsr-write-probe-"):
            return True
    except OSError:
        return False


def _suspect_output(kind: str) -> tuple[Path, str] | None:
    """The registered output an error without a file name most likely hit: the one with the least
    free space (a full disk), or the first that takes no file (read-only, no permission)."""
    if not _outputs:
        return None
    if kind in (DISK_FULL, FILE_TOO_LARGE):
        def free(item: tuple[Path, str]) -> int:
            try:
                return shutil.disk_usage(_existing(item[0])).free
            except OSError:
                return 1 << 62
        return min(_outputs, key=free)
    return next((item for item in _outputs if not _writable(item[0])), _outputs[0])


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
    return seen


def machine_error_of(exc: BaseException, path: str | Path | None = None,
                     flag: str | None = None) -> MachineError | None:
    """The :class:`MachineError` ``exc`` (or an exception it was raised from) means, else None:
    ``ENOSPC``/``EDQUOT`` (and the text of libraries that carry it), ``EFBIG``, ``EROFS``,
    ``EACCES``/``EPERM``. ``path``/``flag``: where the caller was writing, for errors that name no
    file; else the file the error names, else the registered output it most likely hit."""
    chain = _chain(exc)
    for current in chain:
        if isinstance(current, MachineError):
            return current
    if isinstance(exc, UserError):
        return None  # already one line naming its file (e.g. preflight's "cannot write in DIR")
    for current in chain:
        if isinstance(current, UserError):
            continue
        kind = _kind_of(current)
        if kind is None:
            continue
        where = _path_in(current)
        where_flag = None
        if where is None and path is not None:
            where, where_flag = Path(path), flag
        if where is None:
            suspect = _suspect_output(kind)
            if suspect is None:
                continue  # nothing to name: not classified here (the CLI's registered outputs will be)
            where, where_flag = suspect
        if kind in (DISK_FULL, FILE_TOO_LARGE):
            return disk_full_error(where, where_flag, kind)
        return access_error(where, kind, where_flag)
    if _SILENT_WRITE_FAILURE.search(str(exc)):
        candidates = [(Path(path), flag)] if path is not None else list(_outputs)
        for where, where_flag in candidates:
            try:
                if shutil.disk_usage(_existing(where)).free < _LOW_SPACE_BYTES:
                    return disk_full_error(where, where_flag)
            except OSError:
                continue
    return None


@contextlib.contextmanager
def machine_errors(path: str | Path | None = None, flag: str | None = None) -> Iterator[None]:
    """Raise a full disk, a read-only or a forbidden path met in the block as its
    :class:`MachineError` (naming ``path`` and ``flag`` when the error names no file)."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  (re-raised as is unless it is one of the machine's)
        error = machine_error_of(exc, path, flag)
        if error is None:
            raise
        raise error from exc
