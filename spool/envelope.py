"""The request envelope and its one canonical encoding.

``{"v": 1, "id", "op", "signer", "issued_at", "expires_at", "args", "sig"}``. The signature
covers ``canonical(envelope without "sig")``; writer and verifier both call ``canonical``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from carme.spool.errors import Rejection
from carme.spool.layout import is_valid_id
from carme.spool.schema import check_args, redacted

VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
ENVELOPE_FIELDS = ("v", "id", "op", "signer", "issued_at", "expires_at", "args", "sig")
SIGNER_PATTERN = r"[a-z][a-z0-9_-]{0,31}"


def canonical(unsigned: dict) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Request:
    """A request whose form has been checked (its signature may not have been, yet)."""

    id: str
    op: str
    signer: str
    issued_at: float
    expires_at: float
    args: dict
    sig: str
    raw: bytes = field(repr=False, compare=False, default=b"")

    def unsigned(self) -> dict:
        return {"v": VERSION, "id": self.id, "op": self.op, "signer": self.signer,
                "issued_at": self.issued_at, "expires_at": self.expires_at, "args": self.args}

    def safe_args(self) -> dict:
        """The arguments with secrets replaced by ``<redacted>``."""
        return redacted(self.op, self.args)

    @property
    def user(self) -> str | None:
        return self.args.get("user") or self.args.get("user_name")


def parse(raw: bytes) -> Request:
    """Check the envelope's form and the arguments' schema; raise ``Rejection`` otherwise."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise Rejection("oversize", f"request is {len(raw)} bytes; the limit is {MAX_REQUEST_BYTES}")
    if not raw.strip():
        raise Rejection("bad_json", "request file is empty")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise Rejection("bad_json", f"request is not UTF-8 JSON: {_short(error)}") from None
    if not isinstance(obj, dict):
        raise Rejection("bad_json", "request must be a JSON object")
    unknown = sorted(set(obj) - set(ENVELOPE_FIELDS))
    if unknown:
        raise Rejection("unknown_field", f"unknown envelope field(s): {', '.join(unknown)}")
    missing = [name for name in ENVELOPE_FIELDS if name not in obj]
    if missing:
        code = "missing_signature" if missing == ["sig"] else "bad_envelope"
        raise Rejection(code, f"envelope lacks {', '.join(missing)}")
    if isinstance(obj["v"], bool) or obj["v"] != VERSION:
        raise Rejection("unknown_version", f"unknown protocol version {obj['v']!r} (this is {VERSION})")
    if not is_valid_id(obj["id"]):
        raise Rejection("bad_envelope", "'id' must be 32 lowercase hex digits")
    _require(isinstance(obj["signer"], str) and re.fullmatch(SIGNER_PATTERN, obj["signer"]),
             "'signer' must be a short lowercase name")
    _require(isinstance(obj["op"], str), "'op' must be a string")
    for name in ("issued_at", "expires_at"):
        value = obj[name]
        _require(isinstance(value, (int, float)) and not isinstance(value, bool)
                 and math.isfinite(value) and value >= 0, f"'{name}' must be a Unix time")
    _require(isinstance(obj["sig"], str) and 0 < len(obj["sig"]) <= 200, "'sig' must be a string")
    check_args(obj["op"], obj["args"])
    return Request(obj["id"], obj["op"], obj["signer"], float(obj["issued_at"]),
                   float(obj["expires_at"]), obj["args"], obj["sig"], raw)


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise Rejection("bad_envelope", reason)


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 120 else text[:117] + "..."


def envelope(request_id: str, op: str, signer: str, issued_at: float, expires_at: float,
             args: dict[str, Any]) -> dict:
    """The unsigned envelope a writer fills in before signing."""
    return {"v": VERSION, "id": request_id, "op": op, "signer": signer,
            "issued_at": issued_at, "expires_at": expires_at, "args": args}
