"""Which active jobs each user has, by name: one Slurm listing per user shared by every
request within ``ttl`` seconds (submitit's batched watcher, applied to idempotency checks).

start_job asks "does this user already have an active job of this name?" before every
submit. Asking Slurm each time doubles the calls per start (and pyslurm can only list the
whole cluster); a snapshot shared by the requests of the same moment halves them. It stays
correct because:
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
        #: user → (taken at, {job name: [active jobs]})
        self._snapshots: dict[str, tuple[float, dict[str, list[JobInfo]]]] = {}

    def _user_lock(self, user: str) -> threading.Lock:
        with self._lock:
            return self._user_locks.setdefault(user, threading.Lock())

    def named(self, user: str, name: str, fresh: bool = False) -> list[JobInfo]:
        """The user's active jobs called ``name``: from the snapshot, or from Slurm when
        ``fresh`` or the snapshot is older than ``ttl``."""
        with self._user_lock(user):
            taken, by_name = self._snapshots.get(user, (float("-inf"), {}))
            if fresh or time.monotonic() - taken >= self.ttl:
                by_name = {}
                for job in self.backend.active_jobs(user):
                    by_name.setdefault(job.name, []).append(job)
                self._snapshots[user] = (time.monotonic(), by_name)
            return list(by_name.get(name, ()))

    def active_job(self, user: str, name: str) -> JobInfo | None:
        """An active job of ``user`` named ``name``, confirmed by Slurm, or None."""
        for job in self.named(user, name):
            confirmed = self.backend.job(job.job_id)
            if confirmed is not None and confirmed.active:
                return confirmed
        return None

    def added(self, job: JobInfo) -> None:
        with self._user_lock(job.user):
            if job.user in self._snapshots:
                self._snapshots[job.user][1].setdefault(job.name, []).append(job)

    def forget(self, user: str) -> None:
        with self._user_lock(user):
            self._snapshots.pop(user, None)
