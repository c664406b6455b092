"""The daemon's side of the spool: claim a request, accept or reject it, and end it in
exactly one of done, failed or deferred, with one response and one audit line.

Claiming: open ``incoming/x`` (``O_NOFOLLOW``), take an exclusive ``flock`` on it, then
``link(incoming/x, active/x)`` and ``unlink(incoming/x)``. The lock is held until the
request has ended, so of several daemons only one can claim a file, and a claim whose
claimer died (its locks die with it) is recognised at once and taken back. ``link``
fails if ``active/x`` exists, so a second file under an id already in flight can never
overwrite the first. The claimed file is read through the locked descriptor after an
``fstat``: a symlink, a directory, a FIFO, a file with another hard link or an oversized
file is rejected without being read.

SECURITY: runs as root on files that an unprivileged portal wrote. It never follows a link,
never reads more than the size limit, never writes a secret into done/, failed/, a response
or the audit journal, and never lets a rejected duplicate overwrite an earlier record.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from carme.spool import files
from carme.spool.envelope import MAX_REQUEST_BYTES, Request
from carme.spool.errors import Rejection
from carme.spool.journal import Journal
from carme.spool.layout import Spool
from carme.spool.ledger import Ledger
from carme.spool.schema import SECRET_FIELDS
from carme.spool.verify import Verifier


@dataclass
class Claim:
    """A request file this process holds in ``active/``."""

    id: str
    path: str  # active/<id>.json
    fd: int  # open, holding the claim's flock until release()
    claimed_at: float = field(default_factory=time.monotonic)
    request: Request | None = None
    entry: dict | None = None  # its ledger record, if it was accepted before
    attempts: int = 1
    first_claimed_at: float = field(default_factory=time.time)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class Outcome:
    """How a request ended. ``status``: ok, error (failed), rejected, or deferred."""

    status: str
    result: dict | None = None
    code: str | None = None
    message: str | None = None
    retry_at: float | None = None


_NOT_A_FILE = -2


def _open_locked(path: Path) -> int | None:
    """An fd on ``path`` holding an exclusive flock; None if it is gone or another process
    holds the lock; ``_NOT_A_FILE`` for a symbolic link (never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            return _NOT_A_FILE
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _read(fd: int) -> tuple[bytes, int]:
    """The bytes and owner uid of a claimed request, checked through its descriptor."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise Rejection("not_regular", "request is not a regular file")
    if info.st_nlink != 1:
        raise Rejection("hard_linked", f"request file has {info.st_nlink} hard links")
    if info.st_size > MAX_REQUEST_BYTES:
        raise Rejection("oversize", f"request is {info.st_size} bytes; the limit is "
                        f"{MAX_REQUEST_BYTES}")
    return os.pread(fd, MAX_REQUEST_BYTES + 1, 0), info.st_uid


class Queue:
    def __init__(self, spool: Spool, verifier: Verifier, durable: bool = True):
        self.spool = spool
        self.verifier = verifier
        self.ledger = Ledger(spool)
        self.durable = durable
        self.journal = Journal(spool.audit_path, durable)

    # --- claiming -----------------------------------------------------------------------
    def claim(self, request_id: str, state: str = "incoming") -> Claim | None:
        """Lock ``state/<id>.json`` and move it into ``active/``; None if another claimer
        holds it or was first. A symlink or directory goes to failed/ at once."""
        source = self.spool.file(state, request_id)
        target = self.spool.file("active", request_id)
        fd = _open_locked(source)
        if fd is None:
            return None
        if fd == _NOT_A_FILE:
            self._reject_entry(request_id, source, Rejection("not_regular", "not a regular file"))
            return None
        try:
            if os.lstat(source).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError  # claimed and replaced meanwhile: not ours
            self._link_claim(fd, source, target)
        except FileNotFoundError:
            os.close(fd)
            return None
        except FileExistsError:
            os.close(fd)
            self._reject_entry(request_id, source,
                               Rejection("replay", "a request with this id is already in flight"))
            return None
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EPERM, errno.EISDIR):
                raise
            self._reject_entry(request_id, source, Rejection("not_regular", "not a regular file"))
            return None
        os.unlink(source)
        return Claim(request_id, target, fd)

    @staticmethod
    def _link_claim(fd: int, source: Path, target: Path) -> None:
        """``link(source, target)``. A ``target`` that is this very file is what a claimer
        killed between its link and unlink left behind: we hold the lock, so it is stale."""
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            if os.lstat(target).st_ino != os.fstat(fd).st_ino:
                raise
            os.unlink(target)
            os.link(source, target, follow_symlinks=False)

    def accept(self, claim: Claim) -> Request | None:
        """Read and verify a claimed file; raise ``Rejection`` with the reason if it fails.

        Returns None when there is nothing left to do: a recovered request whose claimer
        had written its response before dying is concluded here from that response."""
        raw, owner = _read(claim.fd)
        before = self.ledger.accepted_before(claim.id, raw)
        request = self.verifier.verify(raw, owner, check_freshness=before is None)
        if request.id != claim.id:
            raise Rejection("bad_envelope", f"file is named {claim.id} but holds request {request.id}")
        claim.request = request
        if before is not None:
            claim.entry = before
            claim.attempts = int(before.get("attempts", 0)) + 1
            claim.first_claimed_at = before.get("first_claimed_at", claim.first_claimed_at)
            if before.get("state") == "recovered" and self._conclude(claim):
                return None
        return request

    # --- ending -------------------------------------------------------------------------
    def complete(self, claim: Claim, outcome: Outcome, audit: dict | None = None) -> None:
        """End a claimed request: done, failed, rejected or deferred. For a final outcome
        one response and one audit line are written; a deferral only updates the ledger.
        The claim's lock is released last."""
        try:
            self._complete(claim, outcome, audit)
        finally:
            claim.release()

    def _complete(self, claim: Claim, outcome: Outcome, audit: dict | None) -> None:
        if outcome.status == "deferred":
            fields = dict(state="deferred", attempts=claim.attempts, next_attempt_at=outcome.retry_at,
                          last_error=outcome.message)
            if claim.entry is None:
                self._remember(claim.id, claim.request.raw, claim.first_claimed_at, **fields)
            else:
                self.ledger.update(claim.id, claim.entry, **fields)
            os.rename(claim.path, self.spool.file("deferred", claim.id))
            return
        if outcome.status == "rejected" and self._has_record(claim.id, outcome):
            self._reject_entry(claim.id, claim.path, Rejection(outcome.code, outcome.message))
            return
        state = "done" if outcome.status == "ok" else "failed"
        self._write_response(claim, outcome)
        if outcome.status != "ok":
            self._write_reason(self.spool.file("failed", claim.id, ".reason"), outcome.code,
                               outcome.message)
        self.audit(self._audit_line(claim, outcome, audit or {}))
        self._archive(claim, state)  # the commit point: before it, recovery concludes the request
        if claim.entry is not None:
            self.ledger.update(claim.id, claim.entry, state=state, attempts=claim.attempts,
                               finished_at=time.time(), last_error=outcome.message)

    def _remember(self, request_id: str, raw: bytes, first_claimed_at: float, **fields) -> dict:
        """Start a ledger record, with what an admin and the audit want to know."""
        try:
            obj = json.loads(raw)
            about = {k: obj.get(k) for k in ("op", "signer", "expires_at")}
        except (ValueError, AttributeError):
            about = {}
        return self.ledger.remember(request_id, raw, first_claimed_at=first_claimed_at,
                                    **about, **fields)

    def _has_record(self, request_id: str, outcome: Outcome) -> bool:
        """A rejected file whose id already has a record must not overwrite it."""
        return outcome.code == "replay" or os.path.exists(self.spool.file("responses", request_id))

    def _archive(self, claim: Claim, state: str) -> None:
        """Move the claimed file into done/ or failed/, without its secret fields."""
        target = self.spool.file(state, claim.id)
        request = claim.request
        if request is None or not SECRET_FIELDS.get(request.op):
            os.replace(claim.path, target)
            return
        obj = json.loads(request.raw)
        for name in SECRET_FIELDS[request.op]:
            obj["args"].pop(name, None)
        files.replace(self.spool.dir("tmp"), target, files.dumps(obj), mode=0o600)
        os.unlink(claim.path)

    def _reject_entry(self, request_id: str, source: Path, rejection: Rejection) -> None:
        """Keep a rejected duplicate (or non-file) as ``failed/<id>~<n>.json`` with its
        reason, leaving any earlier record of that id untouched. No response is written:
        the id's response belongs to the first request."""
        target = self.spool.request_path("failed", request_id)
        if target.exists() or self.spool.response_path(request_id).exists():
            n = 1
            while (target := self.spool.duplicate_path(request_id, n)).exists():
                n += 1
        os.rename(source, target)
        self._write_reason(self.spool.reason_path(request_id, target.name), rejection.code,
                           rejection.reason)
        self.audit({"time": time.time(), "id": request_id, "outcome": "rejected",
                    "code": rejection.code, "reason": rejection.reason, "file": target.name})

    def _write_reason(self, path: Path, code: str | None, message: str | None) -> None:
        files.replace(self.spool.dir("tmp"), path, f"{code}: {message}\n".encode())

    def _write_response(self, claim: Claim, outcome: Outcome) -> None:
        response = {"v": 1, "id": claim.id, "status": outcome.status, "finished_at": time.time()}
        if claim.request is not None:
            response["op"] = claim.request.op
        if outcome.status == "ok":
            response["result"] = outcome.result or {}
        else:
            response["error"] = {"code": outcome.code, "message": outcome.message}
        files.replace(self.spool.dir("tmp"), self.spool.file("responses", claim.id),
                      files.dumps(response), mode=0o644, durable=self.durable)

    def _audit_line(self, claim: Claim, outcome: Outcome, extra: dict) -> dict:
        request = claim.request
        line = {"time": time.time(), "id": claim.id,
                "outcome": {"ok": "done", "error": "failed"}.get(outcome.status, outcome.status),
                "attempts": claim.attempts,
                "duration": round(time.monotonic() - claim.claimed_at, 6)}
        if request is not None:
            line.update(op=request.op, signer=request.signer, user=request.user,
                        issued_at=request.issued_at)
        if outcome.status != "ok":
            line.update(code=outcome.code, reason=outcome.message)
        elif outcome.result and "slurm_job_id" in outcome.result:
            line["slurm_job_id"] = outcome.result["slurm_job_id"]
        line.update(extra)
        return line

    def audit(self, line: dict) -> None:
        self.journal.append(line)

    # --- scanning, recovery, pruning ----------------------------------------------------
    def due_deferred(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        ids, _ = self.spool.entries("deferred")
        due = []
        for request_id in ids:
            entry = self.ledger.get(request_id) or {}
            if (entry.get("next_attempt_at") or 0) <= now:
                due.append(request_id)
        return due

    def recover(self) -> list[str]:
        """Move claims nobody holds any more (their claimer died, and its lock with it)
        back to incoming/, marked in the ledger as accepted before: at-least-once delivery.
        Returns the ids moved back."""
        recovered = []
        for request_id in self.spool.entries("active")[0]:
            path = self.spool.request_path("active", request_id)
            fd = _open_locked(path)
            if fd is None or fd == _NOT_A_FILE:
                continue
            try:
                entry = self.ledger.get(request_id)
                if entry is None:
                    raw = os.pread(fd, MAX_REQUEST_BYTES + 1, 0)
                    self._remember(request_id, raw, time.time(), state="recovered", attempts=0)
                else:
                    self.ledger.update(request_id, entry, state="recovered")
                self._link_claim(fd, path, self.spool.request_path("incoming", request_id))
                os.unlink(path)
                recovered.append(request_id)
            except (FileExistsError, FileNotFoundError):
                pass  # a different file under this id waits in incoming/: it will clash
            finally:
                os.close(fd)
        return recovered

    def _conclude(self, claim: Claim) -> bool:
        """A recovered request whose response exists ended before its claimer died (it
        dies before the response is written, or after): write the audit line if the
        journal lacks it, and archive it. False if there is no response: run it again."""
        response = files.read_json(self.spool.response_path(claim.id))
        if response is None:
            return False
        state = "done" if response.get("status") == "ok" else "failed"
        if claim.id not in self._recent_audit_ids():
            error = response.get("error") or {}
            line = {"time": time.time(), "id": claim.id, "op": claim.request.op,
                    "signer": claim.request.signer, "user": claim.request.user, "outcome": state,
                    "attempts": claim.attempts, "recovered": True}
            if error:
                line.update(code=error.get("code"), reason=error.get("message"))
            self.audit(line)
        self._archive(claim, state)
        self.ledger.update(claim.id, claim.entry, state=state, finished_at=time.time())
        claim.release()
        return True

    def _recent_audit_ids(self, tail_bytes: int = 4 << 20) -> set[str]:
        """Ids in the journal's last few MiB: a request the dead claimer finished just
        before it died has its line there, and must not get a second one."""
        try:
            with open(self.spool.audit_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
                tail = f.read()
        except FileNotFoundError:
            return set()
        return {m.decode() for m in re.findall(rb'"id":"([0-9a-f]{32})"', tail)}

    def retry(self, request_id: str) -> str:
        """An admin's retry: move a failed or deferred request back to incoming/ and let
        the ledger accept it once more. Returns the state it came from."""
        for state in ("deferred", "failed"):
            path = self.spool.request_path(state, request_id)
            if not path.exists():
                continue
            response = files.read_json(self.spool.response_path(request_id)) or {}
            if response.get("status") == "rejected":
                raise Rejection("not_retryable", "the daemon never accepted this request "
                                "(it was rejected); a retry would be rejected again")
            op = response.get("op")
            if state == "failed" and SECRET_FIELDS.get(op):
                raise Rejection("not_retryable", f"{op}'s secret was removed when it failed; "
                                "the request must be submitted again")
            entry = self.ledger.get(request_id)
            if entry is None:
                self._remember(request_id, path.read_bytes(), time.time(), state="retry", attempts=1)
            else:
                self.ledger.update(request_id, entry, state="retry", next_attempt_at=None)
            os.rename(path, self.spool.request_path("incoming", request_id))
            self.spool.reason_path(request_id).unlink(missing_ok=True)
            self.spool.response_path(request_id).unlink(missing_ok=True)
            return state
        raise Rejection("not_found", "no failed or deferred request with that id")

    def prune(self, retention: float, tmp_age: float = 3600.0, max_skew: float = 60.0) -> dict:
        """Remove done/ and failed/ records and responses older than ``retention``,
        tmp/ files older than ``tmp_age``, and expired ledger records."""
        now = time.time()
        counts = {"done": 0, "failed": 0, "responses": 0, "tmp": 0}
        for folder, age in (("done", retention), ("failed", retention),
                            ("responses", retention), ("tmp", tmp_age)):
            for entry in os.scandir(self.spool.folder(folder)):
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime > age:
                        if entry.is_dir(follow_symlinks=False):
                            continue
                        os.unlink(entry.path)
                        counts[folder] += 1
                except FileNotFoundError:
                    continue
        counts["ledger"] = self.ledger.prune(max_skew, now)
        return counts
