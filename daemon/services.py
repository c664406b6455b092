"""The connections the operations use — Slurm, Mattermost, LDAP — built from the config.

Each service offers ``health()`` (a short word for status.json) and is built only when its
section is configured, so a site can run carme-backend without, say, LDAP.
"""

from __future__ import annotations


def build(config) -> dict:
    return {}
