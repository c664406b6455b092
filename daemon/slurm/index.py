"""Which jobs each user has: one Slurm listing per user shared by every request within
``ttl`` seconds (submitit's batched watcher, applied to idempotency checks).

start_job asks "does this user already have an active job of this name?" before every
submit. Asking Slurm each time doubles the calls per start; a snapshot shared by the
requests of the same moment halves them. It stays correct because:
- jobs this daemon submits are added to the snapshot at once, and a cancel drops it;
- a job the snapshot says is active is confirmed with a fresh query before it is reused;
- a submit that timed out is retried after the retry delay, which is longer than ``ttl``,
  so the retry sees the job if Slurm made it.
"""

from __future__ import annotations

import threading
import time

from carme.daemon.slurm.base import JobInfo


class JobIndex:
    def __init__(self, backend, ttl: float = 0.5):
        self.backend = backend
        self.ttl = ttl
        self._lock = threading.Lock()
        self._user_locks: dict[str, threading.Lock] = {}
        self._snapshots: dict[str, tuple[float, list[JobInfo]]] = {}

    def _user_lock(self, user: str) -> threading.Lock:
        with self._lock:
            return self._user_locks.setdefault(user, threading.Lock())

    def jobs_of(self, user: str, fresh: bool = False) -> list[JobInfo]:
        with self._user_lock(user):
            taken, jobs = self._snapshots.get(user, (float("-inf"), []))
            if fresh or time.monotonic() - taken >= self.ttl:
                jobs = self.backend.jobs_of(user)
                self._snapshots[user] = (time.monotonic(), jobs)
            return list(jobs)

    def active_job(self, user: str, name: str) -> JobInfo | None:
        """An active job of ``user`` named ``name``, confirmed by Slurm, or None."""
        for job in self.jobs_of(user):
            if job.name == name and job.active:
                confirmed = self.backend.job(job.job_id)
                if confirmed is not None and confirmed.active:
                    return confirmed
        return None

    def added(self, job: JobInfo) -> None:
        with self._user_lock(job.user):
            taken, jobs = self._snapshots.get(job.user, (float("-inf"), []))
            self._snapshots[job.user] = (taken, [*jobs, job])

    def forget(self, user: str) -> None:
        with self._user_lock(user):
            self._snapshots.pop(user, None)
