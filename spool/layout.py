"""Every path and name rule of a spool, in one place.

```
<spool>/tmp/        writers' half-written files (never read by the daemon)
<spool>/incoming/   complete requests, ``<id>.json``
<spool>/active/     claimed by one worker
<spool>/deferred/   waiting for a retry
<spool>/done/       finished (secrets removed)
<spool>/failed/     rejected or failed, with ``<id>.reason`` beside each
<spool>/responses/  ``<id>.json``: outcomes, for the portal
<spool>/jobs/       ``<slurm_job_id>.json``: state of each Carme job
<spool>/ledger/     ``<id>.json``: requests that outlive one attempt (deferred, recovered,
                    retried): attempts, next retry, fingerprint; pruned after expiry
<spool>/outbox/     ``<id>.json``: direct messages owed to users, until Mattermost has them
<spool>/audit.jsonl, <spool>/status.json
```

A request id is 32 lowercase hex digits (a uuid4's hex). Anything in a state folder whose
name does not fit the folder's pattern is *stray*: listed for the admin, never opened.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_REQUEST_NAME = re.compile(r"(?P<id>[0-9a-f]{32})\.json")
#: In failed/ only: a second file that arrived under an id which already has a record (a
#: replay) is kept as ``<id>~<n>.json`` so it never overwrites that record; reasons sit
#: beside each as ``.reason``.
_FAILED_EXTRA = re.compile(r"[0-9a-f]{32}(?:~[0-9]{1,20})?\.reason|[0-9a-f]{32}~[0-9]{1,20}\.json")

STATES = ("incoming", "active", "deferred", "done", "failed")
FOLDERS = ("tmp", *STATES, "responses", "jobs", "ledger", "outbox")


def new_id() -> str:
    return uuid.uuid4().hex


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True)
class Spool:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "_folders", {name: self.root / name for name in FOLDERS})
        object.__setattr__(self, "_dirs", {name: str(path) for name, path in self._folders.items()})

    # --- folders and files --------------------------------------------------------------
    def folder(self, name: str) -> Path:
        try:
            return self._folders[name]
        except KeyError:
            raise ValueError(f"no spool folder {name!r}") from None

    def dir(self, name: str) -> str:
        """``folder(name)`` as a string, for the daemon's hot path."""
        return str(self.folder(name)) if name not in self._dirs else self._dirs[name]

    def file(self, folder: str, request_id: str, suffix: str = ".json") -> str:
        """``<folder>/<id><suffix>`` as a string: the naming rule, without building Path
        objects (they were a third of the daemon's CPU time per request)."""
        return f"{self.dir(folder)}/{_checked(request_id)}{suffix}"

    def request_path(self, state: str, request_id: str) -> Path:
        return Path(self.file(state, request_id))

    def duplicate_path(self, request_id: str, n: int) -> Path:
        """Where a rejected second file for an id that already has a record is kept."""
        return self.folder("failed") / f"{_checked(request_id)}~{n}.json"

    def reason_path(self, request_id: str, name: str | None = None) -> Path:
        """``failed/<id>.reason`` (or, for a duplicate, beside its own file name)."""
        stem = name[: -len(".json")] if name else _checked(request_id)
        return self.folder("failed") / f"{stem}.reason"

    def response_path(self, request_id: str) -> Path:
        return Path(self.file("responses", request_id))

    def ledger_path(self, request_id: str) -> Path:
        return Path(self.file("ledger", request_id))

    @property
    def audit_path(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    # --- listing ------------------------------------------------------------------------
    def entries(self, state: str) -> tuple[list[str], list[str]]:
        """(ids, strays) in a state folder: ids of well-named files, and the other names."""
        ids, strays = [], []
        try:
            names = os.listdir(self.folder(state))
        except FileNotFoundError:
            return [], []
        for name in names:
            if match := _REQUEST_NAME.fullmatch(name):
                ids.append(match.group("id"))
            elif not (state == "failed" and _FAILED_EXTRA.fullmatch(name)):
                strays.append(name)
        return ids, strays

    # --- creation -----------------------------------------------------------------------
    def create(self, writer_gid: int | None = None) -> None:
        """Create the folders. ``tmp/`` and ``incoming/`` are writable by ``writer_gid``
        (the portal's group) with the sticky bit, ``responses/`` readable by it; the
        rest belongs to the daemon alone."""
        self.root.mkdir(parents=True, exist_ok=True)
        for name in FOLDERS:
            path = self.folder(name)
            path.mkdir(exist_ok=True)
            mode = 0o700
            if writer_gid is not None and name in ("tmp", "incoming"):
                mode = 0o1770
            elif writer_gid is not None and name in ("responses", "jobs"):
                mode = 0o750
            if writer_gid is not None and mode != 0o700:
                os.chown(path, -1, writer_gid)
            path.chmod(mode)
        if writer_gid is not None:
            os.chown(self.root, -1, writer_gid)
            self.root.chmod(0o750)


def _checked(request_id: str) -> str:
    if not is_valid_id(request_id):
        raise ValueError(f"not a request id: {request_id!r}")
    return request_id
