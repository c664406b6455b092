"""The ledger: one small record per request id, ``ledger/<id>.json``.

It is the replay guard (an id is accepted once: a second file under the same id, or the
same file after it finished, is rejected) and the place where a request's life is kept:
who claimed it, how often it was tried, when it is due again, why it last failed.

A record is created with ``O_EXCL``, so of two daemons sharing a spool only one can accept
a new id. Records of finished requests are kept until the request's expiry (plus clock
skew) has passed: after that the verifier rejects the request as expired anyway.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from carme.spool import files
from carme.spool.envelope import Request
from carme.spool.errors import Rejection
from carme.spool.layout import Spool

FINAL_STATES = ("done", "failed")


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb", closefd=True) as f:
        f.write(data)


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class Ledger:
    def __init__(self, spool: Spool):
        self.spool = spool

    def get(self, request_id: str) -> dict | None:
        return files.read_json(self.spool.ledger_path(request_id))

    def accepted_before(self, request_id: str, raw: bytes) -> dict | None:
        """The record of ``raw`` if this ledger accepted it before and it has not finished
        (a redelivery after a crash, a deferred retry, or an admin's retry); None if the id
        is new. Raises ``Rejection("replay")`` for anything else under a known id."""
        entry = self.get(request_id)
        if entry is None:
            return None
        if entry.get("sha256") != digest(raw):
            raise Rejection("replay", "this request id was already used by a different request")
        if entry.get("state") in FINAL_STATES or self._archived(request_id):
            raise Rejection("replay", "this request was already handled")
        return entry

    def _archived(self, request_id: str) -> bool:
        return any(self.spool.request_path(state, request_id).exists()
                   for state in FINAL_STATES)

    def unfinished(self) -> list[dict]:
        """Records of requests that are claimed, deferred or retried (not yet final)."""
        found = []
        for name in os.listdir(self.spool.folder("ledger")):
            entry = files.read_json(self.spool.folder("ledger") / name)
            if entry is not None and entry.get("state") not in FINAL_STATES and "id" in entry:
                found.append(entry)
        return found

    def open(self, request: Request, claimer: str) -> dict:
        """Record a newly accepted request; a record appearing meanwhile is a replay race."""
        now = time.time()
        entry = {"id": request.id, "sha256": digest(request.raw), "op": request.op,
                 "signer": request.signer, "expires_at": request.expires_at, "state": "active",
                 "claimed_by": claimer, "first_claimed_at": now, "attempts": 0}
        path = self.spool.ledger_path(request.id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            if files.read_json(path) is not None:
                raise Rejection("replay", "this request id was accepted by another daemon") from None
            # a record torn by a crash while it was being created: ours to rewrite
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        _write_all(fd, files.dumps(entry))
        return entry

    def update(self, request_id: str, entry: dict | None = None, **fields) -> dict:
        """Change a record in place. Only the holder of the request's claim (or, for an
        unclaimed request, recovery and the admin) writes it, so no two writers race;
        a reader that catches it mid-write sees no record and looks again later.
        Pass ``entry`` when the caller holds the current record, to spare a read."""
        entry = dict(entry if entry is not None else (self.get(request_id) or {"id": request_id}))
        entry.update(fields)
        path = self.spool.ledger_path(request_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        _write_all(fd, files.dumps(entry))
        return entry

    def prune(self, max_skew: float, now: float | None = None) -> int:
        """Remove records of finished requests that have expired; return how many."""
        now = time.time() if now is None else now
        removed = 0
        for name in os.listdir(self.spool.folder("ledger")):
            path = self.spool.folder("ledger") / name
            entry = files.read_json(path)
            if (entry is not None and entry.get("state") in FINAL_STATES
                    and entry.get("expires_at", 0) + max_skew < now):
                Path(path).unlink(missing_ok=True)
                removed += 1
        return removed
