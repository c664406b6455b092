"""The shipped example config parses, and config errors name the file and the key."""

import dataclasses
import re
from pathlib import Path

import pytest

from carme.daemon import config as configuration
from carme.daemon import services  # noqa: F401 - registers [slurm], [notify], [mattermost], [ldap]

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "backend.toml"


def test_the_example_config_parses_with_every_documented_default(tmp_path):
    # the example names the portal's user "carme", which this test machine need not have
    copy = tmp_path / "backend.toml"
    copy.write_text(EXAMPLE.read_text().replace('owners = ["carme"]', 'owners = ["root"]'))
    config = configuration.load(copy)
    assert config.spool == configuration.SpoolConfig()
    assert config.daemon == configuration.DaemonConfig()
    assert config.retry == configuration.RetryConfig()
    assert set(config.signers) == {"frontend", "hooks"}
    sections = configuration.EXTRA_SECTIONS
    assert config.extra["slurm"] == sections["slurm"]()
    assert config.extra["notify"] == sections["notify"]()
    assert config.extra["ldap"] == sections["ldap"]()
    # where the default is empty, the example shows what a site fills in
    assert config.extra["mattermost"] == sections["mattermost"](
        url="https://chat.example.org", token_file="/etc/carme/keys/mattermost.token")


def test_the_example_config_shows_every_key_of_every_section():
    """Set, or commented out where a value must be the site's own (writer_group)."""
    text = EXAMPLE.read_text()
    sections = {**configuration.CORE_SECTIONS, **configuration.EXTRA_SECTIONS}
    for name, cls in sections.items():
        body = re.search(rf"^\[{name}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
        assert body, f"etc/backend.toml has no [{name}] section"
        shown = set(re.findall(r"^(?:# )?(\w+) = ", body.group(1), re.M))
        missing = {f.name for f in dataclasses.fields(cls)} - shown
        assert not missing, f"[{name}] in etc/backend.toml lacks {sorted(missing)}"


@pytest.mark.parametrize("text,message", [
    ('[spool]\npath = 3\n', "[spool] path: expected a path string"),
    ('[daemon]\nworkers = "4"\n', "[daemon] workers: expected an integer"),
    ('[daemon]\nwokers = 4\n', "[daemon]: unknown key(s) wokers"),
    ('[mystery]\n', "unknown section(s) mystery"),
    ('[signers.x]\npublic_key = "/k"\nops = ["fly"]\n', "[signers.x] ops: unknown operation(s) fly"),
    ('[signers.x]\nops = ["ping"]\n', "[signers.x]: missing required key 'public_key'"),
    ('[logging]\nlevel = 25\n', "[logging] level: must be 10, 20, 30 or 40"),
    ('x = \n', "not valid TOML"),
    ('[spool]\nretention = 600\n', "max_ttl: 900s outlives [spool] retention 600s"),
])
def test_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "backend.toml"
    signers = '\n[signers.ok]\npublic_key = "/k.pub"\nops = ["ping"]\n' if "signers" not in text else ""
    path.write_text(text + signers)
    with pytest.raises(configuration.ConfigError) as info:
        configuration.load(path)
    assert str(path) in str(info.value) and message in str(info.value)
