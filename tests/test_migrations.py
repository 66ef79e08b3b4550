"""The Alembic history runs on both engines and matches the table definitions."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tongbao.config import settings_reference
from tongbao.storage import Database
from tongbao.storage.migrate import alembic_config, current_revision, head_revision, upgrade
from tongbao.storage.tables import metadata


def _diff(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_schema_matches_the_table_definitions(db: Database) -> None:
    assert current_revision(db) == head_revision()
    assert _diff(db) == []


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(db)
    with db.snapshot() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    db.dispose()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_full_downgrade_and_upgrade_again(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    else:
        server = sa.make_url(request.getfixturevalue("pg_url"))
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        name = f"{server.database}_roundtrip"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = server.set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    upgrade(db)
    upgrade(db)  # a second run is a no-op
    config = alembic_config()
    with db.engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
        conn.commit()
    assert current_revision(db) is None
    assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
    upgrade(db)
    assert _diff(db) == []
    db.dispose()
    if engine == "postgresql":
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_configuration_reference_is_current() -> None:
    doc = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert doc.read_text(encoding="utf-8") == settings_reference(), (
        "docs/configuration.md is stale: run `tongbao config docs > docs/configuration.md`"
    )
