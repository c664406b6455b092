"""A throwaway OpenLDAP server (Debian's slapd 2.5) under ``BASE/ldap``.

``dc=example,dc=org`` on mdb with the ppolicy overlay (minimum length 8, so a password
policy violation can be tested), the two test users as posixAccount/inetOrgPerson, the
root admin (used only to build the tree) and a *delegated* service account
``cn=carme-backend,ou=services,...`` that may write ``userPassword`` under ``ou=people``
and nothing else: the account carme-backend binds as, as a site would set it up.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from testbed import procs
from testbed.users import TestUser

BASE_DN = "dc=example,dc=org"
PEOPLE_BASE = f"ou=people,{BASE_DN}"
ADMIN_DN = f"cn=admin,{BASE_DN}"
SERVICE_DN = f"cn=carme-backend,ou=services,{BASE_DN}"
POLICY_DN = f"cn=default,ou=policies,{BASE_DN}"
MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class LdapSettings:
    base: Path
    port: int
    admin_password: str
    service_password: str

    @property
    def root(self) -> Path:
        return self.base / "ldap"

    @property
    def socket(self) -> Path:
        return self.root / "ldapi.sock"

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldapi_uri(self) -> str:
        return "ldapi://" + urllib.parse.quote(str(self.socket), safe="")

    def as_json(self) -> dict:
        return {
            "uri": self.uri,
            "ldapi_uri": self.ldapi_uri,
            "base": BASE_DN,
            "people_base": PEOPLE_BASE,
            "admin_dn": ADMIN_DN,
            "admin_password": self.admin_password,
            "service_dn": SERVICE_DN,
            "service_password": self.service_password,
            "min_password_length": MIN_PASSWORD_LENGTH,
        }


def user_dn(name: str) -> str:
    return f"uid={name},{PEOPLE_BASE}"


def ssha(password: str) -> str:
    """An RFC 2307 ``{SSHA}`` hash, computed here so no password appears in an argv."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _slapd_conf(s: LdapSettings) -> str:
    return f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
pidfile {s.root}/slapd.pid
argsfile {s.root}/slapd.args

database mdb
suffix "{BASE_DN}"
rootdn "{ADMIN_DN}"
rootpw {ssha(s.admin_password)}
directory {s.root}/data
maxsize 104857600
overlay ppolicy
ppolicy_default "{POLICY_DN}"

access to attrs=userPassword
    by dn.exact="{SERVICE_DN}" write
    by self write
    by anonymous auth
    by * none
access to *
    by * read
"""


def _base_ldif(s: LdapSettings, users: list[TestUser]) -> str:
    entries = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
        f"dn: {PEOPLE_BASE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services",
        f"dn: ou=policies,{BASE_DN}\nobjectClass: organizationalUnit\nou: policies",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: carme-backend\nuserPassword: {ssha(s.service_password)}",
        f"dn: {POLICY_DN}\nobjectClass: pwdPolicy\nobjectClass: device\ncn: default\n"
        f"pwdAttribute: userPassword\npwdMinLength: {MIN_PASSWORD_LENGTH}\npwdCheckQuality: 2",
    ]
    for user in users:
        entries.append(
            f"dn: {user_dn(user.name)}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
            f"uid: {user.name}\ncn: {user.name}\nsn: {user.name}\n"
            f"uidNumber: {user.uid}\ngidNumber: {user.gid}\nhomeDirectory: {user.home}\n"
            f"userPassword: {ssha(user.password)}"
        )
    return "\n\n".join(entries) + "\n"


def up(s: LdapSettings, users: list[TestUser]) -> None:
    """Build a fresh directory from scratch and start slapd in the foreground."""
    data = s.root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in data.iterdir():
        old.unlink()
    conf = s.root / "slapd.conf"
    conf.write_text(_slapd_conf(s))
    conf.chmod(0o600)
    ldif = s.root / "base.ldif"
    ldif.write_text(_base_ldif(s, users))
    try:
        subprocess.run(["slapadd", "-f", str(conf), "-l", str(ldif)],
                       check=True, capture_output=True, text=True)
    finally:
        ldif.unlink()
    start(s)


def start(s: LdapSettings) -> None:
    """Start slapd on the directory as it is (tests restart it after an outage)."""
    conf = s.root / "slapd.conf"
    procs.spawn(s.base, "slapd", [
        "/usr/sbin/slapd", "-d", "0", "-f", str(conf), "-h", f"{s.uri}/ {s.ldapi_uri}/",
    ])
    procs.wait_until(lambda: is_healthy(s), 15, "slapd to answer a search")


def is_healthy(s: LdapSettings) -> bool:
    if procs.recorded_pid(s.base, "slapd") is None:
        return False
    result = subprocess.run(
        ["ldapsearch", "-x", "-H", s.uri, "-b", BASE_DN, "-s", "base", "dn"],
        capture_output=True, timeout=10, env={**os.environ, "LDAPTLS_REQCERT": "never"},
    )
    return result.returncode == 0


def down(base: Path) -> None:
    procs.stop(base, "slapd")
