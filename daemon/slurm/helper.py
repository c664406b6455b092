"""A Slurm backend run in helper processes: pyslurm works outside the daemon.

Why, measured with pyslurm 25.11.2 on Slurm 25.11: pyslurm's Cython declares no ``nogil``,
so each RPC holds the GIL while slurmctld answers; in the daemon, a 1 ms submit (or a 50 ms
listing of a busy cluster) stops every other thread. And pyslurm can end the process it runs
in: ``slurm_init`` exits on a bad config, a call before it segfaults (shared/NOTES.md). In
helpers the daemon's threads keep working while Slurm answers, several calls overlap, and a
helper that dies or hangs costs its request one retry (``SlurmTransient``), not the daemon.

The protocol is private to this module: the daemon starts ``python -P -m
carme.daemon.slurm.helper MODULE:FACTORY ARGS_JSON``; frames both ways are a 4-byte length
and a pickle (parent and child are the same root-owned code). The child answers its start
with ``("ready", name)`` or ``("unusable", why)``, then each ``(method, args)`` with
``("ok", value)``, ``("error", transient?, code, message)`` or ``("bug", text)``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time

from carme.daemon.slurm.base import SlurmPermanent, SlurmTransient

log = logging.getLogger("carme.daemon.slurm")

#: What a daemon may ask a helper: the SlurmBackend protocol, nothing else.
METHODS = frozenset({"submit", "active_jobs", "job", "cancel", "trigger", "triggers",
                     "ping"})
_HEADER = struct.Struct("!I")


class HelperGone(Exception):
    """The helper died, hung or broke the protocol; it has been killed."""


class BackendUnusable(Exception):
    """The backend cannot start here; the message says why."""


# --- frames ---------------------------------------------------------------------------------
def _write_frame(fd: int, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, missing = [], size
    poller = select.poll()  # not select(): a busy daemon's fds may pass FD_SETSIZE
    poller.register(fd, select.POLLIN)
    while missing:
        if deadline is not None:
            if not poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
                raise TimeoutError
        chunk = os.read(fd, missing)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None = None):
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


# --- the daemon's side ----------------------------------------------------------------------
class _Helper:
    """One child process and its two pipes."""

    def __init__(self, factory: str, args: list, start_timeout: float):
        self.process = subprocess.Popen(
            # -P: the working directory never joins sys.path (a root process must not
            # import what someone left in the folder it was started from)
            [sys.executable, "-P", "-m", "carme.daemon.slurm.helper", factory, json.dumps(args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
            # its own session: a Ctrl-C meant for a foreground daemon must not reach it
            start_new_session=True)
        try:
            reply = self._receive(start_timeout, "starting")
        except HelperGone as gone:
            raise BackendUnusable(str(gone)) from None
        if reply[0] != "ready":
            self.stop()
            raise BackendUnusable(reply[1])
        self.name = reply[1]

    def _receive(self, timeout: float, doing: str):
        try:
            return _read_frame(self.process.stdout.fileno(), time.monotonic() + timeout)
        except TimeoutError:
            self.kill()
            raise HelperGone(f"did not answer within {timeout:g} s while {doing}; killed") from None
        except (EOFError, OSError, pickle.UnpicklingError, struct.error):
            self.kill()
            raise HelperGone(f"exited ({_exit_status(self.process)}) while {doing}") from None

    def call(self, method: str, args: tuple, timeout: float):
        try:
            _write_frame(self.process.stdin.fileno(), (method, args))
        except OSError:
            self.kill()
            raise HelperGone(f"exited ({_exit_status(self.process)}) before {method}") from None
        return self._receive(timeout, method)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_pipes()

    def stop(self, timeout: float = 5.0) -> None:
        """Closing its stdin is the child's signal to exit."""
        self._close_pipes()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _exit_status(process: subprocess.Popen) -> str:
    try:
        code = process.wait(1.0)
    except subprocess.TimeoutExpired:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


