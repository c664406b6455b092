"""Choosing the Slurm backend: ``backend = "auto" | "pyslurm" | "cli"``.

``auto`` takes pyslurm only when it imports, initialises, and its major.minor equals the
installed Slurm's; else the CLI. All of that is tried in a helper process (helper.py), so
a pyslurm that exits or crashes while starting costs the daemon nothing but the reason,
which is logged with the choice.
"""

from __future__ import annotations

import importlib.util
import logging

from carme.daemon.slurm.cli import CliBackend
from carme.daemon.slurm.helper import BackendUnusable, HelperBackend
from carme.daemon.slurm.settings import SlurmConfig

log = logging.getLogger("carme.daemon.slurm")

PYSLURM_FACTORY = "carme.daemon.slurm.pyslurm_backend:open_backend"


def _pyslurm(cfg: SlurmConfig):
    """(backend, None) or (None, why not). A pyslurm that is not installed is known
    without starting a helper: looked up, not imported."""
    if importlib.util.find_spec("pyslurm") is None:
        return None, "pyslurm is not installed"
    try:
        return HelperBackend(PYSLURM_FACTORY, [cfg.conf, cfg.bin_dir, cfg.timeout],
                             processes=cfg.helpers,
                             timeout=cfg.timeout), None
    except BackendUnusable as why:
        return None, f"pyslurm can't be used here: {why}"


def choose(cfg: SlurmConfig):
    if cfg.backend not in ("auto", "pyslurm", "cli"):
        raise ValueError(f'[slurm] backend: must be "auto", "pyslurm" or "cli", not {cfg.backend!r}')
    if cfg.backend in ("auto", "pyslurm"):
        backend, why_not = _pyslurm(cfg)
        if backend is not None:
            log.info("Slurm backend: pyslurm (%s), in %d helper process(es)", cfg.backend,
                     cfg.helpers)
            return backend
        if cfg.backend == "pyslurm":
            raise ValueError(f"[slurm] backend = \"pyslurm\", but {why_not}")
        log.info("Slurm backend: cli, because %s", why_not)
    else:
        log.info("Slurm backend: cli (configured)")
    return CliBackend(cfg.conf or None, timeout=cfg.timeout, bin_dir=cfg.bin_dir)
