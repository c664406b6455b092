"""The errors of the spool protocol."""


class SpoolError(Exception):
    """Base of every error carme.spool raises on purpose."""


class Rejection(SpoolError):
    """A request that can never be carried out: bad form, bad signature, not allowed.

    ``code`` is a short machine word (``bad_json``, ``bad_signature``, ``expired``, ...);
    ``reason`` is a sentence for a human. Neither ever holds a secret.
    """

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class IdClash(SpoolError):
    """A writer found its request id already in use (should never happen with uuid4)."""


class KeyFileError(SpoolError):
    """A key file is missing, unreadable, of the wrong kind, or not private enough."""
