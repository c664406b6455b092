"""start_job, stop_job, set_trigger through the real daemon against the testbed's real Slurm.

The contract runs once per Slurm backend that can run here. pyslurm needs a Slurm of its own
major.minor (PyPI has only 25.11); Debian 12 has 22.05, so there its run says why it skips,
and the pyslurm backend's mapping is unit-tested in test_pyslurm_backend.py. Where a Slurm
25.11 is installed (say under /opt/slurm-25.11) with pyslurm built for it, the whole suite
runs on it: ``CARME_TESTBED_SLURM=/opt/slurm-25.11 pytest tests/test_slurm_ops.py``.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from carme.spool import files
from conftest import job_field, slurm, wait_for_state


def _pyslurm_reason() -> str | None:
    """Looked up, not imported: importing pyslurm here would initialise it against the
    host's default slurm.conf, and exit pytest when there is none (shared/NOTES.md)."""
    if importlib.util.find_spec("pyslurm") is None:
        return ("pyslurm is not installed: PyPI has only 25.11, which needs a Slurm 25.11 "
                "(CARME_TESTBED_SLURM=its prefix; Debian 12 has 22.05)")
    return None


BACKENDS = [
    pytest.param("cli"),
    pytest.param("pyslurm", marks=pytest.mark.skipif(_pyslurm_reason() is not None,
                                                     reason=_pyslurm_reason() or "")),
]


@pytest.fixture(params=BACKENDS)
def backend_daemon(request, make_daemon):
    return make_daemon({"slurm": {"backend": request.param}}, name=f"ops-{request.param}").start()


def start_args(description, owner, name, **changes) -> dict:
    args = dict(user=owner["name"], frontend_job_id="7", image=description["images"][0],
                mounts=[owner["home"]], partition="gpu", gpus=1, nodes=1, name=name,
                time_limit=10)
    args.update(changes)
    return args


def wait_for_record(path: Path, ready, timeout: float = 10) -> dict:
    """A record the daemon replaces as the request moves on, once ``ready`` says so."""
    deadline = time.monotonic() + timeout
    entry = None
    while time.monotonic() < deadline:
        entry = files.read_json(path)
        if entry is not None and ready(entry):
            return entry
        time.sleep(0.05)
    raise AssertionError(f"{path}: {entry}")


def call(client, op, **args) -> dict:
    return client.wait(client.submit(op, **args), 60)


def runtime_record(user: dict, job_id: int, timeout: float = 20) -> dict:
    path = Path(user["home"]) / ".carme-runtime" / f"{job_id}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached the container runtime")


def test_start_runs_the_container_as_the_user_with_gpus_once(backend_daemon, description,
                                                             test_user, slurm_env):
    client = backend_daemon.client()
    args = start_args(description, test_user, "ops-start", gpus=2, gpu_type="v100")
    first = call(client, "start_job", **args)
    assert first["status"] == "ok", first.get("error")
    job_id = first["result"]["slurm_job_id"]
    record = runtime_record(test_user, job_id)
    assert (record["uid"], record["gid"], record["home"]) == (test_user["uid"], test_user["gid"],
                                                               test_user["home"])
    assert record["cuda_visible_devices"] == "2,3" and record["nv"] is True  # the v100 pair
    assert (record["image"], record["binds"]) == (description["images"][0], [test_user["home"]])
    assert job_field(job_id, "Comment", slurm_env).startswith(f"carme:{first['id']}:7")
    again = call(client, "start_job", **args)
    assert again["result"] == {"slurm_job_id": job_id, "already_running": True}
    # the other user stops nothing; the owner stops it
    wrong = call(client, "stop_job", name="ops-start", user=description["users"][1]["name"])
    assert wrong["result"] == {"cancelled": []}
    assert job_field(job_id, "JobState", slurm_env) == "RUNNING"
    assert call(client, "stop_job", name="ops-start", user=test_user["name"])["result"] == {
        "cancelled": [job_id]}
    wait_for_state(job_id, {"CANCELLED"}, slurm_env)
    assert call(client, "stop_job", name="ops-start", user=test_user["name"])["result"] == {
        "cancelled": []}


def test_set_trigger_checks_owner_and_name_and_sets_both_triggers(backend_daemon, description,
                                                                   test_user, other_user, slurm_env):
    client = backend_daemon.client()
    job_id = call(client, "start_job", **start_args(description, test_user, "ops-trig"))["result"]["slurm_job_id"]
    wrong = call(client, "set_trigger", slurm_job_id=job_id, user=other_user["name"], name="ops-trig")
    assert wrong["error"]["code"] == "not_owner"
    renamed = call(client, "set_trigger", slurm_job_id=job_id, user=test_user["name"], name="other")
    assert renamed["error"]["code"] == "not_owner"
    first = call(client, "set_trigger", slurm_job_id=job_id, user=test_user["name"],
                 name="ops-trig", events=["finished"])["result"]["triggers"]
    # the rest later (a retry after the controller went away between the two, say): only
    # what is missing is set, and the ids of what exists are returned
    ok = call(client, "set_trigger", slurm_job_id=job_id, user=test_user["name"], name="ops-trig")
    ids = ok["result"]["triggers"]
    assert ids["finished"] == first["finished"] and ids["ending_soon"] != first["finished"]
    listing = slurm(["strigger", "--get", "--noheader", f"--jobid={job_id}"], slurm_env).stdout
    listed = {int(line.split()[0]): line for line in listing.splitlines()}
    assert set(listed) == {ids["finished"], ids["ending_soon"]}
    assert f"trigger finished {test_user['name']} ops-trig" in listed[ids["finished"]]
    assert " time " in listed[ids["ending_soon"]]
    again = call(client, "set_trigger", slurm_job_id=job_id, user=test_user["name"], name="ops-trig")
    assert again["result"]["triggers"] == ids
    assert len(slurm(["strigger", "--get", "--noheader", f"--jobid={job_id}"],
                     slurm_env).stdout.splitlines()) == 2
    unknown = call(client, "set_trigger", slurm_job_id=3_999_999, user=test_user["name"], name="x")
    assert unknown["error"]["code"] == "unknown_job"
    call(client, "stop_job", name="ops-trig", user=test_user["name"])
    wait_for_state(job_id, {"CANCELLED"}, slurm_env)
    finished = call(client, "set_trigger", slurm_job_id=job_id, user=test_user["name"], name="ops-trig")
    assert finished["error"]["code"] == "job_finished"


