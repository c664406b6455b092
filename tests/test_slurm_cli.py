"""The Slurm CLI backend: pure builders and parsers on captured Slurm 22.05 output, then the
backend against the testbed's real Slurm."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from carme.daemon.slurm import cli
from carme.daemon.slurm.base import SlurmPermanent, SlurmTransient, Submission, TriggerInfo
from conftest import slurm, wait_for_state

# Captured from this machine's Slurm 22.05.8
CAPTURED_STDERR = {
    "invalid_partition": "sbatch: error: invalid partition specified: nope\n"
                         "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
    "invalid_resources": "sbatch: error: Batch job submission failed: Requested node configuration is not available\n",
    "invalid_user": "sbatch: error: Invalid --uid specification\n",
    "invalid_job_id": "slurm_set_trigger: Invalid job id specified\n",
    "job_finished": "slurm_set_trigger: Job/step already completing or completed\n",
    "duplicate_trigger": "slurm_set_trigger: Duplicate event trigger\n",
    "controller_unreachable": "squeue: error: slurm_receive_msg: Socket timed out on send/recv operation\n"
                              "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
}


@pytest.mark.parametrize("code", sorted(CAPTURED_STDERR))
def test_captured_errors_map_to_typed_errors(code):
    error = cli.classify(CAPTURED_STDERR[code], "cmd")
    assert error.code == code
    assert isinstance(error, SlurmTransient) == (code == "controller_unreachable")


def test_sbatch_parsers_and_builders():
    assert cli.parse_sbatch("17\n") == 17
    assert cli.parse_sbatch("18;carmetest\n") == 18
    with pytest.raises(SlurmPermanent):
        cli.parse_sbatch("Submitted batch job 5\n")
    job = Submission("alice", "#!/bin/sh\n", "j1", "gpu", 1, "gpu:a100:2", 60, "carme:x", "/home/a", "/o")
    argv = cli.sbatch_argv(job, 1001, 1001)
    assert argv[:5] == ["sbatch", "--parsable", "--uid=1001", "--gid=1001", "--export=NONE"]
    assert "--gres=gpu:a100:2" in argv and "--time=60" in argv


def test_squeue_parser_and_trigger_builder():
    jobs = cli.parse_squeue("3|myjob|carmetest1|PENDING|carme:abc\n4|x|bob|RUNNING|(null)\nnoise\n")
    assert [(j.job_id, j.name, j.user, j.state, j.comment) for j in jobs] == [
        (3, "myjob", "carmetest1", "PENDING", "carme:abc"), (4, "x", "bob", "RUNNING", "")]
    assert cli.strigger_argv(5, "time", ["/p", "trigger", "ending_soon"], 600)[-2:] == [
        "--offset=-600", "--program=/p trigger ending_soon"]
    with pytest.raises(ValueError):
        cli.strigger_argv(5, "fini", ["/a b"], 0)


def test_strigger_listing_parser():
    # `strigger --get --noheader`, captured from Slurm 22.05.8; FLAGS is empty unless PERM
    listing = ("      1 job             1 fini                                     0 root           "
               "/usr/local/bin/carme-slurm-hook trigger finished alice j1\n"
               "      2 job             1 time                                   -60 root     PERM  "
               "/hook trigger ending_soon alice j1\n"
               "      3 node            n1 down                                    0 root           /x\n")
    assert cli.parse_strigger_get(listing) == [
        TriggerInfo(1, "fini", "/usr/local/bin/carme-slurm-hook trigger finished alice j1"),
        TriggerInfo(2, "time", "/hook trigger ending_soon alice j1")]


@pytest.fixture(scope="module")
def backend(description):
    return cli.CliBackend(description["slurm"]["conf"], timeout=30,
                          bin_dir=description["slurm"]["bin_dir"])


def _job(owner: dict, name: str, script: str = "#!/bin/sh\nsleep 300\n", **kw) -> Submission:
    fields = dict(user=owner["name"], script=script, name=name, partition="debug", nodes=1,
                  gres=None, time_limit=10, comment="carme:test", workdir=owner["home"],
                  output="/dev/null")
    fields.update(kw)
    return Submission(**fields)


def test_submit_find_job_trigger_cancel(backend, test_user, slurm_env):
    out = Path(test_user["home"]) / "cli-backend.out"
    out.unlink(missing_ok=True)
    job_id = backend.submit(_job(test_user, "cli-find", "#!/bin/sh\nid -u; id -g; echo $HOME; "
                                 "echo $CUDA_VISIBLE_DEVICES; sleep 300\n",
                                 gres="gpu:2", output=str(out)))
    wait_for_state(job_id, {"RUNNING"}, slurm_env)
    (found,) = [j for j in backend.active_jobs(test_user["name"]) if j.name == "cli-find"]
    assert (found.job_id, found.user, found.comment) == (job_id, test_user["name"], "carme:test")
    assert backend.job(job_id).active
    backend.trigger(job_id, "fini", ["/bin/true", "fini"])
    assert f"{job_id}" in slurm(["strigger", "--get", f"--jobid={job_id}"], slurm_env).stdout
    (listed,) = backend.triggers(job_id)
    assert (listed.event, listed.program) == ("fini", "/bin/true fini")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().split()) < 4):
        time.sleep(0.1)
    uid, gid, home, gpus = out.read_text().split()
    assert (int(uid), int(gid), home) == (test_user["uid"], test_user["gid"], test_user["home"])
    assert len(set(gpus.split(","))) == 2  # two GPUs granted
    backend.cancel(job_id)
    wait_for_state(job_id, {"CANCELLED"}, slurm_env)
    backend.cancel(job_id)  # already gone: success
    with pytest.raises(SlurmPermanent) as info:
        backend.trigger(job_id, "fini", ["/bin/true"])
    assert info.value.code == "job_finished"


@pytest.mark.parametrize("change,code", [
    ({"partition": "nope"}, "invalid_partition"),
    ({"gres": "gpu:9"}, "invalid_resources"),
    ({"gres": "gpu:h100:1"}, "invalid_resources"),
    ({"user": "nosuchuser"}, "invalid_user"),
])
def test_submit_errors_are_permanent_with_codes(backend, test_user, change, code):
    with pytest.raises(SlurmPermanent) as info:
        backend.submit(_job(test_user, "cli-bad", **change))
    assert info.value.code == code


def test_unknown_job_id(backend):
    assert backend.job(4_000_000) is None
    backend.cancel(4_000_000)
    with pytest.raises(SlurmPermanent) as info:
        backend.trigger(4_000_000, "fini", ["/bin/true"])
    assert info.value.code == "invalid_job_id"


def test_ping_up_and_controller_unreachable_is_transient(backend, tmp_path):
    assert backend.ping() is True
    conf = tmp_path / "slurm.conf"
    text = Path(backend.env["SLURM_CONF"]).read_text()
    port = next(line for line in text.splitlines() if line.startswith("SlurmctldPort="))
    conf.write_text(text.replace(port, "SlurmctldPort=1"))
    dead = cli.CliBackend(str(conf), timeout=60, bin_dir=str(backend.bin_dir))
    assert dead.ping() is False
    with pytest.raises(SlurmTransient) as info:
        dead.active_jobs("carmetest1")
    assert info.value.code == "controller_unreachable"


def test_daemon_ping_reports_slurm_up(daemon):
    client = daemon.client()
    result = client.wait(client.ping(), 30)["result"]
    assert (result["slurm"], result["slurm_backend"]) == ("up", "cli")


def test_service_shares_one_controller_check_between_pings():
    from carme.daemon.services import SlurmService

    class CountingBackend:
        name = "counting"
        calls = 0

        def ping(self):
            self.calls += 1
            return True

    backend = CountingBackend()
    service = SlurmService(backend, health_ttl=60)
    assert all(service.ping() for _ in range(100))
    assert backend.calls == 1
    assert service.health() == "counting:up"


def test_job_index_shares_one_listing_and_confirms_before_reuse():
    from carme.daemon.slurm.base import JobInfo
    from carme.daemon.slurm.index import JobIndex

    class Backend:
        listings = 0
        gone = set()

        def active_jobs(self, user):
            self.listings += 1
            return [JobInfo(1, "a", user, "RUNNING")]

        def job(self, job_id):
            return None if job_id in self.gone else JobInfo(job_id, "a", "u", "RUNNING")

    backend = Backend()
    index = JobIndex(backend, ttl=60)
    assert index.active_job("u", "a").job_id == 1
    assert index.active_job("u", "b") is None
    index.added(JobInfo(2, "b", "u", "PENDING"))
    assert index.active_job("u", "b").job_id == 2
    assert backend.listings == 1
    backend.gone.add(1)  # ended since the snapshot: confirmed gone, not reused
    assert index.active_job("u", "a") is None
    index.forget("u")
    index.named("u", "a")
    assert backend.listings == 2
