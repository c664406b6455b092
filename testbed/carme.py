"""A ready carme-backend for the testbed: keys, a spool, and ``DIR/carme/backend.toml``.

``write_backend`` is also what tests call to get a daemon config for a spool of their own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from carme.spool import keys
from carme.spool.layout import Spool
from carme.spool.schema import OPERATIONS

PORTAL_OPS = sorted(op for op in OPERATIONS if op != "job_event")


def make_keys(key_dir: Path) -> None:
    key_dir.mkdir(parents=True, exist_ok=True)
    key_dir.chmod(0o700)
    for signer in ("frontend", "hooks", "admin"):
        if not (key_dir / f"{signer}.key").exists():
            keys.generate_signer(key_dir, signer)
    if not (key_dir / "seal.key").exists():
        keys.generate_seal(key_dir)


REPO = Path(__file__).resolve().parent.parent


def slurm_section(description: dict) -> dict:
    """The daemon's [slurm] table for this testbed's cluster, images and stand-in runtime."""
    container = description["container"]
    return {
        "backend": "cli",
        "conf": description["slurm"]["conf"],
        "bin_dir": description["slurm"]["bin_dir"],
        "partitions": description["slurm"]["partitions"],
        "gpu_types": description["slurm"]["gpu_types"],
        "max_gpus": description["slurm"]["gpus"],
        "image_roots": [container["image_root"]],
        "mount_roots": container["mount_roots"],
        "template": str(REPO / "etc" / "job.sh.tmpl"),
        "runtime": container["runtime"],
        "start_command": container["start_command"],
        "hook_program": description["hook_program"],
        "time_limit_warning_minutes": 1,
    }


def _private(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def messaging_sections(description: dict, key_dir: Path) -> dict:
    """[mattermost] (bot mode) and [ldap] (the delegated service account, plain ldap:// on
    loopback) for this testbed; their credentials go to 0600 files beside the keys."""
    key_dir.mkdir(parents=True, exist_ok=True)
    mm, directory = description["mattermost"], description["ldap"]
    return {
        "mattermost": {"mode": "bot", "url": mm["url"], "timeout": 5.0,
                       "token_file": _private(key_dir / "mattermost.token", mm["bot_token"]),
                       "webhook_url_file": _private(key_dir / "mattermost.webhook", mm["webhook_url"])},
        "ldap": {"uri": directory["uri"], "people_base": directory["people_base"],
                 "bind_dn": directory["service_dn"], "starttls": False, "allow_plaintext": True,
                 "timeout": 5.0,
                 "bind_password_file": _private(key_dir / "ldap.password", directory["service_password"])},
    }


def _toml(value) -> str:
    return json.dumps(value)  # JSON strings, numbers, bools and lists are valid TOML


def backend_toml(spool: Path, key_dir: Path, log_file: Path, sections: dict[str, dict]) -> str:
    """The config text; ``sections`` adds or overrides tables (e.g. {"daemon": {"workers": 2}})."""
    tables: dict[str, dict] = {
        "spool": {"path": str(spool), "rescan_interval": 1.0},
        "daemon": {"workers": 4, "heartbeat_interval": 1.0},
        "retry": {"initial_delay": 0.5, "max_delay": 5.0, "max_age": 120.0},
        "logging": {"level": 10, "file": str(log_file)},
        "keys": {"seal_private": str(key_dir / "seal.key")},
        "signers.frontend": {"public_key": str(key_dir / "frontend.pub"), "ops": PORTAL_OPS},
        "signers.hooks": {"public_key": str(key_dir / "hooks.pub"), "ops": ["job_event"],
                          "max_ttl": 7 * 86400},
        "signers.admin": {"public_key": str(key_dir / "admin.pub"), "ops": sorted(OPERATIONS)},
    }
    for name, table in sections.items():
        tables[name] = {**tables.get(name, {}), **table}
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in table.items())
        lines.append("")
    return "\n".join(lines)


def write_hooks(root: Path, key_dir: Path, wrapper: Path) -> Path:
    """``root/hooks.toml`` for the Slurm hooks, and the wrapper Slurm runs (adds --config)."""
    path = root / "hooks.toml"
    path.write_text(f"spool = {_toml(str(root / 'spool'))}\n"
                    f"signing_key = {_toml(str(key_dir / 'hooks.key'))}\n"
                    f"signer = \"hooks\"\nlog_file = {_toml(str(root / 'hooks.log'))}\n")
    hook = Path(sys.executable).parent / "carme-slurm-hook"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f"#!/bin/sh\nexec {hook} --config {path} \"$@\"\n")
    wrapper.chmod(0o755)
    return path


def write_backend(root: Path, key_dir: Path, sections: dict[str, dict] | None = None) -> Path:
    """Write ``root/backend.toml`` for a spool at ``root/spool``; return the config path."""
    root.mkdir(parents=True, exist_ok=True)
    make_keys(key_dir)
    path = root / "backend.toml"
    path.write_text(backend_toml(root / "spool", key_dir, root / "backend.log", sections or {}))
    Spool(root / "spool").create()
    return path
