"""Telling users what happened to their jobs: the ``[notify]`` section and ``tell()``.

Messages go through the Mattermost service when one is configured; otherwise they are only
logged. A failed notice never fails the operation that caused it: the job started or
stopped regardless, and the event is in jobs/<id>.json and the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from carme.daemon.config import register_section
from carme.daemon.errors import OperationError

log = logging.getLogger("carme.daemon.notify")


@register_section("notify")
@dataclass(frozen=True)
class NotifyConfig:
    #: job events that send the user a direct message
    on_events: tuple[str, ...] = ("started", "ending_soon", "finished", "failed", "cancelled",
                                  "timeout")
    #: the original Carme's notices: "job scheduled" after start_job, "job stopped" after stop_job
    start_job: bool = True
    stop_job: bool = True


DEFAULT = NotifyConfig()

MESSAGES = {
    "queued": "Job {name} has been scheduled for execution (Slurm job {job_id}).",
    "stopped": "Job {name} was stopped.",
    "started": "Job {name} (Slurm job {job_id}) started on {nodes}.",
    "ending_soon": "Job {name} (Slurm job {job_id}) will reach its time limit soon.",
    "finished": "Job {name} (Slurm job {job_id}) finished.",
    "failed": "Job {name} (Slurm job {job_id}) failed with exit code {exit_code}.",
    "cancelled": "Job {name} (Slurm job {job_id}) was cancelled.",
    "timeout": "Job {name} (Slurm job {job_id}) reached its time limit and was stopped.",
}


def settings(ctx) -> NotifyConfig:
    return ctx.config.extra.get("notify", DEFAULT)


def tell(ctx, user: str, what: str, **fields) -> bool:
    """Send ``user`` the message for ``what``; True if it was delivered."""
    text = MESSAGES[what].format_map({"name": "?", "job_id": "?", "nodes": "?", "exit_code": "?",
                                      **{k: v for k, v in fields.items() if v is not None}})
    messenger = ctx.services.get("mattermost")
    if messenger is None:
        log.info("notice for %s (no Mattermost configured): %s", user, text)
        return False
    try:
        messenger.send(user, text)
    except OperationError as error:
        log.warning("could not notify %s (%s): %s", user, error.code, error.message)
        return False
    return True
