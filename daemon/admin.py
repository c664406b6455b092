"""What admins ask of a spool: status, ls, show, retry, audit, prune.

These read the spool directly (the daemon need not run) and never print a secret: request
arguments are shown through the schema's redaction.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from datetime import datetime, timezone

from carme.spool import files
from carme.spool.envelope import MAX_REQUEST_BYTES
from carme.spool.errors import Rejection
from carme.spool.layout import STATES, Spool, is_valid_id
from carme.spool.queue import Queue
from carme.spool.schema import redacted


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def status(spool: Spool) -> int:
    """Print the heartbeat; exit 1 if the daemon is not running or its heartbeat is stale."""
    report = files.read_json(spool.status_path)
    if report is None:
        print(f"no heartbeat in {spool.status_path}: the daemon has never run on this spool")
        return 1
    age = time.time() - report.get("updated", 0)
    limit = 3 * report.get("heartbeat_interval", 5)
    alive = True
    if report.get("host") == socket.gethostname():
        try:
            os.kill(report["pid"], 0)
        except (ProcessLookupError, KeyError):
            alive = False
    print(f"carme-backend {report.get('version')} pid {report.get('pid')} on {report.get('host')}, "
          f"started {_when(report.get('started'))}")
    if not alive or report.get("stopping"):
        print(f"NOT RUNNING: the daemon stopped (last heartbeat {age:.0f}s ago)")
    elif age > limit:
        print(f"STALE: last heartbeat {age:.0f}s ago (expected every "
              f"{report.get('heartbeat_interval')}s); the daemon may be hung")
    else:
        print(f"running: last heartbeat {age:.1f}s ago")
    print("counters: " + ", ".join(f"{k}={v}" for k, v in report.get("counters", {}).items()))
    print("queues:   " + ", ".join(f"{k}={v}" for k, v in report.get("queues", {}).items()))
    for name, health in (report.get("services") or {}).items():
        print(f"service {name}: {health}")
    if report.get("last_error"):
        print(f"last error: {report['last_error']}")
    return 0 if alive and age <= limit and not report.get("stopping") else 1


def _summary(path) -> dict:
    """The safe fields of a request file, read without following links or size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        return {"error": error.strerror}
    try:
        raw = os.read(fd, MAX_REQUEST_BYTES + 1)
    except OSError as error:
        return {"error": error.strerror}
    finally:
        os.close(fd)
    try:
        obj = json.loads(raw)
        args = obj.get("args") if isinstance(obj.get("args"), dict) else {}
        return {"op": obj.get("op"), "signer": obj.get("signer"),
                "user": args.get("user") or args.get("user_name"),
                "issued_at": obj.get("issued_at"), "args": redacted(str(obj.get("op")), args)}
    except (ValueError, AttributeError):
        return {"error": "not a JSON request"}


def ls(spool: Spool, states: list[str]) -> int:
    for state in states:
        ids, strays = spool.entries(state)
        for request_id in sorted(ids):
            info = _summary(spool.request_path(state, request_id))
            line = (f"{state:9} {request_id} {info.get('op') or '?':13} "
                    f"{info.get('signer') or '-':9} {info.get('user') or '-':12} "
                    f"{_when(info.get('issued_at'))}")
            if state == "failed":
                reason = spool.reason_path(request_id)
                if reason.exists():
                    line += f"  {reason.read_text().strip()}"
            print(line)
        for name in strays:
            print(f"{state:9} STRAY {name!r} (not a request name; ignored by the daemon)")
    return 0


def show(spool: Spool, request_id: str) -> int:
    if not is_valid_id(request_id):
        print(f"not a request id: {request_id!r}", file=sys.stderr)
        return 2
    found = False
    for state in STATES:
        path = spool.request_path(state, request_id)
        if os.path.lexists(path):
            found = True
            print(f"state: {state}")
            print("request: " + json.dumps(_summary(path), indent=2))
    reason = spool.reason_path(request_id)
    if reason.exists():
        print(f"reason: {reason.read_text().strip()}")
    for label, path in (("response", spool.response_path(request_id)),
                        ("ledger", spool.ledger_path(request_id))):
        data = files.read_json(path)
        if data is not None:
            found = True
            print(f"{label}: " + json.dumps(data, indent=2))
    for line in _audit_lines(spool):
        if line.get("id") == request_id:
            found = True
            print("audit: " + json.dumps(line))
    if not found:
        print(f"no request {request_id} in {spool.root}")
        return 1
    return 0


def retry(spool: Spool, request_id: str) -> int:
    try:
        came_from = Queue(spool, verifier=None).retry(request_id)
    except Rejection as error:
        print(f"cannot retry {request_id}: {error.reason}", file=sys.stderr)
        return 1
    files.append_line(spool.audit_path, {"time": time.time(), "id": request_id,
                                         "outcome": "retried", "from": came_from,
                                         "by": f"uid {os.getuid()}"})
    print(f"{request_id}: moved from {came_from}/ back to incoming/")
    return 0


def _audit_lines(spool: Spool):
    try:
        with open(spool.audit_path, "rb") as f:
            for raw in f:
                try:
                    yield json.loads(raw)
                except ValueError:
                    continue
    except FileNotFoundError:
        return


def parse_since(text: str) -> float:
    """``30m``, ``2h``, ``7d`` (ago), a Unix time, or an ISO date/time."""
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text):
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return time.time() - seconds
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def audit(spool: Spool, op: str | None, user: str | None, outcome: str | None,
          since: str | None) -> int:
    start = parse_since(since) if since else None
    for line in _audit_lines(spool):
        if ((op and line.get("op") != op) or (user and line.get("user") != user)
                or (outcome and line.get("outcome") != outcome)
                or (start and line.get("time", 0) < start)):
            continue
        print(json.dumps(line, ensure_ascii=False))
    return 0


def prune(spool: Spool, retention: float) -> int:
    counts = Queue(spool, verifier=None).prune(retention)
    print("pruned: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0
