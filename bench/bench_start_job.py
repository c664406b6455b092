"""start_job through the daemon against a raw submit loop of the same jobs.

A testbed of its own (free ports), N jobs each way: the raw loop submits the very script the
daemon renders, as the same user with the same options — `sbatch --parsable` for the CLI
backend, pyslurm's JobSubmitDescription.submit() for pyslurm; the daemon run drops N
start_job requests at once and waits for every slurm_job_id. Also drop → slurm_job_id
latency p50/p99 for single requests. All jobs are cancelled at the end. Prints one JSON
line; target ratio ≥ 0.8. The raw jobs carry no Carme marker in their comment, so their
prolog/epilog hooks don't send the daemon events while its phase is measured.

BENCH_SECTIONS (JSON) changes the daemon's config, e.g. '{"daemon": {"workers": 8}}'.
BENCH_BACKEND=pyslurm measures the pyslurm backend (it needs a Slurm pyslurm was built for:
CARME_TESTBED_SLURM=its prefix). The daemon also sends each user the original's "job
scheduled" DM (to the testbed's Mattermost stand-in); BENCH_NO_NOTICES=1 turns that off, to
compare the Slurm work alone.
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
from testbed import Testbed, carme, free_port  # noqa: E402

N = int(os.environ.get("BENCH_N", "200"))
BACKEND = os.environ.get("BENCH_BACKEND", "cli")
NOTICES = not os.environ.get("BENCH_NO_NOTICES")
LATENCY_SAMPLES = 100


def args_for(description: dict, name: str) -> dict:
    """Jobs that keep running: the first ones take the node, the rest wait, and neither
    phase's jobs end (and report events) while the other phase is measured."""
    user = description["users"][0]
    return dict(user=user["name"], frontend_job_id="bench", image=description["images"][0],
                mounts=[user["home"]], partition="debug", gpus=0, nodes=1, name=name, time_limit=5)


def raw_sbatch_loop(description: dict, script: str, env: dict) -> float:
    user = description["users"][0]
    started = time.perf_counter()
    for n in range(N):
        subprocess.run(["sbatch", "--parsable", f"--uid={user['uid']}", f"--gid={user['gid']}",
                        "--export=NONE", f"--job-name=raw-{n}", "--partition=debug", "--nodes=1",
                        "--comment=bench-raw", f"--chdir={user['home']}", "--output=/dev/null",
                        "--time=5"], input=script, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started


def raw_pyslurm_loop(description: dict, script: str, env: dict) -> float:
    from carme.daemon.slurm.pyslurm_backend import load_pyslurm
    pyslurm = load_pyslurm(description["slurm"]["conf"])
    user = description["users"][0]
    started = time.perf_counter()
    for n in range(N):
        pyslurm.JobSubmitDescription(
            name=f"raw-{n}", script=script, partitions="debug", nodes=1, user_id=user["uid"],
            group_id=user["gid"], working_directory=user["home"], standard_output="/dev/null",
            environment="NONE", time_limit=5, comment="bench-raw").submit()
    return time.perf_counter() - started


RAW_LOOPS = {"cli": ("sbatch --parsable loop", raw_sbatch_loop),
             "pyslurm": ("pyslurm JobSubmitDescription.submit() loop", raw_pyslurm_loop)}


def daemon_config(description: dict) -> str:
    """The testbed's daemon config, with the backend under test and the notices as asked."""
    backend = description["carme"]
    sections = {"slurm": {**carme.slurm_section(description), "backend": BACKEND},
                "notify": {"start_job": NOTICES},
                **carme.messaging_sections(description, Path(backend["keys"]))}
    for name, table in json.loads(os.environ.get("BENCH_SECTIONS", "{}")).items():
        sections[name] = {**sections.get(name, {}), **table}
    return str(carme.write_backend(Path(backend["config"]).parent, Path(backend["keys"]), sections))


def main() -> None:
    baseline, raw_loop = RAW_LOOPS[BACKEND]
    base = Path(tempfile.mkdtemp(prefix="carme-bench-start-"))
    bed = Testbed(base, ctld_port=free_port(), slurmd_port=free_port())
    description = bed.up()
    env = {"PATH": f"{description['slurm']['bin_dir']}:/usr/bin:/bin",
           "SLURM_CONF": description["slurm"]["conf"]}
    backend = description["carme"]
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "carme-backend"), "--config",
                               daemon_config(description), "run"], stdout=subprocess.DEVNULL,
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
        "bench": "start_job", "backend": BACKEND, "baseline": baseline, "jobs": N, "ok": ok,
        "scheduled_notices": NOTICES,
        "raw_per_s": round(N / raw, 1), "daemon_per_s": round(N / daemon_s, 1),
        "ratio": round(raw / daemon_s, 3), "target_ratio": 0.8,
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 1),
    }))


if __name__ == "__main__":
    main()
