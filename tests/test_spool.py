"""The spool protocol: round trips, every rejection, tampering, claiming, crash safety."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carme.spool import CarmeBackend, SpoolClient, keys, write_request
from carme.spool.envelope import canonical, parse
from carme.spool.errors import IdClash, KeyFileError, Rejection
from carme.spool.queue import Outcome, Queue
from spoolkit import VALID_ARGS, make_kit


@pytest.fixture
def kit(tmp_path):
    return make_kit(tmp_path)


def write(kit, op="ping", args=None, signer="frontend", **kw):
    return write_request(kit.spool, signer, kit.signing_key(signer), op,
                         VALID_ARGS[op] if args is None else args, **kw)


def accept_one(kit, request_id, verifier=None):
    queue = Queue(kit.spool, verifier or kit.verifier(), durable=False)
    claim = queue.claim(request_id)
    assert claim is not None
    return queue, claim, queue.accept(claim)


def reject_reason(kit, request_id, verifier=None) -> str:
    queue = Queue(kit.spool, verifier or kit.verifier(), durable=False)
    claim = queue.claim(request_id)
    with pytest.raises(Rejection) as info:
        queue.accept(claim)
    return info.value.code


@pytest.mark.parametrize("op", sorted(VALID_ARGS))
def test_every_operation_round_trips(kit, op):
    signer = "hooks" if op == "job_event" else "frontend"
    request_id = write(kit, op, signer=signer)
    assert not list(kit.spool.folder("tmp").iterdir())
    _, _, request = accept_one(kit, request_id)
    assert (request.id, request.op, request.signer, request.args) == (request_id, op, signer,
                                                                       VALID_ARGS[op])


def test_done_response_and_audit_and_no_ledger_record_for_a_first_try(kit):
    request_id = write(kit, "ping")
    queue, claim, _ = accept_one(kit, request_id)
    queue.complete(claim, Outcome("ok", {"pong": True}))
    assert kit.spool.request_path("done", request_id).exists()
    response = json.loads(kit.spool.response_path(request_id).read_text())
    assert (response["status"], response["result"]) == ("ok", {"pong": True})
    (line,) = kit.spool.audit_path.read_text().splitlines()
    assert json.loads(line)["outcome"] == "done"
    assert queue.ledger.get(request_id) is None  # archived: that is the replay guard


def test_a_ledger_record_is_never_seen_half_written(kit):
    """Readers (the replay guard, recovery, admins) race the record's holder: each read
    must find the old record or the new one."""
    from carme.spool.ledger import Ledger
    ledger = Ledger(kit.spool)
    ledger.remember("a" * 32, b"raw", attempts=0, last_error="x" * 4000)
    torn, done = [], threading.Event()

    def read_while_written():
        while not done.is_set():
            if ledger.get("a" * 32) is None:
                torn.append(1)

    reader = threading.Thread(target=read_while_written)
    reader.start()
    for attempt in range(1, 2001):
        ledger.update("a" * 32, attempts=attempt)
    done.set()
    reader.join()
    assert not torn
    assert ledger.get("a" * 32)["attempts"] == 2000


def test_secret_is_stripped_from_done_and_failed(kit):
    client = SpoolClient(kit.spool.root, "frontend", kit.signing_key("frontend"),
                         seal_to=kit.key_dir / "seal.pub")
    for status in ("ok", "error"):
        request_id = client.set_password("uid=a,dc=x", "carmetest1", "hunter2-secret")
        queue, claim, request = accept_one(kit, request_id)
        private = keys.load_seal_private(kit.key_dir / "seal.key")
        assert keys.unseal(private, request.args["password_sealed"]) == "hunter2-secret"
        queue.complete(claim, Outcome(status, code=None if status == "ok" else "ldap_error",
                                      message=None if status == "ok" else "nope"))
        state = "done" if status == "ok" else "failed"
        kept = json.loads(kit.spool.request_path(state, request_id).read_text())
        assert "password_sealed" not in kept["args"]
        assert request.args["password_sealed"] not in kit.spool.audit_path.read_text()


def test_unknown_signer_and_wrong_key_and_op_not_allowed(kit):
    assert reject_reason(kit, write(kit, signer="intruder")) == "unknown_signer"
    forged = write_request(kit.spool, "frontend", kit.signing_key("intruder"), "ping", {})
    assert reject_reason(kit, forged) == "bad_signature"
    assert reject_reason(kit, write(kit, "job_event", signer="frontend")) == "op_not_allowed"
    assert reject_reason(kit, write(kit, "ping", signer="hooks")) == "op_not_allowed"


def test_expired_future_and_overlong(kit):
    assert reject_reason(kit, write(kit, now=time.time() - 1000)) == "expired"
    assert reject_reason(kit, write(kit, now=time.time() + 600)) == "from_future"
    assert reject_reason(kit, write(kit, ttl=86400)) == "ttl_too_long"


def test_wrong_owner_when_owners_are_configured(kit):
    verifier = kit.verifier(owners=frozenset({12345}))
    assert reject_reason(kit, write(kit), verifier) == "bad_owner"


def _drop(kit, data: bytes, name: str | None = None) -> str:
    request_id = name or os.urandom(16).hex()
    kit.spool.request_path("incoming", request_id).write_bytes(data)
    return request_id


def _signed_obj(kit, op="ping", args=None, **changes) -> dict:
    unsigned = {"v": 1, "id": os.urandom(16).hex(), "op": op, "signer": "frontend",
                "issued_at": time.time(), "expires_at": time.time() + 60,
                "args": VALID_ARGS.get(op, {}) if args is None else args}
    unsigned.update(changes)
    sig = kit.signing_key("frontend").sign(canonical(unsigned)).signature
    return {**unsigned, "sig": base64.b64encode(sig).decode()}


@pytest.mark.parametrize("data,code", [
    (b"", "bad_json"),
    (b"{not json", "bad_json"),
    (b"\xff\xfe", "bad_json"),
    (b"[1,2]", "bad_json"),
    (b"{}", "bad_envelope"),
    (b"x" * (64 * 1024 + 1), "oversize"),
])
def test_malformed_files(kit, data, code):
    assert reject_reason(kit, _drop(kit, data)) == code


@pytest.mark.parametrize("change,code", [
    ({"v": 2}, "unknown_version"),
    ({"op": "format_disk"}, "unknown_op"),
    ({"extra": 1}, "unknown_field"),
    ({"issued_at": "yesterday"}, "bad_envelope"),
    ({"args": {"user": "x"}}, "unknown_field"),
])
def test_bad_envelopes(kit, change, code):
    obj = _signed_obj(kit, **change)
    assert reject_reason(kit, _drop(kit, json.dumps(obj).encode(), obj["id"])) == code


def test_missing_signature(kit):
    obj = _signed_obj(kit)
    del obj["sig"]
    assert reject_reason(kit, _drop(kit, json.dumps(obj).encode(), obj["id"])) == "missing_signature"


@pytest.mark.parametrize("field,value", [
    ("gpus", "1"), ("gpus", True), ("gpus", -1), ("nodes", 0), ("name", "a;b"),
    ("name", "x" * 65), ("user", "Root!"), ("mounts", "/home"), ("mounts", ["relative"]),
    ("image", "/x\n"), ("time_limit", 1.5),
])
def test_bad_argument_types_and_bounds(kit, field, value):
    args = {**VALID_ARGS["start_job"], field: value}
    obj = _signed_obj(kit, "start_job", args)
    assert reject_reason(kit, _drop(kit, json.dumps(obj).encode(), obj["id"])) == "bad_args"
    with pytest.raises(Rejection):
        write(kit, "start_job", args)  # the writer refuses it too


def test_file_named_for_another_id(kit):
    obj = _signed_obj(kit)
    assert reject_reason(kit, _drop(kit, json.dumps(obj).encode())) == "bad_envelope"


def test_tampering_any_byte_breaks_verification(kit):
    request_id = write(kit, "send_message")
    raw = kit.spool.request_path("incoming", request_id).read_bytes()
    kit.spool.request_path("incoming", request_id).unlink()
    verifier = kit.verifier()
    for index in range(len(raw)):
        tampered = bytearray(raw)
        tampered[index] ^= 0x01
        with pytest.raises(Rejection):
            verifier.verify(bytes(tampered))
    assert verifier.verify(raw).id == request_id


def test_replay_after_done_and_duplicate_in_flight(kit):
    request_id = write(kit)
    raw = kit.spool.request_path("incoming", request_id).read_bytes()
    queue, claim, _ = accept_one(kit, request_id)
    # the same bytes again while the first is active: never overwrites the active file
    _drop(kit, raw, request_id)
    assert queue.claim(request_id) is None
    assert kit.spool.request_path("active", request_id).read_bytes() == raw
    queue.complete(claim, Outcome("ok", {}))
    # the same bytes again after it finished: a replay, kept aside, the response untouched
    response = kit.spool.response_path(request_id).read_bytes()
    _drop(kit, raw, request_id)
    assert reject_reason(kit, request_id) == "replay"
    assert kit.spool.response_path(request_id).read_bytes() == response


def test_replayed_file_is_archived_without_touching_the_original(kit):
    request_id = write(kit)
    raw = kit.spool.request_path("incoming", request_id).read_bytes()
    queue, claim, _ = accept_one(kit, request_id)
    queue.complete(claim, Outcome("ok", {"pong": True}))
    _drop(kit, raw, request_id)
    claim = queue.claim(request_id)
    with pytest.raises(Rejection) as info:
        queue.accept(claim)
    queue.complete(claim, Outcome("rejected", code=info.value.code, message=info.value.reason))
    assert json.loads(kit.spool.response_path(request_id).read_text())["status"] == "ok"
    assert (kit.spool.folder("failed") / f"{request_id}~1.json").exists()
    assert "replay" in (kit.spool.folder("failed") / f"{request_id}~1.reason").read_text()


def test_redelivery_after_a_crash_is_accepted_once(kit):
    request_id = write(kit, ttl=60)
    queue, claim, _ = accept_one(kit, request_id)
    # the claimer dies: its lock goes with it, and a successor takes the claim back
    claim.release()
    successor = Queue(kit.spool, kit.verifier(), durable=False)
    assert successor.recover() == [request_id]
    claim = successor.claim(request_id)
    assert successor.accept(claim).id == request_id
    assert claim.attempts == 1
    successor.complete(claim, Outcome("ok", {}))


def test_recover_leaves_a_live_claimers_work_alone(kit):
    request_id = write(kit)
    accept_one(kit, request_id)  # claimed by this (live) process
    other = Queue(kit.spool, kit.verifier(), durable=False)
    assert other.recover() == []
    assert kit.spool.request_path("active", request_id).exists()


def test_two_concurrent_claimers_never_both_win(kit):
    ids = [write(kit) for _ in range(200)]
    queues = [Queue(kit.spool, kit.verifier(), durable=False) for _ in range(4)]
    wins: list[list[str]] = [[] for _ in queues]
    barrier = threading.Barrier(len(queues))

    def race(index):
        barrier.wait()
        for request_id in ids:
            if queues[index].claim(request_id) is not None:
                wins[index].append(request_id)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(queues))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [request_id for won in wins for request_id in won]
    assert sorted(claimed) == sorted(ids)


def test_symlink_fifo_hardlink_and_directory_are_never_read(kit, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(_signed_obj(kit)))
    queue = Queue(kit.spool, kit.verifier(), durable=False)
    link_id = os.urandom(16).hex()
    os.symlink(secret, kit.spool.request_path("incoming", link_id))
    assert queue.claim(link_id) is None
    assert kit.spool.reason_path(link_id).read_text().startswith("not_regular")
    fifo_id = os.urandom(16).hex()
    os.mkfifo(kit.spool.request_path("incoming", fifo_id))
    assert reject_reason(kit, fifo_id) == "not_regular"
    hard_id = os.urandom(16).hex()
    os.link(secret, kit.spool.request_path("incoming", hard_id))
    assert reject_reason(kit, hard_id) == "hard_linked"
    dir_id = os.urandom(16).hex()
    kit.spool.request_path("incoming", dir_id).mkdir()
    assert queue.claim(dir_id) is None
    assert "not_regular" in kit.spool.reason_path(dir_id).read_text()


def test_stray_names_are_reported_not_listed(kit):
    (kit.spool.folder("incoming") / "README").write_text("hi")
    request_id = write(kit)
    assert kit.spool.entries("incoming") == ([request_id], ["README"])


WRITER_KILLED_SCRIPT = """
import os, sys, time
from carme.spool import files
def slow_rename(*a, **k):
    print("in tmp", flush=True); time.sleep(60)
