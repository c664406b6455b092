"""The writer side: what the portal and the Slurm hooks use to drop signed requests.

``write_request`` is the one writer function (STYLE: create in tmp/ with O_EXCL, write,
fsync, rename into incoming/, fsync the folder, never touch the file again; on any error
the tmp file is removed). ``SpoolClient`` wraps it with one method per operation and
``wait`` for the daemon's response.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

from nacl.public import PublicKey
from nacl.signing import SigningKey

from carme.spool import files, keys
from carme.spool.envelope import canonical, envelope
from carme.spool.errors import IdClash, SpoolError
from carme.spool.layout import Spool, new_id
from carme.spool.schema import check_args

DEFAULT_TTL = 300.0


def write_request(spool: Spool, signer: str, signing_key: SigningKey, op: str, args: dict,
                  ttl: float = DEFAULT_TTL, request_id: str | None = None,
                  now: float | None = None) -> str:
    """Sign a request and hand it to the daemon atomically; return its id.

    The arguments are checked against the op's schema first, so a caller learns of a bad
    argument here (``Rejection``) rather than from a rejected response.
    """
    check_args(op, args)
    request_id = request_id or new_id()
    issued_at = time.time() if now is None else now
    unsigned = envelope(request_id, op, signer, round(issued_at, 3), round(issued_at + ttl, 3), args)
    signature = signing_key.sign(canonical(unsigned)).signature
    data = files.dumps({**unsigned, "sig": base64.b64encode(signature).decode()})
    try:
        files.deliver(spool.folder("tmp"), spool.request_path("incoming", request_id), data)
    except FileExistsError:
        raise IdClash(f"request id {request_id} is already in incoming/") from None
    return request_id


class SpoolClient:
    """One method per operation; each returns the request id. ``wait`` returns the response."""

    def __init__(self, spool_dir: str | Path, signer: str, signing_key: SigningKey | str | Path,
                 seal_to: PublicKey | str | Path | None = None, ttl: float = DEFAULT_TTL):
        self.spool = Spool(Path(spool_dir))
        self.signer = signer
        self.signing_key = (signing_key if isinstance(signing_key, SigningKey)
                            else keys.load_signing_key(Path(signing_key)))
        if seal_to is not None and not isinstance(seal_to, PublicKey):
            seal_to = keys.load_seal_public(Path(seal_to))
        self.seal_to = seal_to
        self.ttl = ttl

    def submit(self, op: str, **args) -> str:
        """Write a request for ``op``; arguments left as None are omitted."""
        args = {key: value for key, value in args.items() if value is not None}
        return write_request(self.spool, self.signer, self.signing_key, op, args, self.ttl)

    # --- the operations -----------------------------------------------------------------
    def start_job(self, user: str, frontend_job_id: str, image: str, mounts: list[str],
                  partition: str, gpus: int, nodes: int, name: str, gpu_type: str | None = None,
                  time_limit: int | None = None) -> str:
        return self.submit("start_job", user=user, frontend_job_id=str(frontend_job_id),
                           image=image, mounts=list(mounts), partition=partition, gpus=gpus,
                           nodes=nodes, name=name, gpu_type=gpu_type, time_limit=time_limit)

    def stop_job(self, name: str, user: str) -> str:
        return self.submit("stop_job", name=name, user=user)

    def set_trigger(self, slurm_job_id: int, user: str, name: str,
                    events: list[str] | None = None) -> str:
        return self.submit("set_trigger", slurm_job_id=slurm_job_id, user=user, name=name,
                           events=events)

    def send_message(self, user: str, message: str) -> str:
        return self.submit("send_message", user=user, message=message)

    def set_password(self, user_dn: str, user_name: str, password: str) -> str:
        """The password is sealed to the daemon's key here; it never reaches the disk."""
        if self.seal_to is None:
            raise SpoolError("set_password needs the daemon's sealing key (seal_to)")
        return self.submit("set_password", user_dn=user_dn, user_name=user_name,
                           password_sealed=keys.seal(self.seal_to, password))

    def ping(self) -> str:
        return self.submit("ping")

    def whoami(self) -> str:
        return self.submit("whoami")

    # --- responses ----------------------------------------------------------------------
    def response(self, request_id: str) -> dict | None:
        return files.read_json(self.spool.response_path(request_id))

    def wait(self, request_id: str, timeout: float = 30.0) -> dict:
        """Poll responses/ (works on NFS, where inotify does not) from 2 ms up to 50 ms
        apart; raise ``TimeoutError`` if no response arrives in ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        path = self.spool.response_path(request_id)
        while True:
            if os.path.exists(path) and (response := files.read_json(path)) is not None:
                return response
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no response to request {request_id} within {timeout:g}s")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)
