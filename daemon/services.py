"""The connections the operations use — Slurm, Mattermost, LDAP — built from the config.

Each is built only when its section is in the config, so a site can run carme-backend
without, say, LDAP; each answers ``health()`` with a short word for status.json.
"""

from __future__ import annotations

import threading
import time

from carme.daemon.slurm.select import choose


class SlurmService:
    """The Slurm backend, with its controller's health remembered for ``health_ttl``
    seconds: a flood of ``ping`` requests and the heartbeat share one ``scontrol ping``."""

    def __init__(self, backend, config=None, health_ttl: float = 2.0):
        self.backend = backend
        self.config = config
        self.name = backend.name
        self.health_ttl = health_ttl
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._up = False

    def ping(self) -> bool:
        with self._lock:
            if time.monotonic() - self._checked_at >= self.health_ttl:
                self._up = self.backend.ping()
                self._checked_at = time.monotonic()
            return self._up

    def health(self) -> str:
        return f"{self.name}:{'up' if self.ping() else 'down'}"


def build(config) -> dict:
    services = {}
    slurm = config.extra.get("slurm")
    if slurm is not None:
        services["slurm"] = SlurmService(choose(slurm), slurm)
    return services
