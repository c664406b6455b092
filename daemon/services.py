"""The connections the operations use — Slurm, Mattermost, LDAP — built from the config,
and the opener of sealed secrets.

Each is built only when its section is in the config, so a site can run carme-backend
without, say, LDAP; each answers ``health()`` with a short word for status.json.
"""

from __future__ import annotations

import threading
import time

from carme.daemon.checks import needs_seal_key
from carme.daemon.ldap_password import LdapPasswords
from carme.daemon.mattermost import Mattermost
from carme.daemon.outbox import Notices
from carme.daemon.slurm.index import JobIndex
from carme.daemon.slurm.select import choose
from carme.spool import keys
from carme.spool.layout import Spool


class SlurmService:
    """The Slurm backend, with its controller's health remembered for ``health_ttl``
    seconds: a flood of ``ping`` requests and the heartbeat share one ``scontrol ping``."""

    def __init__(self, backend, config=None, health_ttl: float = 2.0):
        self.backend = backend
        self.config = config
        self.name = backend.name
        self.index = JobIndex(backend)
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

    def close(self) -> None:
        """Stop the backend's helper processes, if it has any."""
        if hasattr(self.backend, "close"):
            self.backend.close()


class SecretOpener:
    """Holds the daemon's sealing key; opens sealed secrets in memory only."""

    def __init__(self, path):
        self._key = keys.load_seal_private(path)

    def open(self, sealed: str) -> str:
        return keys.unseal(self._key, sealed)

    def health(self) -> str:
        return "loaded"


def close(services: dict) -> None:
    """Let services with work of their own (queued notices) finish it."""
    for service in services.values():
        if hasattr(service, "close"):
            service.close()


def build(config) -> dict:
    services = {}
    extra = config.extra
    if "slurm" in extra:
        services["slurm"] = SlurmService(choose(extra["slurm"]), extra["slurm"])
    if "mattermost" in extra:
        services["mattermost"] = Mattermost(extra["mattermost"])
        services["notices"] = Notices(services["mattermost"], Spool(config.spool.path), config.retry)
    if "ldap" in extra:
        services["ldap"] = LdapPasswords(extra["ldap"])
    if needs_seal_key(config):
        services["secrets"] = SecretOpener(config.keys.seal_private)
    return services
