"""carme-slurm-hook: placeholder entry point until the hooks land (issue 6)."""

import argparse
import sys

from carme.spool import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carme-slurm-hook", description=__doc__)
    parser.add_argument("--version", action="version", version=f"carme-slurm-hook {__version__}")
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
