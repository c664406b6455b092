"""start_job, stop_job, set_trigger: Carme's container jobs, as the right user, exactly once.

Validation and rendering are pure functions of the request and the ``[slurm]`` config;
the handlers add the backend calls. Idempotency: a job is known by (user, name); a
start_job that finds an active job of that name for that user returns its id and submits
nothing — also when an earlier attempt timed out or the daemon died mid-submit, since
Slurm, not the daemon, holds that knowledge.
"""

from __future__ import annotations

import functools
import os
import pwd
import shlex
import string
import subprocess
import time
from pathlib import Path

from carme.daemon import jobstatus, notify
from carme.daemon.errors import Permanent
from carme.daemon.slurm.base import JobInfo, SlurmPermanent, SlurmTransient, Submission
from carme.daemon.slurm.settings import SlurmConfig
from carme.spool.envelope import Request

#: The job comment: lets the hooks and admins tell Carme's jobs, and which request made one.
COMMENT_PREFIX = "carme"


def comment_for(request: Request) -> str:
    return f"{COMMENT_PREFIX}:{request.id}:{request.args['frontend_job_id']}"


# --- validation ---------------------------------------------------------------------------
def check_user(user: str, cfg: SlurmConfig) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise Permanent("unknown_user", f"there is no user {user!r} on this host") from None
    if entry.pw_uid < cfg.min_uid:
        raise Permanent("user_not_allowed", f"user {user!r} has uid {entry.pw_uid}, below "
                        f"min_uid {cfg.min_uid}: system accounts get no jobs")
    if user in cfg.denied_users:
        raise Permanent("user_not_allowed", f"user {user!r} is denied by configuration")
    return entry


