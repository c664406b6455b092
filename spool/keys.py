"""Key files: Ed25519 signing keys for each signer, and the daemon's X25519 sealing pair.

A key file is one line, ``carme-<kind> <base64>``, so a verify key can never be loaded where
a signing key is expected. Private key files are created mode 0600 and refused when group
or others can read them.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from carme.spool.errors import KeyFileError

SIGNING, VERIFY, SEAL_PRIVATE, SEAL_PUBLIC = "signing-key", "verify-key", "seal-key", "seal-pub"
PRIVATE_KINDS = (SIGNING, SEAL_PRIVATE)


def _write_key(path: Path, kind: str, raw: bytes) -> None:
    mode = 0o600 if kind in PRIVATE_KINDS else 0o644
    line = f"carme-{kind} {base64.b64encode(raw).decode()}\n".encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key") from None
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def private_file_problems(path: Path) -> list[str]:
    """Why ``path`` is not safe to hold a private key (empty when it is)."""
    try:
        info = path.stat()
    except OSError as error:
        return [f"{path}: {error.strerror}"]
    problems = []
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(f"{path}: mode {stat.S_IMODE(info.st_mode):04o} lets others read it; "
                        "use 0600 or 0400")
    if info.st_uid not in (0, os.geteuid()):
        problems.append(f"{path}: owned by uid {info.st_uid}, not by root or this user")
    return problems


def read_secret_file(path: Path) -> str:
    """The stripped text of a file holding a credential (a token, a bind password),
    refused unless only its owner (root or this user) can read it."""
    problems = private_file_problems(Path(path))
    if problems:
        raise KeyFileError("; ".join(problems))
    return Path(path).read_text().strip()


def _read_key(path: Path, kind: str) -> bytes:
    path = Path(path)
    if kind in PRIVATE_KINDS:
        problems = private_file_problems(path)
        if problems:
            raise KeyFileError("; ".join(problems))
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise KeyFileError(f"cannot read key file {path}: {error}") from None
    prefix, _, encoded = text.partition(" ")
    if prefix != f"carme-{kind}":
        raise KeyFileError(f"{path} is not a {kind} file (it starts with {prefix[:30]!r})")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise KeyFileError(f"{path}: key is not valid base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"{path}: key must be 32 bytes, found {len(raw)}")
    return raw


def generate_signer(directory: Path, signer: str) -> tuple[Path, Path]:
    """Create ``<signer>.key`` (private, 0600) and ``<signer>.pub`` in ``directory``."""
    directory = Path(directory)
    key = SigningKey.generate()
    private, public = directory / f"{signer}.key", directory / f"{signer}.pub"
    if private.exists() or public.exists():
        raise KeyFileError(f"{private} or {public} exists; refusing to overwrite a key")
    _write_key(private, SIGNING, bytes(key))
    _write_key(public, VERIFY, bytes(key.verify_key))
    return private, public


def generate_seal(directory: Path) -> tuple[Path, Path]:
    """Create the daemon's sealing pair ``seal.key`` (private, 0600) and ``seal.pub``."""
    directory = Path(directory)
    key = PrivateKey.generate()
    private, public = directory / "seal.key", directory / "seal.pub"
    if private.exists() or public.exists():
        raise KeyFileError(f"{private} or {public} exists; refusing to overwrite a key")
    _write_key(private, SEAL_PRIVATE, bytes(key))
    _write_key(public, SEAL_PUBLIC, bytes(key.public_key))
    return private, public


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey(_read_key(path, SIGNING))


def load_verify_key(path: Path) -> VerifyKey:
    return VerifyKey(_read_key(path, VERIFY))


def load_seal_private(path: Path) -> PrivateKey:
    return PrivateKey(_read_key(path, SEAL_PRIVATE))


def load_seal_public(path: Path) -> PublicKey:
    return PublicKey(_read_key(path, SEAL_PUBLIC))


def seal(public: PublicKey, secret: str) -> str:
    """Encrypt ``secret`` so only the holder of the matching private key can read it."""
    return base64.b64encode(SealedBox(public).encrypt(secret.encode())).decode()


def unseal(private: PrivateKey, sealed: str) -> str:
    """Open a sealed secret in memory. Raises ``ValueError`` (never echoing the secret)."""
    try:
        return SealedBox(private).decrypt(base64.b64decode(sealed, validate=True)).decode()
    except Exception:
        raise ValueError("the sealed secret could not be opened with the daemon's key") from None
