from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from service.config import Settings
from web.app import create_app

FAST = Settings(heartbeat_s=0.05, lease_ttl_s=1.0, retry_base_s=0.01, idle_poll_s=0.02)


# The web layer holds no SQL, so its tests run on SQLite; the engine suite covers both backends,
# and test_api's run-to-completion test runs on PostgreSQL too.


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    """The app with its embedded supervisor, on the test's own migrated database."""
    with TestClient(create_app(sqlite_url, settings=FAST, allowed_hosts=["testserver"])) as c:
        yield c


@pytest.fixture
def any_client(db_url: str) -> Iterator[TestClient]:
    """As ``client``, once per backend."""
    with TestClient(create_app(db_url, settings=FAST, allowed_hosts=["testserver"])) as c:
        yield c


@pytest.fixture
def idle_client(sqlite_url: str) -> Iterator[TestClient]:
    """The app with no supervisor: runs stay exactly as submitted."""
    with TestClient(create_app(sqlite_url, supervise=False, allowed_hosts=["testserver"])) as c:
        yield c


@pytest.fixture
def any_idle_client(db_url: str) -> Iterator[TestClient]:
    """As ``idle_client``, once per backend."""
    with TestClient(create_app(db_url, supervise=False, allowed_hosts=["testserver"])) as c:
        yield c
