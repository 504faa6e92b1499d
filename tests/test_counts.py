"""Kept counts (``server.counts``) on both databases: equal to a recount after a random
mix of every kind of change, ``stats rebuild`` repairs them, an upgrade fills them, and
/stats reads nothing else. (Every test of the suite also ends with the recount check:
``tests/conftest.py``, ``assert_counts_kept``.)"""

from __future__ import annotations

import io
import random
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, text

from server import context
from server.auth import Role, create_key
from server.counts import differences, kept, minute_of, rebuild, recounted, tally
from server.errors import Conflict, NotFound
from server.inventory import import_inventory
from server.leasing import extend_lease, lease_tasks, release_lease, submit_results
from server.maintenance import requeue_tasks
from server.models import ApiKey, Item, TaskCount
from server.pausing import pause_item, resume_item
from tests.helpers import SHA, file_record
from tests.test_leasing import T0

SEEDS = (1, 2, 3)


def _nodes(session):
    for name in ("n1", "n2", "n3"):
        create_key(session, name, Role.CLIENT)
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def _csv(rng: random.Random, rows: int, generation: int) -> bytes:
    lines = ["key,query,sites,priority,check_every"]
    for number in range(rows):
        sites = rng.choice(["booru", "booru tube", "tube"])
        every = rng.choice(["", "", "1h"])
        lines.append(
            f"k{number},q{number}-{generation if rng.random() < 0.3 else 0},{sites},{rng.randint(0, 3)},{every}"
        )
    return ("\n".join(lines) + "\n").encode()


def _result(rng: random.Random, task: dict, kind: str) -> dict:
    roll = rng.random()
    if roll < 0.2:
        error_class = rng.choice(["transient", "permanent", "rate_limited"])
        return {
            "task_id": task["id"],
            "status": "failed",
            "error_class": error_class,
            "error": "boom",
            "retry_after": 1,
        }
    if kind == "download":
        content = rng.randint(0, 30)  # few contents: duplicates by sha256 across posts
        files = [
            file_record(f"{task['site']}/{task['id']}-{part}", content + 1, sha256=f"{content:064x}")
            for part in range(rng.randint(1, 2))
        ]
        return {"task_id": task["id"], "status": "done", "files": files}
    found = [
        {"site": "booru", "remote_id": str(rng.randint(0, 200)), "metadata": {"id": 1}}
        for _ in range(rng.choice([0, 1, 3]))
    ]
    return {"task_id": task["id"], "status": "done", "found": found}


@pytest.mark.parametrize("seed", SEEDS)
def test_kept_counts_equal_a_recount_after_a_random_mix_of_work(session, seed):
    """Leases of both kinds, results of every outcome, re-sent and refused submits,
    releases, expiries, requeues, pauses and imports that change targets, in a random order."""
    rng = random.Random(seed)
    nodes = _nodes(session)
    sites, policy = context.sites(), context.policy()
    now = T0
    import_inventory(session, io.BytesIO(_csv(rng, 60, 0)), sites=sites, now=now)
    held: list[tuple[object, object, list[dict]]] = []
    seen: set[str] = set()
    for step in range(300):
        if step % 50 == 49:  # on the way, too: not only where the mix happens to end
            assert differences(session, now) == []
            seen |= {row["state"] for row in kept(session)["tasks"]}
            session.commit()
        now += timedelta(seconds=rng.randint(1, 400))
        roll = rng.random()
        node = rng.choice(nodes)
        if roll < 0.45:
            kind = rng.choice(["metadata", "download"])
            site = rng.choice(["booru", "tube"]) if kind == "download" else None
            grant = lease_tasks(
                session,
                client=node,
                kind=kind,
                n=rng.randint(1, 20),
                site=site,
                sites=sites,
                policy=policy,
                lease_seconds=rng.choice([60, 600]),
                now=now,
            )
            if grant.lease is not None:
                held.append((node, grant.lease, grant.tasks))
        elif roll < 0.8 and held:
            node, lease, tasks = held.pop(rng.randrange(len(held)))
            results = [_result(rng, task, lease.kind) for task in tasks if rng.random() < 0.9]
            if not results:
                continue
            submitted = dict(session=session, lease_id=lease.id, client=node, sites=sites, policy=policy, now=now)
            submit_results(results=results, **submitted)
            if rng.random() < 0.2:
                submit_results(results=results, **submitted)  # re-sent: changes nothing
            if rng.random() < 0.1:  # a stranger's submit to this lease: 404, nothing written
                with pytest.raises(NotFound):
                    submit_results(
                        **(submitted | {"client": next(n for n in nodes if n.id != node.id)}), results=results
                    )
        elif roll < 0.87 and held:
            node, lease, tasks = held.pop(rng.randrange(len(held)))
            some = [task["id"] for task in tasks if rng.random() < 0.5] or None
            release_lease(session, lease_id=lease.id, client=node, task_ids=some, now=now)
        elif roll < 0.9 and held:
            node, lease, _ = rng.choice(held)
            try:
                extend_lease(session, lease_id=lease.id, client=node, policy=policy, now=now)
            except Conflict:
                pass  # reclaimed already
        elif roll < 0.93:
            requeue_tasks(session, state=rng.choice(["dead", "done", "not_found", "duplicate"]), now=now)
        elif roll < 0.96:
            key = f"k{rng.randrange(60)}"
            (pause_item if rng.random() < 0.6 else resume_item)(session, key, now=now)
        else:
            import_inventory(session, io.BytesIO(_csv(rng, 60, step)), sites=sites, now=now)
    assert differences(session, now) == []
    counted = recounted(session.connection(), now)
    session.commit()
    assert counted["nodes"], "the mix did some work"
    assert {"done", "queued", "dead", "leased", "scheduled", "paused"} <= seen, seen


