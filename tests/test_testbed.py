"""The testbed itself: real Slurm runs GPU jobs as a test user, slapd binds, the stand-in
speaks Mattermost's API v4 (successes and errors)."""

from __future__ import annotations

import pwd
import time
from pathlib import Path

import ldap
import pytest
import requests

from conftest import slurm, wait_for_state
from testbed import procs


def test_gpu_job_runs_as_the_user_with_its_gpus(slurm_env, test_user):
    out = Path(test_user["home"]) / "testbed-gpu-job.out"
    out.unlink(missing_ok=True)
    result = slurm([
        "sbatch", "--parsable", f"--uid={test_user['name']}", f"--gid={test_user['name']}",
        "--export=NONE", f"--chdir={test_user['home']}", "--gres=gpu:1", f"--output={out}",
        "--wrap", "id -u; id -g; echo $HOME; echo $CUDA_VISIBLE_DEVICES",
    ], slurm_env)
    job_id = int(result.stdout.strip())
    assert wait_for_state(job_id, {"COMPLETED", "FAILED"}, slurm_env) == "COMPLETED"
    uid, gid, home, gpus = out.read_text().split()
    assert (int(uid), int(gid), home) == (test_user["uid"], test_user["gid"], test_user["home"])
    assert gpus in {"0", "1", "2", "3"}  # one of the four; which depends on other jobs
    assert pwd.getpwuid(out.stat().st_uid).pw_name == test_user["name"]


def test_cancel_ends_a_running_job(slurm_env, test_user):
    job_id = int(slurm(["sbatch", "--parsable", f"--uid={test_user['name']}",
                        f"--gid={test_user['name']}", "--export=NONE", "--chdir=/tmp",
                        "--output=/dev/null", "--wrap", "sleep 300"], slurm_env).stdout)
    wait_for_state(job_id, {"RUNNING"}, slurm_env)
    slurm(["scancel", str(job_id)], slurm_env)
    assert wait_for_state(job_id, {"CANCELLED"}, slurm_env) == "CANCELLED"


def test_up_twice_is_harmless(testbed):
    before = testbed.status()
    started = time.monotonic()
    testbed.up()
    assert testbed.status() == before
    assert time.monotonic() - started < 5


def test_status_names_every_service_with_a_live_pid(testbed):
    status = testbed.status()
    assert set(status) == {"munged", "slurmctld", "slurmd", "slapd", "mattermost"}
    assert all(pid and procs.is_running(pid) for pid in status.values())


def test_ldap_bind_as_test_user(description, test_user):
    conn = ldap.initialize(description["ldap"]["uri"])
    dn = f"uid={test_user['name']},{description['ldap']['people_base']}"
    conn.simple_bind_s(dn, test_user["password"])
    assert conn.whoami_s() == f"dn:{dn}"
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        ldap.initialize(description["ldap"]["uri"]).simple_bind_s(dn, "not-the-password")


@pytest.fixture
def mattermost(description):
    mm = description["mattermost"]
    requests.post(f"{mm['url']}/_test/reset", timeout=5)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {mm['bot_token']}"
    return mm, session


def test_standin_delivers_a_bot_dm(mattermost, test_user):
    mm, session = mattermost
    me = session.get(f"{mm['url']}/api/v4/users/me", timeout=5).json()
    user = session.get(f"{mm['url']}/api/v4/users/username/{test_user['name']}", timeout=5).json()
    channel = session.post(f"{mm['url']}/api/v4/channels/direct", json=[me["id"], user["id"]],
                           timeout=5)
    assert channel.status_code == 201
    again = session.post(f"{mm['url']}/api/v4/channels/direct", json=[user["id"], me["id"]],
                         timeout=5)
    assert again.json()["id"] == channel.json()["id"]
    post = session.post(f"{mm['url']}/api/v4/posts",
                        json={"channel_id": channel.json()["id"], "message": "hello"}, timeout=5)
    assert post.status_code == 201
    posts = requests.get(f"{mm['url']}/_test/posts", timeout=5).json()
    assert posts == [{"to": test_user["name"], "message": "hello", "via": "bot"}]


def test_standin_delivers_a_webhook_message(mattermost, test_user):
    mm, _ = mattermost
    answer = requests.post(mm["webhook_url"], json={"channel": f"@{test_user['name']}",
                                                    "text": "via hook"}, timeout=5)
    assert (answer.status_code, answer.text) == (200, "ok")
    posts = requests.get(f"{mm['url']}/_test/posts", timeout=5).json()
    assert posts == [{"to": test_user["name"], "message": "via hook", "via": "webhook"}]


def test_standin_answers_errors_as_mattermost_does(mattermost, test_user):
    mm, session = mattermost
    bad = requests.get(f"{mm['url']}/api/v4/users/me",
                       headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert bad.status_code == 401
    assert set(bad.json()) == {"id", "message", "detailed_error", "request_id", "status_code"}
    missing = session.get(f"{mm['url']}/api/v4/users/username/nobody", timeout=5)
    assert (missing.status_code, missing.json()["id"]) == (404, "app.user.missing_account.const")
    assert session.post(f"{mm['url']}/api/v4/posts", json={"channel_id": "x"}, timeout=5).status_code == 400
    assert requests.post(f"{mm['url']}/hooks/unknown", json={"text": "x"}, timeout=5).status_code == 400
    locked = requests.post(mm["locked_webhook_url"],
                           json={"channel": f"@{test_user['name']}", "text": "x"}, timeout=5)
    assert locked.status_code == 403
    long = session.post(f"{mm['url']}/api/v4/posts", json={"channel_id": "x", "message": "a" * 16384},
                        timeout=5)
    assert long.status_code == 400


def test_standin_rate_limits_and_injects_failures(mattermost):
    mm, session = mattermost
    requests.post(f"{mm['url']}/_test/ratelimit", json={"count": 1, "retry_after": 2}, timeout=5)
    limited = session.get(f"{mm['url']}/api/v4/users/me", timeout=5)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert limited.headers["Content-Type"].startswith("text/plain")
    requests.post(f"{mm['url']}/_test/fail", json={"status": 503, "count": 2}, timeout=5)
    codes = [session.get(f"{mm['url']}/api/v4/users/me", timeout=5).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
