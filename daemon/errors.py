"""What an operation may raise: ``Transient`` (try again later: deferred with backoff) or
``Permanent`` (never going to work as asked: failed with the reason). Services' own errors
(Slurm, Mattermost, LDAP) subclass these, so a handler lets them pass through."""


class OperationError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Transient(OperationError):
    """Try again later: a service is down, busy or timed out."""


class Permanent(OperationError):
    """Never going to work as asked: bad input, not allowed, unknown thing."""