def test_a_late_submit_is_refused_and_counts_nothing(session):
    """An expired lease's tasks handed to another node: the first node's late result is a
    conflict and changes no count."""
    node, other, _ = _nodes(session)
    sites, policy = context.sites(), context.policy()
    import_inventory(session, io.BytesIO(b"key,url\nk,http://booru.test/a\n"), sites=sites, now=T0)
    grant = lease_tasks(
        session, client=node, kind="metadata", n=1, sites=sites, policy=policy, lease_seconds=60, now=T0
    )
    later = T0 + timedelta(minutes=5)
    again = lease_tasks(session, client=other, kind="metadata", n=1, sites=sites, policy=policy, now=later)
    assert [t["id"] for t in again.tasks] == [t["id"] for t in grant.tasks]
    before = kept(session)
    session.commit()
    result = [{"task_id": grant.tasks[0]["id"], "status": "done", "found": []}]
    outcome = submit_results(
        session, lease_id=grant.lease.id, client=node, results=result, sites=sites, policy=policy, now=later
    )
    assert outcome.conflicts == [grant.tasks[0]["id"]]
    assert kept(session) == before


def test_stats_rebuild_finds_and_repairs_counts_that_drifted(runner, actions, session):
    actions.add_download_tasks("booru", 3)
    actions.import_csv("query\ncats\n")
    session.execute(delete(TaskCount).where(TaskCount.kind == "metadata"))
    session.execute(text("UPDATE counters SET n = n + 5"))
    session.commit()
    check = runner.invoke(args=["stats", "rebuild", "--check"])
    assert check.exit_code == 1, check.output
    assert "tasks: counted {'kind': 'metadata'" in check.output and "kept counts differ" in check.output
    assert runner.invoke(args=["stats", "rebuild"]).exit_code == 0
    check = runner.invoke(args=["stats", "rebuild", "--check"])
    assert check.exit_code == 0 and "kept counts equal a recount" in check.output
    stats = runner.invoke(args=["stats"])
    assert stats.exit_code == 0 and '"queued": 3' in stats.output


def test_stats_reads_the_kept_counts_not_the_tables(client, actions, session):
    """A count changed behind the tables' back shows in /stats: it reads the kept rows."""
    actions.add_download_tasks("booru", 2)
    session.execute(text("UPDATE task_counts SET n = n + 40 WHERE kind = 'download' AND state = 'queued'"))
    session.commit()
    stats = client.get("/stats").get_json()
    assert stats["tasks"]["download"]["queued"] == 42 and stats["sites"]["booru"]["tasks"]["download"]["queued"] == 42
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'fetchfleet_tasks{kind="download",site="booru",state="queued"} 42.0' in metrics
    rebuild(session, T0)  # and the suite's own check after the test finds them equal again


