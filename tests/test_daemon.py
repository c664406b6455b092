"""The daemon as a real process on a real spool with real inotify: it answers, rejects bad
files without dying, recovers from kill -9, shuts down cleanly, shares a spool, reloads."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


from carme.spool import keys, write_request
from carme.spool.envelope import canonical
from carme.spool.layout import Spool


def wait_all(client, ids, timeout=60):
    return {request_id: client.wait(request_id, timeout) for request_id in ids}


def test_ping_and_whoami(daemon):
    client = daemon.client()
    pong = client.wait(client.ping(), 10)
    assert pong["status"] == "ok", pong
    assert pong["result"]["pong"] is True
    assert client.wait(client.whoami(), 10)["result"] == {"signer": "frontend"}
    admin = daemon.client("admin")
    assert admin.wait(admin.whoami(), 10)["result"] == {"signer": "admin"}


def _signed(key_dir: Path, signer="frontend", key_signer=None, **changes) -> dict:
    unsigned = {"v": 1, "id": os.urandom(16).hex(), "op": "ping", "signer": signer,
                "issued_at": time.time(), "expires_at": time.time() + 60, "args": {}}
    unsigned.update(changes)
    key = keys.load_signing_key(key_dir / f"{key_signer or signer}.key")
    return {**unsigned, "sig": base64.b64encode(key.sign(canonical(unsigned)).signature).decode()}


def _bad_files(spool: Spool, key_dir: Path, tmp: Path) -> dict[str, str]:
    """Drop twenty kinds of bad request into incoming/; return {id: expected code}."""
    expected = {}

    def drop(data: bytes, code: str, request_id: str | None = None) -> None:
        request_id = request_id or os.urandom(16).hex()
        path = spool.folder("tmp") / f"bad-{request_id}"
        path.write_bytes(data)
        os.rename(path, spool.request_path("incoming", request_id))
        expected[request_id] = code

    def drop_obj(obj: dict, code: str) -> None:
        drop(json.dumps(obj).encode(), code, obj["id"])

    drop(os.urandom(300), "bad_json")
    drop(b"", "bad_json")
    drop(b"x" * (70 * 1024), "oversize")
    drop(b"{\"v\": 1", "bad_json")
    drop(b"[]", "bad_json")
    drop_obj(_signed(key_dir, key_signer="hooks"), "bad_signature")  # forged
    drop_obj(_signed(key_dir, signer="mallory", key_signer="frontend"), "unknown_signer")
    drop_obj(_signed(key_dir, issued_at=time.time() - 900, expires_at=time.time() - 10), "expired")
    drop_obj(_signed(key_dir, issued_at=time.time() + 3600, expires_at=time.time() + 3660), "from_future")
    drop_obj(_signed(key_dir, op="job_event", args={"slurm_job_id": 1, "user": "a", "kind": "started",
                                                    "at": 1.0}), "op_not_allowed")
    drop_obj(_signed(key_dir, op="rm_rf"), "unknown_op")
    drop_obj(_signed(key_dir, v=7), "unknown_version")
    drop_obj({**_signed(key_dir), "extra": True}, "unknown_field")
    drop_obj(_signed(key_dir, op="stop_job", args={"name": "a b", "user": "carmetest1"}), "bad_args")
    unsigned = _signed(key_dir)
    del unsigned["sig"]
    drop_obj(unsigned, "missing_signature")
    drop_obj(_signed(key_dir, expires_at=time.time() + 86400), "ttl_too_long")
    mismatched = _signed(key_dir)
    drop(json.dumps(mismatched).encode(), "bad_envelope")  # stored under another id
    secret = tmp / "elsewhere.json"
    secret.write_text(json.dumps(_signed(key_dir)))
    link_id = os.urandom(16).hex()
    os.symlink(secret, spool.request_path("incoming", link_id))
    expected[link_id] = "not_regular"
    dir_id = os.urandom(16).hex()
    spool.request_path("incoming", dir_id).mkdir()
    expected[dir_id] = "not_regular"
    fifo_id = os.urandom(16).hex()
    os.mkfifo(spool.request_path("incoming", fifo_id))
    expected[fifo_id] = "not_regular"
    return expected


def test_twenty_kinds_of_bad_files_fail_with_reasons_and_the_daemon_serves_on(daemon, tmp_path):
    spool = Spool(daemon.spool_dir)
    expected = _bad_files(spool, daemon.key_dir, tmp_path)
    assert len(expected) == 20
    # a replay of a request that was served
    client = daemon.client()
    served = client.ping()
    client.wait(served, 10)
    replay_raw = spool.request_path("done", served).read_bytes()
    (spool.folder("tmp") / "replay").write_bytes(replay_raw)
    os.rename(spool.folder("tmp") / "replay", spool.request_path("incoming", served))
    assert client.wait(client.ping(), 10)["status"] == "ok"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and spool.entries("incoming")[0]:
        time.sleep(0.1)
    for request_id, code in expected.items():
        reason = spool.reason_path(request_id).read_text()
        assert reason.startswith(f"{code}:"), (request_id, code, reason)
        assert os.path.lexists(spool.request_path("failed", request_id))
    assert (spool.folder("failed") / f"{served}~1.reason").read_text().startswith("replay:")
    assert client.wait(served, 1)["status"] == "ok"  # the original's response is untouched
    assert daemon.process.poll() is None
    rejected = [line for line in daemon.audit() if line["outcome"] == "rejected"]
    assert len(rejected) == 21


KILLED_CLAIMER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from spoolkit_daemon import claim_and_hang
claim_and_hang(Path(sys.argv[1]), sys.argv[2])
"""


