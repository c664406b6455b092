"""Backends a helper process runs in test_slurm_helper: each call fails the way a real
pyslurm (or the C library under it) can — the process dies, hangs, chatters on stdout."""

from __future__ import annotations

import os
import signal
import time

from carme.daemon.slurm.base import JobInfo, SlurmPermanent


class Misbehaving:
    name = "misbehaving"

    def submit(self, job):
        os._exit(3)  # as slurm_init does on a config it can't use

    def active_jobs(self, user):
        time.sleep(3600)  # an RPC that never returns

    def job(self, job_id):
        """Answers after a while, naming the process that answered."""
        print("chatter from a C library " * 100)  # stdout must not reach the protocol
        time.sleep(0.3)
        return JobInfo(job_id, f"pid-{os.getpid()}", "alice", "RUNNING")

    def cancel(self, job_id):
        raise ValueError("an unexpected bug")

    def trigger(self, job_id, event, program, offset_seconds=0):
        raise SlurmPermanent("invalid_job_id", f"no job {job_id}")

    def ping(self):
        os.kill(os.getpid(), signal.SIGSEGV)  # what a call before slurm_init does


def misbehaving() -> Misbehaving:
    return Misbehaving()


def exits_while_starting(code: int):
    os._exit(code)


def refuses(reason: str):
    raise ImportError(reason)
