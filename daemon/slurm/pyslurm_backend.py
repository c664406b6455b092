"""The pyslurm backend (pyslurm 25.11 API): Slurm's C API, no fork per call. The daemon
runs it in helper processes (helper.py), never in its own.

pyslurm must match the running Slurm's major.minor exactly, so it is imported lazily and
carefully (shared/NOTES.md, seen with pyslurm 25.11.2):
- ``import pyslurm`` with an unreadable slurm.conf retries for 60 s and then *exits the
  process*, so it is imported with ``PYSLURM_DISABLE_AUTO_INIT=1`` ...
- ... after which ``pyslurm.slurm_init(conf)`` must be called before anything else, or the
  process segfaults — and only once the config is known to be readable.
- Trigger errors come back as return codes (Slurm errnos), not exceptions.
Only this module knows pyslurm's names and Slurm's errnos.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess

from carme.daemon.slurm.base import (JobInfo, SlurmPermanent, SlurmTransient, Submission,
                                     TriggerInfo)
from carme.daemon.slurm.cli import CliBackend

#: Slurm errnos → (transient?, code), from slurm/slurm_errno.h; 1800, 2000, 2014, 2017,
#: 2021, 2072 and 2089 were seen from pyslurm 25.11.2 (shared/NOTES.md). Others: slurm_error.
ERRNOS: dict[int, tuple[bool, str]] = {
    1800: (True, "controller_unreachable"),   # SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR
    1801: (True, "controller_unreachable"),   # ..._SEND_ERROR
    1802: (True, "controller_unreachable"),   # ..._RECEIVE_ERROR
    1803: (True, "controller_unreachable"),   # ..._SHUTDOWN_ERROR
    5004: (True, "timeout"),                  # SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT
    2000: (False, "invalid_partition"),       # ESLURM_INVALID_PARTITION_NAME
    2014: (False, "invalid_resources"),       # ESLURM_REQUESTED_NODE_CONFIG_UNAVAILABLE
    2072: (False, "invalid_resources"),       # ESLURM_INVALID_GRES
    2017: (False, "invalid_job_id"),          # ESLURM_INVALID_JOB_ID
    2021: (False, "job_finished"),            # ESLURM_ALREADY_DONE
    2089: (False, "duplicate_trigger"),       # ESLURM_TRIGGER_DUP
}


#: slurm.h: TRIGGER_RES_TYPE_JOB, and the trig_type bits of the events Carme sets
TRIGGER_RES_JOB = 1
TRIGGER_TYPES = {0x0010: "fini", 0x0008: "time"}  # TRIGGER_TYPE_FINI, TRIGGER_TYPE_TIME
TRIGGER_MASK = 0x0018


def error_for(errno: int, message: str):
    transient, code = ERRNOS.get(errno, (False, "slurm_error"))
    cls = SlurmTransient if transient else SlurmPermanent
    return cls(code, f"{message} (Slurm errno {errno})")


def load_pyslurm(conf: str | None):
    """Import pyslurm without letting it hang or kill the daemon; raise ImportError (with
    the reason) if it can't be used here."""
    if conf and not os.access(conf, os.R_OK):
        raise ImportError(f"slurm.conf {conf} is not readable; pyslurm would exit the process")
    os.environ["PYSLURM_DISABLE_AUTO_INIT"] = "1"
    import pyslurm  # noqa: WPS433 - optional, site-built
    pyslurm.slurm_init(conf or None)
    return pyslurm


def slurm_version(bin_dir: str = "/usr/bin", conf: str | None = None) -> str | None:
    """major.minor of the installed Slurm (``scontrol --version``, which wants a config
    too), or None."""
    env = {"PATH": "/usr/bin:/bin", **({"SLURM_CONF": conf} if conf else {})}
    try:
        out = subprocess.run([os.path.join(bin_dir, "scontrol"), "--version"], capture_output=True,
                             text=True, timeout=10, env=env).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(\d+)\.(\d+)", out)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def open_backend(conf: str, bin_dir: str, timeout: float = 30.0) -> "PyslurmBackend":
    """The backend, in the helper process that will hold it (see helper.py); ImportError
    says why pyslurm can't be used here, e.g. built for another Slurm than the one
    installed (pyslurm refuses to build against a mismatch, but a site may have upgraded
    Slurm since). It lists jobs with squeue when that is installed (see PyslurmBackend)."""
    module = load_pyslurm(conf or None)
    installed = slurm_version(bin_dir, conf or None)
    built_for = ".".join(str(module.__version__).split(".")[:2])
    if installed != built_for:
        raise ImportError(f"pyslurm {module.__version__} does not match Slurm {installed}")
    squeue = os.path.join(bin_dir, "squeue")
    lister = CliBackend(conf or None, timeout, bin_dir) if os.access(squeue, os.X_OK) else None
    return PyslurmBackend(module, lister)


