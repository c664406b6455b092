"""The testbed's two normal local users, created once on the host if missing.

Jobs must run as a real uid ≥ 1000 with a home directory, so the users are real
``/etc/passwd`` entries; they are left in place by ``down`` (harmless, and re-creating
them on every run would only churn uids).
"""

from __future__ import annotations

import pwd
import subprocess
from dataclasses import dataclass

USER_NAMES = ("carmetest1", "carmetest2")


@dataclass(frozen=True)
class TestUser:
    name: str
    uid: int
    gid: int
    home: str
    password: str

    def as_json(self) -> dict:
        return {"name": self.name, "uid": self.uid, "gid": self.gid, "home": self.home,
                "password": self.password}


def ensure_users(passwords: dict[str, str]) -> list[TestUser]:
    """Create the test users if missing and return them with their LDAP passwords."""
    users = []
    for name in USER_NAMES:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name],
                check=True, capture_output=True,
            )
            entry = pwd.getpwnam(name)
        users.append(TestUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir, passwords[name]))
    return users