@pytest.mark.parametrize("changes,slurm_changes,code", [
    ({"partition": "nope"}, {}, "partition_not_allowed"),
    ({"partition": "nope"}, {"partitions": []}, "invalid_partition"),      # Slurm's own refusal
    ({"gpus": 9}, {}, "too_many_gpus"),
    ({"gpus": 9}, {"max_gpus": 64}, "invalid_resources"),                  # Slurm's own refusal
    ({"gpu_type": "h100"}, {}, "gpu_type_not_allowed"),
    ({"user": "nosuchuser"}, {}, "unknown_user"),
    ({"user": "root"}, {}, "user_not_allowed"),                           # uid 0 < min_uid
    ({"nodes": 2}, {}, "too_many_nodes"),
    ({"image": "/etc/passwd"}, {}, "image_not_allowed"),
    ({"mounts": ["/etc"]}, {}, "mount_not_allowed"),
    ({"mounts": ["/home/../etc"]}, {}, "mount_not_allowed"),
    ({"mounts": ["/home:/etc"]}, {}, "mount_not_allowed"),
    ({"mounts": ["/home,/etc"]}, {}, "mount_not_allowed"),
    ({"mounts": ["/home/no-such-dir"]}, {}, "mount_not_found"),
])
def test_start_errors_are_clear_and_permanent(make_daemon, description, test_user, changes,
                                             slurm_changes, code):
    daemon = make_daemon({"slurm": slurm_changes}, name="ops-errors").start()
    response = call(daemon.client(), "start_job", **start_args(description, test_user, "ops-err", **changes))
    assert response["status"] == "error", response
    assert response["error"]["code"] == code, response
    assert not list(Path(daemon.spool_dir, "deferred").glob("*.json"))


def test_injection_attempts_are_rejected_or_inert(make_daemon, description, test_user, tmp_path):
    daemon = make_daemon(name="ops-inject").start()
    client = daemon.client()
    for field, value in [("name", "x;id"), ("name", "$(id)"), ("name", "a\nb"), ("user", "a b"),
                         ("frontend_job_id", "';rm -rf ~'"), ("partition", "gpu;id"),
                         ("gpu_type", "a100`id`"), ("image", "relative.sif")]:
        with pytest.raises(Exception):
            client.submit("start_job", **start_args(description, test_user, "inj", **{field: value}))
    marker = Path("/tmp/carme-injection-marker")
    marker.unlink(missing_ok=True)
    data = Path(description["container"]["mount_roots"][1])
    odd = data / "shared" / f"a b'$(touch {marker})`touch {marker}`\"x"
    odd.mkdir(parents=True, exist_ok=True)
    response = call(client, "start_job", **start_args(description, test_user, "inj-ok", mounts=[str(odd)]))
    assert response["status"] == "ok", response
    job_id = response["result"]["slurm_job_id"]
    assert runtime_record(test_user, job_id)["binds"] == [str(odd)]
    assert not marker.exists()
    call(client, "stop_job", name="inj-ok", user=test_user["name"])


def test_controller_down_defers_then_done_when_back(testbed, make_daemon, description, test_user,
                                                    slurm_env):
    daemon = make_daemon({"slurm": {"timeout": 20}}, name="ops-outage").start()
    client = daemon.client()
    testbed.stop_slurmctld()
    try:
        request_id = client.submit("start_job", **start_args(description, test_user, "ops-outage"))
        daemon.wait_deferred(request_id, timeout=90)
        assert client.response(request_id) is None
    finally:
        testbed.start_slurmctld()
    response = client.wait(request_id, 120)
    assert response["status"] == "ok", response
    ledger = wait_for_record(Path(daemon.spool_dir, "ledger", f"{request_id}.json"),
                             lambda entry: entry.get("state") == "done")
    assert ledger["attempts"] >= 2
    assert "controller_unreachable" in daemon.log() or "timeout" in daemon.log()
    call(client, "stop_job", name="ops-outage", user=test_user["name"])
    wait_for_state(response["result"]["slurm_job_id"], {"CANCELLED"}, slurm_env)


def test_rendered_script_quotes_every_value():
    from carme.daemon.slurm.jobs import render_script
    from carme.daemon.slurm.settings import SlurmConfig
    from carme.spool.envelope import Request
    args = {"frontend_job_id": "7", "name": "n"}
    request = Request("0" * 32, "start_job", "frontend", 0.0, 1.0, args, "sig")
    cfg = SlurmConfig(runtime="/opt/run time", start_command=("/bin/echo", "$(id)"))
    script = render_script("exec $runtime exec --nv $binds $image $start_command",
                           request, "/img/a b.sif", ["/home/x y", "/d/$(id)"], cfg)
    assert script == ("exec '/opt/run time' exec --nv --bind '/home/x y' --bind '/d/$(id)' "
                      "'/img/a b.sif' /bin/echo '$(id)'")
