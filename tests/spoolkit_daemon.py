"""Run by a test in a subprocess: claim one request like a daemon would, then hang until
killed, to leave a claim behind whose claimer is gone."""

from __future__ import annotations

import time
from pathlib import Path

from carme.daemon import checks, config as configuration
from carme.spool.layout import Spool
from carme.spool.queue import Queue


def claim_and_hang(config_path: Path, request_id: str) -> None:
    config = configuration.load(config_path)
    queue = Queue(Spool(config.spool.path), checks.build_verifier(config))
    claim = queue.claim(request_id)
    queue.accept(claim)
    print("claimed", flush=True)
    time.sleep(600)
