"""carme-slurm-hook and job_event: from Slurm's prolog/epilog/trigger to jobs/<id>.json."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from carme.daemon import jobstatus
from carme.slurm_hooks import hook
from carme.spool.layout import Spool
from conftest import slurm, wait_for_state

HOOK = str(Path(sys.executable).parent / "carme-slurm-hook")
CARME_ENV = {"SLURM_JOB_ID": "12", "SLURM_JOB_USER": "carmetest1", "SLURM_JOB_COMMENT": "carme:ab:7",
             "SLURM_JOB_NAME": "j", "SLURM_NODELIST": "vm"}


@pytest.mark.parametrize("context,kind", [("prolog_slurmd", "started"), ("prolog_slurmctld", "started"),
                                          ("epilog_slurmd", "ended"), ("epilog_slurmctld", "ended")])
def test_context_decides_the_kind(context, kind):
    event = hook.event_from([], {**CARME_ENV, "SLURM_SCRIPT_CONTEXT": context,
                                 "SLURM_JOB_EXIT_CODE2": "3:0"})
    assert (event["slurm_job_id"], event["kind"], event["user"], event["source"]) == (12, kind, "carmetest1", context)
    assert ("exit_code" in event) == (kind == "ended")


def test_exit_codes_and_signals():
    assert hook.parse_exit({"SLURM_JOB_EXIT_CODE2": "3:0"}) == {"exit_code": 3, "signal": 0}
    assert hook.parse_exit({"SLURM_JOB_EXIT_CODE2": "0:15"}) == {"exit_code": 0, "signal": 15}
    assert hook.parse_exit({"SLURM_JOB_EXIT_CODE": "768"}) == {"exit_code": 3, "signal": 0}
    assert hook.parse_exit({"SLURM_JOB_EXIT_CODE": "9"}) == {"exit_code": 0, "signal": 9}


def test_trigger_arguments_and_non_carme_jobs():
    event = hook.event_from(["trigger", "ending_soon", "carmetest1", "j", "44"], {})
    assert (event["kind"], event["slurm_job_id"], event["user"], event["name"]) == ("ending_soon", 44, "carmetest1", "j")
    assert hook.event_from([], {**CARME_ENV, "SLURM_SCRIPT_CONTEXT": "prolog_slurmd",
                                "SLURM_JOB_COMMENT": "someone else's"}) is None
    with pytest.raises(hook.HookError):
        hook.event_from(["trigger", "explode", "44"], {})


def _run_hook(config: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([HOOK, "--config", str(config)], env=env, capture_output=True, text=True,
                          timeout=30)


def test_broken_spool_exits_0_and_logs_unless_told_to_fail(tmp_path, description):
    log = tmp_path / "hooks.log"
    config = tmp_path / "hooks.toml"
    key = Path(description["carme"]["keys"]) / "hooks.key"
    body = f'spool = "{tmp_path}/no/such/spool"\nsigning_key = "{key}"\nlog_file = "{log}"\n'
    config.write_text(body)
    env = {**CARME_ENV, "SLURM_SCRIPT_CONTEXT": "prolog_slurmd"}
    assert _run_hook(config, env).returncode == 0
    assert "error: FileNotFoundError" in log.read_text()
    config.write_text(body + "fail_job_on_error = true\n")
    assert _run_hook(config, env).returncode == 1


def test_hook_writes_a_signed_event_the_daemon_accepts(tmp_path, make_daemon):
    daemon = make_daemon(name="hook-direct")
    config = tmp_path / "hooks.toml"
    config.write_text(f'spool = "{daemon.spool_dir}"\nsigning_key = "{daemon.key_dir}/hooks.key"\n')
    result = _run_hook(config, {**CARME_ENV, "SLURM_SCRIPT_CONTEXT": "prolog_slurmd"})
    assert result.returncode == 0, result.stderr
    (request_id,) = Spool(daemon.spool_dir).entries("incoming")[0]
    daemon.start()
    response = daemon.client().wait(request_id, 15)
    assert response["result"]["state"] == "running"


def test_duplicated_and_out_of_order_events_leave_the_right_state(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.create()
    for kind in ("queued", "started", "finished", "started", "ending_soon", "finished", "failed"):
        status, _ = jobstatus.record(spool, 9, kind, time.time(), user="u")
    assert status["state"] == "finished"
    assert [h["applied"] for h in status["history"]] == [True, True, True, False, False, False, False]
    status, _ = jobstatus.record(spool, 10, "ending_soon", 1.0, user="u")  # trigger before prolog
    status, changed = jobstatus.record(spool, 10, "started", 2.0, user="u")
    assert (status["state"], changed) == ("ending_soon", False)


def start_job(daemon, description, user, name, frontend_job_id, time_limit=10) -> int:
    client = daemon.client()
    response = client.wait(client.start_job(user["name"], frontend_job_id, description["images"][0],
                                            [user["home"]], "debug", 0, 1, name,
                                            time_limit=time_limit), 60)
    assert response["status"] == "ok", response
    return response["result"]["slurm_job_id"]


def wait_job_state(daemon, job_id: int, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = jobstatus.read(Spool(daemon.spool_dir), job_id)
        if status and status["state"] in states:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id}: {status}")


def test_a_job_that_ends_is_started_then_finished(testbed_daemon, description, test_user):
    job_id = start_job(testbed_daemon, description, test_user, "hook-quick", "quick")
    status = wait_job_state(testbed_daemon, job_id, {"finished"})
    kinds = [h["kind"] for h in status["history"] if h["applied"]]
    assert kinds == ["queued", "started", "finished"]
    assert f"job {job_id} of {test_user['name']}: finished" in testbed_daemon.log()


def test_exit_3_is_failed_with_its_exit_code(testbed_daemon, description, test_user):
    job_id = start_job(testbed_daemon, description, test_user, "hook-exit3", "exit-3")
    status = wait_job_state(testbed_daemon, job_id, {"failed", "finished"})
    assert (status["state"], status["exit_code"]) == ("failed", 3)


def test_a_stopped_job_is_cancelled(testbed_daemon, description, test_user, slurm_env):
    job_id = start_job(testbed_daemon, description, test_user, "hook-stop", "sleep")
    wait_job_state(testbed_daemon, job_id, {"running"})
    client = testbed_daemon.client()
    client.wait(client.stop_job("hook-stop", test_user["name"]), 30)
    assert wait_job_state(testbed_daemon, job_id, {"cancelled", "finished", "failed"})["state"] == "cancelled"


def test_over_the_time_limit_is_ending_soon_then_timeout(testbed_daemon, description, test_user):
    job_id = start_job(testbed_daemon, description, test_user, "hook-limit", "sleep", time_limit=1)
    client = testbed_daemon.client()
    trig = client.wait(client.set_trigger(job_id, test_user["name"], "hook-limit"), 30)
    assert trig["status"] == "ok", trig
    wait_job_state(testbed_daemon, job_id, {"ending_soon"}, timeout=60)
    status = wait_job_state(testbed_daemon, job_id, {"timeout", "cancelled", "failed"}, timeout=150)
    assert status["state"] == "timeout"
    sources = [h["source"] for h in status["history"]]
    assert "trigger_ending_soon" in sources


def test_a_job_that_is_not_carmes_produces_nothing(description, slurm_env, test_user):
    job_id = int(slurm(["sbatch", "--parsable", f"--uid={test_user['name']}", f"--gid={test_user['name']}",
                        "--export=NONE", "--chdir=/tmp", "--output=/dev/null", "--wrap", "true"],
                       slurm_env).stdout)
    wait_for_state(job_id, {"COMPLETED"}, slurm_env)
    time.sleep(1)
    log = Path(description["carme"]["hooks_log"]).read_text()
    assert f"job {job_id} " not in log
    node = slurm(["sinfo", "-h", "-o", "%t"], slurm_env).stdout.split()
    assert not any(state.startswith("drain") for state in node)
