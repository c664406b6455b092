"""make demo: the whole path of one Carme job on the embedded default.

Brings up the testbed (Slurm + munge, slapd, the Mattermost stand-in), starts carme-backend
on it, and, as the portal would, walks one job through start → trigger → prolog event → DM →
stop → epilog event, printing what happened at each step; then a password change, the
admin's view, and everything down again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from carme.daemon import jobstatus
from carme.spool import SpoolClient
from carme.spool.layout import Spool
from testbed import Testbed


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def wait_for(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


def show(response: dict) -> None:
    print(json.dumps({k: response.get(k) for k in ("status", "result", "error") if k in response}))


def main(base: str) -> int:
    bed = Testbed(Path(base))
    step(f"bringing the testbed up in {bed.base}")
    started = time.monotonic()
    description = bed.up()
    print(f"up in {time.monotonic() - started:.1f}s: {bed.status()}")
    carme = description["carme"]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "SLURM_CONF": description["slurm"]["conf"]}
    daemon = subprocess.Popen([str(bin_dir / "carme-backend"), "--config", carme["config"], "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    spool = Spool(carme["spool"])
    mm = description["mattermost"]["url"]
    requests.post(f"{mm}/_test/reset", timeout=5)
    user = description["users"][0]
    client = SpoolClient(carme["spool"], "frontend", Path(carme["keys"]) / "frontend.key",
                         seal_to=Path(carme["keys"]) / "seal.pub")
    try:
        wait_for(lambda: spool.status_path.exists(), "the daemon's heartbeat")
        step("ping")
        show(client.wait(client.ping(), 30))

        step(f"start_job: a 1-GPU container job for {user['name']} (signed request → spool)")
        response = client.wait(client.start_job(user["name"], "demo", description["images"][0],
                                                [user["home"]], "gpu", 1, 1, "carme-demo"), 60)
        show(response)
        job_id = response["result"]["slurm_job_id"]

        step("set_trigger: job end, and 1 minute before the time limit")
        show(client.wait(client.set_trigger(job_id, user["name"], "carme-demo"), 30))

        step("prolog event: the Slurm hook reports the start; jobs/<id>.json follows")
        status = wait_for(lambda: (s := jobstatus.read(spool, job_id)) and s["state"] == "running" and s,
                          "the prolog event")
        print(f"job {job_id}: {status['state']} on {status.get('nodes')}")
        record = Path(user["home"]) / ".carme-runtime" / f"{job_id}.json"
        wait_for(record.exists, "the container to start")
        print(f"container runtime called with: {record.read_text()}")

        step("direct messages the user got on Mattermost so far")
        for post in requests.get(f"{mm}/_test/posts", timeout=5).json():
            print(f"to @{post['to']} ({post['via']}): {post['message']}")

        step("stop_job")
        show(client.wait(client.stop_job("carme-demo", user["name"]), 30))

        step("epilog event: the daemon asks Slurm how the job ended")
        status = wait_for(lambda: (s := jobstatus.read(spool, job_id)) and s["state"] == "cancelled" and s,
                          "the epilog event")
        print(" → ".join(h["kind"] + ("" if h["applied"] else " (dup)") for h in status["history"]))

        step("set_password: sealed by the portal, opened only in the daemon's memory")
        dn = f"uid={user['name']},{description['ldap']['people_base']}"
        show(client.wait(client.set_password(dn, user["name"], user["password"]), 30))

        step("the admin's view")
        time.sleep(1.2)
        admin = [str(bin_dir / "carme-backend"), "--config", carme["config"]]
        subprocess.run([*admin, "status"], env=env)
        subprocess.run([*admin, "audit", "--since", "10m"], env=env)
        return 0
    finally:
        daemon.terminate()
        daemon.wait(60)
        step("bringing the testbed down")
        bed.down()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "var/demo"))
