"""``jobs/<slurm_job_id>.json``: the current state and history of each Carme job.

States move forward only: queued → running → ending_soon → one of finished, failed,
cancelled, timeout. Events arrive twice (node and controller epilog) and out of order (a
trigger after the epilog, a prolog after a quick job's epilog), so an event whose state
is not ahead of the current one is kept in the history, marked not applied, and changes
nothing. Writers hold an flock on the jobs/ folder: events are rare, one lock is enough.
"""

from __future__ import annotations

import fcntl
import os
import time

from carme.spool import files
from carme.spool.layout import Spool

STATE_OF_KIND = {"queued": "queued", "started": "running", "ending_soon": "ending_soon",
                 "finished": "finished", "failed": "failed", "cancelled": "cancelled",
                 "timeout": "timeout"}
RANK = {"queued": 0, "running": 1, "ending_soon": 2, "finished": 3, "failed": 3, "cancelled": 3,
        "timeout": 3}
TERMINAL = frozenset(state for state, rank in RANK.items() if rank == 3)


def job_path(spool: Spool, slurm_job_id: int) -> str:
    return f"{spool.dir('jobs')}/{int(slurm_job_id)}.json"


def read(spool: Spool, slurm_job_id: int) -> dict | None:
    return files.read_json(job_path(spool, slurm_job_id))


def record(spool: Spool, slurm_job_id: int, kind: str, at: float, **details) -> tuple[dict, bool]:
    """Apply one event; return the job's status and whether its state changed."""
    new_state = STATE_OF_KIND[kind]
    folder = os.open(spool.dir("jobs"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        status = read(spool, slurm_job_id) or {"slurm_job_id": int(slurm_job_id), "state": None,
                                                "history": []}
        current = status["state"]
        applied = current is None or (current not in TERMINAL and RANK[new_state] > RANK[current])
        status["history"].append({"kind": kind, "at": at, "applied": applied,
                                  **({"source": details["source"]} if "source" in details else {})})
        if applied:
            status["state"] = new_state
            status.update({k: v for k, v in details.items() if v is not None and k != "source"})
        status["updated_at"] = time.time()
        files.replace(spool.dir("tmp"), job_path(spool, slurm_job_id), files.dumps(status),
                      mode=0o644)
        return status, applied
    finally:
        os.close(folder)
