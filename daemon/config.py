"""The daemon's configuration: TOML read with tomllib into frozen dataclasses.

Each section is a dataclass whose fields are its keys, with their defaults; ``etc/backend.toml``
documents every key. Unknown keys and wrong types are errors, and every error names the
file and the key (``backend.toml: [slurm] max_gpus: expected an integer, got "four"``).
"""

from __future__ import annotations

import dataclasses
import grp
import pwd
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PATH = Path("/etc/carme/backend.toml")


class ConfigError(Exception):
    """A configuration problem, naming the file and the key."""


@dataclass(frozen=True)
class SpoolConfig:
    path: Path = Path("/var/spool/carme")
    #: group of the portal (and hooks) that may write requests; None: root only
    writer_group: str | None = None
    #: "inotify", or "polling" for a spool on NFS (no inotify across hosts)
    observer: str = "inotify"
    rescan_interval: float = 5.0
    #: seconds done/, failed/ and responses/ are kept
    retention: float = 14 * 86400.0
    #: fsync responses and audit lines before a request counts as ended
    durable: bool = True


@dataclass(frozen=True)
class DaemonConfig:
    workers: int = 4
    max_skew: float = 60.0
    shutdown_timeout: float = 30.0
    heartbeat_interval: float = 5.0


@dataclass(frozen=True)
class RetryConfig:
    initial_delay: float = 5.0
    max_delay: float = 300.0
    #: a request still failing transiently this long after its first try fails for good
    max_age: float = 3600.0

    def delay(self, failures: int, floor: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row: doubling from
        initial_delay up to max_delay, and never less than a service's own Retry-After."""
        backoff = min(self.initial_delay * 2 ** (failures - 1), self.max_delay)
        return max(backoff, floor or 0.0)


@dataclass(frozen=True)
class LoggingConfig:
    #: 10 debug, 20 info, 30 warning, 40 error (as the original setCarmeLog)
    level: int = 20
    #: a file (reopened when logrotate moves it), or "" for stderr
    file: str = ""


@dataclass(frozen=True)
class KeysConfig:
    #: the daemon's X25519 private key, to open sealed secrets
    seal_private: Path = Path("/etc/carme/keys/seal.key")


@dataclass(frozen=True)
class SignerConfig:
    public_key: Path
    ops: tuple[str, ...]
    max_ttl: float = 900.0
    #: user names or uids the signer's request files must be owned by; empty: anyone
    owners: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    source: Path
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    signers: dict[str, SignerConfig] = field(default_factory=dict)
    #: the services' sections present in the file ([slurm], ...), each parsed by the
    #: dataclass its module registered; a service without its section is not set up
    extra: dict[str, object] = field(default_factory=dict)


#: Sections other modules add (slurm, mattermost, ldap, notify): name -> dataclass.
EXTRA_SECTIONS: dict[str, type] = {}


def register_section(name: str):
    """Class decorator: make ``[name]`` a known section, parsed into that dataclass."""
    def decorate(cls):
        EXTRA_SECTIONS[name] = cls
        return cls
    return decorate


def _convert(value, kind, where: str):
    """Check ``value`` against the annotation ``kind``; convert paths and tuples."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [k for k in options if k is not type(None)]
        return _convert(value, inner, where)
    if kind is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind in (int, float):
        accepted = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ConfigError(f"{where}: expected {'an integer' if kind is int else 'a number'}, "
                              f"got {value!r}")
        return kind(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        (item,) = {k for k in typing.get_args(kind) if k is not Ellipsis}
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_kind, value_kind = typing.get_args(kind)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {_convert(k, key_kind, where): _convert(v, value_kind, f"{where}.{k}")
                for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported setting type {kind!r}")  # pragma: no cover


def parse_section(cls, table, where: str):
    """Build dataclass ``cls`` from a TOML table, rejecting unknown keys and bad types."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name in table:
            values[name] = _convert(table[name], hints[name], f"{where} {name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    try:
        instance = cls(**values)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    return instance


CORE_SECTIONS = {"spool": SpoolConfig, "daemon": DaemonConfig, "retry": RetryConfig,
                 "logging": LoggingConfig, "keys": KeysConfig}


def load(path: Path) -> Config:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    _import_operation_sections()
    known = {*CORE_SECTIONS, "signers", *EXTRA_SECTIONS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    parts = {name: parse_section(cls, data.get(name, {}), f"{path}: [{name}]")
             for name, cls in CORE_SECTIONS.items()}
    signers = {}
    for name, table in data.get("signers", {}).items():
        signers[name] = parse_section(SignerConfig, table, f"{path}: [signers.{name}]")
    if not signers:
        raise ConfigError(f"{path}: no [signers.NAME] section: nobody could send a request")
    extra = {name: parse_section(cls, data[name], f"{path}: [{name}]")
             for name, cls in EXTRA_SECTIONS.items() if name in data}
    config = Config(path, signers=signers, extra=extra, **parts)
    _check_values(config)
    return config


def _import_operation_sections() -> None:
    """The operations' modules register their sections when imported."""
    from carme.daemon import operations  # noqa: F401


def _check_values(config: Config) -> None:
    where = config.source
    from carme.spool.schema import OPERATIONS
    if config.spool.observer not in ("inotify", "polling"):
        raise ConfigError(f"{where}: [spool] observer: must be \"inotify\" or \"polling\"")
    if config.daemon.workers < 1:
        raise ConfigError(f"{where}: [daemon] workers: must be at least 1")
    if config.logging.level not in (10, 20, 30, 40):
        raise ConfigError(f"{where}: [logging] level: must be 10, 20, 30 or 40")
    for name, signer in config.signers.items():
        if signer.max_ttl + config.daemon.max_skew > config.spool.retention:
            raise ConfigError(f"{where}: [signers.{name}] max_ttl: {signer.max_ttl:g}s outlives "
                              f"[spool] retention {config.spool.retention:g}s; an archived request "
                              "is the replay guard, so keep it at least as long as a request lives")
        bad = sorted(set(signer.ops) - set(OPERATIONS))
        if bad:
            raise ConfigError(f"{where}: [signers.{name}] ops: unknown operation(s) {', '.join(bad)}")
        for owner in signer.owners:
            try:
                resolve_uid(owner)
            except KeyError:
                raise ConfigError(f"{where}: [signers.{name}] owners: no user {owner!r}") from None
    if config.spool.writer_group is not None:
        try:
            grp.getgrnam(config.spool.writer_group)
        except KeyError:
            raise ConfigError(f"{where}: [spool] writer_group: no group "
                              f"{config.spool.writer_group!r}") from None


def resolve_uid(owner: str) -> int:
    return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
