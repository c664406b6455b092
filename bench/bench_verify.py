"""Verification throughput: the full parse + verify path against raw PyNaCl verify of the
same bytes, in one run. Prints a JSON line; target ratio ≥ 0.5."""

from __future__ import annotations

import base64
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from carme.spool import write_request  # noqa: E402
from carme.spool.envelope import canonical  # noqa: E402
from spoolkit import VALID_ARGS, make_kit  # noqa: E402

N = 5000


def best_rate(run, repeats: int = 3) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        rates.append(N / (time.perf_counter() - started))
    return max(rates)


def main() -> None:
    kit = make_kit(Path(tempfile.mkdtemp(prefix="carme-bench-")))
    key = kit.signing_key("frontend")
    raws = []
    for _ in range(N):
        request_id = write_request(kit.spool, "frontend", key, "start_job", VALID_ARGS["start_job"],
                                   ttl=3600)
        path = kit.spool.request_path("incoming", request_id)
        raws.append(path.read_bytes())
        path.unlink()
    verifier = kit.verifier(max_ttl=3600)
    verify_key = verifier.signers["frontend"].verify_key
    signed = []
    for raw in raws:
        obj = json.loads(raw)
        sig = base64.b64decode(obj.pop("sig"))
        signed.append((canonical(obj), sig))

    def raw_verify():
        for message, sig in signed:
            verify_key.verify(message, sig)

    def full_path():
        for raw in raws:
            verifier.verify(raw)

    raw_rate = best_rate(raw_verify)
    full_rate = best_rate(full_path)
    print(json.dumps({"bench": "verify", "requests": N, "request_bytes": len(raws[0]),
                      "raw_pynacl_verify_per_s": round(raw_rate), "full_parse_verify_per_s": round(full_rate),
                      "ratio": round(full_rate / raw_rate, 3), "target_ratio": 0.5}))


if __name__ == "__main__":
    main()
