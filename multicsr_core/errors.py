"""The errors a user can fix, and the ones a rerun can fix.

Every problem the user causes (a bad option or config value, an unreadable or malformed input
file, an output that cannot be written, a model that cannot be found, data that is missing)
raises a :class:`UserError` subclass. Its message is ONE line: the file (with ``:line`` or
``:row N`` where there is one), what is wrong, and what to do. The CLI prints that line and
exits 2; anything else is a real failure (exit 1).

:class:`RetryableError` marks failures that the same command can finish when run again
(transport failures of an API, items left unanswered after retries): only those get the
"run the same command again to resume" hint.

The message is built once, in ``__init__``, and is the exception's only argument: Prefect's
JSON result serializer and pickle (Dask workers) both rebuild an exception as ``cls(message)``,
and the rebuilt one must read the same.
"""

from __future__ import annotations

from pathlib import Path


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
    Operating-system errors about a file (not found, a directory, no permission) count as user
    errors too: they name the file, and the user can fix them."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError):
            return current
        current = current.__cause__
    for cls, what in _OS_ERRORS:
        if isinstance(exc, cls):
            if exc.filename is None:
                return UserError(str(exc) or what)
            return UserError(exc.strerror or what, path=exc.filename)
    return None
