"""The running daemon: watch the spool, claim and verify requests, dispatch them, end each
one in done, failed or deferred, and report a heartbeat.

Threads: watchdog's observer only puts a wake-up on a queue (STYLE: handlers never verify
or call backends); the main thread scans, claims, verifies and hands requests to the
keyed worker pool; the heartbeat thread rewrites status.json. A pass over incoming/
repeats until it claims nothing, and runs on a timer too, because inotify events are
hints: they overflow, and NFS has none.

SECURITY: runs as root. Reads only regular single-link files it claimed (see
carme.spool.queue), never writes a secret to disk or the log, and survives any input.
"""

from __future__ import annotations

import grp
import logging
import os
import queue
import signal
import socket
import threading
import time
import traceback

from watchdog.events import FileCreatedEvent, FileMovedEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from carme.daemon import checks, config as configuration, logs, sdnotify, services
from carme.daemon.dispatch import KeyedExecutor
from carme.daemon.errors import Permanent, Transient
from carme.daemon.operations import HANDLERS, Context, key_of
from carme.spool import __version__, files
from carme.spool.errors import Rejection
from carme.spool.layout import Spool
from carme.spool.queue import Claim, Outcome, Queue

log = logging.getLogger("carme.daemon")
MAINTENANCE_INTERVAL = 60.0


class _Wake(FileSystemEventHandler):
    """A file arrived in incoming/ (written there, or renamed in): wake the scanner."""

    def __init__(self, wakeups: queue.Queue):
        self.wakeups = wakeups

    def on_created(self, event):
        self.wakeups.put(None)

    def on_moved(self, event):
        self.wakeups.put(None)


