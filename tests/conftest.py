"""Shared fixtures. Every storage test runs on SQLite *and* PostgreSQL.

PostgreSQL is expected at ``TONGBAO_TEST_PG_URL`` (default: the local server,
trust auth). Each pytest-xdist worker gets its own database, migrated once;
tests start from empty tables. If PostgreSQL cannot be reached the
PostgreSQL variants are skipped — except with ``CI=true``, where that is a
failure, so CI can never go green without having tested PostgreSQL.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tongbao.clock import ManualClock
from tongbao.config import Settings
from tongbao.platform import Platform
from tongbao.storage import Database
from tongbao.storage.migrate import upgrade
from tongbao.storage.tables import metadata

PG_SERVER = os.environ.get(
    "TONGBAO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Monday
# Every test platform has a master key (start-up refuses without one); fixed, test-only.
TEST_MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pg_unavailable(reason: str) -> None:
    message = f"PostgreSQL unreachable at {PG_SERVER}: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this worker's own."""
    # The pid keeps concurrent test runs on one server out of each other's way.
    name = f"tongbao_test_{_worker()}_{os.getpid()}"
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pg_unavailable(str(exc.orig).splitlines()[0])
    url = sa.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("template") / "tongbao.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    db.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


# Reference data seeded by migrations survives between tests; anything a test
# added to it is removed.
REFERENCE_TABLES = {"business_calendar"}


def _empty_pg(url: str) -> None:
    engine = sa.create_engine(url)
    tables = ", ".join(
        f'"{t.name}"' for t in metadata.sorted_tables if t.name not in REFERENCE_TABLES
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables} CASCADE")
        conn.execute(
            sa.text("DELETE FROM business_calendar WHERE source NOT LIKE 'chinese-calendar%'")
        )
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "tongbao.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_url")
    _empty_pg(url)
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=database_url,
        internal_account_buckets=4,
        sim_bank_settlement_delay_seconds=60,
        master_key=TEST_MASTER_KEY,
        # Each test's own: the checkpoints of one test's chain mean nothing to another's.
        audit_checkpoint_file=tmp_path / "audit-checkpoints.jsonl",
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url, settings=settings)
    yield database
    database.dispose()


@pytest.fixture
def platform(settings: Settings, clock: ManualClock) -> Iterator[Platform]:
    """The whole platform on the test database, with a manual clock and the
    simulated bank; internal accounts opened."""
    p = Platform(settings, clock=clock).start()
    yield p
    p.close()
