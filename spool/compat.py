"""The original Carme backend's method names, over the spool.

An existing Carme frontend called an rpyc service (``conn.root.StartJob(...)``). Replacing
that connection by ``CarmeBackend(...)`` from here is the one change it needs: each method
writes the request, waits for the response and returns what the original returned —
``ping`` → ``"pong"``, ``whoami`` → the signer, ``StartJob``/``StopJob``/``SetTrigger``/
``SendMessage`` → ``0`` on success and non-zero on failure, ``SetPassword`` → ``1`` on
success and ``0`` on failure. Failures are also logged with the daemon's reason.
"""

from __future__ import annotations

import logging
import re

from carme.spool.client import SpoolClient

log = logging.getLogger(__name__)

FAILED = 1  # the original returned its shell command's non-zero exit status


class CarmeBackend:
    def __init__(self, client: SpoolClient, timeout: float = 60.0):
        self.client = client
        self.timeout = timeout

    def _call(self, request_id: str) -> dict:
        try:
            response = self.client.wait(request_id, self.timeout)
        except TimeoutError as error:
            log.error("carme-backend did not answer: %s", error)
            return {"status": "error", "error": {"code": "timeout", "message": str(error)}}
        if response.get("status") != "ok":
            error = response.get("error") or {}
            log.error("carme-backend request %s failed: %s: %s", request_id, error.get("code"),
                      error.get("message"))
        return response

    def _status(self, request_id: str) -> int:
        return 0 if self._call(request_id).get("status") == "ok" else FAILED

    def ping(self) -> str:
        response = self._call(self.client.ping())
        return "pong" if response.get("status") == "ok" else "error"

    def whoami(self) -> str:
        response = self._call(self.client.whoami())
        return (response.get("result") or {}).get("signer", "")

    def StartJob(self, jobUser, jobID, jobImage, jobMounts, jobPartition, jobNumGPUs, jobNumNodes,
                 jobName, jobGPUType=None) -> int:
        mounts = jobMounts if isinstance(jobMounts, list) else re.split(r"[\s,]+", jobMounts.strip())
        return self._status(self.client.start_job(
            jobUser, str(jobID), jobImage, [m for m in mounts if m], jobPartition,
            int(jobNumGPUs), int(jobNumNodes), jobName, gpu_type=jobGPUType or None))

    def StopJob(self, jobID, jobName, jobUser) -> int:
        return self._status(self.client.stop_job(jobName, jobUser))

    def SetTrigger(self, jobSlurmID, jobUser, jobName) -> int:
        return self._status(self.client.set_trigger(int(jobSlurmID), jobUser, jobName))

    def SendMessage(self, user, message) -> int:
        return self._status(self.client.send_message(user, message))

    def SetPassword(self, user, user_name, password) -> int:
        return 1 if self._status(self.client.set_password(user, user_name, password)) == 0 else 0
