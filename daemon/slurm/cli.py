"""The Slurm CLI backend: sbatch, squeue, scancel, strigger, scontrol — argument lists, never
a shell, each with a timeout, stderr read into typed errors even when the exit code is 0.

Only this module knows Slurm's command lines and messages. Argument builders and parsers
are pure functions (tested on output captured from Slurm 22.05); ``_call`` is the one place
that runs a command.
"""

from __future__ import annotations

import pwd
import re
import subprocess
from pathlib import Path

from carme.daemon.slurm.base import (JobInfo, SlurmPermanent, SlurmTransient, Submission,
                                     TriggerInfo)

SQUEUE_FORMAT = "%i|%j|%u|%T|%k"

#: stderr phrases → (transient?, code). Checked in order; the first match wins.
ERROR_PATTERNS: list[tuple[str, bool, str]] = [
    (r"Unable to contact slurm controller|Socket timed out|Connection refused|"
     r"Zero Bytes were transmitted|resolve_ctls_from_dns_srv|Slurm backup controller in standby",
     True, "controller_unreachable"),
    (r"Invalid partition name|invalid partition specified", False, "invalid_partition"),
    (r"Requested node configuration is not available|Invalid generic resource|Invalid gres",
     False, "invalid_resources"),
    (r"Invalid --uid|Invalid user id|Invalid --gid|Invalid group id", False, "invalid_user"),
    (r"Invalid job id specified", False, "invalid_job_id"),
    (r"Job/step already completing or completed", False, "job_finished"),
    (r"Duplicate event trigger", False, "duplicate_trigger"),
    (r"Access/permission denied|Permission denied|Only user root", False, "permission_denied"),
    (r"time limit|Requested time limit is invalid", False, "invalid_time_limit"),
]


def classify(stderr: str, what: str):
    """The typed error for a failed command's stderr."""
    for pattern, transient, code in ERROR_PATTERNS:
        if re.search(pattern, stderr, re.IGNORECASE):
            cls = SlurmTransient if transient else SlurmPermanent
            return cls(code, f"{what}: {_last_error_line(stderr)}")
    return SlurmPermanent("slurm_error", f"{what}: {_last_error_line(stderr) or 'failed'}")


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- pure argument builders and parsers -------------------------------------------------
def sbatch_argv(job: Submission, uid: int, gid: int) -> list[str]:
    """sbatch as the user: --uid/--gid with --export=NONE gives the job the user's gid,
    HOME and PATH (NOTES: --uid alone runs with gid 0 and root's environment)."""
    argv = ["sbatch", "--parsable", f"--uid={uid}", f"--gid={gid}", "--export=NONE",
            f"--job-name={job.name}", f"--partition={job.partition}", f"--nodes={job.nodes}",
            f"--comment={job.comment}", f"--chdir={job.workdir}", f"--output={job.output}"]
    if job.gres:
        argv.append(f"--gres={job.gres}")
    if job.time_limit:
        argv.append(f"--time={job.time_limit}")
    return argv


def parse_sbatch(stdout: str) -> int:
    """``--parsable`` prints ``jobid`` or ``jobid;cluster``."""
    match = re.fullmatch(r"\s*(\d+)(?:;\S+)?\s*", stdout)
    if match is None:
        raise SlurmPermanent("unparsable_output", f"sbatch printed no job id: {stdout.strip()!r}")
    return int(match.group(1))


def squeue_argv(user: str | None = None, job_id: int | None = None) -> list[str]:
    argv = ["squeue", "--noheader", f"--format={SQUEUE_FORMAT}", "--states=all"]
    if user:
        argv.append(f"--user={user}")
    if job_id:
        argv.append(f"--jobs={job_id}")
    return argv


def parse_squeue(stdout: str) -> list[JobInfo]:
    jobs = []
    for line in stdout.splitlines():
        parts = line.split("|", 4)
        if len(parts) != 5 or not parts[0].strip().isdigit():
            continue
        job_id, name, user, state, comment = (p.strip() for p in parts)
        jobs.append(JobInfo(int(job_id), name, user, state.split()[0],
                            "" if comment == "(null)" else comment))
    return jobs


