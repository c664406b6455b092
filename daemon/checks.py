"""Start-up checks, shared by ``carme-backend check-config`` and ``run``: keys readable and
private, spool folders present and not writable by anyone they should not be."""

from __future__ import annotations

import os
import stat

from carme.daemon.config import Config, resolve_uid
from carme.spool import keys
from carme.spool.errors import KeyFileError
from carme.spool.layout import FOLDERS, Spool
from carme.spool.verify import SignerPolicy, Verifier

#: Folders the portal may write into (with the sticky bit, so it can't remove others' files).
WRITER_FOLDERS = ("tmp", "incoming")


def build_verifier(config: Config) -> Verifier:
    """The verifier for the configured signers; raises ``KeyFileError`` for a bad key."""
    policies = {}
    for name, signer in config.signers.items():
        owners = frozenset(resolve_uid(o) for o in signer.owners) or None
        policies[name] = SignerPolicy(name, keys.load_verify_key(signer.public_key),
                                      frozenset(signer.ops), signer.max_ttl, owners)
    return Verifier(policies, max_skew=config.daemon.max_skew)


def needs_seal_key(config: Config) -> bool:
    return any("set_password" in signer.ops for signer in config.signers.values())


def problems(config: Config) -> list[str]:
    found = []
    for name, signer in config.signers.items():
        try:
            keys.load_verify_key(signer.public_key)
        except KeyFileError as error:
            found.append(f"[signers.{name}] public_key: {error}")
    if needs_seal_key(config):
        try:
            keys.load_seal_private(config.keys.seal_private)
        except KeyFileError as error:
            found.append(f"[keys] seal_private: {error}")
    found.extend(spool_problems(Spool(config.spool.path)))
    return found


def spool_problems(spool: Spool) -> list[str]:
    found = []
    for name in FOLDERS:
        path = spool.folder(name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            found.append(f"spool folder {path} is missing")
            continue
        if not stat.S_ISDIR(info.st_mode):
            found.append(f"spool folder {path} is not a directory (a symlink is not accepted)")
            continue
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid != os.geteuid():
            found.append(f"spool folder {path} is owned by uid {info.st_uid}, not by the daemon")
        if name in WRITER_FOLDERS:
            if mode & stat.S_IWOTH:
                found.append(f"spool folder {path} is writable by everyone (mode {mode:04o})")
            elif mode & stat.S_IWGRP and not mode & stat.S_ISVTX:
                found.append(f"spool folder {path} is group-writable without the sticky bit")
        elif mode & (stat.S_IWGRP | stat.S_IWOTH):
            found.append(f"spool folder {path} is writable by others (mode {mode:04o}); only the "
                         "daemon may write there")
    return found
