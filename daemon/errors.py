"""What an operation may raise: ``Transient`` (try again later: deferred with backoff) or
``Permanent`` (never going to work as asked: failed with the reason). Services' own errors
(Slurm, Mattermost, LDAP) subclass these, so a handler lets them pass through."""


class OperationError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Transient(OperationError):
    """Try again later: a service is down, busy or timed out. ``retry_after`` (seconds) is
    the service's own word on when, if it gave one (HTTP 429's Retry-After)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None):
        super().__init__(code, message)
        self.retry_after = retry_after


class Permanent(OperationError):
    """Never going to work as asked: bad input, not allowed, unknown thing."""