class Daemon:
    def __init__(self, config_path, config: configuration.Config):
        self.config_path = config_path
        self.config = config
        self.spool = Spool(self.config.spool.path)
        self.wakeups: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.reload_requested = False
        self.counters = {"done": 0, "failed": 0, "rejected": 0, "deferred": 0}
        self.counter_lock = threading.Lock()
        self.last_error: str | None = None
        self.started = time.time()
        self._apply(self.config)

    # --- configuration ------------------------------------------------------------------
    def _apply(self, config) -> None:
        """Build everything that depends on the config; used at start and on SIGHUP."""
        verifier = checks.build_verifier(config)
        context = Context(config, self.spool, services.build(config), self.started)
        previous = getattr(self, "context", None)
        self.queue = Queue(self.spool, verifier, durable=config.spool.durable)
        self.context, self.config = context, config
        if previous is not None:
            services.close(previous.services)

    def reload(self) -> None:
        try:
            config = configuration.load(self.config_path)
            self._apply(config)
        except Exception as error:  # a bad new config keeps the old one running
            log.error("reload failed, keeping the running configuration: %s", error)
            return
        log.info("configuration and keys reloaded from %s", self.config_path)

    # --- main loop ----------------------------------------------------------------------
    def run(self) -> int:
        self.spool.create(_writer_gid(self.config))
        found = checks.problems(self.config)
        if found:
            for problem in found:
                log.error("start-up check: %s", problem)
            return 2
        self._install_signals()
        recovered = self.queue.recover()
        if recovered:
            log.warning("recovered %d request(s) left active by a daemon that is gone",
                        len(recovered))
        self.executor = KeyedExecutor(self.config.daemon.workers,
                                      max_pending=self.config.daemon.workers * 64)
        observer = self._start_observer()
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        log.info("carme-backend %s started: pid %d, spool %s, %d worker(s), %s observer",
                 __version__, os.getpid(), self.spool.root, self.config.daemon.workers,
                 self.config.spool.observer)
        sdnotify.notify("READY=1\nSTATUS=serving")
        try:
            self._scan_loop()
        finally:
            sdnotify.notify("STOPPING=1")
            observer.stop()
            drained = self.executor.drain(self.config.daemon.shutdown_timeout)
            self.executor.close()
            services.close(self.context.services)
            if not drained:
                log.warning("stopped with work in flight; it will be recovered at the next start")
            self._write_status()
            log.info("carme-backend stopped")
        return 0

    def _install_signals(self) -> None:
        def stop(signum, frame):
            self.stopping.set()
            self.wakeups.put(None)

        def hup(signum, frame):
            self.reload_requested = True
            self.wakeups.put(None)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _start_observer(self):
        observer = PollingObserver(timeout=1.0) if self.config.spool.observer == "polling" else Observer()
        # only arrivals: the kernel then never reports our own listing and unlinking
        observer.schedule(_Wake(self.wakeups), str(self.spool.folder("incoming")), recursive=False,
                          event_filter=[FileCreatedEvent, FileMovedEvent])
        observer.daemon = True
        observer.start()
        return observer

    def _scan_loop(self) -> None:
        next_maintenance = 0.0
        while not self.stopping.is_set():
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            while self._scan_pass():
                if self.stopping.is_set():
                    return
            if time.monotonic() >= next_maintenance:
                self._maintain()
                next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL
            try:
                self.wakeups.get(timeout=self.config.spool.rescan_interval)
            except queue.Empty:
                pass
            _drain(self.wakeups)

    def _scan_pass(self) -> bool:
        """Claim what is in incoming/ (oldest first) and what is due in deferred/; True if
        anything was claimed, so the caller scans again until a pass claims nothing."""
        claimed = False
        for state, request_id in self._candidates():
            if self.stopping.is_set():
                break
            claim = self.queue.claim(request_id, state)
            if claim is None:
                continue
            claimed = True
            self._accept(claim)
        return claimed

    def _candidates(self) -> list[tuple[str, str]]:
        ids, strays = self.spool.entries("incoming")
        if strays:
            log.warning("ignoring %d stray name(s) in incoming/: %s", len(strays),
                        ", ".join(sorted(strays)[:5]))
        folder = self.spool.folder("incoming")
        aged = []
        for request_id in ids:
            try:
                aged.append((os.lstat(folder / f"{request_id}.json").st_mtime_ns, request_id))
            except FileNotFoundError:
                continue
        ordered = [("incoming", request_id) for _, request_id in sorted(aged)]
        return ordered + [("deferred", request_id) for request_id in self.queue.due_deferred()]

    def _accept(self, claim: Claim) -> None:
        try:
            request = self.queue.accept(claim)
            if request is None:
                log.info("request %s concluded from the response its dead claimer wrote",
                         _describe(claim))
                return
        except Rejection as rejection:
            self._end(claim, Outcome("rejected", code=rejection.code, message=rejection.reason))
            return
        except Exception as error:  # an I/O error on one file must not stop the daemon
            log.exception("could not read claimed request %s", claim.id)
            self._end(claim, Outcome("error", code="internal_error",
                                     message=f"internal error ({type(error).__name__}) reading "
                                             "the request; see the daemon log"))
            return
        self.executor.submit(key_of(request), lambda: self._execute(claim))

    def _execute(self, claim: Claim) -> None:
        request = claim.request
        context = self.context
        handler = HANDLERS.get(request.op)
        try:
            if handler is None:
                raise Permanent("not_supported", f"this daemon does not carry out {request.op!r}")
            outcome = Outcome("ok", handler(context, request))
        except Permanent as error:
            outcome = Outcome("error", code=error.code, message=error.message)
        except Transient as error:
            outcome = self._deferral(claim, error)
        except Exception as error:
            log.error("handler for %s failed unexpectedly: %s", _describe(claim),
                      "".join(traceback.format_exception_only(error)).strip())
            log.debug("traceback:\n%s", traceback.format_exc())
            outcome = Outcome("error", code="internal_error",
                              message=f"internal error ({type(error).__name__}); see the daemon log")
        self._end(claim, outcome)

    def _deferral(self, claim: Claim, error: Transient) -> Outcome:
        retry = self.config.retry
        age = time.time() - claim.first_claimed_at
        if age >= retry.max_age:
            return Outcome("error", code=error.code,
                           message=f"{error.message} (still failing after {age:.0f}s, "
                                   f"{claim.attempts} attempts; giving up)")
        delay = retry.delay(claim.attempts, error.retry_after)
        return Outcome("deferred", code=error.code, message=error.message,
                       retry_at=time.time() + delay)

    def _end(self, claim: Claim, outcome: Outcome) -> None:
        try:
            self.queue.complete(claim, outcome)
        except Exception:
            log.exception("could not record the outcome of %s; it stays in active/ and will be "
                          "recovered", claim.id)
            return
        kind = {"ok": "done", "error": "failed"}.get(outcome.status, outcome.status)
        with self.counter_lock:
            self.counters[kind] += 1
            if outcome.status in ("error", "rejected"):
                self.last_error = f"{claim.id}: {outcome.code}: {outcome.message}"
        level = logging.INFO if outcome.status in ("ok", "deferred") else logging.WARNING
        detail = "" if outcome.status == "ok" else f" code={outcome.code} reason={outcome.message!r}"
        if outcome.status == "deferred":
            detail += f" retry_in={outcome.retry_at - time.time():.0f}s"
        log.log(level, "request %s outcome=%s%s", _describe(claim), kind, detail)

    # --- maintenance and heartbeat ------------------------------------------------------
    def _maintain(self) -> None:
        try:
            recovered = self.queue.recover()
            if recovered:
                log.warning("recovered %d stale claim(s)", len(recovered))
            self.queue.prune(self.config.spool.retention, max_skew=self.config.daemon.max_skew)
        except Exception:
            log.exception("maintenance pass failed; will try again")

    def _heartbeat_loop(self) -> None:
        interval = self.config.daemon.heartbeat_interval
        watchdog = sdnotify.watchdog_interval()
        step = min(interval, watchdog) if watchdog else interval
        last_status = 0.0
        while not self.stopping.wait(step):
            if watchdog:
                sdnotify.notify("WATCHDOG=1")
            if time.monotonic() - last_status >= interval:
                self._write_status()
                last_status = time.monotonic()

    def status(self) -> dict:
        depths = {state: len(self.spool.entries(state)[0])
                  for state in ("incoming", "active", "deferred", "failed")}
        with self.counter_lock:
            counters = dict(self.counters)
        health = {name: service.health() for name, service in self.context.services.items()}
        return {"pid": os.getpid(), "host": socket.gethostname(), "version": __version__,
                "started": self.started, "updated": time.time(),
                "heartbeat_interval": self.config.daemon.heartbeat_interval,
                "stopping": self.stopping.is_set(), "counters": counters, "queues": depths,
                "services": health, "last_error": self.last_error}

    def _write_status(self) -> None:
        try:
            files.replace(self.spool.folder("tmp"), self.spool.status_path,
                          files.dumps(self.status()), mode=0o644)
        except Exception:
            log.exception("could not write status.json")


def _drain(q: queue.Queue) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def _describe(claim: Claim) -> str:
    request = claim.request
    if request is None:
        return logs.fields(id=claim.id)
    return logs.fields(id=claim.id, op=request.op, signer=request.signer, user=request.user,
                       attempt=claim.attempts)


def _writer_gid(config) -> int | None:
    group = config.spool.writer_group
    return grp.getgrnam(group).gr_gid if group else None


def run(config_path) -> int:
    """``carme-backend run``: load the config, set up logging, serve until SIGTERM."""
    try:
        config = configuration.load(config_path)
    except configuration.ConfigError as error:
        logs.setup(20, "")
        log.error("cannot start: %s", error)
        return 2
    logs.setup(config.logging.level, config.logging.file)
    try:
        daemon = Daemon(config_path, config)
    except Exception as error:
        log.error("cannot start: %s", error)
        return 2
    return daemon.run()
