"""The sweep's log: what the driver says (notes, progress tables, errors) on the terminal and in <sweep>/sweep.log.

    with sweep_logging(sweep_dir):      # for the sweep's lifetime: a file handler on the `lrsweep` logger
        say("[sweep] ...")              # terminal + sweep.log
        say_to_file(table)              # sweep.log only (the live table the terminal redraws in place)

vLLM's own start-up messages go to the same file, not the terminal (workers/sample/engine_log.py), unless
LRSWEEP_VERBOSE_ENGINES=1.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from workers.sample.engine_log import ENGINE_LOG_ENV

LOGGER = "lrsweep"
LOG_FILE = "sweep.log"
FILE_ONLY = {"file_only": True}  # `extra` of a record the terminal does not show


class _CurrentStdout(logging.StreamHandler):
    """Writes to sys.stdout as it is at each record (a test's capture, a redirect), not as it was at start-up."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _NotFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def logger() -> logging.Logger:
    """The driver's logger: messages as they are on stdout (nothing added), never through Hydra's root handlers."""
    log = logging.getLogger(LOGGER)
    if not any(getattr(h, "lrsweep_console", False) for h in log.handlers):
        console = _CurrentStdout()
        console.setFormatter(logging.Formatter("%(message)s"))
        console.addFilter(_NotFileOnly())
        console.lrsweep_console = True  # type: ignore[attr-defined]
        log.addHandler(console)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def say(msg: str) -> None:
    logger().info(msg)
    for h in logger().handlers:
        h.flush()


def say_to_file(msg: str) -> None:
    logger().info(msg, extra=FILE_ONLY)


class FileOnlyStream:
    """A text stream for sweep.log alone: each newline-terminated write is one log record (a whole table)."""

    def __init__(self) -> None:
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        if self.pending.endswith("\n"):
            say_to_file(self.pending.rstrip("\n"))
            self.pending = ""
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@contextmanager
def sweep_logging(sweep_dir: Path) -> Iterator[Path]:
    """sweep.log in the sweep folder for the block (appended to on resume, timestamped lines); an error that ends
    the block is written there with its traceback. Engines started meanwhile log to the same file."""
    path = Path(sweep_dir) / LOG_FILE
    handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log = logger()
    log.addHandler(handler)
    before = os.environ.get(ENGINE_LOG_ENV)
    os.environ[ENGINE_LOG_ENV] = str(path)  # read by every engine this process or its Ray actors start
    try:
        yield path
    except BaseException as err:
        log.error(f"error: {type(err).__name__}: {err}", exc_info=True, extra=FILE_ONLY)
        raise
    finally:
        if before is None:
            os.environ.pop(ENGINE_LOG_ENV, None)
        else:
            os.environ[ENGINE_LOG_ENV] = before
        log.removeHandler(handler)
        handler.close()
