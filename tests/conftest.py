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
    return {**os.environ, "SLURM_CONF": description["slurm"]["conf"]}


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
