"""Slurm calls in helper processes (carme.daemon.slurm.helper).

A helper runs any backend: here the CLI backend against the testbed's real Slurm (what the
protocol carries: submissions, job lists, typed errors), backends from tests/helper_site that
die, hang or chatter the way pyslurm can, and the start-up of the pyslurm backend itself
with a stand-in for pyslurm's import and init (real pyslurm 25.11 needs Slurm 25.11).
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest

from carme.daemon.slurm import pyslurm_backend, select
from carme.daemon.slurm.base import SlurmPermanent, SlurmTransient, Submission
from carme.daemon.slurm.helper import BackendUnusable, HelperBackend
from carme.daemon.slurm.settings import SlurmConfig

SITE = Path(__file__).resolve().parent / "helper_site"


@pytest.fixture
def helper_site(monkeypatch):
    """Helpers can import the modules in tests/helper_site, and this process can find them
    (as the daemon and its helpers share one environment); it never imports them."""
    monkeypatch.setenv("PYTHONPATH", str(SITE))
    monkeypatch.syspath_prepend(str(SITE))


@pytest.fixture
def misbehaving(helper_site):
    backend = HelperBackend("misbehaving:misbehaving", [], processes=1, timeout=2.0)
    yield backend
    backend.close()


@pytest.fixture
def cli_in_helpers(description):
    backend = HelperBackend("carme.daemon.slurm.cli:CliBackend",
                            [description["slurm"]["conf"], 30.0, description["slurm"]["bin_dir"]],
                            processes=2)
    yield backend
    backend.close()


def test_a_helper_carries_real_slurm_calls_and_their_errors(cli_in_helpers, description,
                                                            slurm_env):
    user = description["users"][0]
    job = Submission(user["name"], "#!/bin/sh\nsleep 60\n", "via-helper", "debug", 1, None, 5,
                     "carme:helper-test", user["home"], "/dev/null")
    job_id = cli_in_helpers.submit(job)
    assert isinstance(job_id, int)
    assert [j.job_id for j in cli_in_helpers.active_jobs(user["name"]) if j.name == "via-helper"] \
        == [job_id]
    assert cli_in_helpers.job(job_id).user == user["name"]
    with pytest.raises(SlurmPermanent) as refused:
        cli_in_helpers.submit(Submission(**{**job.__dict__, "partition": "nope"}))
    assert refused.value.code == "invalid_partition"
    cli_in_helpers.cancel(job_id)
    assert cli_in_helpers.job(job_id).state in ("CANCELLED", "COMPLETING")
    assert cli_in_helpers.ping() is True


def _answering_pids(backend: HelperBackend, callers: int) -> set[int]:
    """The helper processes that answered ``callers`` simultaneous calls."""
    names = []
    threads = [threading.Thread(target=lambda n=n: names.append(backend.job(n).name))
               for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(names) == callers
    return {int(name.removeprefix("pid-")) for name in names}


def test_calls_overlap_across_helpers(helper_site):
    backend = HelperBackend("misbehaving:misbehaving", [], processes=2)
    try:
        assert len(_answering_pids(backend, 4)) == 2
    finally:
        backend.close()


def test_a_helper_that_dies_mid_call_is_transient_and_replaced(misbehaving):
    with pytest.raises(SlurmTransient) as died:
        misbehaving.submit(None)
    assert died.value.code == "helper_failed"
    assert "exit code 3" in died.value.message
    # the next call gets a fresh helper
    assert misbehaving.job(7).job_id == 7


def test_a_helper_killed_by_a_signal_says_so(misbehaving):
    assert misbehaving.ping() is False  # a dead helper is a controller we can't ask
    with pytest.raises(SlurmTransient, match="killed by signal 11"):
        misbehaving._call("ping")


def test_a_hanging_helper_is_killed_after_the_timeout(misbehaving):
    started = time.monotonic()
    with pytest.raises(SlurmTransient, match="did not answer within 2 s"):
        misbehaving.active_jobs("alice")
    assert time.monotonic() - started < 10
    assert misbehaving.job(8).job_id == 8


def test_stdout_chatter_does_not_break_the_protocol(misbehaving):
    assert [misbehaving.job(n).job_id for n in range(3)] == [0, 1, 2]


def test_errors_keep_their_type_and_bugs_are_named(misbehaving):
    with pytest.raises(SlurmPermanent) as refused:
        misbehaving.trigger(5, "fini", ["/bin/true"])
    assert (refused.value.code, refused.value.message) == ("invalid_job_id", "no job 5")
    with pytest.raises(RuntimeError, match="ValueError: an unexpected bug"):
        misbehaving.cancel(5)
    assert misbehaving.job(9).job_id == 9  # the helper survived its bug


@pytest.mark.parametrize("factory,args,reason", [
    ("misbehaving:exits_while_starting", [4], "exited (exit code 4) while starting"),
    ("misbehaving:refuses", ["built for Slurm 25.11"], "built for Slurm 25.11"),
    ("no_such_module:factory", [], "No module named 'no_such_module'"),
])
def test_a_backend_that_cannot_start_says_why(helper_site, factory, args, reason):
    with pytest.raises(BackendUnusable) as unusable:
        HelperBackend(factory, args)
    assert reason in str(unusable.value)


def test_a_helper_never_imports_from_the_working_directory(tmp_path, monkeypatch):
    """It runs as root: a module left in the folder the daemon was started from is not code
    it may run."""
    (tmp_path / "planted.py").write_text("class B:\n    name = 'planted'\n\ndef make():\n"
                                         "    return B()\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackendUnusable, match="No module named 'planted'"):
        HelperBackend("planted:make", [])


def test_close_stops_the_helpers(helper_site):
    backend = HelperBackend("misbehaving:misbehaving", [], processes=2)
    pids = _answering_pids(backend, 2)
    backend.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --- choosing pyslurm: its start-up happens in a helper ------------------------------------
def _cfg(description, backend: str) -> SlurmConfig:
    slurm = description["slurm"]
    return SlurmConfig(backend=backend, conf=slurm["conf"], bin_dir=slurm["bin_dir"])


@pytest.fixture(scope="module")
def testbed_slurm(description) -> str:
    """major.minor of the testbed's Slurm (Debian's 22.05, unless CARME_TESTBED_SLURM)."""
    return pyslurm_backend.slurm_version(description["slurm"]["bin_dir"],
                                         description["slurm"]["conf"])


def test_auto_without_pyslurm_installed_starts_no_helper(description, caplog, monkeypatch):
    if importlib.util.find_spec("pyslurm") is not None:
        pytest.skip("pyslurm is installed here")
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: pytest.fail("a helper was started"))
    with caplog.at_level("INFO", logger="carme.daemon.slurm"):
        assert select.choose(_cfg(description, "auto")).name == "cli"
    assert "cli, because pyslurm is not installed" in caplog.text


def test_auto_takes_pyslurm_when_it_matches_this_slurm(helper_site, monkeypatch, description,
                                                       testbed_slurm):
    monkeypatch.setenv("FAKE_PYSLURM_VERSION", f"{testbed_slurm}.0")
    backend = select.choose(_cfg(description, "auto"))
    try:
        assert backend.name == "pyslurm"
        assert backend.ping() is True  # initialised before use, in the helper
    finally:
        backend.close()


def test_auto_takes_cli_when_pyslurm_does_not_match(helper_site, monkeypatch, description,
                                                    testbed_slurm):
    monkeypatch.setenv("FAKE_PYSLURM_VERSION", "18.8.4")
    assert select.choose(_cfg(description, "auto")).name == "cli"
    with pytest.raises(ValueError, match=f"pyslurm 18.8.4 does not match Slurm {testbed_slurm}"):
        select.choose(_cfg(description, "pyslurm"))


def test_a_pyslurm_that_exits_while_starting_leaves_the_daemon_on_cli(helper_site, monkeypatch,
                                                                    description, testbed_slurm):
    monkeypatch.setenv("FAKE_PYSLURM_VERSION", f"{testbed_slurm}.0")
    monkeypatch.setenv("FAKE_PYSLURM_INIT_EXITS", "1")
    assert select.choose(_cfg(description, "auto")).name == "cli"
    with pytest.raises(ValueError, match=r"exited \(exit code 1\) while starting"):
        select.choose(_cfg(description, "pyslurm"))
