"""Daemon throughput and latency with `ping` requests.

- drain: N signed pings are prepared, then renamed into incoming/ at once; the time until
  every response exists gives the drain rate. Baseline in the same run: the bare cost of
  verifying and renaming the same files in one Python loop (ratio = daemon / bare).
- peak RSS of the daemon (VmHWM) after the drain.
- latency: single requests, one at a time, drop → response file, p50 and p99.

Prints one JSON line. Targets: drain ≥ 1,000 req/s, RSS ≤ 100 MB, p50 ≤ 20 ms.
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

from carme.daemon import checks, config as configuration  # noqa: E402
from carme.spool import SpoolClient, keys, write_request  # noqa: E402
from carme.spool.layout import Spool  # noqa: E402
from testbed.carme import write_backend  # noqa: E402

N = int(os.environ.get("BENCH_N", "10000"))
LATENCY_SAMPLES = 200


def prepare(spool: Spool, key, count: int, staging: Path) -> list[str]:
    """Write ``count`` signed pings, then move them out to ``staging`` (same filesystem)."""
    ids = []
    for _ in range(count):
        request_id = write_request(spool, "frontend", key, "ping", {}, ttl=900)
        os.rename(spool.request_path("incoming", request_id), staging / f"{request_id}.json")
        ids.append(request_id)
    return ids


def bare_cost(config_path: Path, spool: Spool, staging: Path, ids: list[str]) -> float:
    """Seconds to read, verify and rename the same files, without the daemon."""
    verifier = checks.build_verifier(configuration.load(config_path))
    target = spool.root / "bare"
    target.mkdir()
    started = time.perf_counter()
    for request_id in ids:
        source = staging / f"{request_id}.json"
        verifier.verify(source.read_bytes())
        os.rename(source, target / f"{request_id}.json")
    elapsed = time.perf_counter() - started
    for request_id in ids:
        os.rename(target / f"{request_id}.json", staging / f"{request_id}.json")
    return elapsed


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="carme-bench-daemon-"))
    config_path = write_backend(work, work / "keys", {"logging": {"level": 20}, **json.loads(os.environ.get("BENCH_SECTIONS", "{}"))})
    spool = Spool(work / "spool")
    key = keys.load_signing_key(work / "keys" / "frontend.key")
    staging = work / "staging"
    staging.mkdir()
    ids = prepare(spool, key, N, staging)
    bare = bare_cost(config_path, spool, staging, ids)

    daemon = subprocess.Popen([str(Path(sys.executable).parent / "carme-backend"), "--config",
                               str(config_path), "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not spool.status_path.exists():
            time.sleep(0.01)
        started = time.perf_counter()
        for request_id in ids:
            os.rename(staging / f"{request_id}.json", spool.request_path("incoming", request_id))
        responses = spool.folder("responses")
        while len(os.listdir(responses)) < N:
            time.sleep(0.2)  # listing 10,000 names costs CPU the daemon would otherwise use
        drain = time.perf_counter() - started
        rss_kb = int(next(line.split()[1] for line in Path(f"/proc/{daemon.pid}/status").read_text()
                          .splitlines() if line.startswith("VmHWM:")))
        client = SpoolClient(spool.root, "frontend", key)
        latencies = []
        for _ in range(LATENCY_SAMPLES):
            request_id = client.ping()
            dropped = time.perf_counter()
            path = spool.response_path(request_id)
            while not path.exists():
                time.sleep(0.0002)
            latencies.append((time.perf_counter() - dropped) * 1000)
        latencies.sort()
        ok = sum(1 for request_id in ids
                 if json.loads(spool.response_path(request_id).read_text())["status"] == "ok")
    finally:
        daemon.terminate()
        daemon.wait(60)
    print(json.dumps({
        "bench": "daemon_ping", "requests": N, "ok": ok,
        "drain_s": round(drain, 3), "drain_per_s": round(N / drain),
        "bare_verify_rename_per_s": round(N / bare), "ratio_daemon_to_bare": round(bare / drain, 3),
        "peak_rss_mb": round(rss_kb / 1024, 1),
        "latency_ms_p50": round(statistics.median(latencies), 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "targets": {"drain_per_s": 1000, "peak_rss_mb": 100, "latency_ms_p50": 20},
    }))


if __name__ == "__main__":
    main()
