"""What the libraries print during a Prefect run goes to the run's debug log, not the worker's output.

A worker's log is what an operator reads: the stages' own lines, progress and errors. Under a run,
transformers' deprecation warnings (a ``past_key_values`` FutureWarning per generation shard), its
logger's notices, the weight-loading progress bars and the Trainer's ``{'loss': ...}`` lines are
noise there. They are routed to the run logger at DEBUG (shown with ``PREFECT_LOGGING_LEVEL=DEBUG``)
only while a flow run lasts, and put back as they were after it: ``multicsr train``, ``multicsr
generate`` and the library used from Python keep the libraries' own output.

Scope: the flow's process and the task runner's threads (the default). Dask worker processes keep
the libraries' defaults.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import warnings
from typing import Iterator

# library loggers whose records become debug lines of the run (their own handlers print to stderr)
LIBRARY_LOGGERS = ("transformers", "sentence_transformers", "huggingface_hub")
# what transformers.Trainer's log callback prints: a dict of metrics, one per line
TRAINER_LOG_LINE = re.compile(r"^\{'[A-Za-z_]+': ")


def _debug(message: str, *args) -> None:
    from multicsr.orchestration.progress import run_logger

    run_logger().debug(message, *args)


class _ToRunDebugLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.ERROR:  # an error stays one
                from multicsr.orchestration.progress import run_logger

                run_logger().log(record.levelno, "%s: %s", record.name, record.getMessage())
            else:
                _debug("%s: %s", record.name, record.getMessage())
        except Exception:  # noqa: BLE001  (a log line never fails the run)
            self.handleError(record)


def _warning_to_debug(message, category, filename, lineno, file=None, line=None) -> None:
    _debug("%s: %s (%s:%s)", category.__name__, message, filename, lineno)


@contextlib.contextmanager
def library_output_to_debug() -> Iterator[None]:
    """For the block: Python warnings and the :data:`LIBRARY_LOGGERS`' records are debug lines
    of the run, and transformers' and huggingface_hub's progress bars are off (see module docstring)."""
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger()  # transformers adds its stderr handler on first use: let it happen now, then swap it
    relay = _ToRunDebugLog()
    saved = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.addHandler(relay)
        logger.propagate = False
    bars = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # transformers' bars and huggingface_hub's (weight loading, downloads)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_to_debug
            yield
    finally:
        # each library's bars as they were: transformers' switch also flips huggingface_hub's
        if bars[0]:
            hf_logging.enable_progress_bar()
        if bars[1]:
            hub_utils.disable_progress_bars()
        else:
            hub_utils.enable_progress_bars()
        for logger, handlers, propagate in saved:
            logger.removeHandler(relay)
            for handler in handlers:
                logger.addHandler(handler)
            logger.propagate = propagate


class _TrainerLinesToDebug:
    """A stderr that sends the Trainer's metric lines to the run's debug log and passes everything
    else on at once (progress bars, the SIGTERM notice)."""

    def __init__(self, stream):
        self._stream = stream
        self._line = ""  # a Trainer line being written (print writes the text, then the newline)
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        line, passed = None, text
        with self._lock:
            if self._line or TRAINER_LOG_LINE.match(text):
                self._line += text
                passed = ""
                if "\n" in self._line:
                    line, _, passed = self._line.partition("\n")
                    self._line = ""
        # outside the lock: a log handler may write to this very stream
        if line is not None:
            _debug("trainer: %s", line)
        if passed:
            self._stream.write(passed)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding...: the real stream's
        return getattr(self._stream, name)


@contextlib.contextmanager
def trainer_log_lines_to_debug() -> Iterator[None]:
    """For the block, the Trainer's ``{'loss': ...}`` lines on stderr become debug lines of the run."""
    original = sys.stderr
    sys.stderr = _TrainerLinesToDebug(original)
    try:
        yield
    finally:
        sys.stderr = original
