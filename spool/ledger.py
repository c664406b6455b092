"""The ledger: records of requests that live longer than one attempt, ``ledger/<id>.json``.

Replays are refused without it: an id whose request is archived (done/, failed/) or
waiting (deferred/) is taken, and a second file under an id in flight cannot be claimed
(carme.spool.queue). The ledger keeps what those places cannot: the attempts, next retry
and last error of a deferred request, and the mark that a recovered or admin-retried
request was accepted before — with its fingerprint, so only that same request comes back
in, and is judged by the retry policy rather than by its expiry.

Only the holder of a request's claim (or, for an unclaimed request, recovery and the
admin) writes its record, and each write replaces the whole record (tmp/ + rename), so
readers — the replay guard, recovery, an admin's ``show`` — see the old record or the new
one, never a torn one (a torn one would read as "no record", and a deferred request would
come back judged as new). A request that ends on its first attempt — nearly all — never
gets one, so this costs the hot path nothing.
"""

from __future__ import annotations

import hashlib
import os
import time

from carme.spool import files
from carme.spool.errors import Rejection
from carme.spool.layout import Spool, is_valid_id

FINAL_STATES = ("done", "failed")
WAITING_STATES = ("incoming", "active", "deferred")


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class Ledger:
    def __init__(self, spool: Spool):
        self.spool = spool

    def get(self, request_id: str) -> dict | None:
        return files.read_json(self.spool.file("ledger", request_id))

    def accepted_before(self, request_id: str, raw: bytes) -> dict | None:
        """The record of ``raw`` if it was accepted before and has not ended (a deferred,
        recovered or retried request); None for a new id. Raises ``Rejection("replay")``
        for an id that is taken: archived, waiting in deferred/, or recorded for another
        request."""
        entry = self.get(request_id)
        if entry is None:
            if any(self._exists(state, request_id) for state in (*FINAL_STATES, "deferred")):
                raise Rejection("replay", "this request id was already used")
            return None
        if entry.get("sha256") != digest(raw):
            raise Rejection("replay", "this request id was already used by a different request")
        if entry.get("state") in FINAL_STATES or any(self._exists(s, request_id) for s in FINAL_STATES):
            raise Rejection("replay", "this request was already handled")
        return entry

    def _exists(self, state: str, request_id: str) -> bool:
        return os.path.lexists(self.spool.file(state, request_id))

    def remember(self, request_id: str, raw: bytes, **fields) -> dict:
        """Start (or restart) the record of the request whose bytes are ``raw``."""
        return self.update(request_id, {"id": request_id, "sha256": digest(raw)}, **fields)

    def update(self, request_id: str, entry: dict | None = None, **fields) -> dict:
        """Replace a record with ``fields`` changed; pass ``entry`` when the caller holds
        the current record, to spare a read."""
        entry = dict(entry if entry is not None else (self.get(request_id) or {"id": request_id}))
        entry.update(fields)
        files.replace(self.spool.dir("tmp"), self.spool.file("ledger", request_id),
                      files.dumps(entry), mode=0o600)
        return entry

    def prune(self, max_skew: float, now: float | None = None) -> int:
        """Remove records whose request has expired and waits nowhere any more."""
        now = time.time() if now is None else now
        removed = 0
        for name in os.listdir(self.spool.folder("ledger")):
            entry = files.read_json(self.spool.folder("ledger") / name)
            if (entry is None or not is_valid_id(entry.get("id"))
                    or entry.get("expires_at", 0) + max_skew >= now):
                continue
            if not any(self._exists(state, entry.get("id", "")) for state in WAITING_STATES):
                os.unlink(self.spool.folder("ledger") / name)
                removed += 1
        return removed
