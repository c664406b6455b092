"""The table of operations: op name -> handler, and what every handler may raise.

A handler takes the daemon's ``Context`` and a verified ``Request`` and returns the result
dict for the response. It raises ``Transient`` when trying again later may succeed
(deferred with backoff) and ``Permanent`` when it never will (failed, with the reason).
Anything else it raises is a bug: the request fails as ``internal_error`` and the daemon
goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from carme.daemon import events, ldap_password, mattermost
from carme.daemon.slurm import jobs
from carme.spool import __version__
from carme.spool.envelope import Request


@dataclass
class Context:
    """What a handler may use. ``services`` holds the connections to Slurm, Mattermost and
    LDAP, built once at start (and on reload) by ``carme.daemon.services``."""

    config: object
    spool: object
    services: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)


Handler = Callable[[Context, Request], dict]


def ping(ctx: Context, request: Request) -> dict:
    """Alive, and can it reach Slurm?"""
    result = {"pong": True, "version": __version__, "uptime": round(time.time() - ctx.started, 3)}
    slurm = ctx.services.get("slurm")
    if slurm is not None:
        result["slurm"] = "up" if slurm.ping() else "down"
        result["slurm_backend"] = slurm.name
    return result


def whoami(ctx: Context, request: Request) -> dict:
    return {"signer": request.signer}


HANDLERS: dict[str, Handler] = {
    "ping": ping,
    "whoami": whoami,
    "start_job": jobs.start_job,
    "stop_job": jobs.stop_job,
    "set_trigger": jobs.set_trigger,
    "job_event": events.job_event,
    "send_message": mattermost.send_message,
    "set_password": ldap_password.set_password,
}


def key_of(request: Request) -> tuple:
    """Requests with the same key run one at a time, in arrival order: those touching the
    same job (user + job name; a hook's event by Slurm job id). Others run in parallel."""
    args = request.args
    if request.op == "job_event":
        return ("slurm", args["slurm_job_id"])
    if "name" in args and "user" in args:
        return ("job", args["user"], args["name"])
    return ("request", request.id)
