"""The ``[slurm]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from carme.daemon.config import register_section


@register_section("slurm")
@dataclass(frozen=True)
class SlurmConfig:
    #: "cli" (sbatch & co., any Slurm version); "pyslurm" and "auto" come with the pyslurm backend
    backend: str = "cli"
    #: slurm.conf for the client commands; "" for Slurm's default lookup
    conf: str = ""
    #: seconds a Slurm command may take before the request is deferred
    timeout: float = 30.0
    #: where sbatch, squeue, scancel, strigger and scontrol are
    bin_dir: str = "/usr/bin"
