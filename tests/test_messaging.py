"""send_message (Mattermost stand-in) and set_password (real slapd) through the real daemon,
and a last sweep: no test password anywhere on disk, in a log or in the journal."""

from __future__ import annotations

import os
import time
from pathlib import Path

import ldap
import pytest
import requests

from carme.daemon.mattermost import split_message
from carme.spool import files

PASSWORDS_USED: list[str] = []
SWEEP_ROOTS: list[Path] = []


@pytest.fixture
def mm(description):
    url = description["mattermost"]["url"]
    requests.post(f"{url}/_test/reset", timeout=5)
    return url


def posts(url: str) -> list[dict]:
    return requests.get(f"{url}/_test/posts", timeout=5).json()


@pytest.fixture
def messenger(make_daemon):
    daemon = make_daemon(name="messaging").start()
    SWEEP_ROOTS.append(daemon.root)
    return daemon


def send(daemon, user: str, text: str, timeout: float = 60) -> dict:
    client = daemon.client()
    return client.wait(client.send_message(user, text), timeout)


def test_bot_dm_arrives(messenger, mm, test_user):
    assert send(messenger, test_user["name"], "hello from the bot")["result"]["delivered"] is True
    assert posts(mm) == [{"to": test_user["name"], "message": "hello from the bot", "via": "bot"}]


def test_webhook_dm_arrives(make_daemon, mm, test_user):
    daemon = make_daemon({"mattermost": {"mode": "webhook"}}, name="webhook").start()
    assert send(daemon, test_user["name"], "via webhook")["status"] == "ok"
    assert posts(mm) == [{"to": test_user["name"], "message": "via webhook", "via": "webhook"}]


def test_long_messages_are_split_at_line_breaks(messenger, mm, test_user):
    text = "\n".join(f"line {n} " + "x" * 100 for n in range(250))  # ~27,000 characters
    response = send(messenger, test_user["name"], text)
    assert response["result"]["posts"] == 2
    delivered = [p["message"] for p in posts(mm)]
    assert all(len(m) <= 16383 for m in delivered) and "\n".join(delivered) == text
    assert split_message("a" * 20000)[0] == "a" * 16383


def test_429_with_retry_after_is_waited_out(messenger, mm, test_user):
    requests.post(f"{mm}/_test/ratelimit", json={"count": 1, "retry_after": 1}, timeout=5)
    started = time.monotonic()
    assert send(messenger, test_user["name"], "after the limit")["status"] == "ok"
    assert time.monotonic() - started >= 1
    assert [p["message"] for p in posts(mm)] == ["after the limit"]


def test_a_500_burst_then_success_delivers_once(messenger, mm, test_user):
    requests.post(f"{mm}/_test/fail", json={"status": 500, "count": 3}, timeout=5)
    response = send(messenger, test_user["name"], "exactly once")
    assert response["status"] == "ok"
    assert [p["message"] for p in posts(mm)] == ["exactly once"]
    assert "mattermost_unavailable" in messenger.log()


def test_unknown_user_fails_with_a_reason(messenger, mm):
    response = send(messenger, "nobody", "hi")
    assert response["error"]["code"] == "unknown_user"
    assert "nobody" in response["error"]["message"]


def test_mattermost_down_is_deferred_then_delivered(testbed, messenger, mm, test_user):
    testbed.stop_mattermost()
    try:
        client = messenger.client()
        request_id = client.send_message(test_user["name"], "when you are back")
        messenger.wait_deferred(request_id)
    finally:
        testbed.restart_mattermost()
    assert client.wait(request_id, 60)["status"] == "ok"
    assert [p["message"] for p in posts(mm)] == ["when you are back"]


