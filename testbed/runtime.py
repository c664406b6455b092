"""The testbed's stand-in container runtime, and the start command it runs.

Debian 12 has no apptainer or singularity. The stand-in takes apptainer's ``exec`` command
line (``exec [--nv] [--bind PATH]... IMAGE COMMAND...``), checks it (the image is a
readable file, every bind exists), records it as JSON in
``~/.carme-runtime/<SLURM_JOB_ID>.json`` of the user the job runs as, and then runs
COMMAND on the host — so test jobs really run, as the user, until stopped or timed out.
It replaces only the container: no image is unpacked, no namespace entered, ``--nv``
is recorded, not acted on.

The start command, ``carme-start``, behaves by the frontend job id it was given, so tests
can ask for a job that fails or ends: ``exit-N`` exits N, ``quick`` ends after a second,
anything else sleeps until the job is stopped or reaches its time limit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

RUNTIME = '''#!/usr/bin/python3
import json, os, sys
args = sys.argv[1:]
if not args or args[0] != "exec":
    sys.exit("stand-in runtime: only 'exec' is supported, got %r" % args[:1])
args, nv, binds = args[1:], False, []
while args and args[0].startswith("--"):
    flag = args.pop(0)
    if flag == "--nv":
        nv = True
    elif flag == "--bind":
        binds.append(args.pop(0))
    else:
        sys.exit("stand-in runtime: unknown option %s" % flag)
if len(args) < 2:
    sys.exit("stand-in runtime: need IMAGE COMMAND")
image, command = args[0], args[1:]
problems = [p for p in binds if not os.path.exists(p)]
if not os.path.isfile(image) or not os.access(image, os.R_OK):
    problems.append(image)
record = {"image": image, "binds": binds, "nv": nv, "command": command, "uid": os.getuid(),
          "gid": os.getgid(), "home": os.environ.get("HOME"),
          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "missing": problems}
folder = os.path.expanduser("~/.carme-runtime")
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, "%s.json" % os.environ.get("SLURM_JOB_ID", "nojob")), "w") as f:
    json.dump(record, f)
if problems:
    sys.exit("stand-in runtime: missing %s" % problems)
os.execvp(command[0], command)
'''

START = '''#!/bin/sh
case "${CARME_FRONTEND_JOB_ID:-}" in
    exit-*) exit "${CARME_FRONTEND_JOB_ID#exit-}" ;;
    quick) sleep 1; exit 0 ;;
    *) exec sleep 100000 ;;
esac
'''


def install(base: Path, homes: list[str]) -> dict:
    """Write the runtime, the start command and an image under ``base``; forget records of
    an earlier testbed in the users' ``homes`` (job ids start at 1 again); return the paths."""
    for home in homes:
        shutil.rmtree(Path(home) / ".carme-runtime", ignore_errors=True)
    bin_dir, images, data = base / "bin", base / "images", base / "data" / "shared"
    for folder in (bin_dir, images, data):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
    runtime, start = bin_dir / "apptainer", bin_dir / "carme-start"
    runtime.write_text(RUNTIME)
    start.write_text(START)
    for program in (runtime, start):
        program.chmod(0o755)
    image = images / "base.sif"
    image.write_bytes(b"stand-in image: not a real SIF\\n")
    image.chmod(0o644)
    return {"runtime": str(runtime), "start_command": [str(start)], "images": [str(image)],
            "image_root": str(images), "mount_roots": ["/home", str(base / "data")]}
