"""Choosing the Slurm backend: ``backend = "auto" | "pyslurm" | "cli"``.

``auto`` takes pyslurm only when it imports, initialises, and its major.minor equals the
installed Slurm's (pyslurm refuses to build otherwise, but a site may have upgraded Slurm
since); else the CLI. The choice and the reason are logged.
"""

from __future__ import annotations

import logging

from carme.daemon.slurm.cli import CliBackend
from carme.daemon.slurm.settings import SlurmConfig

log = logging.getLogger("carme.daemon.slurm")


def _pyslurm(cfg: SlurmConfig):
    """(backend, None) or (None, why not)."""
    from carme.daemon.slurm import pyslurm_backend
    try:
        module = pyslurm_backend.load_pyslurm(cfg.conf or None)
    except ImportError as error:
        return None, f"pyslurm does not import here: {error}"
    installed = pyslurm_backend.slurm_version(cfg.bin_dir, cfg.conf or None)
    built_for = ".".join(str(module.__version__).split(".")[:2])
    if installed != built_for:
        return None, f"pyslurm {module.__version__} does not match Slurm {installed}"
    return pyslurm_backend.PyslurmBackend(module), None


def choose(cfg: SlurmConfig):
    if cfg.backend not in ("auto", "pyslurm", "cli"):
        raise ValueError(f'[slurm] backend: must be "auto", "pyslurm" or "cli", not {cfg.backend!r}')
    if cfg.backend in ("auto", "pyslurm"):
        backend, why_not = _pyslurm(cfg)
        if backend is not None:
            log.info("Slurm backend: pyslurm (%s)", cfg.backend)
            return backend
        if cfg.backend == "pyslurm":
            raise ValueError(f"[slurm] backend = \"pyslurm\", but {why_not}")
        log.info("Slurm backend: cli, because %s", why_not)
    else:
        log.info("Slurm backend: cli (configured)")
    return CliBackend(cfg.conf or None, timeout=cfg.timeout, bin_dir=cfg.bin_dir)
