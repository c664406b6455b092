"""Helpers shared by the spool and daemon tests: keys, a spool, a verifier for them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from carme.spool import keys
from carme.spool.layout import Spool
from carme.spool.schema import OPERATIONS
from carme.spool.verify import SignerPolicy, Verifier

PORTAL_OPS = frozenset(op for op in OPERATIONS if op != "job_event")


@dataclass
class Kit:
    spool: Spool
    key_dir: Path

    def signing_key(self, signer: str):
        return keys.load_signing_key(self.key_dir / f"{signer}.key")

    def verifier(self, **kw) -> Verifier:
        return Verifier({
            "frontend": SignerPolicy("frontend", keys.load_verify_key(self.key_dir / "frontend.pub"),
                                     PORTAL_OPS, **kw),
            "hooks": SignerPolicy("hooks", keys.load_verify_key(self.key_dir / "hooks.pub"),
                                  frozenset({"job_event"}), max_ttl=7 * 86400),
        })


def make_kit(root: Path) -> Kit:
    key_dir = root / "keys"
    key_dir.mkdir(parents=True)
    for signer in ("frontend", "hooks", "intruder"):
        keys.generate_signer(key_dir, signer)
    keys.generate_seal(key_dir)
    spool = Spool(root / "spool")
    spool.create()
    return Kit(spool, key_dir)


#: One valid argument set per operation.
VALID_ARGS = {
    "start_job": {"user": "carmetest1", "frontend_job_id": "42", "image": "/images/base.sif",
                  "mounts": ["/home/carmetest1"], "partition": "gpu", "gpus": 1, "nodes": 1,
                  "name": "job-1", "gpu_type": "a100", "time_limit": 60},
    "stop_job": {"name": "job-1", "user": "carmetest1"},
    "set_trigger": {"slurm_job_id": 17, "user": "carmetest1", "name": "job-1",
                    "events": ["finished"]},
    "send_message": {"user": "carmetest1", "message": "hello\nworld"},
    "set_password": {"user_dn": "uid=carmetest1,ou=people,dc=example,dc=org",
                     "user_name": "carmetest1", "password_sealed": "A" * 80},
    "ping": {},
    "whoami": {},
    "job_event": {"slurm_job_id": 17, "user": "carmetest1", "name": "job-1", "kind": "started",
                  "at": 1764860400.0},
}