class HelperBackend:
    """A SlurmBackend whose calls run in ``processes`` helper processes, each holding the
    backend ``factory(*args)`` made. Calls wait for a free helper; a helper that dies or
    exceeds ``timeout`` (also the limit for starting) is killed and replaced at its next use, and its caller gets a
    ``SlurmTransient`` (a submit in flight may have reached Slurm: start_job's retry finds
    it by name). The first helper starts at once, so a backend that cannot run here is
    known before the daemon serves (``BackendUnusable``)."""

    def __init__(self, factory: str, args: list, processes: int = 2, timeout: float = 30.0):
        self._spec = (factory, list(args), timeout)
        self.timeout = timeout
        first = _Helper(*self._spec)
        self.name = first.name
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._idle.put(first)
        for _ in range(processes - 1):
            self._idle.put(None)  # started when first needed
        self._closed = threading.Event()

    def _call(self, method: str, *args):
        helper = self._idle.get()
        try:
            if helper is None:
                helper = self._start()
            reply = helper.call(method, args, self.timeout)
        except HelperGone as gone:
            helper = None
            log.error("Slurm helper (%s) %s", self.name, gone)
            raise SlurmTransient("helper_failed", f"{method}: the Slurm helper process {gone}; "
                                 "a new one takes the retry") from None
        finally:
            self._give_back(helper)
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "error":
            _, transient, code, message = reply
            raise (SlurmTransient if transient else SlurmPermanent)(code, message)
        raise RuntimeError(f"Slurm helper, {method}: {reply[1]}")

    def _start(self) -> _Helper:
        try:
            return _Helper(*self._spec)
        except BackendUnusable as why:
            raise HelperGone(f"could not be restarted: {why}") from None

    def _give_back(self, helper: _Helper | None) -> None:
        if helper is not None and self._closed.is_set():
            helper.stop()
            helper = None
        self._idle.put(helper)

    def submit(self, job):
        return self._call("submit", job)

    def active_jobs(self, user):
        return self._call("active_jobs", user)

    def job(self, job_id):
        return self._call("job", job_id)

    def cancel(self, job_id):
        return self._call("cancel", job_id)

    def trigger(self, job_id, event, program, offset_seconds=0):
        return self._call("trigger", job_id, event, program, offset_seconds)

    def triggers(self, job_id):
        return self._call("triggers", job_id)

    def ping(self) -> bool:
        try:
            return self._call("ping")
        except SlurmTransient:
            return False

    def close(self) -> None:
        """Stop idle helpers now and busy ones as their calls return (a reload must not
        cut a submit in half)."""
        self._closed.set()
        while True:
            try:
                helper = self._idle.get_nowait()
            except queue.Empty:
                return
            if helper is not None:
                helper.stop()


# --- the helper's side ----------------------------------------------------------------------
def _protocol_fds() -> tuple[int, int]:
    """Move the pipes off stdin/stdout: a library printing to stdout would corrupt the
    frames, so fd 1 becomes a copy of stderr and fd 0 /dev/null."""
    incoming, outgoing = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return incoming, outgoing


def _answer(backend, method: str, args: tuple):
    if method not in METHODS:
        return ("bug", f"no such call {method!r}")
    try:
        return ("ok", getattr(backend, method)(*args))
    except (SlurmTransient, SlurmPermanent) as error:
        return ("error", isinstance(error, SlurmTransient), error.code, error.message)
    except Exception as error:  # reported to the daemon, which fails the request with it
        return ("bug", f"{type(error).__name__}: {error}")


def serve(factory: str, args: list) -> int:
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # the daemon ends us by closing the pipe
    incoming, outgoing = _protocol_fds()
    module_name, _, function = factory.partition(":")
    try:
        backend = getattr(importlib.import_module(module_name), function)(*args)
    except Exception as error:  # ImportError and the backend's own reasons alike
        _write_frame(outgoing, ("unusable", str(error) or type(error).__name__))
        return 0
    _write_frame(outgoing, ("ready", backend.name))
    while True:
        try:
            method, call_args = _read_frame(incoming)
        except EOFError:
            return 0
        _write_frame(outgoing, _answer(backend, method, call_args))


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], json.loads(sys.argv[2])))