def test_an_upgrade_fills_the_counts_of_a_database_of_the_previous_release(tmp_path):
    """A database at revision 0007 with tasks in every state, items, files and nodes gets
    the counts a recount gives when ``init_db`` upgrades it."""
    from flask_migrate import upgrade

    from common.states import TaskState
    from server import MIGRATIONS_DIR, create_app
    from server.extensions import db
    from tests.helpers import TEST_SITES

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'old.sqlite3'}", "SITES": TEST_SITES})
    with app.app_context():
        upgrade(directory=MIGRATIONS_DIR, revision="0007")
        when = "'2026-12-01 10:00:00.000000'"
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO api_keys (id, name, key_hash, role, created_at) VALUES "
                    f"(1, 'n', 'h', 'client', {when})"
                )
            )
            for number, state in enumerate(("pending", "found", "found", "failed", "not_found")):
                connection.execute(
                    text(
                        "INSERT INTO items (id, key, content_hash, state, created_at, updated_at, extra, priority) "
                        f"VALUES ({number + 1}, 'k{number}', 'h', '{state}', {when}, {when}, '{{}}', 0)"
                    )
                )
            for number, state in enumerate(list(TaskState) * 2):
                kind = "metadata" if number % 3 == 0 else "download"
                site = "tube" if kind == "metadata" and number >= 9 else "booru"  # one task per item and site
                done = state == TaskState.DONE
                connection.execute(
                    text(
                        "INSERT INTO tasks (kind, site, remote_id, url, state, priority, attempts, available_at, "
                        "created_at, updated_at, done_by, done_at, known_count, gone_at, item_id) VALUES "
                        f"('{kind}', '{site}', '{number}', 'http://booru.test/{number}', '{state}', 0, 0, {when}, "
                        f"{when}, {when}, {1 if done else 'NULL'}, {when if done else 'NULL'}, "
                        f"{2 if kind == 'metadata' else 'NULL'}, {when if number == 4 else 'NULL'}, "
                        f"{number % 5 + 1 if kind == 'metadata' else 'NULL'})"
                    )
                )
            for number in range(4):
                connection.execute(
                    text(
                        "INSERT INTO files (task_id, client_id, path, size, sha256, created_at, on_node) VALUES "
                        f"(2, 1, 'p{number}', {10 * (number + 1)}, '{SHA if number < 2 else str(number) * 64}', "
                        f"{when}, 1)"
                    )
                )
        upgrade(directory=MIGRATIONS_DIR)
        counts = kept(db.session)
        assert counts == recounted(db.session.connection(), T0)
        db.session.commit()
        assert {"name": "unique_files", "n": 3} in counts["counters"]
        assert {"client_id": 1, "tasks_done": 2, "files": 4, "bytes": 100} in counts["nodes"]
        assert sum(row["n"] for row in counts["tasks"]) == 2 * len(TaskState)
        assert db.session.scalar(select(func.count()).select_from(Item)) == 5
        db.session.commit()
        db.engine.dispose()


def test_a_commit_writes_its_tally_into_every_kept_table(session):
    """At commit the tally goes to the four kept tables (on PostgreSQL in one statement,
    each table's rows as JSON): every table gets its rows, a later commit adds to them,
    and a timestamp lands on its minute."""
    at = T0 + timedelta(seconds=42)
    for _ in range(2):
        count = tally(session)
        count.task_moved("download", "booru", "queued", "leased", 3)
        count.node(7, done=2, files=3, size=4000)
        count.completed(at, "download", 7, done=2, size=4000)
        count.counters["unique_files"] += 5
        session.commit()
    have = kept(session)
    assert {"kind": "download", "site": "booru", "state": "leased", "n": 6} in have["tasks"]
    assert {"kind": "download", "site": "booru", "state": "queued", "n": -6} in have["tasks"]
    assert {"client_id": 7, "tasks_done": 4, "files": 6, "bytes": 8000} in have["nodes"]
    assert have["minutes"] == [{"minute": minute_of(at), "kind": "download", "client_id": 7, "done": 4, "bytes": 8000}]
    assert {"name": "unique_files", "n": 10} in have["counters"]
    rebuild(session, T0)  # the suite's own check after the test compares with a recount
