"""The outbox: direct messages the daemon owes users ("job started", "job scheduled", …),
kept in ``spool/outbox/<id>.json`` (root only) until Mattermost has them.

A notice is written to the outbox before it is queued, and removed once Mattermost took it
or refused it for good (an unknown user: logged). So a notice outlives a Mattermost outage
— sending pauses with the ``[retry]`` backoff (a Retry-After is a floor) and resumes in
order, until a notice is older than ``max_age`` and is logged as given up — and a daemon
restart or crash: the outbox is scanned at start and every minute, by whichever daemon
runs. Sending never holds up an operation and never fails one: the job started or stopped
regardless, and the event is in jobs/<id>.json and the log.

Delivery is at least once: a daemon killed between Mattermost's answer and the removal
sends that notice again. Daemons sharing a spool (or an old and a new config during a
reload) flock a notice while sending it and skip one that is locked or gone, so two never
send the same notice.
"""

from __future__ import annotations

import fcntl
import heapq
import itertools
import json
import logging
import os
import threading
import time

from carme.daemon.errors import OperationError, Transient
from carme.spool import files
from carme.spool.layout import Spool, new_id

log = logging.getLogger("carme.daemon.notify")

#: Seconds between scans of the outbox for notices this Notices did not post.
RESCAN_INTERVAL = 60.0


class Notices:
    """The outbox and the one thread that sends it through ``messenger``, oldest first."""

    def __init__(self, messenger, spool: Spool, retry):
        self.messenger = messenger
        self.spool = spool
        self.retry = retry
        self._ready = threading.Condition()
        self._queue: list[tuple[float, int, str]] = []  # (created_at, tiebreak, path)
        self._known: set[str] = set()
        self._order = itertools.count()
        self._failures = 0
        self._resume_at = 0.0  # monotonic: no sending before, after a transient failure
        self._next_scan = 0.0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="notices", daemon=True)
        self._thread.start()

    # --- posting ----------------------------------------------------------------------
    def post(self, user: str, text: str) -> None:
        created_at = time.time()
        path = self.spool.file("outbox", new_id())
        files.replace(self.spool.dir("tmp"), path,
                      files.dumps({"user": user, "text": text, "created_at": created_at}),
                      mode=0o600)
        if self._closing:  # a handler outliving a reload: try now, else the next scan
            self._attempt(path)
        else:
            self._enqueue(created_at, path)

    def _enqueue(self, created_at: float, path: str) -> None:
        with self._ready:
            if path not in self._known:
                self._known.add(path)
                heapq.heappush(self._queue, (created_at, next(self._order), path))
                self._ready.notify()

    def _scan(self) -> None:
        self._next_scan = time.monotonic() + RESCAN_INTERVAL
        ids, strays = self.spool.entries("outbox")
        if strays:
            log.warning("ignoring %d stray name(s) in outbox/", len(strays))
        for notice_id in ids:
            path = self.spool.file("outbox", notice_id)
            notice = files.read_json(path)
            created_at = notice.get("created_at") if isinstance(notice, dict) else None
            # a notice without a usable time goes first: _attempt removes it if it is broken
            self._enqueue(created_at if isinstance(created_at, (int, float)) else 0.0, path)

    # --- sending ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            path = None
            try:
                if time.monotonic() >= self._next_scan and not self._closing:
                    self._scan()
                path = self._next()
                if path is None:
                    if self._closing:
                        return
                    continue
                self._attempt(path)
            except Exception:  # the sender must outlive any one notice or scan
                log.exception("notice sender: unexpected error; the outbox is scanned again "
                              "within %.0f s", RESCAN_INTERVAL)
                if path is not None:
                    self._done(path)

    def _next(self) -> str | None:
        """The oldest notice once sending may go on; None when it is time to scan, or
        when closing and nothing can be sent now."""
        with self._ready:
            while True:
                now = time.monotonic()
                sendable = self._queue and now >= self._resume_at
                if sendable:
                    return self._queue[0][2]
                if self._closing:
                    return None
                wake = self._next_scan if not self._queue else min(self._next_scan,
                                                                    self._resume_at)
                if wake <= now:
                    return None
                self._ready.wait(wake - now)

    def _attempt(self, path: str) -> None:
        """Send one notice under its flock; it leaves the queue unless Mattermost is
        away, in which case sending pauses and it stays first in line."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return self._done(path)  # another daemon sent it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._done(path)  # another daemon is sending it; a scan finds it if left
            if os.fstat(fd).st_nlink == 0:
                return self._done(path)
            with os.fdopen(os.dup(fd), "rb") as f:
                notice = json.loads(f.read())
            user, text, created_at = notice["user"], notice["text"], float(notice["created_at"])
            if self._deliver(user, text, created_at):
                os.unlink(path)
                self._done(path)
        except (ValueError, KeyError, TypeError):
            log.error("outbox/%s is not a notice; removed", os.path.basename(path))
            os.unlink(path)
            self._done(path)
        finally:
            os.close(fd)

    def _deliver(self, user: str, text: str, created_at: float) -> bool:
        """True once the notice is finished with: sent, refused for good, or too old."""
        try:
            self.messenger.send(user, text)
        except Transient as error:
            age = time.time() - created_at
            if age >= self.retry.max_age:
                log.warning("gave up notifying %s after %.0f s (%s): %s", user, age, error.code,
                            error.message)
                return True
            self._pause(error)
            return False
        except OperationError as error:
            log.warning("could not notify %s (%s): %s", user, error.code, error.message)
        except Exception:
            log.exception("notice to %s failed unexpectedly", user)
        with self._ready:
            self._failures = 0
        return True

    def _pause(self, error: Transient) -> None:
        with self._ready:
            self._failures += 1
            delay = self.retry.delay(self._failures, error.retry_after)
            self._resume_at = time.monotonic() + delay
        log.info("Mattermost unavailable (%s); notices wait %.0f s", error.code, delay)

    def _done(self, path: str) -> None:
        with self._ready:
            self._known.discard(path)
            if self._queue and self._queue[0][2] == path:
                heapq.heappop(self._queue)
            elif path in {item[2] for item in self._queue}:
                self._queue = [item for item in self._queue if item[2] != path]
                heapq.heapify(self._queue)

    # --- the service ------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Send what can be sent now (for up to ``timeout`` seconds), then stop; what is
        left stays in the outbox for the next daemon."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)

    def health(self) -> str:
        with self._ready:
            waiting = len(self._queue)
        return f"outbox:{waiting}" + (" (Mattermost unavailable)" if self._failures else "")
