"""Migrations: the schema they build matches the models, and init-db is safe to run again."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select


def test_models_and_migrations_agree(ctx):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from server.extensions import db

    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
    assert differences == []


def test_init_db_twice_keeps_data(ctx, runner, actions):
    from server.extensions import db
    from server.models import Item

    actions.import_csv("query\ncats\n")
    for _ in range(2):
        result = runner.invoke(args=["init-db"])
        assert result.exit_code == 0 and "database ready" in result.stdout
    assert db.session.scalar(select(Item.key)) == "query:cats"
    db.session.commit()  # SQLite: end the read before inspecting on another connection
    assert "alembic_version" in inspect(db.engine).get_table_names()


def test_upgrade_from_the_first_release_keeps_its_data(tmp_path):
    """A database created by revision 0001, with a lease in it, upgrades in place."""
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    from server import MIGRATIONS_DIR, create_app
    from server.extensions import db

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'old.sqlite3'}"})
    with app.app_context():
        upgrade(directory=MIGRATIONS_DIR, revision="0001")
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO api_keys (id, name, key_hash, role, created_at) "
                    "VALUES (1, 'n', 'h', 'client', '2026-01-01 00:00:00')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO leases (id, kind, client_id, state, task_count, created_at, "
                    "expires_at) VALUES ('L', 'download', 1, 'active', 3, '2026-01-01 00:00:00', "
                    "'2026-01-01 01:00:00')"
                )
            )
        upgrade(directory=MIGRATIONS_DIR)
        with db.engine.connect() as connection:
            row = connection.execute(text("SELECT task_count, seconds FROM leases WHERE id = 'L'")).one()
        assert tuple(row) == (3, 3600)
        downgrade(directory=MIGRATIONS_DIR, revision="0001")
        upgrade(directory=MIGRATIONS_DIR)
        db.engine.dispose()


def test_the_queue_indexes_exist_as_designed(ctx):
    """Reflection cannot see DESC or partial conditions, so read the definitions themselves:
    a table rebuild once silently turned the queue index into (kind, site, priority, id)."""
    from sqlalchemy import text

    from server.extensions import db

    with db.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")).all()
        else:
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks'"
            rows = connection.execute(text(query)).all()
    definitions = {name: " ".join(sql.split()).lower() for name, sql in rows if sql}
    assert "(kind, site, priority desc, id)" in definitions["ix_tasks_queue"]
    assert "state" in definitions["ix_tasks_queue"] and "'queued'" in definitions["ix_tasks_queue"]
    assert "(priority desc, id)" in definitions["ix_tasks_queue_metadata"]
    assert "'metadata'" in definitions["ix_tasks_queue_metadata"]
    assert "'leased'" in definitions["ix_tasks_lease"]
    assert "ix_tasks_counts" not in definitions


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path):
    """A database with no tables at all, of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.sqlite3'}"
    return request.getfixturevalue("empty_postgres_url")


def test_upgrade_moves_import_marks_beside_the_items(empty_database_url):
    """Revision 0011 takes which import last read each item out of ``items``: a database of
    the previous release keeps its items and their tasks, and its next import still tells a
    repeated key from a changed row."""
    import io

    from flask_migrate import upgrade
    from sqlalchemy import text

    from server import MIGRATIONS_DIR, context, create_app
    from server.extensions import db
    from server.inventory import import_inventory
    from tests.conftest import TEST_SITES

    def run_import(content: str):
        stream = io.StringIO(content, newline="")
        return import_inventory(db.session, stream, sites=context.sites(), chunk_rows=2)

    app = create_app({"DATABASE_URL": empty_database_url, "SITES": TEST_SITES})
    with app.app_context():
        upgrade(directory=MIGRATIONS_DIR, revision="0010")
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO items (id, key, query, priority, extra, content_hash, state, import_id, "
                    "import_line, created_at, updated_at) VALUES (7, 'query:cats', 'cats', 0, '{}', 'old', "
                    "'pending', 'an-old-import', 2, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO tasks (kind, site, item_id, url, state, priority, attempts, available_at, "
                    "created_at, updated_at) VALUES ('metadata', 'demo', 7, 'http://x.test/?q=cats', 'done', 0, "
                    "1, '2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
        upgrade(directory=MIGRATIONS_DIR)
        columns = {column["name"] for column in inspect(db.engine).get_columns("items")}
        assert {"import_id", "import_line"}.isdisjoint(columns) and "row_hash" in columns
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT item_id FROM tasks")).scalar() == 7
            assert connection.execute(text("SELECT count(*) FROM item_imports")).scalar() == 0
            if connection.dialect.name == "postgresql":
                options = connection.execute(
                    text("SELECT reloptions FROM pg_class WHERE relname = 'item_imports'")
                ).scalar()
                assert options == ["fillfactor=50"]
                default = connection.execute(
                    text(
                        "SELECT column_default FROM information_schema.columns "
                        "WHERE table_name = 'item_imports' AND column_name = 'item_id'"
                    )
                ).first()
                assert default == (None,)  # an item's id, never one of its own

        report = run_import("query,title\ncats,\ndogs,\ncats,\ncats,Cats\n")
        assert (report.updated, report.added, report.unchanged, report.rejected) == (1, 1, 1, 1)
        assert [str(error) for error in report.errors] == [
            "line 5: key 'query:cats' already used on line 2 with other values"
        ]
        with db.engine.connect() as connection:
            marks = dict(connection.execute(text("SELECT item_id, import_line FROM item_imports")).all())
        assert marks[7] == 2 and len(marks) == 2
        db.session.remove()
        db.engine.dispose()