def test_kill_9_while_active_then_restart_completes_exactly_once(make_daemon, tmp_path):
    daemon = make_daemon()
    client = daemon.client()
    request_id = client.ping()
    # a daemon-like process that claims the request and is killed -9 while it holds it
    claimer = subprocess.Popen([sys.executable, "-c", KILLED_CLAIMER, str(daemon.config),
                                request_id, str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True)
    assert claimer.stdout.readline().strip() == "claimed"
    claimer.send_signal(signal.SIGKILL)
    claimer.wait()
    assert Spool(daemon.spool_dir).entries("active")[0] == [request_id]
    daemon.start()
    assert client.wait(request_id, 15)["status"] == "ok"
    time.sleep(0.5)
    lines = [line for line in daemon.audit() if line.get("id") == request_id]
    assert [line["outcome"] for line in lines] == ["done"]
    assert "recovered 1 request" in daemon.log()


def test_kill_9_during_a_burst_loses_nothing_and_answers_each_once(make_daemon):
    daemon = make_daemon().start()
    client = daemon.client()
    ids = [client.ping() for _ in range(300)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(daemon.audit()) < 30:
        time.sleep(0.005)
    daemon.stop(signal.SIGKILL)
    daemon.start()
    responses = wait_all(client, ids)
    assert all(r["status"] == "ok" for r in responses.values())
    time.sleep(0.5)
    counts = Counter(line["id"] for line in daemon.audit() if line["outcome"] == "done")
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1


def test_requests_written_while_down_are_served_at_start(make_daemon):
    daemon = make_daemon()
    client = daemon.client()
    ids = [client.ping() for _ in range(20)]
    daemon.start()
    assert all(r["status"] == "ok" for r in wait_all(client, ids, 20).values())


def test_sigterm_finishes_work_in_flight_and_exits_0(make_daemon):
    daemon = make_daemon().start()
    client = daemon.client()
    ids = [client.ping() for _ in range(400)]
    while not daemon.audit():
        time.sleep(0.002)
    assert daemon.stop(signal.SIGTERM) == 0
    spool = Spool(daemon.spool_dir)
    assert spool.entries("active")[0] == []
    done = set(spool.entries("done")[0])
    assert done and all(client.response(i) for i in done)
    assert set(spool.entries("incoming")[0]) | done == set(ids)


def test_two_daemons_on_one_spool_serve_each_request_exactly_once(make_daemon):
    first = make_daemon().start()
    second = make_daemon().start()
    client = first.client()
    ids = [client.ping() for _ in range(400)]
    responses = wait_all(client, ids)
    assert [r for r in responses.values() if r["status"] != "ok"] == []
    time.sleep(0.5)
    counts = Counter(line["id"] for line in first.audit() if line["outcome"] == "done")
    assert set(counts) == set(ids) and max(counts.values()) == 1
    assert first.process.poll() is None and second.process.poll() is None


def test_sighup_picks_up_a_new_signer_key(make_daemon, tmp_path):
    daemon = make_daemon().start()
    keys.generate_signer(tmp_path, "portal2")
    stranger = write_request(Spool(daemon.spool_dir), "portal2",
                             keys.load_signing_key(tmp_path / "portal2.key"), "ping", {})
    assert daemon.client().wait(stranger, 10)["error"]["code"] == "unknown_signer"
    with open(daemon.config, "a") as f:
        f.write(f'\n[signers.portal2]\npublic_key = "{tmp_path}/portal2.pub"\nops = ["ping"]\n')
    daemon.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reloaded" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    welcome = write_request(Spool(daemon.spool_dir), "portal2",
                            keys.load_signing_key(tmp_path / "portal2.key"), "ping", {})
    assert daemon.client().wait(welcome, 10)["status"] == "ok"


def test_a_bad_config_on_sighup_keeps_the_old_one(daemon):
    daemon.config.write_text(daemon.config.read_text() + "\n[nonsense]\n")
    daemon.process.send_signal(signal.SIGHUP)
    client = daemon.client()
    assert client.wait(client.ping(), 10)["status"] == "ok"
    assert "reload failed" in daemon.log() and "nonsense" in daemon.log()


def _cli(daemon, *args, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "carme-backend"), "--config",
                           str(daemon.config), *args], capture_output=True, text=True,
                          timeout=60, input=stdin)


