"""The arguments each operation takes: names, types, bounds. Unknown fields are rejected.

One table, read by the verifier (to reject bad requests before anything acts on them), by
the client (to refuse to write them), and by the docs. Identifiers are restricted to the
characters Slurm, POSIX and LDAP accept; nothing here is ever interpolated into a shell.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from carme.spool.errors import Rejection


@dataclass(frozen=True)
class Field:
    """One argument: its JSON type and bounds. ``kind`` is "str", "int", "num", "list"."""

    kind: str
    required: bool = True
    pattern: str | None = None  # full match, for "str" (and each item of a "list")
    max_length: int = 256  # characters for "str", items for "list"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    item: "Field | None" = None
    multiline: bool = False  # "str" only: allow newlines and tabs

    def check(self, name: str, value: Any) -> None:
        if self.kind == "str":
            self._check_str(name, value)
        elif self.kind in ("int", "num"):
            self._check_number(name, value)
        elif self.kind == "list":
            if not isinstance(value, list):
                raise _bad(name, "must be a list", value)
            if len(value) > self.max_length:
                raise _bad(name, f"may hold at most {self.max_length} items", len(value))
            for index, item in enumerate(value):
                self.item.check(f"{name}[{index}]", item)
        else:  # pragma: no cover - a programming error in the table below
            raise AssertionError(self.kind)

    def _check_str(self, name: str, value: Any) -> None:
        if not isinstance(value, str):
            raise _bad(name, "must be a string", value)
        if not value or len(value) > self.max_length:
            raise _bad(name, f"must be 1 to {self.max_length} characters long", len(value))
        controls = _CONTROLS_BUT_NEWLINE_TAB if self.multiline else _CONTROLS
        if controls.search(value):
            raise _bad(name, "must not contain control characters", value)
        if self.choices is not None and value not in self.choices:
            raise _bad(name, f"must be one of {', '.join(self.choices)}", value)
        if self.pattern is not None and _compiled(self.pattern).fullmatch(value) is None:
            raise _bad(name, f"must match {self.pattern}", value)

    def _check_number(self, name: str, value: Any) -> None:
        types = (int,) if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, types):
            raise _bad(name, "must be an integer" if self.kind == "int" else "must be a number",
                       value)
        if value != value or value in (float("inf"), float("-inf")):
            raise _bad(name, "must be a finite number", value)
        if self.minimum is not None and value < self.minimum:
            raise _bad(name, f"must be at least {self.minimum:g}", value)
        if self.maximum is not None and value > self.maximum:
            raise _bad(name, f"must be at most {self.maximum:g}", value)


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_CONTROLS_BUT_NEWLINE_TAB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@functools.lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _bad(name: str, rule: str, value: Any) -> Rejection:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return Rejection("bad_args", f"argument {name!r} {rule} (got {shown})")


USER = Field("str", pattern=r"[a-z_][a-z0-9_.-]{0,31}", max_length=32)
JOB_NAME = Field("str", pattern=r"[A-Za-z0-9_-]{1,64}", max_length=64)
SLURM_JOB_ID = Field("int", minimum=1, maximum=2**32 - 1)
SLURM_NAME = r"[A-Za-z0-9_.-]{1,64}"  # partitions, GPU types
PATH = Field("str", pattern=r"/[^\x00]*", max_length=4096)

#: The job event kinds, in the order a job lives through them. "ended" is what a hook
#: knows (an epilog can't tell a cancel from a success); the daemon asks Slurm which.
EVENT_KINDS = ("queued", "started", "ending_soon", "ended", "finished", "failed", "cancelled",
               "timeout")
TRIGGER_EVENTS = ("finished", "ending_soon")

OPERATIONS: dict[str, dict[str, Field]] = {
    "start_job": {
        "user": USER,
        "frontend_job_id": Field("str", pattern=r"[A-Za-z0-9_.:-]{1,64}", max_length=64),
        "image": PATH,
        "mounts": Field("list", max_length=32, item=PATH),
        "partition": Field("str", pattern=SLURM_NAME, max_length=64),
        "gpus": Field("int", minimum=0, maximum=1024),
        "nodes": Field("int", minimum=1, maximum=1024),
        "name": JOB_NAME,
        "gpu_type": Field("str", required=False, pattern=SLURM_NAME, max_length=64),
        "time_limit": Field("int", required=False, minimum=1, maximum=525600),  # minutes
    },
    "stop_job": {"name": JOB_NAME, "user": USER},
    "set_trigger": {
        "slurm_job_id": SLURM_JOB_ID,
        "user": USER,
        "name": JOB_NAME,
        "events": Field("list", required=False, max_length=len(TRIGGER_EVENTS),
                        item=Field("str", choices=TRIGGER_EVENTS)),
    },
    "send_message": {
        "user": USER,
        "message": Field("str", max_length=60000, multiline=True),
    },
    "set_password": {
        "user_dn": Field("str", max_length=1024),
        "user_name": USER,
        "password_sealed": Field("str", pattern=r"[A-Za-z0-9+/=]{64,2048}", max_length=2048),
    },
    "ping": {},
    "whoami": {},
    "job_event": {
        "slurm_job_id": SLURM_JOB_ID,
        "user": USER,
        "name": Field("str", required=False, pattern=r"[^\x00-\x1f\x7f]{1,256}"),
        "kind": Field("str", choices=EVENT_KINDS),
        "exit_code": Field("int", required=False, minimum=0, maximum=255),
        "signal": Field("int", required=False, minimum=0, maximum=128),
        "nodes": Field("str", required=False, max_length=4096),
        "source": Field("str", required=False, pattern=r"[a-z_]{1,32}", max_length=32),
        "at": Field("num", minimum=0),
    },
}

#: Argument fields that hold secrets: sealed by the writer, removed before anything is kept.
SECRET_FIELDS = {"set_password": ("password_sealed",)}


def check_args(op: str, args: Any) -> None:
    """Raise a ``Rejection`` unless ``args`` fits ``op``'s schema exactly."""
    if op not in OPERATIONS:
        raise Rejection("unknown_op", f"unknown operation {op!r}")
    if not isinstance(args, dict):
        raise Rejection("bad_args", "'args' must be a JSON object")
    fields = OPERATIONS[op]
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise Rejection("unknown_field", f"{op} takes no argument {', '.join(map(repr, unknown))}"
                        f" (it takes: {', '.join(fields) or 'none'})")
    for name, field in fields.items():
        if name in args:
            field.check(name, args[name])
        elif field.required:
            raise Rejection("bad_args", f"{op} needs argument {name!r}")


def redacted(op: str, args: dict) -> dict:
    """``args`` without its secret fields: what may be kept, logged or shown."""
    secret = SECRET_FIELDS.get(op, ())
    return {k: ("<redacted>" if k in secret else v) for k, v in args.items()}
