"""Logging: the standard ``logging`` module, one line per event, never a secret.

Levels are the original Carme's ``setCarmeLog`` levels (10 debug, 20 info, 30 warning,
40 error). A log file is opened with ``WatchedFileHandler``, which reopens it when
logrotate moves it away (``etc/logrotate.d/carme-backend``).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("carme.daemon")


def setup(level: int, file: str) -> None:
    handler: logging.Handler
    if file:
        handler = logging.handlers.WatchedFileHandler(file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("watchdog").setLevel(max(level, logging.WARNING))  # its debug is per inotify event


def fields(**values) -> str:
    """``key=value`` pairs for a log line; values are the request's safe fields only."""
    return " ".join(f"{key}={'-' if value is None else value}" for key, value in values.items())