def test_bad_token_is_permanent_and_the_token_is_never_shown(make_daemon, description, mm,
                                                             test_user, tmp_path):
    token = tmp_path / "wrong.token"
    token.write_text("definitely-not-the-token")
    token.chmod(0o600)
    daemon = make_daemon({"mattermost": {"token_file": str(token)}}, name="badtoken").start()
    response = send(daemon, test_user["name"], "x")
    assert response["error"]["code"] == "mattermost_token_rejected"
    real = description["mattermost"]["bot_token"]
    deadline = time.monotonic() + 10  # the audit line follows the response
    while not any(line["id"] == response["id"] for line in daemon.audit()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for text in (daemon.log(), Path(daemon.spool_dir, "audit.jsonl").read_text(), str(response)):
        assert real not in text and "definitely-not-the-token" not in text


# --- set_password -----------------------------------------------------------------------------
def _dn(description, name):
    return f"uid={name},{description['ldap']['people_base']}"


def _binds(description, dn, password) -> bool:
    conn = ldap.initialize(description["ldap"]["uri"])
    try:
        conn.simple_bind_s(dn, password)
        return True
    except ldap.INVALID_CREDENTIALS:
        return False
    finally:
        conn.unbind_s()


def set_password(daemon, dn, name, password, timeout=60) -> dict:
    PASSWORDS_USED.append(password)
    client = daemon.client()
    return client.wait(client.set_password(dn, name, password), timeout)


def test_set_password_then_bind_with_new_not_old(messenger, description, other_user):
    dn = _dn(description, other_user["name"])
    new = "N3w-" + os.urandom(6).hex()
    response = set_password(messenger, dn, other_user["name"], new)
    assert response["status"] == "ok", response
    assert _binds(description, dn, new)
    assert not _binds(description, dn, other_user["password"])


@pytest.mark.parametrize("dn_of,name,code", [
    (lambda d: "uid=carmetest2,ou=people,dc=evil,dc=org", "carmetest2", "dn_not_allowed"),
    (lambda d: f"uid=carmetest1,{d['ldap']['people_base']}", "carmetest2", "dn_not_allowed"),
    (lambda d: f"uid=nobody,{d['ldap']['people_base']}", "nobody", "unknown_dn"),
    (lambda d: "not a dn", "carmetest2", "bad_dn"),
])
def test_set_password_refuses_wrong_dns(messenger, description, dn_of, name, code):
    response = set_password(messenger, dn_of(description), name, "Wr0ng-dn-" + os.urandom(4).hex())
    assert response["error"]["code"] == code, response


def test_password_policy_violation_is_permanent(messenger, description, other_user):
    response = set_password(messenger, _dn(description, other_user["name"]), other_user["name"], "short")
    assert response["error"]["code"] == "password_policy", response


def test_bad_admin_password_is_permanent(make_daemon, description, other_user, tmp_path):
    wrong = tmp_path / "ldap.password"
    wrong.write_text("not-the-service-password")
    wrong.chmod(0o600)
    daemon = make_daemon({"ldap": {"bind_password_file": str(wrong)}}, name="badbind").start()
    SWEEP_ROOTS.append(daemon.root)
    response = set_password(daemon, _dn(description, other_user["name"]), other_user["name"],
                            "B4d-bind-" + os.urandom(4).hex())
    assert response["error"]["code"] == "ldap_bind_failed", response


def test_slapd_down_is_deferred_then_done_after_restart(testbed, messenger, description, other_user):
    dn = _dn(description, other_user["name"])
    new = "Aft3r-" + os.urandom(6).hex()
    PASSWORDS_USED.append(new)
    testbed.stop_slapd()
    try:
        client = messenger.client()
        request_id = client.set_password(dn, other_user["name"], new)
        messenger.wait_deferred(request_id)
    finally:
        testbed.start_slapd()
    assert client.wait(request_id, 60)["status"] == "ok"
    assert _binds(description, dn, new)


def test_job_events_reach_the_user_as_dms(testbed_daemon, description, test_user, mm):
    client = testbed_daemon.client()
    response = client.wait(client.start_job(test_user["name"], "quick", description["images"][0],
                                            [test_user["home"]], "debug", 0, 1, "dm-job"), 60)
    job_id = response["result"]["slurm_job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        texts = [p["message"] for p in posts(mm) if p["to"] == test_user["name"]]
        if any("finished" in t and str(job_id) in t for t in texts):
            break
        time.sleep(0.3)
    assert any("scheduled" in t for t in texts), texts
    assert any("started" in t for t in texts), texts
    assert any("finished" in t for t in texts), texts


def test_job_event_dms_outlive_a_mattermost_outage_and_a_daemon_restart(
        testbed, testbed_daemon, description, test_user, mm):
    client = testbed_daemon.client()
    testbed.stop_mattermost()
    try:
        response = client.wait(client.start_job(test_user["name"], "quick", description["images"][0],
                                                [test_user["home"]], "debug", 0, 1, "dm-outage"), 60)
        job_id = response["result"]["slurm_job_id"]
        status = Path(testbed_daemon.spool_dir, "jobs", f"{job_id}.json")
        deadline = time.monotonic() + 60
        while (files.read_json(status) or {}).get("state") != "finished":
            assert time.monotonic() < deadline, files.read_json(status)
            time.sleep(0.2)
        owed = os.listdir(Path(testbed_daemon.spool_dir, "outbox"))
        assert len(owed) >= 3  # scheduled, started, finished: kept while Mattermost is away
        testbed_daemon.stop()
        testbed_daemon.start()
    finally:
        testbed.restart_mattermost()
    deadline = time.monotonic() + 60
    texts: list[str] = []
    while time.monotonic() < deadline:
        texts = [p["message"] for p in posts(mm) if p["to"] == test_user["name"]]
        if any("finished" in t for t in texts):
            break
        time.sleep(0.3)
    ours = [t for t in texts if str(job_id) in t]
    assert [next(w for w in ("scheduled", "started", "finished") if w in t) for t in ours] == [
        "scheduled", "started", "finished"], texts
    assert os.listdir(Path(testbed_daemon.spool_dir, "outbox")) == []


def test_zz_no_test_password_is_anywhere_on_disk(description):
    """Runs last in this module: the spool trees, logs and journals hold no password."""
    assert PASSWORDS_USED
    roots = [Path(description["base"]), *SWEEP_ROOTS]
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                if path.is_symlink() or not path.is_file() or path.stat().st_size > 8 << 20:
                    continue
                if path.name in ("secrets.json", "testbed.json", "base.ldif") or "ldap/data" in str(path):
                    continue  # the testbed's own description of its users; slapd's hashed store
                data = path.read_bytes()
                found += [f"{path}: {pw}" for pw in PASSWORDS_USED if pw.encode() in data]
    assert found == []

