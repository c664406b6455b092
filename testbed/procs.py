"""Start, find and stop the testbed's own processes, by recorded pid only.

Every service runs in the foreground of its own session, with its pid written to
``DIR/run/<name>.pid`` together with the executable it must be. Stopping a service
signals that pid, never a name pattern, so a testbed never kills a process it did not
start (another testbed's, or a real cluster's).

PID 1 on these machines does not reap orphans, so a killed service may linger as a
zombie: a zombie counts as stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

#: Put into slurmd's environment; slurmstepd inherits it, so ``down`` can find steps
#: that outlived their slurmd (jobs themselves carry ``SLURM_CONF=<the testbed's conf>``).
MARKER_VARIABLE = "CARME_TESTBED"


def pid_file(base: Path, name: str) -> Path:
    return base / "run" / f"{name}.pid"


def spawn(base: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached (own session, stdio to a log file) and record its pid."""
    log_path = base / "log" / f"{name}.out"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_file(base, name).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    record = {"pid": process.pid, "exe": os.path.realpath(argv[0])}
    pid_file(base, name).write_text(json.dumps(record))
    return process.pid


def _state(pid: int) -> str | None:
    """The one-letter process state from /proc, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_running(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state != "Z"


def recorded_pid(base: Path, name: str) -> int | None:
    """The pid recorded for ``name`` if that process still runs the recorded executable."""
    try:
        record = json.loads(pid_file(base, name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or not is_running(pid):
        return None
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe")
    except OSError:
        return None
    return pid if exe == record.get("exe") else None


def stop(base: Path, name: str, timeout: float = 10.0) -> None:
    """SIGTERM the recorded process, SIGKILL it after ``timeout``, forget its pid."""
    pid = recorded_pid(base, name)
    if pid is not None:
        terminate([pid], timeout)
    pid_file(base, name).unlink(missing_ok=True)


def terminate(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM ``pids``, then SIGKILL whatever still runs after ``timeout`` seconds."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_running(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if is_running(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _ancestors() -> set[int]:
    """This process and every process above it: never ours to kill."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def processes_with_environment(patterns: list[set[str]]) -> list[int]:
    """Pids of running processes (not our ancestors) whose environment holds every
    ``KEY=VALUE`` entry of at least one of ``patterns``."""
    wanted = [{entry.encode() for entry in pattern} for pattern in patterns]
    spared = _ancestors()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in spared:
            continue
        try:
            environ = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if any(pattern <= environ for pattern in wanted) and is_running(int(proc.name)):
            found.append(int(proc.name))
    return found


def wait_until(check, timeout: float, what: str, interval: float = 0.05):
    """Poll ``check()`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
