"""The testbed: real Slurm, slapd and a Mattermost stand-in under one folder, for tests and the demo.

Not part of the shipped distribution. ``up`` is idempotent: on a healthy testbed it does
nothing, on a half-up one it stops what is left (by recorded pid) and starts everything
again. ``DIR/testbed.json`` describes a running testbed; ``DIR/env.sh`` exports what a shell
needs to use it.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shlex
import socket
import sys
from pathlib import Path

from testbed import carme, ldap, mattermost, procs, runtime, slurm, users


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Testbed:
    base: Path
    ctld_port: int = 6817
    slurmd_port: int = 6818
    #: where the Slurm under test is installed; see testbed.slurm
    slurm_prefix: str = dataclasses.field(default_factory=slurm.prefix_from_environment)

    def __post_init__(self):
        self.base = Path(self.base).resolve()

    @property
    def description_path(self) -> Path:
        return self.base / "testbed.json"

    def description(self) -> dict:
        return json.loads(self.description_path.read_text())

    # --- the parts ----------------------------------------------------------------------
    @property
    def hook_program(self) -> Path:
        """carme-slurm-hook with this testbed's config: Slurm passes a prolog no arguments."""
        return self.base / "bin" / "carme-hook"

    def slurm_settings(self) -> slurm.SlurmSettings:
        hook = str(self.hook_program)
        return slurm.SlurmSettings(self.base, self.ctld_port, self.slurmd_port, self.slurm_prefix,
                                   prolog_slurmctld=hook, epilog_slurmctld=hook,
                                   prolog=hook, epilog=hook)

    def _secrets(self) -> dict:
        """Passwords and ports of this testbed, kept across restarts of the same folder."""
        path = self.base / "secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        values = {
            "ldap_port": free_port(),
            "mattermost_port": free_port(),
            "ldap_admin": secrets.token_urlsafe(12),
            "ldap_service": secrets.token_urlsafe(12),
            "bot_token": secrets.token_hex(13),
            "webhook_key": secrets.token_hex(13),
            "locked_webhook_key": secrets.token_hex(13),
            "users": {name: secrets.token_urlsafe(12) for name in users.USER_NAMES},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    def ldap_settings(self) -> ldap.LdapSettings:
        values = self._secrets()
        return ldap.LdapSettings(self.base, values["ldap_port"], values["ldap_admin"],
                                 values["ldap_service"])

    # --- lifecycle ----------------------------------------------------------------------
    def is_healthy(self) -> bool:
        return (self.description_path.exists()
                and slurm.is_healthy(self.slurm_settings())
                and ldap.is_healthy(self.ldap_settings())
                and procs.recorded_pid(self.base, "mattermost") is not None)

    def up(self) -> dict:
        if self.is_healthy():
            return self.description()
        self.down()
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)  # jobs run as the test users must reach files below
        values = self._secrets()
        test_users = users.ensure_users(values["users"])
        description = self._describe(test_users)
        description["container"] = runtime.install(self.base, [u.home for u in test_users])
        description["images"] = description["container"]["images"]
        description["carme"] = self._write_backend(description)
        try:
            slurm.up(self.slurm_settings())
            ldap.up(self.ldap_settings(), test_users)
            self.start_mattermost(test_users)
        except BaseException:
            self.down()  # never leave a half-up testbed behind (see log/ for why)
            raise
        self.description_path.write_text(json.dumps(description, indent=2))
        self._write_env(description)
        return description

    def down(self) -> None:
        procs.stop(self.base, "mattermost")
        ldap.down(self.base)
        slurm.down(self.slurm_settings())
        self.description_path.unlink(missing_ok=True)

    def status(self) -> dict:
        names = ("munged", "slurmctld", "slurmd", "slapd", "mattermost")
        return {name: procs.recorded_pid(self.base, name) for name in names}

    # --- Mattermost stand-in ------------------------------------------------------------
    def mattermost_config_path(self) -> Path:
        return self.base / "mattermost" / "config.json"

    def start_mattermost(self, test_users: list[users.TestUser]) -> None:
        values = self._secrets()
        path = self.mattermost_config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        people = [{"username": u.name, "id": mattermost.new_id()} for u in test_users]
        people.append({"username": "carme-bot", "id": mattermost.new_id(), "is_bot": True})
        config = {
            "port": values["mattermost_port"],
            "bot_token": values["bot_token"],
            "bot_username": "carme-bot",
            "users": people,
            "webhooks": {
                values["webhook_key"]: {"locked_channel": None},
                values["locked_webhook_key"]: {"locked_channel": "@carme-bot"},
            },
        }
        path.write_text(json.dumps(config))
        self.restart_mattermost()

    def restart_mattermost(self) -> None:
        """(Re)start the stand-in on its fixed port; tests use this after stopping it."""
        procs.stop(self.base, "mattermost")
        procs.spawn(self.base, "mattermost",
                    [sys.executable, "-m", "testbed.mattermost", str(self.mattermost_config_path())],
                    env=None)
        url = self.mattermost_url()
        procs.wait_until(lambda: _http_ok(f"{url}/_test/posts"), 15, "the Mattermost stand-in")

    def stop_slurmctld(self) -> None:
        """Stop the controller only (tests of a Slurm outage); jobs and slurmd go on."""
        procs.stop(self.base, "slurmctld")

    def start_slurmctld(self) -> None:
        slurm.start_controller(self.slurm_settings())

    def stop_slapd(self) -> None:
        ldap.down(self.base)

    def start_slapd(self) -> None:
        ldap.start(self.ldap_settings())

    def stop_mattermost(self) -> None:
        procs.stop(self.base, "mattermost")

    def mattermost_url(self) -> str:
        return f"http://127.0.0.1:{self._secrets()['mattermost_port']}"

    # --- description --------------------------------------------------------------------
    def _describe(self, test_users: list[users.TestUser]) -> dict:
        s = self.slurm_settings()
        values = self._secrets()
        url = self.mattermost_url()
        return {
            "base": str(self.base),
            "slurm": {
                "conf": str(s.conf),
                "bin_dir": s.bin_dir,
                "ctld_port": s.ctld_port,
                "slurmd_port": s.slurmd_port,
                "node": s.node,
                "partitions": list(slurm.PARTITIONS),
                "gpu_types": list(slurm.GPU_TYPES),
                "gpus": len(slurm.GPU_TYPES) * slurm.GPUS_PER_TYPE,
                "jobcomp_log": str(s.jobcomp_log),
            },
            "users": [u.as_json() for u in test_users],
            "ldap": self.ldap_settings().as_json(),
            "mattermost": {
                "url": url,
                "bot_token": values["bot_token"],
                "bot_username": "carme-bot",
                "webhook_url": f"{url}/hooks/{values['webhook_key']}",
                "locked_webhook_url": f"{url}/hooks/{values['locked_webhook_key']}",
            },
        }

    def _write_backend(self, description: dict) -> dict:
        """A ready daemon config and client keys under ``DIR/carme``."""
        root, key_dir = self.base / "carme", self.base / "carme" / "keys"
        description["hook_program"] = str(self.hook_program)
        sections = {"slurm": carme.slurm_section(description),
                    **carme.messaging_sections(description, key_dir)}
        config = carme.write_backend(root, key_dir, sections)
        hooks = carme.write_hooks(root, key_dir, self.hook_program)
        return {"config": str(config), "spool": str(root / "spool"), "keys": str(key_dir),
                "log": str(root / "backend.log"), "hooks_config": str(hooks),
                "hooks_log": str(root / "hooks.log")}

    def _write_env(self, description: dict) -> None:
        backend = description["carme"]
        keys = Path(backend["keys"])
        exports = {
            "SLURM_CONF": description["slurm"]["conf"],
            "CARME_TESTBED_DIR": str(self.base),
            "CARME_CONFIG": backend["config"],
            "CARME_SPOOL": backend["spool"],
            "CARME_SIGNER": "frontend",
            "CARME_KEY": str(keys / "frontend.key"),
            "CARME_SEAL_TO": str(keys / "seal.pub"),
        }
        lines = [f"export {key}={shlex.quote(value)}" for key, value in exports.items()]
        lines.append(f'export PATH={shlex.quote(description["slurm"]["bin_dir"])}:"$PATH"')
        (self.base / "env.sh").write_text("\n".join(lines) + "\n")


def _http_ok(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
