"""make demo: bring the testbed up, run one GPU job as a test user, show it, bring it down."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from testbed import Testbed


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main(base: str) -> int:
    bed = Testbed(Path(base))
    step(f"bringing the testbed up in {bed.base}")
    started = time.monotonic()
    description = bed.up()
    print(f"up in {time.monotonic() - started:.1f}s: {bed.status()}")
    env = {"SLURM_CONF": description["slurm"]["conf"], "PATH": "/usr/bin:/bin"}
    user = description["users"][0]
    try:
        step(f"submitting a 1-GPU job as {user['name']}")
        out = Path(user["home"]) / "carme-demo.out"
        job_id = subprocess.run(
            ["sbatch", "--parsable", f"--uid={user['name']}", f"--gid={user['name']}",
             "--export=NONE", f"--chdir={user['home']}", "--gres=gpu:1", f"--output={out}",
             "--job-name=carme-demo", "--wrap",
             "echo running as $(id -un) on $(hostname -s) with GPU $CUDA_VISIBLE_DEVICES; sleep 2"],
            env=env, capture_output=True, text=True, check=True).stdout.strip()
        print(f"Slurm job {job_id}")
        seen = None
        for _ in range(100):
            state = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env,
                                   capture_output=True, text=True).stdout
            state = next((t.split("=", 1)[1] for t in state.split() if t.startswith("JobState=")), "?")
            if state != seen:
                print(f"job {job_id}: {state}")
                seen = state
            if state in ("COMPLETED", "FAILED", "CANCELLED"):
                break
            time.sleep(0.2)
        step("job output")
        print(out.read_text().strip())
        return 0 if seen == "COMPLETED" else 1
    finally:
        step("bringing the testbed down")
        bed.down()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "var/demo"))
