"""The command line's progress bar and log lines share stderr without running into each other."""

from __future__ import annotations

import io
import logging

from backend.pipeline.api import Progress
from backend.pipeline.cli_common import ProgressBar


def test_log_records_start_on_their_own_line():
    stream = io.StringIO()
    logger = logging.getLogger("test_cli_output")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    bar = ProgressBar(stream)
    try:
        with bar.above_logs(logger):
            bar(Progress("shape", 3, 12, 0.4))
            logger.info("cascade: 123 HR tokens")
            bar(Progress("shape", 4, 12, 0.45))
        bar.close()
        logger.info("after the bar")  # the filter is gone again: nothing is added
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().split("\n")
    assert "INFO cascade: 123 HR tokens" in lines  # a whole line, not glued after "3/12 ..."
    assert lines[0].lstrip("\r").startswith("shape") and lines[0].rstrip().endswith("s")
    assert handler.filters == []
    assert stream.getvalue().endswith("INFO after the bar\n")
