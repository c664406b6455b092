"""A bounded worker pool that runs tasks with the same key one at a time, in order.

Tasks with different keys run in parallel on ``workers`` threads. ``submit`` blocks while
``max_pending`` tasks are waiting or running, so a flood of requests never makes the daemon
claim (and hold in memory) more than it can work on.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Hashable


class KeyedExecutor:
    def __init__(self, workers: int, max_pending: int):
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._slots = threading.BoundedSemaphore(max_pending)
        self._queues: dict[Hashable, collections.deque] = {}
        self._runnable: collections.deque = collections.deque()
        self._pending = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"worker-{n}", daemon=True)
                         for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, task: Callable[[], None]) -> None:
        self._slots.acquire()
        with self._lock:
            self._pending += 1
            if key in self._queues:
                self._queues[key].append(task)
            else:
                self._queues[key] = collections.deque([task])
                self._runnable.append(key)
                self._ready.notify()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._runnable and not self._closed:
                    self._ready.wait()
                if not self._runnable:
                    return
                key = self._runnable.popleft()
                task = self._queues[key][0]
            try:
                task()
            finally:
                with self._lock:
                    queue = self._queues[key]
                    queue.popleft()
                    if queue:
                        self._runnable.append(key)
                        self._ready.notify()
                    else:
                        del self._queues[key]
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()
                self._slots.release()

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is pending; False if ``timeout`` passed first."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ready.notify_all()