def test_admin_cli_status_ls_show_retry_audit_prune(daemon):
    client = daemon.client()
    ok = client.ping()
    client.wait(ok, 10)
    time.sleep(1.2)
    status = _cli(daemon, "status")
    assert status.returncode == 0 and "running" in status.stdout
    bad = os.urandom(16).hex()
    Spool(daemon.spool_dir).request_path("incoming", bad).write_text("{}")
    client.wait(bad, 10)
    listing = _cli(daemon, "ls", "failed")
    assert bad in listing.stdout and "bad_envelope" in listing.stdout
    shown = _cli(daemon, "show", ok)
    assert "state: done" in shown.stdout and '"pong": true' in shown.stdout and "audit:" in shown.stdout
    assert _cli(daemon, "retry", bad).returncode == 1  # never accepted: retrying can't help
    audit = _cli(daemon, "audit", "--op", "ping", "--outcome", "done", "--since", "1h")
    assert [json.loads(line)["id"] for line in audit.stdout.splitlines()] == [ok]
    assert _cli(daemon, "audit", "--outcome", "rejected").stdout.count(bad) == 1
    assert "pruned" in _cli(daemon, "prune").stdout
    daemon.stop()
    stopped = _cli(daemon, "status")
    assert stopped.returncode == 1 and "NOT RUNNING" in stopped.stdout


def test_request_cli_prints_the_id_and_waits(daemon):
    env = {**os.environ, "CARME_SPOOL": str(daemon.spool_dir), "CARME_SIGNER": "frontend",
           "CARME_KEY": str(daemon.key_dir / "frontend.key")}
    result = subprocess.run([str(Path(sys.executable).parent / "carme-backend"), "request",
                             "--wait", "10", "whoami"], capture_output=True, text=True, env=env)
    assert result.returncode == 0
    request_id, body = result.stdout.split("\n", 1)
    assert json.loads(body)["id"] == request_id and json.loads(body)["result"]["signer"] == "frontend"
    bad = subprocess.run([str(Path(sys.executable).parent / "carme-backend"), "request",
                          "stop_job", "name=a;b", "user=carmetest1"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "name" in bad.stderr


def test_check_config_names_file_and_key(make_daemon, tmp_path):
    daemon = make_daemon({"daemon": {"workers": "four"}})
    result = _cli(daemon, "check-config")
    assert result.returncode == 2
    assert str(daemon.config) in result.stderr and "[daemon] workers" in result.stderr
    ok = make_daemon(name="ok")
    assert _cli(ok, "check-config").returncode == 0
    Spool(ok.spool_dir).folder("done").chmod(0o777)
    result = _cli(ok, "check-config")
    assert result.returncode == 1 and "writable by others" in result.stderr


def test_sd_notify_ready_and_stopping(make_daemon, tmp_path):
    import socket
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    daemon = make_daemon()
    os.environ["NOTIFY_SOCKET"] = str(path)
    try:
        daemon.start()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    assert sock.recv(1024).startswith(b"READY=1")
    daemon.stop()
    assert sock.recv(1024).startswith(b"STOPPING=1")
