"""The notice outbox (carme.daemon.outbox): notices outlive a Mattermost outage and a
daemon restart, go out in order and once. The messenger here is a recorder that can be
told to fail the way the Mattermost client does (Transient with Retry-After, Permanent);
the real client and the stand-in are exercised in test_messaging."""

from __future__ import annotations

import threading
import time

import pytest

from carme.daemon.config import RetryConfig
from carme.daemon.errors import Permanent, Transient
from carme.daemon.outbox import Notices
from carme.spool.layout import Spool

FAST = RetryConfig(initial_delay=0.05, max_delay=0.2, max_age=60)


class Recorder:
    """A messenger: records what it sent; ``down`` makes it fail like a Mattermost outage."""

    def __init__(self):
        self.sent: list[tuple[str, str]] = []
        self.down = False
        self.refuse: set[str] = set()
        self.lock = threading.Lock()

    def send(self, user: str, text: str) -> None:
        if self.down:
            raise Transient("mattermost_unavailable", "503 from Mattermost")
        if user in self.refuse:
            raise Permanent("unknown_user", f"Mattermost has no user {user!r}")
        with self.lock:
            self.sent.append((user, text))


@pytest.fixture
def spool(tmp_path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.create()
    return spool


def outbox(spool: Spool) -> list[str]:
    return spool.entries("outbox")[0]


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_notices_go_out_in_order_and_leave_the_outbox(spool):
    recorder = Recorder()
    notices = Notices(recorder, spool, FAST)
    for n in range(20):
        notices.post("alice", f"n{n}")
    wait_until(lambda: len(recorder.sent) == 20)
    notices.close()
    assert recorder.sent == [("alice", f"n{n}") for n in range(20)]
    assert outbox(spool) == []


def test_an_outage_pauses_sending_and_loses_nothing(spool):
    recorder = Recorder()
    recorder.down = True
    notices = Notices(recorder, spool, FAST)
    for n in range(5):
        notices.post("alice", f"n{n}")
    time.sleep(0.5)  # several failed attempts, with backoff
    assert recorder.sent == [] and len(outbox(spool)) == 5
    assert "unavailable" in notices.health()
    recorder.down = False
    wait_until(lambda: len(recorder.sent) == 5)
    notices.close()
    assert recorder.sent == [("alice", f"n{n}") for n in range(5)]
    assert outbox(spool) == []


def test_what_a_stopped_daemon_owed_is_sent_by_the_next(spool):
    recorder = Recorder()
    recorder.down = True
    first = Notices(recorder, spool, FAST)
    first.post("alice", "started")
    first.post("alice", "finished")
    first.close()  # Mattermost still down: the notices stay
    assert len(outbox(spool)) == 2
    recorder.down = False
    second = Notices(recorder, spool, FAST)
    wait_until(lambda: len(recorder.sent) == 2)
    second.close()
    assert recorder.sent == [("alice", "started"), ("alice", "finished")]


def test_a_refused_notice_is_dropped_and_the_rest_go_on(spool, caplog):
    recorder = Recorder()
    recorder.refuse = {"ghost"}
    notices = Notices(recorder, spool, FAST)
    notices.post("ghost", "to nobody")
    notices.post("alice", "hello")
    wait_until(lambda: recorder.sent == [("alice", "hello")])
    notices.close()
    assert outbox(spool) == []
    assert "could not notify ghost (unknown_user)" in caplog.text


def test_a_notice_older_than_max_age_is_given_up(spool, caplog):
    recorder = Recorder()
    recorder.down = True
    notices = Notices(recorder, spool, RetryConfig(initial_delay=0.05, max_delay=0.1, max_age=0.3))
    notices.post("alice", "late")
    wait_until(lambda: outbox(spool) == [])
    notices.close()
    assert recorder.sent == []
    assert "gave up notifying alice" in caplog.text


def test_a_notice_posted_after_close_is_sent_at_once(spool):
    recorder = Recorder()
    notices = Notices(recorder, spool, FAST)
    notices.close()
    notices.post("alice", "from a handler that outlived a reload")
    assert recorder.sent == [("alice", "from a handler that outlived a reload")]
    assert outbox(spool) == []


def test_two_senders_on_one_outbox_send_each_notice_once(spool):
    """Daemons sharing a spool (or old and new config during a reload) both find every
    notice left in the outbox."""
    recorder = Recorder()
    recorder.down = True
    writer = Notices(recorder, spool, FAST)
    for n in range(30):
        writer.post("alice", f"n{n}")
    writer.close()
    recorder.down = False
    peers = [Notices(recorder, spool, FAST) for _ in range(2)]
    wait_until(lambda: outbox(spool) == [])
    for peer in peers:
        peer.close()
    assert sorted(recorder.sent) == sorted(("alice", f"n{n}") for n in range(30))


def test_a_broken_file_in_the_outbox_is_removed_not_fatal(spool, caplog):
    recorder = Recorder()
    (spool.folder("outbox") / ("e" * 32 + ".json")).write_text('{"user": "alice"}')
    notices = Notices(recorder, spool, FAST)
    notices.post("alice", "after the broken one")
    wait_until(lambda: recorder.sent == [("alice", "after the broken one")])
    wait_until(lambda: outbox(spool) == [])
    notices.close()
    assert "is not a notice; removed" in caplog.text
