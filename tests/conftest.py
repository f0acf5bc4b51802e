"""Shared fixtures: one throw-away PKI and one private Prosody per test session."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from devserver.pki import Pki, make_pki
from devserver.prosody import AccountFactory, Prosody, ServerInfo


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a ``localhost`` server certificate in a session tmp dir."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Prosody]:
    """A Prosody on free loopback ports, started once per session, with no accounts."""
    with Prosody(tmp_path_factory.mktemp("prosody"), pki=pki) as server:
        yield server


@pytest.fixture(scope="session")
def prosody_server(prosody: Prosody) -> ServerInfo:
    """Host, c2s port, domain and CA file of the session's Prosody."""
    return prosody.server_info()


@pytest.fixture
def xmpp_account(prosody: Prosody) -> AccountFactory:
    """Factory: ``xmpp_account(prefix="user")`` registers a fresh user, returns (jid, password)."""

    def register(prefix: str = "user") -> tuple[str, str]:
        user = f"{prefix}-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(16)
        return prosody.register(user, password), password

    return register


@pytest.fixture(scope="session")
def upload_prosody(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Prosody]:
    """A second Prosody, with the XEP-0363 upload component (the session's has none), started once."""
    with Prosody(tmp_path_factory.mktemp("upload"), pki=pki, upload=True) as server:
        yield server


@pytest.fixture
def upload_server(upload_prosody: Prosody) -> ServerInfo:
    """Where the car finds the upload server and its CA."""
    return upload_prosody.server_info()


@pytest.fixture
def upload_account(upload_prosody: Prosody) -> AccountFactory:
    """Factory: a fresh account on the upload server, as (jid, password)."""

    def register(prefix: str = "user") -> tuple[str, str]:
        password = secrets.token_urlsafe(16)
        return upload_prosody.register(f"{prefix}-{secrets.token_hex(4)}", password), password

    return register


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used under tests/."""
    config.addinivalue_line("markers", "slow: takes more than a few seconds (started first under xdist)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the slow tests first: the long ones then do not start last and finish alone.

    Only in workers (every worker collects, and the same order reaches the scheduler);
    a plain run keeps pytest's order, which sets each module's fixtures up once.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)