def strigger_argv(job_id: int, event: str, program: list[str], offset_seconds: int) -> list[str]:
    if event not in ("fini", "time"):
        raise ValueError(f"unknown trigger event {event!r}")
    argv = ["strigger", "--set", f"--jobid={job_id}", f"--{event}"]
    if event == "time":
        argv.append(f"--offset=-{abs(offset_seconds)}")
    # strigger splits --program on spaces itself: no word may contain one
    if any(" " in word or not word for word in program):
        raise ValueError("trigger program words must be non-empty and contain no spaces")
    argv.append(f"--program={' '.join(program)}")
    return argv


def parse_strigger_get(stdout: str) -> list[TriggerInfo]:
    """``strigger --get --noheader`` lines: TRIG_ID RES_TYPE RES_ID TYPE OFFSET USER, then
    FLAGS (often empty) and PROGRAM, which is absolute: it starts at the first '/'."""
    triggers = []
    for line in stdout.splitlines():
        parts = line.split(None, 6)
        if len(parts) != 7 or not parts[0].isdigit() or "/" not in parts[6]:
            continue
        trigger_id, res_type, _, event, _, _, rest = parts
        if res_type == "job":
            triggers.append(TriggerInfo(int(trigger_id), event, rest[rest.index("/"):].strip()))
    return triggers


class CliBackend:
    name = "cli"

    def __init__(self, slurm_conf: str | None = None, timeout: float = 30.0,
                 bin_dir: str = "/usr/bin"):
        self.env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
        if slurm_conf:
            self.env["SLURM_CONF"] = slurm_conf
        self.timeout = timeout
        self.bin_dir = Path(bin_dir)

    def _call(self, argv: list[str], what: str, timeout: float | None = None,
              stdin: str | None = None) -> str:
        """Run one Slurm command; typed errors for failures, also on exit 0 with an error."""
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        timeout = timeout or self.timeout
        try:
            result = subprocess.run(command, env=self.env, capture_output=True, text=True,
                                    timeout=timeout, input=stdin,
                                    stdin=None if stdin is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SlurmTransient("timeout", f"{what}: {argv[0]} did not answer within "
                                 f"{timeout:.0f}s") from None
        except OSError as error:
            raise SlurmPermanent("not_installed", f"{what}: cannot run {argv[0]}: "
                                 f"{error.strerror}") from None
        # Slurm exits 0 even when some commands fail (strigger, scancel): read stderr too
        if result.returncode != 0 or _is_fatal(result.stderr):
            raise classify(result.stderr, what)
        return result.stdout

    def submit(self, job: Submission) -> int:
        try:
            entry = pwd.getpwnam(job.user)
        except KeyError:
            raise SlurmPermanent("invalid_user", f"no such user {job.user!r}") from None
        argv = sbatch_argv(job, entry.pw_uid, entry.pw_gid)
        return parse_sbatch(self._call(argv, "sbatch", stdin=job.script))

    def active_jobs(self, user: str) -> list[JobInfo]:
        return [job for job in parse_squeue(self._call(squeue_argv(user=user), "squeue"))
                if job.active]

    def job(self, job_id: int) -> JobInfo | None:
        try:
            jobs = parse_squeue(self._call(squeue_argv(job_id=job_id), "squeue"))
        except SlurmPermanent as error:
            if error.code == "invalid_job_id":
                return None
            raise
        return next((j for j in jobs if j.job_id == job_id), None)

    def cancel(self, job_id: int) -> None:
        try:
            self._call(["scancel", str(job_id)], "scancel")
        except SlurmPermanent as error:
            if error.code not in ("invalid_job_id", "job_finished"):
                raise  # gone already is success (STYLE: ood_core's delete)

    def trigger(self, job_id: int, event: str, program: list[str], offset_seconds: int = 0) -> None:
        self._call(strigger_argv(job_id, event, program, offset_seconds), "strigger")

    def triggers(self, job_id: int) -> list[TriggerInfo]:
        return parse_strigger_get(self._call(["strigger", "--get", "--noheader",
                                              f"--jobid={job_id}"], "strigger --get"))

    def ping(self) -> bool:
        try:
            return "UP" in self._call(["scontrol", "ping"], "scontrol ping", timeout=15)
        except (SlurmTransient, SlurmPermanent):
            return False


def _is_fatal(stderr: str) -> bool:
    return any(re.search(p, stderr, re.IGNORECASE) for p, _, _ in ERROR_PATTERNS)

