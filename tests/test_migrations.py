"""Migrations: the schema they build matches the models, and init-db is safe to run again."""

from __future__ import annotations

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
