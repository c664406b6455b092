"""set_password: an LDAP Password Modify extended operation (RFC 3062) with python-ldap.

The daemon binds as a delegated admin (its password read from a root-only file), and asks
the server to set the user's password with ``passwd_s``: the server hashes it and applies
its password policy. The connection is ldaps:// or StartTLS; a plain ldap:// connection
only when ``allow_plaintext = true`` (a test directory on loopback).

The new password exists only in memory: opened from its sealed form just before the call,
never logged, never in an error message. Errors are rebuilt from the server's result
description, not from exception text that could echo a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ldap
import ldap.dn

from carme.daemon.config import register_section
from carme.daemon.errors import Permanent, Transient
from carme.spool.errors import KeyFileError
from carme.spool.keys import read_secret_file


@register_section("ldap")
@dataclass(frozen=True)
class LdapConfig:
    #: ldaps://host or ldap://host (then StartTLS, unless allow_plaintext)
    uri: str = "ldaps://localhost"
    #: user DNs must lie directly below this base
    people_base: str = "ou=people,dc=example,dc=org"
    #: the delegated admin the daemon binds as
    bind_dn: str = "cn=carme-backend,ou=services,dc=example,dc=org"
    #: file holding its password (mode 0600, root)
    bind_password_file: str = "/etc/carme/keys/ldap.password"
    #: StartTLS on ldap:// URIs
    starttls: bool = True
    #: allow an unencrypted ldap:// connection (never in production)
    allow_plaintext: bool = False
    #: CA certificate file for the server's certificate; "" for the system's
    ca_file: str = ""
    #: seconds for connecting and for each operation
    timeout: float = 10.0


def check_user_dn(user_dn: str, user_name: str, people_base: str) -> None:
    """``user_dn`` must be ``uid=<user_name>,<people_base>`` (compared as parsed DNs)."""
    try:
        rdns = ldap.dn.str2dn(user_dn)
        base = ldap.dn.str2dn(people_base)
    except ldap.DECODING_ERROR:
        raise Permanent("bad_dn", f"{user_dn!r} is not a valid DN") from None
    normal = [[(a.lower(), v.lower(), 1) for a, v, _ in rdn] for rdn in rdns]
    normal_base = [[(a.lower(), v.lower(), 1) for a, v, _ in rdn] for rdn in base]
    if normal[1:] != normal_base:
        raise Permanent("dn_not_allowed", f"{user_dn!r} is not directly under {people_base!r}")
    if normal[0] != [("uid", user_name.lower(), 1)]:
        raise Permanent("dn_not_allowed", f"{user_dn!r} is not the DN of user {user_name!r}")


def _describe(error: ldap.LDAPError) -> str:
    info = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    text = str(info.get("desc", type(error).__name__))
    if info.get("info"):
        text += f": {info['info']}"
    return text


class LdapPasswords:
    def __init__(self, cfg: LdapConfig):
        if cfg.uri.startswith("ldap://") and not (cfg.starttls or cfg.allow_plaintext):
            raise ValueError("[ldap] uri is plain ldap:// with starttls = false; set "
                             "allow_plaintext = true only for a test directory")
        try:
            read_secret_file(Path(cfg.bind_password_file))
        except KeyFileError as error:
            raise ValueError(f"[ldap] bind_password_file: {error}") from None
        self.cfg = cfg

    def health(self) -> str:
        return "configured"

    def _connect(self):
        cfg = self.cfg
        conn = ldap.initialize(cfg.uri)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, cfg.timeout)
        conn.set_option(ldap.OPT_TIMEOUT, cfg.timeout)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        if cfg.ca_file:
            conn.set_option(ldap.OPT_X_TLS_CACERTFILE, cfg.ca_file)
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        if cfg.uri.startswith("ldap://") and cfg.starttls:
            conn.start_tls_s()
        conn.simple_bind_s(cfg.bind_dn, read_secret_file(Path(cfg.bind_password_file)))
        return conn

    def set_password(self, user_dn: str, user_name: str, password: str) -> None:
        check_user_dn(user_dn, user_name, self.cfg.people_base)
        conn = None
        try:
            conn = self._connect()
            conn.passwd_s(user_dn, None, password)
        except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.BUSY, ldap.UNAVAILABLE, ldap.CONNECT_ERROR) as error:
            raise Transient("ldap_unavailable", f"LDAP server: {_describe(error)}") from None
        except ldap.INVALID_CREDENTIALS:
            raise Permanent("ldap_bind_failed", f"cannot bind as {self.cfg.bind_dn}: invalid "
                            "credentials; check [ldap] bind_password_file") from None
        except ldap.NO_SUCH_OBJECT:
            raise Permanent("unknown_dn", f"no LDAP entry {user_dn!r}") from None
        except ldap.INSUFFICIENT_ACCESS:
            raise Permanent("ldap_access_denied", f"{self.cfg.bind_dn} may not set the password "
                            f"of {user_dn!r}") from None
        except ldap.CONSTRAINT_VIOLATION as error:
            raise Permanent("password_policy", f"the server's password policy refused the "
                            f"password: {_describe(error)}") from None
        except ldap.LDAPError as error:
            raise Permanent("ldap_error", f"LDAP: {_describe(error)}") from None
        finally:
            if conn is not None:
                try:
                    conn.unbind_s()
                except ldap.LDAPError:
                    pass


def set_password(ctx, request) -> dict:
    passwords = ctx.services.get("ldap")
    opener = ctx.services.get("secrets")
    if passwords is None or opener is None:
        raise Permanent("not_configured", "this daemon has no [ldap] section or sealing key")
    args = request.args
    try:
        password = opener.open(args["password_sealed"])
    except ValueError as error:
        raise Permanent("bad_secret", str(error)) from None
    passwords.set_password(args["user_dn"], args["user_name"], password)
    return {"user_dn": args["user_dn"], "changed": True}
