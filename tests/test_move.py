"""``flask move-to``: a SQLite archive holding every kind of row moves to a new PostgreSQL
database with ids kept, sequences past them, counts equal; interrupted, it resumes; a
target holding other data is refused unless told."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select, text

from tests.helpers import Actions, file_record

HOOK = [{"url": "http://127.0.0.1:9/hook", "secret": "s" * 32}]


@pytest.fixture
def target_url(empty_postgres_url):
    """A new, empty PostgreSQL database (dropped after the test)."""
    return empty_postgres_url


@pytest.fixture
def source(tmp_path):
    """A SQLite coordinator with every kind of row: items and subscriptions, tasks in many
    states, live and finished leases, files, revoked and admin keys, a cooldown, a paused
    site, anchors, checks, events and the kept counts."""
    from server import create_app
    from server.cli import init_db
    from tests.conftest import close_app, make_config

    app = create_app(make_config(f"sqlite:///{tmp_path / 'source.sqlite3'}", EVENTS_WEBHOOKS=HOOK))
    with app.app_context():
        init_db()
    yield _fill(app)
    close_app(app)


def _fill(app):
    client = app.test_client()
    actions = Actions(app, client)
    actions.import_csv("key,query,sites,check_every\ncats,cats,booru,1h\ndogs,dogs,booru,\nbirds,birds,tube,\n")
    lease = actions.lease("metadata", n=10).get_json()
    results = []
    for task in lease["tasks"]:
        if task["item"]["key"] == "birds":
            results.append({"task_id": task["id"], "status": "failed", "error_class": "permanent", "error": "gone"})
        else:
            found = [{"site": "booru", "remote_id": f"{task['id']}-{n}", "metadata": {"id": n}} for n in range(3)]
            results.append({"task_id": task["id"], "status": "done", "found": found})
    assert actions.submit(lease["lease_id"], results).status_code == 200
    lease = actions.lease("download", n=4, site="booru").get_json()
    downloads = [
        {
            "task_id": lease["tasks"][0]["id"],
            "status": "done",
            "files": [file_record("a.png", 10), file_record("b.png", 3)],
        },
        {"task_id": lease["tasks"][1]["id"], "status": "failed", "error_class": "rate_limited", "retry_after": 60},
        {"task_id": lease["tasks"][2]["id"], "status": "done", "files": [file_record("c.png", 7)]},
    ]
    assert actions.submit(lease["lease_id"], downloads).status_code == 200  # one task stays leased
    admin = actions.headers("ops", admin=True)
    assert client.post("/sites/tube/pause", headers=admin).status_code == 200
    actions.key("gone-node")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["revoke-key", "gone-node"]).exit_code == 0
    known = runner.invoke(args=["import-known", "-"], input="site,remote_id\nbooru,old-1\n")
    assert known.exit_code == 0, known.output
    return app


def _table_counts(url: str) -> dict[str, int]:
    from server.move import tables

    engine = create_engine(url)
    with engine.connect() as connection:
        counts = {t.name: connection.execute(select(func.count()).select_from(t)).scalar() for t in tables()}
    engine.dispose()
    return counts


def test_the_archive_moves_whole_and_the_target_works_on(source, target_url):
    from server import context, create_app
    from server.counts import differences
    from server.extensions import db
    from server.stats import collect_stats
    from tests.helpers import TEST_SITES

    runner = source.test_cli_runner()
    result = runner.invoke(args=["move-to", target_url, "--chunk-rows", "100"])
    assert result.exit_code == 0, result.output
    assert "DIFFERS" not in result.output and "moved " in result.output
    source_url = source.config["DATABASE_URL"]
    counts = _table_counts(source_url)
    assert _table_counts(target_url) == counts
    empty = [name for name, n in counts.items() if n == 0]
    assert set(empty) <= {"event_deliveries", "event_destinations", "minute_counts"}, empty
    for name in (
        "tasks",
        "leases",
        "files",
        "api_keys",
        "site_states",
        "known_files",
        "checks",
        "events",
        "task_counts",
    ):
        assert f"{name:<20}" in result.output

    def stats(url):
        app = create_app({"DATABASE_URL": url, "SITES": TEST_SITES})
        with app.app_context():
            answer = collect_stats(db.session, sites=context.sites())
            found = differences(db.session)
            db.session.remove()
            db.engine.dispose()
        answer.pop("generated_at")
        answer["recent_errors"].sort(key=lambda error: (error["error_class"], error["error"]))  # ties: any order
        return answer, found

    moved, moved_differences = stats(target_url)
    original, _ = stats(source_url)
    assert moved == original and moved_differences == []

    # the target takes new rows: its sequences start past the copied ids
    target = create_app({"DATABASE_URL": target_url, "SITES": TEST_SITES})
    actions = Actions(target, target.test_client())
    before = _table_counts(target_url)
    actions.import_csv("query\nfish\n")
    # booru cools down and tube is paused, as they were: resume tube and its new task goes out
    resumed = target.test_client().post("/sites/tube/resume", headers=actions.headers("new-admin", admin=True))
    assert resumed.status_code == 200
    lease = actions.lease("metadata", n=10, who="new-node").get_json()
    assert [(task["item"]["key"], task["site"]) for task in lease["tasks"]] == [("query:fish", "tube")]
    after = _table_counts(target_url)
    assert after["items"] == before["items"] + 1 and after["leases"] == before["leases"] + 1
    with target.app_context():
        db.session.remove()
        db.engine.dispose()


def test_an_interrupted_move_resumes_and_a_foreign_target_is_refused(source, target_url):
    from server.extensions import db
    from server.move import migrate_target, move

    migrate_target(target_url)
    calls = []

    def interrupt(table, done, total):
        calls.append((table, done))
        if table == "tasks" and done >= 3:
            raise KeyboardInterrupt

    with source.app_context():
        with pytest.raises(KeyboardInterrupt):
            move(db.engine, target_url, chunk_rows=3, progress=interrupt)
        partial = _table_counts(target_url)
        assert partial["items"] == 3 and partial["tasks"] == 3
        assert _table_counts(source.config["DATABASE_URL"])["tasks"] > 3
        checks = move(db.engine, target_url, chunk_rows=3)
        assert all(check.equal for check in checks), [c for c in checks if not c.equal]
        again = move(db.engine, target_url, chunk_rows=100)  # moved already: nothing more
        assert all(check.equal for check in again)

    runner = source.test_cli_runner()
    engine = create_engine(target_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE move_progress"))  # now it is just a database with data in it
    engine.dispose()
    refused = runner.invoke(args=["move-to", target_url])
    assert refused.exit_code == 2 and "is not empty" in refused.output and "--replace" in refused.output
    replaced = runner.invoke(args=["move-to", target_url, "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert _table_counts(target_url) == _table_counts(source.config["DATABASE_URL"])


def test_bad_targets_are_one_line_errors(source):
    runner = source.test_cli_runner()
    bad = runner.invoke(args=["move-to", "not a url"])
    assert bad.exit_code == 2 and bad.output.strip().startswith("error: not a database URL")
    same = runner.invoke(args=["move-to", source.config["DATABASE_URL"]])
    assert same.exit_code == 2 and "the database the coordinator uses now" in same.output
    unreachable = runner.invoke(args=["move-to", "postgresql+psycopg://nobody@127.0.0.1:1/x"])
    assert unreachable.exit_code == 2 and "error: cannot reach the target" in unreachable.output
    helped = runner.invoke(args=["move-to", "--help"])
    assert helped.exit_code == 0 and "resume" in helped.output


def test_the_checksum_sees_a_changed_row(source, target_url):
    from server.extensions import db
    from server.move import compare, migrate_target, move

    migrate_target(target_url)
    with source.app_context():
        move(db.engine, target_url)
        engine = create_engine(target_url)
        with engine.begin() as connection:
            connection.execute(text("UPDATE items SET title = 'changed' WHERE key = 'dogs'"))
        checks = {check.name: check for check in compare(db.engine, engine)}
        engine.dispose()
    assert not checks["items"].equal and checks["items"].source_rows == checks["items"].target_rows
    assert checks["tasks"].equal
