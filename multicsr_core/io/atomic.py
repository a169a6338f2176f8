"""Atomic writes, one way: write beside the target, then ``os.replace`` it onto the target, so a
reader sees the old file or the new one, never a part, and a failure (or a kill) mid-write leaves
the old one untouched and no temporary behind (a kill leaves a hidden ``.<name>.*.tmp`` at most).

:func:`atomic_path` is the general form, for writers that take a path (pyarrow, matplotlib);
:func:`write_text_atomic` and :func:`write_bytes_atomic` write a string or bytes;
:func:`atomic_directory` builds a folder beside the target and renames it into place;
:func:`atomic_symlink` points a link elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_directory", "atomic_path", "atomic_symlink", "current_umask", "write_bytes_atomic",
           "write_text_atomic"]


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False, private: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an error it
    replaces ``path`` (flushed to disk first with ``fsync``), else it is removed.

    The temporary keeps ``path``'s suffix (a writer that picks its format from it, such as
    matplotlib's ``savefig``, writes the right one). The file gets ordinary permissions (0666 less
    the umask) or, ``private``, 0600 (files only this user should read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        if not private:
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs are ordinary files
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False, private: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path, fsync=fsync, private=private) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`), flushed to disk before
    the rename unless ``fsync`` is False (a file that is cheap to write again)."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | Path, mode: int = 0o755, prefix: str | None = None) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block ends without an error it is
    given ``mode`` and renamed to ``path`` (which must not exist, or be an empty folder), else it
    is removed with everything in it. ``prefix`` names the temporary (default ``.<name>.``), for a
    caller that finds the leftovers of a killed process by it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, mode)  # mkdtemp makes it private
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_symlink(link: str | Path, target: str | Path) -> Path:
    """Point ``link`` at ``target`` (a relative target is relative to the link's folder) in one
    rename: a reader follows the old link or the new one, never none."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.tmp-link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return link
