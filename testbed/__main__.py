"""python -m testbed up|down|status DIR [--ctld-port N --slurmd-port N]"""

import argparse
import json
import sys

from testbed import Testbed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("dir")
    parser.add_argument("--ctld-port", type=int, default=6817)
    parser.add_argument("--slurmd-port", type=int, default=6818)
    args = parser.parse_args(argv)
    bed = Testbed(args.dir, args.ctld_port, args.slurmd_port)
    if args.action == "up":
        description = bed.up()
        print(f"testbed up in {description['base']}; source {description['base']}/env.sh")
    elif args.action == "down":
        bed.down()
        print(f"testbed down in {bed.base}")
    else:
        status = bed.status()
        print(json.dumps(status, indent=2))
        return 0 if all(status.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
