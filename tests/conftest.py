"""Shared fixtures: workspaces on SQLite and on the PostgreSQL server of this machine.

`IMGNET_TEST_DATABASE_URL` selects the database of the `workspace` fixture: unset (or
`sqlite`), a SQLite file in the workspace; a PostgreSQL URL (any database on the server,
e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres), a new database on that server
for each test, dropped afterwards. With PostgreSQL selected, only the tests that use
`workspace` run (the others do not touch it and already ran on SQLite; `any_workspace`
runs both databases in every pass), less those marked `sqlite_only`, which say why.
`.ci/run` runs both passes.
"""

from __future__ import annotations

import os
import uuid

import pytest
from click.testing import CliRunner

from imgnet_build.workspace import Workspace

POSTGRES_ADMIN_URL = os.environ.get("IMGNET_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_DATABASE_URL = os.environ.get("IMGNET_TEST_DATABASE_URL", "")
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgresql")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): the test needs SQLite itself (left out of the "
                                       "PostgreSQL pass; the reason says why)")


def pytest_collection_modifyitems(config, items) -> None:
    """On the PostgreSQL pass, keep the tests whose `workspace` it changes."""
    if not ON_POSTGRES:
        return
    kept, left = [], []
    for item in items:
        uses = "workspace" in getattr(item, "fixturenames", ())
        (kept if uses and item.get_closest_marker("sqlite_only") is None else left).append(item)
    items[:] = kept
    config.hook.pytest_deselected(items=left)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def workspace(tmp_path, request) -> Workspace:
    """A new workspace in a temporary folder: SQLite, or PostgreSQL when
    IMGNET_TEST_DATABASE_URL names a server (see the module docstring)."""
    database = request.getfixturevalue("postgres_url") if ON_POSTGRES else None
    ws = Workspace.init(tmp_path / "ws", database=database)
    yield ws
    ws.close()


@pytest.fixture
def postgres_url() -> str:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    from sqlalchemy import create_engine, text

    server = TEST_DATABASE_URL if ON_POSTGRES else POSTGRES_ADMIN_URL
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"imgnet_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            _drop_databases_of_dead_runs(connection)
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed for this test (scripts/postgres.sh starts it): {exc}")
    yield server.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _drop_databases_of_dead_runs(connection) -> None:
    """Drop the test databases a killed pytest on this machine left behind (named after its pid)."""
    from sqlalchemy import text

    from imgnet_build.split import _running  # the export's check for a live pid

    for (name,) in connection.execute(text("SELECT datname FROM pg_database WHERE datname LIKE 'imgnet\\_test\\_%'")):
        parts = name.split("_")  # imgnet, test, pid, random
        if len(parts) == 4 and parts[2].isdigit() and int(parts[2]) != os.getpid() and not _running(int(parts[2])):
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_workspace(request, tmp_path) -> Workspace:
    """The same test on SQLite and on PostgreSQL."""
    database = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    ws = Workspace.init(tmp_path / "ws", database=database)
    yield ws
    ws.close()


@pytest.fixture
def s3_endpoint(monkeypatch):
    """moto's S3 in server mode on 127.0.0.1 (a real HTTP endpoint), with fake credentials and a bucket "imgs"."""
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="imgs")
    yield endpoint
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)  # moto keeps its buckets in the process
    server.stop()
