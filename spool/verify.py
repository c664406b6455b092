"""Verification: the signer is known, the signature holds, the signer may ask for the op,
the file's owner is one the signer writes as, and the request is fresh.

Replay (an id already seen) is the ledger's check, made when a request is claimed.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from carme.spool.envelope import Request, canonical, parse
from carme.spool.errors import Rejection


@dataclass(frozen=True)
class SignerPolicy:
    """What one signer may do: its public key, its ops, how long its requests may live,
    and (optionally) the uids its request files must be owned by."""

    name: str
    verify_key: VerifyKey
    ops: frozenset[str]
    max_ttl: float = 900.0
    owners: frozenset[int] | None = None


class Verifier:
    def __init__(self, signers: dict[str, SignerPolicy], max_skew: float = 60.0, clock=time.time):
        self.signers = signers
        self.max_skew = max_skew
        self.clock = clock

    def verify(self, raw: bytes, owner_uid: int | None = None, check_freshness: bool = True) -> Request:
        """The request in ``raw`` if it passes every check; else raise ``Rejection``.

        ``check_freshness`` is off for a request the daemon accepted before (a retry or a
        redelivery after a crash): its age is then governed by the retry policy.
        """
        request = parse(raw)
        policy = self.signers.get(request.signer)
        if policy is None:
            raise Rejection("unknown_signer", f"no signer named {request.signer!r} is configured")
        try:
            signature = base64.b64decode(request.sig, validate=True)
            policy.verify_key.verify(canonical(request.unsigned()), signature)
        except (BadSignatureError, binascii.Error, ValueError):
            raise Rejection("bad_signature",
                            f"signature does not verify with {request.signer!r}'s key") from None
        if request.op not in policy.ops:
            raise Rejection("op_not_allowed",
                            f"signer {request.signer!r} may not ask for {request.op!r}")
        if policy.owners is not None and owner_uid not in policy.owners:
            raise Rejection("bad_owner", f"request file is owned by uid {owner_uid}, not by a uid "
                            f"that signer {request.signer!r} writes as")
        if check_freshness:
            self._check_freshness(request, policy)
        return request

    def _check_freshness(self, request: Request, policy: SignerPolicy) -> None:
        now = self.clock()
        if request.issued_at > now + self.max_skew:
            raise Rejection("from_future", f"issued {request.issued_at - now:.0f}s in the future "
                            f"(allowed clock skew {self.max_skew:.0f}s)")
        if request.expires_at <= now:
            raise Rejection("expired", f"expired {now - request.expires_at:.0f}s ago")
        if request.expires_at - request.issued_at > policy.max_ttl:
            raise Rejection("ttl_too_long", f"lifetime {request.expires_at - request.issued_at:.0f}s "
                            f"exceeds {policy.max_ttl:.0f}s allowed for {request.signer!r}")
