"""Logging for the command-line tools: records to whatever `sys.stderr` is when they are emitted.

`logging.basicConfig(stream=sys.stderr)` binds the stream object of the moment; a CLI called in-process (tests,
notebooks, a Ray worker) after stderr was swapped and closed would then fail on every later record ("I/O operation
on closed file"). Library modules only get loggers; CLIs call `log_to_stderr` once.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO


class StderrHandler(logging.StreamHandler):
    """A StreamHandler whose stream is always the current sys.stderr."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ / setStream assign it; the property wins
        pass


def log_to_stderr(level: int = logging.INFO, fmt: str = "%(message)s") -> None:
    """Show records at `level` and above on stderr, unless the root logger is configured already (as
    logging.basicConfig: an application's own logging setup wins)."""
    logging.basicConfig(level=level, format=fmt, handlers=[StderrHandler()])
