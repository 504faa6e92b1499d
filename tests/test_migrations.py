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
