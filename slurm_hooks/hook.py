"""carme-slurm-hook — tell carme-backend that a Carme job changed state.

SYNOPSIS
    carme-slurm-hook [--config FILE]                       (as Prolog, Epilog,
                                                             PrologSlurmctld, EpilogSlurmctld)
    carme-slurm-hook [--config FILE] trigger EVENT USER NAME JOBID  (as a strigger program)

DESCRIPTION
    Slurm runs it; where, it learns from SLURM_SCRIPT_CONTEXT (prolog_slurmd, epilog_slurmd,
    prolog_slurmctld, epilog_slurmctld) or from its first argument ("trigger", with the
    event, user and job name the backend set, and the job id Slurm appends: a trigger
    program runs with slurmctld's environment, which says nothing of the job). It reads the SLURM_* environment,
    returns at once for jobs whose comment does not carry Carme's marker, and otherwise
    drops one signed job_event request into the spool and writes one log line:
    started (prologs), ended (epilogs, job-end trigger; the daemon asks Slurm how it
    ended), ending_soon (time-limit trigger).

    The config (--config, $CARME_HOOKS_CONFIG, else /etc/carme/hooks.toml) is TOML:
        spool = "/var/spool/carme"      signing_key = "/etc/carme/keys/hooks.key"
        signer = "hooks"                log_file = "/var/log/carme/hooks.log"
        fail_job_on_error = false       ttl = 604800
    Slurm passes a prolog no arguments, so a site whose config is not in the default place
    installs a two-line wrapper that adds --config.

SECURITY
    Runs as root (prologs, epilogs) or as the user that set the trigger (root: the daemon
    sets them). It reads only its config, its signing key and the environment Slurm gives
    it, writes only into the spool's tmp/ and incoming/ (through carme.spool's atomic
    writer) and its log, does no network I/O, and never runs a shell.

DIAGNOSTICS
    One line per run in the log file (stderr if none): the event written, or why not.
    Exit status 0, also on its own errors — a failing prolog drains the node and a failing
    epilog drains it too — unless fail_job_on_error = true, then 1.
"""

from __future__ import annotations

import os
import sys
import time

DEFAULT_CONFIG = "/etc/carme/hooks.toml"
MARKER = "carme:"
CONTEXT_KINDS = {"prolog_slurmd": "started", "prolog_slurmctld": "started",
                 "epilog_slurmd": "ended", "epilog_slurmctld": "ended"}
TRIGGER_KINDS = {"finished": "ended", "ending_soon": "ending_soon"}


class HookError(Exception):
    """Something the log should say; the job is not at fault."""


def parse_exit(env: dict) -> dict:
    """``SLURM_JOB_EXIT_CODE2`` is ``code:signal`` (e.g. ``3:0``); older Slurm gives only the
    raw wait status in ``SLURM_JOB_EXIT_CODE`` (768 = exit 3)."""
    pair = env.get("SLURM_JOB_EXIT_CODE2", "")
    if ":" in pair:
        code, _, sig = pair.partition(":")
        if code.isdigit() and sig.isdigit():
            return {"exit_code": int(code) & 255, "signal": int(sig) & 127}
    raw = env.get("SLURM_JOB_EXIT_CODE", "")
    if raw.isdigit():
        status = int(raw)
        return {"exit_code": (status >> 8) & 255, "signal": status & 127}
    return {}


def event_from(argv: list[str], env: dict) -> dict | None:
    """The job_event arguments for this run, or None if the job is not Carme's."""
    if argv and argv[0] == "trigger":
        if len(argv) != 5 or argv[1] not in TRIGGER_KINDS or not argv[-1].isdigit():
            raise HookError(f"usage: trigger finished|ending_soon USER NAME JOBID, got {argv}")
        kind, job_id, source = TRIGGER_KINDS[argv[1]], int(argv[-1]), f"trigger_{argv[1]}"
        env = {"SLURM_JOB_USER": argv[2], "SLURM_JOB_NAME": argv[3]}
    else:
        context = env.get("SLURM_SCRIPT_CONTEXT", "")
        if context not in CONTEXT_KINDS:
            raise HookError(f"not run by Slurm as prolog/epilog (SLURM_SCRIPT_CONTEXT={context!r})")
        if not env.get("SLURM_JOB_COMMENT", "").startswith(MARKER):
            return None
        kind, source = CONTEXT_KINDS[context], context
        job_id = int(env.get("SLURM_JOB_ID", "0") or 0)
    event = {"slurm_job_id": job_id, "kind": kind, "source": source, "at": round(time.time(), 3)}
    user = env.get("SLURM_JOB_USER")
    if user:
        event["user"] = user
    if env.get("SLURM_JOB_NAME"):
        event["name"] = env["SLURM_JOB_NAME"]
    nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if nodes:
        event["nodes"] = nodes
    if kind == "ended" and source.startswith("epilog"):
        event.update(parse_exit(env))
    return event


def load_config(path: str) -> dict:
    import tomllib
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise HookError(f"cannot read config {path}: {error}") from None
    for key in ("spool", "signing_key"):
        if not isinstance(config.get(key), str):
            raise HookError(f"{path}: {key!r} must be set")
    return config


def write_event(config: dict, event: dict) -> str:
    from carme.spool import keys
    from carme.spool.client import write_request
    from carme.spool.layout import Spool
    key = keys.load_signing_key(config["signing_key"])
    return write_request(Spool(config["spool"]), config.get("signer", "hooks"), key, "job_event",
                         event, ttl=float(config.get("ttl", 7 * 86400)))


def _log(config: dict, message: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} carme-slurm-hook[{os.getpid()}]: {message}\n"
    path = config.get("log_file")
    try:
        if path:
            with open(path, "a") as f:
                f.write(line)
            return
    except OSError:
        pass
    sys.stderr.write(line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--help"], ["-h"]):
        print(__doc__)
        return 0
    if argv[:1] == ["--version"]:
        from carme.spool import __version__
        print(f"carme-slurm-hook {__version__}")
        return 0
    config_path = os.environ.get("CARME_HOOKS_CONFIG", DEFAULT_CONFIG)
    if argv[:1] == ["--config"] and len(argv) > 1:
        config_path, argv = argv[1], argv[2:]
    config: dict = {}
    try:
        event = event_from(argv, os.environ)  # before any import or file: most jobs stop here
        if event is None:
            return 0
        config = load_config(config_path)
        if "user" not in event:
            raise HookError(f"job {event['slurm_job_id']}: no SLURM_JOB_USER in the environment")
        request_id = write_event(config, event)
        _log(config, f"job {event['slurm_job_id']} {event['kind']} ({event['source']}) "
                     f"user={event['user']} request={request_id}")
        return 0
    except Exception as error:  # never drain a node over our own trouble (unless told to)
        _log(config, f"error: {type(error).__name__}: {error}")
        return 1 if config.get("fail_job_on_error") else 0


if __name__ == "__main__":
    sys.exit(main())