@functools.lru_cache(maxsize=32)
def _real(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The configured roots and images, resolved once per config value: they are the
    admin's paths (resolving them took a third of a start_job's CPU); the user's are
    resolved on every request."""
    return tuple(os.path.realpath(path) for path in paths)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(os.path.commonpath([path, root]) == root for root in _real(roots))


def check_image(image: str, cfg: SlurmConfig) -> str:
    real = os.path.realpath(image)
    allowed = real in _real(cfg.images) or _under(real, cfg.image_roots)
    if not allowed:
        raise Permanent("image_not_allowed", f"image {image!r} is not an allowed image")
    if not os.path.isfile(real):
        raise Permanent("image_not_found", f"image {image!r} does not exist")
    return real


def check_mounts(mounts: list[str], cfg: SlurmConfig) -> list[str]:
    """Each mount's real path, which must lie under an allowed root. ``:`` and ``,`` are
    refused outright: the runtime reads them as bind syntax (src:dst:opts, lists)."""
    resolved = []
    for mount in mounts:
        if ":" in mount or "," in mount:
            raise Permanent("mount_not_allowed", f"mount {mount!r} contains ':' or ','")
        real = os.path.realpath(mount)
        if not _under(real, cfg.mount_roots):
            raise Permanent("mount_not_allowed", f"mount {mount!r} resolves to {real!r}, "
                            f"outside the allowed roots {', '.join(cfg.mount_roots)}")
        if not os.path.exists(real):
            raise Permanent("mount_not_found", f"mount {mount!r} does not exist")
        resolved.append(real)
    return resolved


def check_resources(args: dict, cfg: SlurmConfig) -> str | None:
    """The ``--gres`` value for the request (None for no GPUs)."""
    if cfg.partitions and args["partition"] not in cfg.partitions:
        raise Permanent("partition_not_allowed", f"partition {args['partition']!r} is not one "
                        f"of {', '.join(cfg.partitions)}")
    if args["gpus"] > cfg.max_gpus:
        raise Permanent("too_many_gpus", f"{args['gpus']} GPUs asked, at most {cfg.max_gpus}")
    if args["nodes"] > cfg.max_nodes:
        raise Permanent("too_many_nodes", f"{args['nodes']} nodes asked, at most {cfg.max_nodes}")
    gpu_type = args.get("gpu_type")
    if gpu_type is not None and gpu_type not in cfg.gpu_types:
        raise Permanent("gpu_type_not_allowed", f"GPU type {gpu_type!r} is not one of "
                        f"{', '.join(cfg.gpu_types) or '(none configured)'}")
    if args["gpus"] == 0:
        return None
    return f"gpu:{gpu_type}:{args['gpus']}" if gpu_type else f"gpu:{args['gpus']}"


# --- the job script -----------------------------------------------------------------------
def render_script(template: str, request: Request, image: str, mounts: list[str],
                  cfg: SlurmConfig) -> str:
    """Fill the template; every value becomes shell-quoted words."""
    binds = " ".join(f"--bind {shlex.quote(m)}" for m in mounts)
    values = {
        "request_id": shlex.quote(request.id),
        "frontend_job_id": shlex.quote(request.args["frontend_job_id"]),
        "name": shlex.quote(request.args["name"]),
        "image": shlex.quote(image),
        "runtime": shlex.quote(cfg.runtime),
        "binds": binds,
        "start_command": " ".join(shlex.quote(word) for word in cfg.start_command),
    }
    try:
        return string.Template(template).substitute(values)
    except (KeyError, ValueError) as error:
        raise Permanent("bad_template", f"job template {cfg.template}: {error}") from None


def _output_path(home: str, cfg: SlurmConfig) -> str:
    return os.path.join(home, cfg.output)


def ensure_output_dir(user: str, path: str) -> None:
    """Create the job's log folder *as the user* (runuser, no shell): root creating paths
    in a user's home would follow whatever symlinks the user planted there."""
    folder = os.path.dirname(path)
    if os.path.isdir(folder):
        return
    result = subprocess.run(["runuser", "-u", user, "--", "mkdir", "-p", "--", folder],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise Permanent("no_log_dir", f"cannot create {folder} as {user}: {result.stderr.strip()}")


# --- the operations -----------------------------------------------------------------------
def _slurm(ctx):
    service = ctx.services.get("slurm")
    if service is None:
        raise Permanent("not_configured", "this daemon has no [slurm] section")
    return service


def start_job(ctx, request: Request) -> dict:
    slurm = _slurm(ctx)
    cfg: SlurmConfig = slurm.config
    args = request.args
    entry = check_user(args["user"], cfg)
    gres = check_resources(args, cfg)
    image = check_image(args["image"], cfg)
    mounts = check_mounts(args["mounts"], cfg)
    existing = slurm.index.active_job(args["user"], args["name"])
    if existing is not None:
        return {"slurm_job_id": existing.job_id, "already_running": True}
    try:
        template = Path(cfg.template).read_text()
    except OSError as error:
        raise Permanent("bad_template", f"cannot read job template {cfg.template}: "
                        f"{error.strerror}") from None
    output = _output_path(entry.pw_dir, cfg)
    ensure_output_dir(args["user"], output)
    job = Submission(user=args["user"], script=render_script(template, request, image, mounts, cfg),
                     name=args["name"], partition=args["partition"], nodes=args["nodes"],
                     gres=gres, time_limit=args.get("time_limit", cfg.default_time_limit),
                     comment=comment_for(request), workdir=entry.pw_dir, output=output)
    job_id = slurm.backend.submit(job)
    slurm.index.added(JobInfo(job_id, args["name"], args["user"], "PENDING", job.comment))
    jobstatus.record(ctx.spool, job_id, "queued", time.time(), user=args["user"], name=args["name"],
                     source="start_job")
    if notify.settings(ctx).start_job:
        notify.tell(ctx, args["user"], "queued", name=args["name"], job_id=job_id)
    return {"slurm_job_id": job_id, "already_running": False}


def stop_job(ctx, request: Request) -> dict:
    """Cancel the user's active jobs of that name; none left is success."""
    slurm = _slurm(ctx)
    args = request.args
    check_user(args["user"], slurm.config)
    cancelled = []
    for job in slurm.index.named(args["user"], args["name"], fresh=True):
        if job.user == args["user"]:  # listed as theirs; checked again before a cancel
            slurm.backend.cancel(job.job_id)
            cancelled.append(job.job_id)
    slurm.index.forget(args["user"])
    if cancelled and notify.settings(ctx).stop_job:
        notify.tell(ctx, args["user"], "stopped", name=args["name"])
    return {"cancelled": cancelled}


TRIGGER_EVENTS = {"finished": "fini", "ending_soon": "time"}


def set_trigger(ctx, request: Request) -> dict:
    slurm = _slurm(ctx)
    cfg: SlurmConfig = slurm.config
    args = request.args
    job = slurm.backend.job(args["slurm_job_id"])
    if job is None:
        raise Permanent("unknown_job", f"Slurm does not know job {args['slurm_job_id']}")
    if job.user != args["user"] or job.name != args["name"]:
        raise Permanent("not_owner", f"job {job.job_id} is not {args['user']}'s job "
                        f"{args['name']!r}")
    if not job.active:
        raise Permanent("job_finished", f"job {job.job_id} has already ended ({job.state})")
    wanted = {event: [cfg.hook_program, "trigger", event, job.user, job.name]
              for event in args.get("events") or TRIGGER_EVENTS}
    ids = _trigger_ids(slurm.backend, job.job_id, wanted)
    for event in [event for event, trigger_id in ids.items() if trigger_id is None]:
        try:
            slurm.backend.trigger(job.job_id, TRIGGER_EVENTS[event], wanted[event],
                                  offset_seconds=cfg.time_limit_warning_minutes * 60)
        except SlurmPermanent as error:
            if error.code != "duplicate_trigger":  # set since we looked: by another daemon
                raise
    if None in ids.values():
        ids = _trigger_ids(slurm.backend, job.job_id, wanted)
    if None in ids.values():
        raise SlurmTransient("trigger_unconfirmed", f"the triggers of job {job.job_id} were set "
                             "but Slurm does not list them yet")
    return {"slurm_job_id": job.job_id, "triggers": ids}


def _trigger_ids(backend, job_id: int, wanted: dict[str, list[str]]) -> dict[str, int | None]:
    """Each wanted event's trigger id, if the job has it already (same event, same
    program): a retried set_trigger — after a timeout, or after one of two triggers was
    set before the controller went away — sets only what is missing, never a duplicate."""
    existing = {(t.event, t.program): t.trigger_id for t in backend.triggers(job_id)}
    return {event: existing.get((TRIGGER_EVENTS[event], " ".join(program)))
            for event, program in wanted.items()}
