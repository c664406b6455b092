"""The connections the operations use — Slurm, Mattermost, LDAP — built from the config.

Each is built only when its section is in the config, so a site can run carme-backend
without, say, LDAP; each answers ``health()`` with a short word for status.json.
"""

from __future__ import annotations

from carme.daemon.slurm.cli import CliBackend


class SlurmService:
    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name

    def ping(self) -> bool:
        return self.backend.ping()

    def health(self) -> str:
        return f"{self.name}:{'up' if self.ping() else 'down'}"


def build(config) -> dict:
    services = {}
    slurm = config.extra.get("slurm")
    if slurm is not None:
        services["slurm"] = SlurmService(
            CliBackend(slurm.conf or None, timeout=slurm.timeout, bin_dir=slurm.bin_dir))
    return services
