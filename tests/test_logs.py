"""CLI logging writes to the stderr of the moment a record is emitted, not of the moment it was set up."""

from __future__ import annotations

import io
import logging
import sys

from s2policy.logs import StderrHandler, log_to_stderr


def test_a_cli_called_in_process_keeps_logging_after_stderr_was_swapped_and_closed(monkeypatch):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []  # as in a fresh process: no logging configured yet
    try:
        first = io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        log_to_stderr(logging.INFO, "%(levelname)s %(message)s")
        (handler,) = root.handlers
        assert isinstance(handler, StderrHandler)
        logging.getLogger("s2policy.test").info("one")
        assert first.getvalue() == "INFO one\n"
        first.close()  # what a test's captured stream, or a notebook cell's, becomes afterwards
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("s2policy.test").warning("two")
        assert second.getvalue() == "WARNING two\n"  # not "--- Logging error --- ... I/O operation on closed file"
        log_to_stderr(logging.DEBUG)  # configured already: a second call adds nothing
        assert root.handlers == [handler]
    finally:
        root.handlers, root.level = saved
