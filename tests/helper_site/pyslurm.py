"""A stand-in for pyslurm's start-up only: real pyslurm 25.11 can't be installed against this
machine's Slurm 22.05. As the real one (shared/NOTES.md): ``__version__`` names the Slurm it
was built for (FAKE_PYSLURM_VERSION here); ``slurm_init`` on a config it can't use exits the
process (FAKE_PYSLURM_INIT_EXITS); ``slurmctld.ping(0)`` answers once initialised."""

from __future__ import annotations

import os
import types

__version__ = os.environ.get("FAKE_PYSLURM_VERSION", "25.11.2")
_initialised = False


class RPCError(Exception):
    errno = 1800


def slurm_init(conf=None):
    global _initialised
    if os.environ.get("FAKE_PYSLURM_INIT_EXITS"):
        os._exit(1)
    _initialised = True


def _ping(index):
    if not _initialised:
        os.abort()  # the real one segfaults
    return types.SimpleNamespace(is_responding=True)


slurmctld = types.SimpleNamespace(ping=_ping)
