"""Session fixtures: one real testbed (Slurm, slapd, Mattermost stand-in) for the whole run."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from testbed import Testbed, free_port


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    """A testbed under a fresh /tmp folder (traversable by the test users, unlike pytest's
    0700 tmp root), on free ports so it never collides with a running demo."""
    base = Path(tempfile.mkdtemp(prefix="carme-testbed-"))
    bed = Testbed(base, ctld_port=free_port(), slurmd_port=free_port())
    try:
        bed.up()
        yield bed
    finally:
        bed.down()
        if not os.environ.get("CARME_KEEP_TESTBED"):
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def description(testbed) -> dict:
    return testbed.description()


@pytest.fixture(scope="session")
def slurm_env(description) -> dict:
    slurm = description["slurm"]
    return {**os.environ, "SLURM_CONF": slurm["conf"],
            "PATH": f"{slurm['bin_dir']}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


@pytest.fixture(scope="session")
def test_user(description) -> dict:
    return description["users"][0]


@pytest.fixture(scope="session")
def other_user(description) -> dict:
    return description["users"][1]


def slurm(argv: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=check)


def job_field(job_id: int, key: str, env: dict) -> str | None:
    """One ``Key=Value`` field of ``scontrol show job -o``, or None if the job is unknown."""
    result = slurm(["scontrol", "show", "job", "-o", str(job_id)], env, check=False)
    for token in result.stdout.split():
        name, _, value = token.partition("=")
        if name == key:
            return value
    return None


def wait_for_state(job_id: int, states: set[str], env: dict, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = job_field(job_id, "JobState", env)
        if state in states:
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} is {state}, not one of {states} after {timeout}s")


class RunningDaemon:
    """A real ``carme-backend run`` process on a spool of its own."""

    def __init__(self, root: Path, config: Path, description: dict):
        self.root, self.config, self.description = root, config, description
        self.spool_dir = root / "spool"
        self.key_dir = Path(description["carme"]["keys"])
        self.process: subprocess.Popen | None = None

    def client(self, signer: str = "frontend"):
        from carme.spool import SpoolClient
        return SpoolClient(self.spool_dir, signer, self.key_dir / f"{signer}.key",
                           seal_to=self.key_dir / "seal.pub")

    def start(self, wait: bool = True) -> "RunningDaemon":
        self.process = subprocess.Popen(
            [str(Path(os.sys.executable).parent / "carme-backend"), "--config", str(self.config), "run"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "SLURM_CONF": self.description["slurm"]["conf"]})
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        status = self.spool_dir / "status.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited {self.process.returncode}: "
                                     f"{self.process.stderr.read().decode()}")
            try:
                if f'"pid":{self.process.pid},' in status.read_text():
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise AssertionError("daemon did not write its heartbeat")

    def stop(self, sig=None, timeout: float = 60) -> int:
        import signal as signals
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig or signals.SIGTERM)
        return self.process.wait(timeout)

    def wait_deferred(self, request_id: str, timeout: float = 30) -> None:
        """Wait until the request sits in deferred/ (a transient failure), or fail."""
        deferred = self.spool_dir / "deferred" / f"{request_id}.json"
        deadline = time.monotonic() + timeout
        while not deferred.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert deferred.exists(), f"{request_id} was not deferred:\n{self.log()[-2000:]}"

    def log(self) -> str:
        path = self.root / "backend.log"
        return path.read_text() if path.exists() else ""

    def audit(self) -> list[dict]:
        import json
        path = self.spool_dir / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def make_daemon(description, tmp_path):
    """Factory: ``make_daemon(sections={...})`` writes a config for a fresh spool (the
    testbed's keys and services) and returns a RunningDaemon (not yet started)."""
    from testbed.carme import write_backend
    made: list[RunningDaemon] = []

    def factory(sections: dict | None = None, name: str = "backend") -> RunningDaemon:
        root = tmp_path / name
        from testbed.carme import messaging_sections, slurm_section
        merged = {"slurm": slurm_section(description),
                  **messaging_sections(description, Path(description["carme"]["keys"]))}
        for section, table in (sections or {}).items():
            merged[section] = {**merged.get(section, {}), **table}
        sections = merged
        config = write_backend(root, Path(description["carme"]["keys"]), sections)
        daemon = RunningDaemon(root, config, description)
        made.append(daemon)
        return daemon

    yield factory
    for daemon in made:
        daemon.stop()


@pytest.fixture
def daemon(make_daemon) -> RunningDaemon:
    return make_daemon().start()


@pytest.fixture
def testbed_daemon(description):
    """The testbed's own daemon config and spool: the one its Slurm hooks write into."""
    carme = description["carme"]
    daemon = RunningDaemon(Path(carme["config"]).parent, Path(carme["config"]), description)
    daemon.start()
    yield daemon
    daemon.stop()
