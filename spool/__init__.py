"""carme.spool: the on-disk protocol between the Carme portal, the daemon and the Slurm hooks.

Names are loaded on first use (PEP 562): the Slurm hooks run inside every job start and
import only the pieces they need, so importing this package must cost next to nothing.
"""

from importlib import import_module

_EXPORTS = {
    "SpoolClient": "carme.spool.client",
    "write_request": "carme.spool.client",
    "CarmeBackend": "carme.spool.compat",
    "IdClash": "carme.spool.errors",
    "KeyFileError": "carme.spool.errors",
    "Rejection": "carme.spool.errors",
    "SpoolError": "carme.spool.errors",
    "Spool": "carme.spool.layout",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("carme-backend")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'carme.spool' has no attribute {name!r}")
