"""The ``[slurm]`` section: which backend, and what a Carme job may ask for."""

from __future__ import annotations

from dataclasses import dataclass

from carme.daemon.config import register_section


@register_section("slurm")
@dataclass(frozen=True)
class SlurmConfig:
    #: "auto" (pyslurm if it imports and matches this Slurm, else cli), "pyslurm" or "cli"
    backend: str = "auto"
    #: slurm.conf for the client commands and pyslurm; "" for Slurm's default lookup
    conf: str = ""
    #: seconds a Slurm command may take before the request is deferred
    timeout: float = 30.0
    #: where sbatch, squeue, scancel, strigger and scontrol are (cli backend)
    bin_dir: str = "/usr/bin"
    #: pyslurm backend: helper processes making the Slurm calls, each with its own pyslurm
    #: (calls beyond this many wait for a free one)
    helpers: int = 2

    # --- who and what start_job accepts ---------------------------------------------
    #: users below this uid (system accounts, root) never get a job
    min_uid: int = 1000
    denied_users: tuple[str, ...] = ()
    #: partitions a Carme job may use; empty: any
    partitions: tuple[str, ...] = ()
    max_gpus: int = 8
    max_nodes: int = 1
    #: GPU types a job may ask for (gres type names); empty: none may be named
    gpu_types: tuple[str, ...] = ()
    #: container images: files under one of these folders ...
    image_roots: tuple[str, ...] = ("/opt/carme/images",)
    #: ... or exactly one of these files
    images: tuple[str, ...] = ()
    #: every mount must resolve (realpath) under one of these
    mount_roots: tuple[str, ...] = ("/home",)
    #: minutes, when the request names none
    default_time_limit: int = 1440

    # --- the job script -----------------------------------------------------------------
    #: job script template (see etc/job.sh.tmpl); its $placeholders are filled shell-quoted
    template: str = "/etc/carme/job.sh.tmpl"
    #: the container runtime (apptainer or singularity)
    runtime: str = "/usr/bin/apptainer"
    #: what runs inside the container
    start_command: tuple[str, ...] = ("/opt/carme/start.sh",)
    #: job output, relative to the user's home; %j is the job id
    output: str = ".local/share/carme/job-log-dir/%j.out"

    # --- triggers -----------------------------------------------------------------------
    #: the hook program the triggers run (carme-slurm-hook), absolute
    hook_program: str = "/usr/local/bin/carme-slurm-hook"
    #: the "ending soon" trigger fires this many minutes before the time limit
    time_limit_warning_minutes: int = 15
