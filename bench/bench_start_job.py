"""start_job through the daemon against a raw `sbatch --parsable` loop of the same jobs.

A testbed of its own (free ports), N jobs each way: the raw loop submits the very script the
daemon renders, as the same user with the same options; the daemon run drops N start_job
requests at once and waits for every slurm_job_id. Also drop → slurm_job_id latency p50/p99
for single requests. All jobs are cancelled at the end. Prints one JSON line; target ratio
≥ 0.8 with the CLI backend. The daemon also sends each user the original's "job scheduled"
DM (to the testbed's Mattermost stand-in); BENCH_NO_NOTICES=1 turns that off, to compare
the Slurm work alone.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from carme.spool import SpoolClient  # noqa: E402
from testbed import Testbed, free_port  # noqa: E402

N = int(os.environ.get("BENCH_N", "200"))
LATENCY_SAMPLES = 100


def args_for(description: dict, name: str) -> dict:
    user = description["users"][0]
    return dict(user=user["name"], frontend_job_id="quick", image=description["images"][0],
                mounts=[user["home"]], partition="debug", gpus=0, nodes=1, name=name, time_limit=5)


def raw_loop(description: dict, script: str, env: dict) -> float:
    user = description["users"][0]
    started = time.perf_counter()
    for n in range(N):
        subprocess.run(["sbatch", "--parsable", f"--uid={user['uid']}", f"--gid={user['gid']}",
                        "--export=NONE", f"--job-name=raw-{n}", "--partition=debug", "--nodes=1",
                        "--comment=carme:bench", f"--chdir={user['home']}", "--output=/dev/null",
                        "--time=5"], input=script, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="carme-bench-start-"))
    bed = Testbed(base, ctld_port=free_port(), slurmd_port=free_port())
    description = bed.up()
    env = {"PATH": "/usr/bin:/bin", "SLURM_CONF": description["slurm"]["conf"]}
    backend = description["carme"]
    if os.environ.get("BENCH_NO_NOTICES"):
        with open(backend["config"], "a") as f:
            f.write("\n[notify]\nstart_job = false\n")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "carme-backend"), "--config",
                               backend["config"], "run"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, **env})
    try:
        client = SpoolClient(backend["spool"], "frontend", Path(backend["keys"]) / "frontend.key")
        while not Path(backend["spool"], "status.json").exists():
            time.sleep(0.05)
        # one job through the daemon gives the exact script the raw loop submits
        first = client.wait(client.start_job(**args_for(description, "bench-probe")), 60)
        script = subprocess.run(["scontrol", "write", "batch_script",
                                 str(first["result"]["slurm_job_id"]), "-"],
                                env=env, capture_output=True, text=True, check=True).stdout
        raw = raw_loop(description, script, env)
        started = time.perf_counter()
        ids = [client.start_job(**args_for(description, f"bench-{n}")) for n in range(N)]
        responses = [client.wait(i, 300) for i in ids]
        daemon_s = time.perf_counter() - started
        ok = sum(1 for r in responses if r["status"] == "ok")
        latencies = []
        for n in range(LATENCY_SAMPLES):
            dropped = time.perf_counter()
            client.wait(client.start_job(**args_for(description, f"lat-{n}")), 60)
            latencies.append((time.perf_counter() - dropped) * 1000)
        latencies.sort()
    finally:
        subprocess.run(["scancel", "--user", description["users"][0]["name"]], env=env)
        daemon.terminate()
        daemon.wait(60)
        bed.down()
    print(json.dumps({
        "bench": "start_job", "backend": "cli", "jobs": N, "ok": ok,
        "scheduled_notices": not os.environ.get("BENCH_NO_NOTICES"),
        "raw_sbatch_per_s": round(N / raw, 1), "daemon_per_s": round(N / daemon_s, 1),
        "ratio": round(raw / daemon_s, 3), "target_ratio": 0.8,
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 1),
    }))


if __name__ == "__main__":
    main()
