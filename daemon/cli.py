"""carme-backend: run the daemon, check its config, make keys, send requests, and inspect
the spool.

    carme-backend run [--config FILE]
    carme-backend check-config [--config FILE]
    carme-backend keygen --signer NAME | --seal  [--dir DIR]
    carme-backend request [--spool DIR] [--signer NAME] [--key FILE] [--seal-to FILE]
                          [--wait SECONDS] OP [FIELD=VALUE ...]
    carme-backend status | ls [STATE] | show ID | retry ID | audit [...] | prune

The config is ``--config``, else ``$CARME_CONFIG``, else /etc/carme/backend.toml.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from carme.daemon import admin
from carme.daemon import config as configuration
from carme.spool import SpoolClient, __version__, keys
from carme.spool.errors import SpoolError
from carme.spool.layout import STATES, Spool


def _config_path(args) -> Path:
    return Path(args.config or os.environ.get("CARME_CONFIG") or configuration.DEFAULT_PATH)


def _load(args) -> configuration.Config:
    return configuration.load(_config_path(args))


def cmd_run(args) -> int:
    from carme.daemon import service
    return service.run(_config_path(args))


def cmd_check_config(args) -> int:
    from carme.daemon import checks
    config = _load(args)
    found = checks.problems(config)
    for problem in found:
        print(f"{config.source}: {problem}", file=sys.stderr)
    if not found:
        print(f"{config.source}: ok ({len(config.signers)} signer(s), spool {config.spool.path})")
    return 1 if found else 0


def cmd_keygen(args) -> int:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    made = keys.generate_seal(directory) if args.seal else keys.generate_signer(directory, args.signer)
    for path in made:
        print(path)
    return 0


def _field(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def cmd_request(args) -> int:
    spool = args.spool or os.environ.get("CARME_SPOOL")
    signer = args.signer or os.environ.get("CARME_SIGNER")
    key = args.key or os.environ.get("CARME_KEY")
    seal_to = args.seal_to or os.environ.get("CARME_SEAL_TO")
    if not (spool and signer and key):
        print("request needs --spool, --signer and --key (or CARME_SPOOL, CARME_SIGNER, CARME_KEY)",
              file=sys.stderr)
        return 2
    fields = dict(args.fields)
    client = SpoolClient(spool, signer, key, seal_to=seal_to or None)
    try:
        if args.op == "set_password" and "password" in fields:
            if fields["password"] == "-":  # keep the password out of argv and shell history
                fields["password"] = sys.stdin.readline().rstrip("\n")
            request_id = client.set_password(**fields)
        else:
            request_id = client.submit(args.op, **fields)
    except (SpoolError, TypeError) as error:
        print(f"request not written: {error}", file=sys.stderr)
        return 2
    print(request_id)
    if args.wait is None:
        return 0
    try:
        response = client.wait(request_id, args.wait)
    except TimeoutError as error:
        print(str(error), file=sys.stderr)
        return 3
    print(json.dumps(response, indent=2))
    return 0 if response.get("status") == "ok" else 1


def _spool(args) -> Spool:
    return Spool(_load(args).spool.path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carme-backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"carme-backend {__version__}")
    parser.add_argument("--config", help="config file (default $CARME_CONFIG or "
                                         f"{configuration.DEFAULT_PATH})")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run the daemon in the foreground").set_defaults(func=cmd_run)
    sub.add_parser("check-config", help="validate the config, keys and spool").set_defaults(
        func=cmd_check_config)

    keygen = sub.add_parser("keygen", help="create a signer's key pair or the sealing pair")
    which = keygen.add_mutually_exclusive_group(required=True)
    which.add_argument("--signer", help="NAME: writes NAME.key (0600) and NAME.pub")
    which.add_argument("--seal", action="store_true", help="writes seal.key (0600) and seal.pub")
    keygen.add_argument("--dir", default=".", help="where to write the files")
    keygen.set_defaults(func=cmd_keygen)

    request = sub.add_parser("request", help="write a signed request (as the portal does)")
    request.add_argument("--spool")
    request.add_argument("--signer")
    request.add_argument("--key")
    request.add_argument("--seal-to")
    request.add_argument("--wait", type=float, metavar="SECONDS",
                         help="wait for the response; exit 0 ok, 1 error/rejected, 3 timeout")
    request.add_argument("op")
    request.add_argument("fields", nargs="*", type=_field, metavar="FIELD=VALUE",
                         help="a VALUE that parses as JSON is taken as JSON, else as a string")
    request.set_defaults(func=cmd_request)

    sub.add_parser("status", help="the daemon's heartbeat").set_defaults(
        func=lambda a: admin.status(_spool(a)))
    ls = sub.add_parser("ls", help="requests in a state (default: all but done)")
    ls.add_argument("state", nargs="?", choices=STATES)
    ls.set_defaults(func=lambda a: admin.ls(
        _spool(a), [a.state] if a.state else ["incoming", "active", "deferred", "failed"]))
    show = sub.add_parser("show", help="everything known about one request")
    show.add_argument("id")
    show.set_defaults(func=lambda a: admin.show(_spool(a), a.id))
    retry = sub.add_parser("retry", help="move a failed or deferred request back to incoming/")
    retry.add_argument("id")
    retry.set_defaults(func=lambda a: admin.retry(_spool(a), a.id))
    audit = sub.add_parser("audit", help="filter the audit journal")
    audit.add_argument("--op")
    audit.add_argument("--user")
    audit.add_argument("--outcome", choices=("done", "failed", "rejected", "retried"))
    audit.add_argument("--since", help="30m, 2h, 7d, a Unix time or an ISO date")
    audit.set_defaults(func=lambda a: admin.audit(_spool(a), a.op, a.user, a.outcome, a.since))
    prune = sub.add_parser("prune", help="remove old done/failed/responses, stale tmp files")
    prune.set_defaults(func=lambda a: admin.prune(_spool(a), _load(a).spool.retention))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except configuration.ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except SpoolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
