"""A real single-node Slurm cluster (munged, slurmctld, slurmd) under one folder: Debian's
Slurm 22.05 from /usr, or another installed under a prefix (``CARME_TESTBED_SLURM``, e.g. a
Slurm 25.11 built by hand to run the contract suite with pyslurm; never built by the repo).

Everything lives below ``BASE/slurm`` and ``BASE/munge``: keys, sockets, state, logs, spool,
and four fake GPUs (character devices, twins of /dev/null), so the cluster needs no systemd,
no slurmdbd, no cgroups and touches nothing of the host's Slurm. Facts behind each setting
are in shared/NOTES.md.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed import procs

PARTITIONS = ("debug", "gpu")
GPU_TYPES = ("a100", "v100")
GPUS_PER_TYPE = 2


#: Where the Slurm under test is installed (bin/, sbin/), unless CARME_TESTBED_SLURM says.
DEFAULT_PREFIX = "/usr"


def prefix_from_environment() -> str:
    return os.environ.get("CARME_TESTBED_SLURM") or DEFAULT_PREFIX


@dataclass(frozen=True)
class SlurmSettings:
    base: Path
    ctld_port: int = 6817
    slurmd_port: int = 6818
    prefix: str = DEFAULT_PREFIX
    #: Absolute paths run by Slurm; the hooks issue points these at carme-slurm-hook.
    prolog_slurmctld: str = ""
    epilog_slurmctld: str = ""
    prolog: str = ""
    epilog: str = "/bin/true"

    @property
    def root(self) -> Path:
        return self.base / "slurm"

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.base / "munge" / "munge.socket.2"

    @property
    def node(self) -> str:
        return socket.gethostname().split(".")[0]

    @property
    def jobcomp_log(self) -> Path:
        return self.root / "log" / "jobcomp.log"

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.prefix, "bin")

    def sbin(self, name: str) -> str:
        return os.path.join(self.prefix, "sbin", name)

    def client_env(self) -> dict[str, str]:
        """What a Slurm client command needs to talk to this cluster, found on PATH."""
        return {"SLURM_CONF": str(self.conf), "PATH": f"{self.bin_dir}:/usr/bin:/bin"}


def write_config(s: SlurmSettings) -> None:
    for sub in ("state", "spool", "log", "run", "dev"):
        (s.root / sub).mkdir(parents=True, exist_ok=True)
    gpu_files = []
    for index in range(len(GPU_TYPES) * GPUS_PER_TYPE):
        device = s.root / "dev" / f"nvidia{index}"
        if not device.exists():
            os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))
        gpu_files.append(device)
    gres_lines = []
    for n, gpu_type in enumerate(GPU_TYPES):
        first = n * GPUS_PER_TYPE
        files = f"{s.root}/dev/nvidia[{first}-{first + GPUS_PER_TYPE - 1}]"
        gres_lines.append(f"NodeName={s.node} Name=gpu Type={gpu_type} File={files}")
    (s.root / "gres.conf").write_text("\n".join(gres_lines) + "\n")
    (s.root / "plugstack.conf").write_text("")
    node_gres = ",".join(f"gpu:{t}:{GPUS_PER_TYPE}" for t in GPU_TYPES)
    hooks = {
        "PrologSlurmctld": s.prolog_slurmctld,
        "EpilogSlurmctld": s.epilog_slurmctld,
        "Prolog": s.prolog,
        "Epilog": s.epilog,
    }
    lines = [
        "ClusterName=carmetest",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={s.ctld_port}",
        f"SlurmdPort={s.slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={s.munge_socket}",
        f"StateSaveLocation={s.root}/state",
        f"SlurmdSpoolDir={s.root}/spool/%n",
        f"SlurmctldPidFile={s.root}/run/slurmctld.pid",
        f"SlurmdPidFile={s.root}/run/slurmd-%n.pid",
        f"SlurmctldLogFile={s.root}/log/slurmctld.log",
        f"SlurmdLogFile={s.root}/log/slurmd-%n.log",
        f"PlugStackConfig={s.root}/plugstack.conf",
        "MailProg=/bin/true",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",  # (no SwitchType: none is 22.05's default, and 25.11 has no such plugin)
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={s.jobcomp_log}",
        "ReturnToService=2",
        "SchedulerParameters=batch_sched_delay=0,sched_interval=1",
        "MinJobAge=300",
        "GresTypes=gpu",
        *(f"{key}={value}" for key, value in hooks.items() if value),
        f"NodeName={s.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=1000 "
        f"Gres={node_gres} State=UNKNOWN",
        f"PartitionName=debug Nodes={s.node} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName=gpu Nodes={s.node} MaxTime=INFINITE State=UP",
    ]
    s.conf.write_text("\n".join(lines) + "\n")


def start_munge(s: SlurmSettings) -> None:
    munge_dir = s.munge_socket.parent
    munge_dir.mkdir(parents=True, exist_ok=True)
    munge_dir.chmod(0o755)
    key = munge_dir / "munge.key"
    if not key.exists():
        subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
    key.chmod(0o600)
    procs.spawn(s.base, "munged", [
        shutil.which("munged", path="/usr/sbin:/usr/bin") or "/usr/sbin/munged",
        "--foreground", "--force",
        f"--socket={s.munge_socket}",
        f"--key-file={key}",
        f"--pid-file={munge_dir}/munged.pid",
        f"--log-file={munge_dir}/munged.log",
        f"--seed-file={munge_dir}/munged.seed",
    ])
    procs.wait_until(s.munge_socket.exists, 10, "munged's socket")


def _daemon_env(s: SlurmSettings) -> dict:
    return {**os.environ, **s.client_env(), procs.MARKER_VARIABLE: str(s.base)}


def start_controller(s: SlurmSettings) -> None:
    procs.spawn(s.base, "slurmctld", [s.sbin("slurmctld"), "-D", "-i", "-f", str(s.conf)],
                _daemon_env(s))
    procs.wait_until(lambda: _quiet(["scontrol", "ping"], s, want="UP"), 30, "slurmctld to answer")


def start_daemons(s: SlurmSettings) -> None:
    """slurmctld, then slurmd once the controller answers, then wait for an idle node."""
    start_controller(s)
    procs.spawn(s.base, "slurmd", [s.sbin("slurmd"), "-D", "-f", str(s.conf), "-N", s.node],
                _daemon_env(s))
    procs.wait_until(lambda: _node_ready(s), 30, "the node to become idle")


def _node_ready(s: SlurmSettings) -> bool:
    state = _quiet(["sinfo", "-h", "-n", s.node, "-o", "%t"], s)
    return state.strip().rstrip("*") in ("idle", "mix", "alloc")


def _quiet(argv: list[str], s: SlurmSettings, want: str | None = None) -> str:
    try:
        result = subprocess.run(
            argv, env={**os.environ, **s.client_env()},
            capture_output=True, text=True, timeout=10,
        )
    except subprocess.TimeoutExpired:
        return ""
    if want is not None:
        return result.stdout if want in result.stdout else ""
    return result.stdout if result.returncode == 0 else ""


def is_healthy(s: SlurmSettings) -> bool:
    names = ("munged", "slurmctld", "slurmd")
    return all(procs.recorded_pid(s.base, n) for n in names) and _node_ready(s)


def up(s: SlurmSettings) -> None:
    write_config(s)
    start_munge(s)
    start_daemons(s)


def down(s: SlurmSettings) -> None:
    """Stop slurmd and slurmctld, then any step or job process they left, then munged."""
    procs.stop(s.base, "slurmd")
    procs.stop(s.base, "slurmctld")
    leftovers = procs.processes_with_environment([
        {f"{procs.MARKER_VARIABLE}={s.base}"},
        {f"SLURM_CONF={s.conf}", f"SLURMD_NODENAME={s.node}"},
    ])
    procs.terminate(leftovers, timeout=5)
    procs.stop(s.base, "munged")
