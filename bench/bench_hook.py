"""One carme-slurm-hook run (prolog context, a Carme job) against `python3 -c pass`, same run.

Both are whole processes, interpreter start included, as Slurm runs them. Prints one JSON
line with mean and p99 of each and the ratio; target: hook under 100 ms.
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

from carme.spool.layout import Spool  # noqa: E402
from testbed.carme import make_keys  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "100"))


def timed(argv: list[str], env: dict) -> list[float]:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return sorted(samples)


def summary(samples: list[float]) -> dict:
    return {"mean_ms": round(statistics.fmean(samples), 1),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 1)}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="carme-bench-hook-"))
    make_keys(work / "keys")
    Spool(work / "spool").create()
    config = work / "hooks.toml"
    config.write_text(f'spool = "{work}/spool"\nsigning_key = "{work}/keys/hooks.key"\n'
                      f'log_file = "{work}/hooks.log"\n')
    env = {"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_JOB_ID": "7", "SLURM_JOB_USER": "carmetest1",
           "SLURM_JOB_NAME": "bench", "SLURM_JOB_COMMENT": "carme:bench:1", "SLURM_JOB_NODELIST": "vm"}
    baseline = timed([sys.executable, "-c", "pass"], env)
    hook = timed([str(Path(sys.executable).parent / "carme-slurm-hook"), "--config", str(config)], env)
    written = len(Spool(work / "spool").entries("incoming")[0])
    print(json.dumps({"bench": "slurm_hook", "runs": RUNS, "events_written": written,
                      "hook": summary(hook), "python_pass": summary(baseline),
                      "ratio_mean": round(statistics.fmean(hook) / statistics.fmean(baseline), 2),
                      "target_ms": 100}))


if __name__ == "__main__":
    main()
