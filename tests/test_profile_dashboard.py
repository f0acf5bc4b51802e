"""The profile's [dashboard] section: defaults, what a good section keeps, and each mistake refused
with one ProfileError naming the file and the key. Real TOML files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ProfileError
from agent.profile import load_profile
from agent.profile.model import DEFAULT_QUICK_REPLIES, DashboardConfig

BASE = '[profile]\nname = "Test car"\n\n[account]\njid = "car@localhost"\npassword = "secret"\n\n'


def load(tmp_path: Path, section: str) -> DashboardConfig:
    path = tmp_path / "car.toml"
    path.write_text(BASE + section, encoding="utf-8")
    return load_profile(path, environ={}).dashboard


def test_without_a_section_the_dashboard_listens_on_loopback_8470(tmp_path: Path) -> None:
    """Tried: no [dashboard]. Kept: enabled, 127.0.0.1:8470, no remote, auto theme, the three quick replies."""
    config = load(tmp_path, "")
    assert config == DashboardConfig()
    assert (config.enabled, config.host, config.port, config.allow_remote, config.theme) == (
        True, "127.0.0.1", 8470, False, "auto")
    assert config.quick_replies == DEFAULT_QUICK_REPLIES == (
        "Driving, will answer later", "On my way", "Call me")


def test_a_full_section_is_kept(tmp_path: Path) -> None:
    """Tried: every key set. Kept: each value; quick replies stripped."""
    config = load(tmp_path, '[dashboard]\nenabled = false\nhost = "::1"\nport = 0\ntheme = "night"\n'
                            'quick_replies = ["  Stuck in traffic ", "Yes"]\n')
    assert config == DashboardConfig(enabled=False, host="::1", port=0, theme="night",
                                     quick_replies=("Stuck in traffic", "Yes"))


def test_a_non_loopback_address_needs_allow_remote(tmp_path: Path) -> None:
    """Tried: 0.0.0.0 and a LAN address with and without allow_remote. Kept: only with it."""
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(ProfileError) as refused:
            load(tmp_path, f'[dashboard]\nhost = "{host}"\n')
        assert "car.toml: dashboard.host: expected a loopback address" in str(refused.value)
        assert "allow_remote = true" in str(refused.value)
        config = load(tmp_path, f'[dashboard]\nhost = "{host}"\nallow_remote = true\n')
        assert (config.host, config.allow_remote) == (host, True)


@pytest.mark.parametrize(("section", "key", "expected"), [
    ('host = "localhost"', "dashboard.host", "an IP address to listen on"),
    ('host = "car.example.org"', "dashboard.host", "an IP address to listen on"),
    ("host = 127", "dashboard.host", "an IP address"),
    ("port = 70000", "dashboard.port", "65535"),
    ("port = -1", "dashboard.port", "0"),
    ('port = "8470"', "dashboard.port", "integer"),
    ('theme = "dusk"', "dashboard.theme", "auto"),
    ("quick_replies = []", "dashboard.quick_replies", "1..8 texts"),
    ("quick_replies = " + str([f"reply {i}" for i in range(9)]).replace("'", '"'),
     "dashboard.quick_replies", "1..8 texts"),
    ('quick_replies = ["OK", "  "]', "dashboard.quick_replies[1]", "1..60 characters"),
    (f'quick_replies = ["{"x" * 61}"]', "dashboard.quick_replies[0]", "1..60 characters"),
    ("quick_replies = [3]", "dashboard.quick_replies[0]", "1..60 characters"),
    ('allow_remote = "yes"', "dashboard.allow_remote", "true or false"),
    ("listen = 1", "dashboard.listen", "a known key"),
])
def test_mistakes_are_refused_naming_the_key(tmp_path: Path, section: str, key: str, expected: str) -> None:
    """Tried: one wrong [dashboard] key at a time. Kept: a ProfileError naming file, key and expectation."""
    with pytest.raises(ProfileError) as refused:
        load(tmp_path, f"[dashboard]\n{section}\n")
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'car.toml'}: {key}"), message
    assert expected in message, message