class PyslurmBackend:
    """``lister``, if given, answers ``active_jobs``: pyslurm 25.11 can only load the whole
    cluster, while ``squeue --user`` has slurmctld send one user's jobs. With 8,000 jobs in
    the cluster (Slurm 25.11.7): Jobs.load 118 ms and 19.5 ms of slurmctld's CPU per call,
    squeue --user 6.5 ms and 2.5 ms — and start_job lists before every submit."""

    name = "pyslurm"

    def __init__(self, pyslurm_module, lister=None):
        self.pyslurm = pyslurm_module
        self.lister = lister

    def _rpc(self, what: str, call):
        try:
            return call()
        except self.pyslurm.RPCError as error:
            raise error_for(int(getattr(error, "errno", 0) or 0), f"{what}: {error}") from None

    def submit(self, job: Submission) -> int:
        try:
            entry = pwd.getpwnam(job.user)  # pyslurm raises KeyError itself; say it clearly
        except KeyError:
            raise SlurmPermanent("invalid_user", f"no such user {job.user!r}") from None
        description = self.pyslurm.JobSubmitDescription(
            name=job.name, script=job.script, partitions=job.partition, nodes=job.nodes,
            user_id=entry.pw_uid, group_id=entry.pw_gid,
            working_directory=job.workdir, standard_output=job.output, comment=job.comment,
            # "NONE": Slurm loads the user's own environment, as sbatch --export=NONE
            environment="NONE",
            **({"gres_per_node": job.gres} if job.gres else {}),
            # minutes as an int: pyslurm 25.11.2 passes a digit *string* through unconverted
            # and the submit dies with "TypeError: an integer is required" (seen by hand)
            **({"time_limit": int(job.time_limit)} if job.time_limit else {}),
        )
        return int(self._rpc("submit", description.submit))

    def _info(self, job, user: str | None = None) -> JobInfo:
        return JobInfo(int(job.id), job.name or "", user or job.user_name or "", str(job.state),
                       job.comment or "")

    def active_jobs(self, user: str) -> list[JobInfo]:
        """From the lister, or else the whole cluster's jobs (finished ones too, for
        MinJobAge) filtered by uid first: ``Job.user_name`` looks up passwd for each job."""
        if self.lister is not None:
            return self.lister.active_jobs(user)
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            return []
        jobs = self._rpc("load jobs", self.pyslurm.Jobs.load)
        mine = (self._info(j, user) for j in jobs.values() if j.user_id == uid)
        return [job for job in mine if job.active]

    def job(self, job_id: int) -> JobInfo | None:
        try:
            return self._info(self._rpc("load job", lambda: self.pyslurm.Job.load(job_id)))
        except SlurmPermanent as error:
            if error.code == "invalid_job_id":
                return None
            raise

    def cancel(self, job_id: int) -> None:
        """pyslurm raises nothing for unknown or finished jobs: gone is success."""
        self._rpc("cancel", self.pyslurm.Job(job_id).cancel)

    def trigger(self, job_id: int, event: str, program: list[str], offset_seconds: int = 0) -> None:
        spec = {"jobid": job_id, "event": event, "program": " ".join(program)}
        if event == "fini":
            spec["fini"] = True
        elif event == "time":
            spec["offset"] = -abs(offset_seconds)
        else:
            raise ValueError(f"unknown trigger event {event!r}")
        errno = self._rpc("set trigger", lambda: self.pyslurm.trigger().set(spec))
        if errno:
            raise error_for(int(errno), "set trigger")

    def triggers(self, job_id: int) -> list[TriggerInfo]:
        """pyslurm lists every trigger of the cluster, and an empty dict when the RPC
        fails; set_trigger copes (it confirms what it set by listing again)."""
        found = self._rpc("get triggers", lambda: self.pyslurm.trigger().get())
        return [TriggerInfo(int(t["trig_id"]), TRIGGER_TYPES[t["trig_type"] & TRIGGER_MASK],
                            t["program"])
                for t in found.values()
                if t["res_type"] == TRIGGER_RES_JOB and t["res_id"] == str(job_id)
                and (t["trig_type"] & TRIGGER_MASK) in TRIGGER_TYPES]

    def ping(self) -> bool:
        """The primary controller's ping RPC (0.6 ms; loading the jobs took 50 ms)."""
        try:
            self._rpc("ping", lambda: self.pyslurm.slurmctld.ping(0))
            return True
        except (SlurmTransient, SlurmPermanent):
            return False
