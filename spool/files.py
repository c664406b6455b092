"""Atomic file steps: every file a reader can see under its final name is complete.

The writer's protocol (Maildir's): create a unique file in ``tmp/`` with ``O_EXCL``, write,
fsync, close, then rename it to its final name, fsync that folder, and never touch the
file again. On any error the tmp file is removed.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time

_counter = itertools.count()
_HOST = socket.gethostname().split(".")[0].replace("/", "_")


def unique_tmp_name() -> str:
    """Time, pid, a counter and the host: unique even across hosts sharing the spool."""
    return f"{time.time_ns()}.{os.getpid()}_{next(_counter)}.{_HOST}.tmp"


def fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(tmp_dir, data: bytes, mode: int, durable: bool) -> str:
    tmp = os.path.join(tmp_dir, unique_tmp_name())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb", closefd=True) as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
    except BaseException:
        _discard(tmp)
        raise
    return tmp


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def deliver(tmp_dir, final, data: bytes, mode: int = 0o640) -> None:
    """Hand a request to the daemon: write and fsync it in tmp/, rename it into place,
    fsync the folder. Rename, not Maildir's link: the file never has two names (the daemon
    rejects a request with extra hard links); an existing ``final`` is refused beforehand,
    which for a fresh uuid4 id is a formality, not a race that matters."""
    if os.path.lexists(final):
        raise FileExistsError(final)
    tmp = _write_tmp(tmp_dir, data, mode, durable=True)
    try:
        os.rename(tmp, final)
    except BaseException:
        _discard(tmp)
        raise
    fsync_dir(os.path.dirname(final))


def replace(tmp_dir, final, data: bytes, mode: int = 0o640, durable: bool = False) -> None:
    """Write ``data`` to ``final`` atomically, replacing what was there."""
    tmp = _write_tmp(tmp_dir, data, mode, durable)
    try:
        os.replace(tmp, final)
    except BaseException:
        _discard(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(final))


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def read_json(path):
    """The JSON in a small file we wrote ourselves, or None if it is missing or torn."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None


def append_line(path, obj, durable: bool = True) -> None:
    """Append one JSON line with a single write(2) on an O_APPEND file: lines never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, dumps(obj) + b"\n")
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
