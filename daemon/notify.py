"""Telling users what happened to their jobs: the ``[notify]`` section and ``tell()``.

Notices go through the outbox (carme.daemon.outbox), so a Slurm operation never waits for
Mattermost, and a notice outlives a Mattermost outage and a daemon restart; with no
Mattermost configured they are only logged. send_message, which *is* a message, is not a
notice: it is a request of its own, with the spool's retries and a response.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from carme.daemon.config import register_section

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
    """Queue the message for ``what`` to ``user``; False if there is no one to send it."""
    text = MESSAGES[what].format_map({"name": "?", "job_id": "?", "nodes": "?", "exit_code": "?",
                                      **{k: v for k, v in fields.items() if v is not None}})
    notices = ctx.services.get("notices")
    if notices is None:
        log.info("notice for %s (no Mattermost configured): %s", user, text)
        return False
    notices.post(user, text)
    return True
