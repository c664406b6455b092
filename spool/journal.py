"""The audit journal: one JSON line per finished request, appended with group commit.

Each line is one ``write(2)`` on an ``O_APPEND`` descriptor, so lines never interleave,
also between daemons sharing the spool. When durable, a writer returns only once an fsync
covers its line; writers that arrive while an fsync runs are covered by the next one, so
N workers pay for far fewer than N fsyncs. The file is reopened when logrotate has moved
it away (its inode changed).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from carme.spool import files


class Journal:
    def __init__(self, path: Path, durable: bool = True):
        self.path = Path(path)
        self.durable = durable
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd = -1
        self._written = 0
        self._synced = 0

    def _current_fd(self) -> int:
        """The open journal, reopened if the file at ``path`` is no longer it."""
        try:
            moved = self._fd < 0 or os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            moved = True
        if moved:
            if self._fd >= 0:
                if self.durable:
                    os.fsync(self._fd)
                os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                               0o640)
        return self._fd

    def append(self, line: dict) -> None:
        data = files.dumps(line) + b"\n"
        with self._write_lock:
            fd = self._current_fd()
            os.write(fd, data)
            self._written += 1
            mine = self._written
        if not self.durable:
            return
        with self._sync_lock:
            if self._synced >= mine:
                return  # an fsync that started after our write covered it
            with self._write_lock:
                covered, fd = self._written, self._fd
            os.fsync(fd)
            self._synced = covered

    def close(self) -> None:
        with self._write_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
