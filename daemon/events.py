"""job_event: what the Slurm hooks report, turned into a job status, a log line and a notice."""

from __future__ import annotations

import logging

from carme.daemon import jobstatus, notify
from carme.daemon.errors import Transient
from carme.spool.envelope import Request

log = logging.getLogger("carme.daemon.events")

#: Slurm's final job states → our event kinds.
END_STATES = {"COMPLETED": "finished", "FAILED": "failed", "OUT_OF_MEMORY": "failed",
              "NODE_FAIL": "failed", "BOOT_FAIL": "failed", "CANCELLED": "cancelled",
              "TIMEOUT": "timeout", "DEADLINE": "timeout", "PREEMPTED": "cancelled"}


def how_it_ended(ctx, args: dict) -> str:
    """An epilog can't tell a cancel from a success (both exit 0:0): ask Slurm, which keeps
    a finished job for MinJobAge. Still completing: try again shortly. Forgotten, or no
    Slurm configured: judge by the exit code and signal the hook saw."""
    slurm = ctx.services.get("slurm")
    job = slurm.backend.job(args["slurm_job_id"]) if slurm is not None else None
    if job is not None:
        if job.state in END_STATES:
            return END_STATES[job.state]
        if job.active:
            raise Transient("job_completing", f"job {job.job_id} is still {job.state}")
    if args.get("signal"):
        return "cancelled"
    return "failed" if args.get("exit_code") else "finished"


def job_event(ctx, request: Request) -> dict:
    args = request.args
    kind = how_it_ended(ctx, args) if args["kind"] == "ended" else args["kind"]
    status, changed = jobstatus.record(
        ctx.spool, args["slurm_job_id"], kind, args["at"], user=args["user"], name=args.get("name"),
        nodes=args.get("nodes"), exit_code=args.get("exit_code"), signal=args.get("signal"),
        source=args.get("source"))
    log.info("job %s of %s: %s (%s)%s", args["slurm_job_id"], args["user"], kind,
             args.get("source", "-"), "" if changed else ", state unchanged")
    notified = False
    if changed and kind in notify.settings(ctx).on_events:
        notified = notify.tell(ctx, args["user"], kind, name=status.get("name"),
                               job_id=args["slurm_job_id"], nodes=status.get("nodes"),
                               exit_code=status.get("exit_code"))
    return {"state": status["state"], "changed": changed, "notice_queued": notified}
