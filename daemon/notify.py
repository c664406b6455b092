"""Telling users what happened to their jobs: the ``[notify]`` section and ``tell()``.

Notices are handed to one background sender, so a Slurm operation never waits for
Mattermost; with no Mattermost configured they are only logged. A notice is best effort:
one that fails (or is still queued when the daemon stops) is logged, and never fails the
operation that caused it — the job started or stopped regardless, and the event is in
jobs/<id>.json and the log. send_message, which *is* a message, is not a notice: it goes
through the spool's retries.
"""

from __future__ import annotations

import logging
import queue
import threading
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


class Notices:
    """A queue of notices and the thread that sends them through ``messenger``."""

    def __init__(self, messenger):
        self.messenger = messenger
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._send_all, name="notices", daemon=True)
        self._thread.start()

    def post(self, user: str, text: str) -> None:
        if self._closed:  # a handler still running on a context replaced by a reload
            self._send(user, text)
        else:
            self._queue.put((user, text))

    def _send_all(self) -> None:
        while (item := self._queue.get()) is not None:
            self._send(*item)

    def _send(self, user: str, text: str) -> None:
        try:
            self.messenger.send(user, text)
        except OperationError as error:
            log.warning("could not notify %s (%s): %s", user, error.code, error.message)
        except Exception:
            log.exception("notice to %s failed unexpectedly", user)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop; later notices
        are sent by their caller."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    def health(self) -> str:
        return f"queued:{self._queue.qsize()}"


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