os.rename = slow_rename
from carme.spool import write_request, keys
from carme.spool.layout import Spool
write_request(Spool(sys.argv[1]), "frontend", keys.load_signing_key(sys.argv[2]), "ping", {})
"""


def test_writer_killed_between_tmp_and_rename_leaves_nothing_in_incoming(kit):
    writer = subprocess.Popen([sys.executable, "-c", WRITER_KILLED_SCRIPT, str(kit.spool.root),
                               str(kit.key_dir / "frontend.key")], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "in tmp"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert kit.spool.entries("incoming") == ([], [])
    assert len(list(kit.spool.folder("tmp").iterdir())) == 1
    queue = Queue(kit.spool, kit.verifier(), durable=False)
    assert queue.prune(retention=3600, tmp_age=0)["tmp"] == 1


def test_writer_removes_its_tmp_file_on_error(kit, monkeypatch):
    def broken_rename(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError):
        write(kit)
    assert list(kit.spool.folder("tmp").iterdir()) == []


def test_id_clash_is_an_error(kit):
    request_id = write(kit)
    with pytest.raises(IdClash):
        write(kit, request_id=request_id)


def test_keygen_refuses_to_overwrite_and_private_keys_are_0600(kit):
    with pytest.raises(KeyFileError):
        keys.generate_signer(kit.key_dir, "frontend")
    assert (kit.key_dir / "frontend.key").stat().st_mode & 0o777 == 0o600
    (kit.key_dir / "frontend.key").chmod(0o644)
    with pytest.raises(KeyFileError, match="lets others read"):
        keys.load_signing_key(kit.key_dir / "frontend.key")
    wrong_kind = kit.key_dir / "copy-of-pub.key"
    wrong_kind.write_text((kit.key_dir / "frontend.pub").read_text())
    wrong_kind.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a signing-key"):
        keys.load_signing_key(wrong_kind)


def test_retry_moves_failed_back_and_accepts_once_more(kit):
    request_id = write(kit)
    queue, claim, _ = accept_one(kit, request_id)
    queue.complete(claim, Outcome("error", code="boom", message="transient thing"))
    assert queue.retry(request_id) == "failed"
    claim = queue.claim(request_id)
    assert queue.accept(claim).id == request_id
    assert claim.attempts == 2


def test_deferred_is_due_only_after_its_time(kit):
    request_id = write(kit)
    queue, claim, _ = accept_one(kit, request_id)
    queue.complete(claim, Outcome("deferred", code="down", message="down", retry_at=time.time() + 60))
    assert queue.due_deferred() == []
    assert queue.due_deferred(now=time.time() + 61) == [request_id]
    claim = queue.claim(request_id, "deferred")
    queue.accept(claim)
    assert claim.attempts == 2


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_ever_reject(raw):
    with pytest.raises(Rejection):
        parse(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "id", "op", "signer", "issued_at", "expires_at",
                                        "args", "sig", "x"]), json_values))
def test_arbitrary_json_envelopes_only_ever_reject(obj):
    with pytest.raises(Rejection):
        parse(json.dumps(obj).encode())


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(sorted(VALID_ARGS)), st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_arbitrary_args_never_raise_anything_but_rejection(op, args):
    from carme.spool.schema import check_args
    try:
        check_args(op, args)
    except Rejection:
        pass


def test_compat_facade_returns_what_the_original_returned(kit):
    client = SpoolClient(kit.spool.root, "frontend", kit.signing_key("frontend"),
                         seal_to=kit.key_dir / "seal.pub")
    backend = CarmeBackend(client, timeout=10)
    outcomes = {"ping": Outcome("ok", {"pong": True}), "whoami": Outcome("ok", {"signer": "frontend"}),
                "start_job": Outcome("ok", {"slurm_job_id": 5}),
                "stop_job": Outcome("error", code="slurm", message="nope"),
                "set_trigger": Outcome("ok", {}), "send_message": Outcome("ok", {}),
                "set_password": Outcome("ok", {})}
    stop = threading.Event()

    def responder():
        queue = Queue(kit.spool, kit.verifier(), durable=False)
        while not stop.is_set():
            for request_id in kit.spool.entries("incoming")[0]:
                claim = queue.claim(request_id)
                request = queue.accept(claim)
                queue.complete(claim, outcomes[request.op])
            time.sleep(0.005)

    thread = threading.Thread(target=responder, daemon=True)
    thread.start()
    try:
        assert backend.ping() == "pong"
        assert backend.whoami() == "frontend"
        assert backend.StartJob("carmetest1", 42, "/i.sif", "/home/a /scratch", "gpu", 1, 1, "j1", "a100") == 0
        assert backend.StopJob(42, "j1", "carmetest1") != 0
        assert backend.SetTrigger(5, "carmetest1", "j1") == 0
        assert backend.SendMessage("carmetest1", "hi") == 0
        assert backend.SetPassword("uid=carmetest1,dc=x", "carmetest1", "pw-123456") == 1
    finally:
        stop.set()
        thread.join()


def test_a_claim_killed_between_link_and_unlink_is_taken_over(kit):
    request_id = write(kit)
    os.link(kit.spool.request_path("incoming", request_id), kit.spool.request_path("active", request_id))
    queue, claim, request = accept_one(kit, request_id)
    assert request.id == request_id
    assert kit.spool.entries("incoming") == ([], [])


def test_recovered_request_whose_response_was_written_is_concluded_not_rerun(kit):
    request_id = write(kit)
    queue, claim, request = accept_one(kit, request_id)
    queue._write_response(claim, Outcome("ok", {"pong": True}))
    claim.release()  # the claimer dies after writing the response, before archiving
    successor = Queue(kit.spool, kit.verifier(), durable=False)
    assert successor.recover() == [request_id]
    claim = successor.claim(request_id)
    assert successor.accept(claim) is None
    assert kit.spool.request_path("done", request_id).exists()
    (line,) = [json.loads(x) for x in kit.spool.audit_path.read_text().splitlines()]
    assert (line["id"], line["outcome"], line["recovered"]) == (request_id, "done", True)


def test_expired_request_recovered_after_a_crash_is_still_carried_out(kit):
    request_id = write(kit, ttl=60)
    queue, claim, _ = accept_one(kit, request_id)
    claim.release()
    successor = Queue(kit.spool, kit.verifier(), durable=False)
    successor.recover()
    successor.verifier.clock = lambda: time.time() + 3600  # an hour later: expired
    claim = successor.claim(request_id)
    assert successor.accept(claim).id == request_id
