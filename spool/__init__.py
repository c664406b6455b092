"""carme.spool: the on-disk protocol between the Carme portal, the daemon and the Slurm hooks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("carme-backend")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from carme.spool.client import SpoolClient, write_request  # noqa: E402
from carme.spool.compat import CarmeBackend  # noqa: E402
from carme.spool.errors import IdClash, KeyFileError, Rejection, SpoolError  # noqa: E402
from carme.spool.layout import Spool  # noqa: E402

__all__ = ["CarmeBackend", "IdClash", "KeyFileError", "Rejection", "Spool", "SpoolClient",
           "SpoolError", "write_request", "__version__"]
