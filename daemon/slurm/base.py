"""The one interface every Slurm backend implements, and the errors it raises.

A backend raises ``SlurmTransient`` when trying again later may work (controller
unreachable, timeout) and ``SlurmPermanent`` when it will not (invalid partition, user,
GRES, job id, permission). Only the backend modules know how Slurm phrases these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from carme.daemon.errors import Permanent, Transient


class SlurmTransient(Transient):
    """Controller unreachable, timed out, busy: try again later."""


class SlurmPermanent(Permanent):
    """Slurm refused: the same request will be refused again."""


@dataclass(frozen=True)
class JobInfo:
    job_id: int
    name: str
    user: str
    state: str  # PENDING, RUNNING, COMPLETED, ...
    comment: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


#: States of a job that still holds (or waits for) resources.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED",
                           "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"})


@dataclass(frozen=True)
class TriggerInfo:
    trigger_id: int
    event: str  # "fini" or "time"
    program: str  # as Slurm keeps it: the program's words joined by spaces


@dataclass(frozen=True)
class Submission:
    """Everything a submit needs; the job script is rendered before the backend sees it."""

    user: str
    script: str
    name: str
    partition: str
    nodes: int
    gres: str | None  # e.g. "gpu:a100:2"
    time_limit: int | None  # minutes
    comment: str
    workdir: str
    output: str


class SlurmBackend(Protocol):
    name: str

    def submit(self, job: Submission) -> int:
        """Submit ``job`` as ``job.user``; return the Slurm job id."""

    def active_jobs(self, user: str) -> list[JobInfo]:
        """The jobs of ``user`` that are pending or running (in ``ACTIVE_STATES``)."""

    def job(self, job_id: int) -> JobInfo | None:
        """One job, or None if Slurm does not know it (any more)."""

    def cancel(self, job_id: int) -> None:
        """Cancel a job; a job already gone is not an error."""

    def trigger(self, job_id: int, event: str, program: list[str], offset_seconds: int = 0) -> None:
        """Set a one-shot trigger: ``event`` "fini" (job ended) or "time" (``offset_seconds``
        before its time limit); ``program`` runs with the job id appended."""

    def triggers(self, job_id: int) -> list[TriggerInfo]:
        """The job's triggers that have not fired yet."""

    def ping(self) -> bool:
        """True if the controller answers."""
