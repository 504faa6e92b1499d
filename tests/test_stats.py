"""/stats: aggregate counts by state, site and client after real lease/submit traffic."""

from __future__ import annotations

from datetime import timedelta

from tests.helpers import file_record


def test_stats_after_a_small_run(actions, client):
    actions.import_csv("query\ncats\ndogs\n")
    metadata = actions.lease("metadata", 10, site="booru").get_json()
    cats, dogs = metadata["tasks"]
    actions.submit(
        metadata["lease_id"],
        [
            {
                "task_id": cats["id"],
                "status": "done",
                "found": [{"site": "booru", "remote_id": n, "metadata": {"id": n}} for n in (1, 2, 3)],
            },
            {"task_id": dogs["id"], "status": "done", "found": []},
        ],
    )
    downloads = actions.lease("download", 3, site="booru", who="node2").get_json()
    first, second, _third = (task["id"] for task in downloads["tasks"])
    actions.submit(
        downloads["lease_id"],
        [
            {"task_id": first, "status": "done", "files": [file_record("a.png", 100), file_record("b.png", 23)]},
            {"task_id": second, "status": "failed", "error_class": "permanent", "error": "HTTP 404"},
        ],
        who="node2",
    )

    stats = client.get("/stats", headers=actions.headers()).get_json()
    assert stats["items"] == {"pending": 1, "found": 1, "not_found": 0, "failed": 0, "total": 2}
    assert stats["tasks"]["metadata"] | {} == {
        "queued": 3,
        "scheduled": 0,
        "paused": 0,
        "leased": 0,
        "done": 1,
        "not_found": 0,
        "dead": 0,
        "duplicate": 0,
        "total": 4,
    }  # dogs retries; tube x2
    assert stats["tasks"]["download"] == {
        "queued": 0,
        "scheduled": 0,
        "paused": 0,
        "leased": 1,
        "done": 1,
        "not_found": 0,
        "dead": 1,
        "duplicate": 0,
        "total": 3,
    }
    booru = stats["sites"]["booru"]
    assert booru["tasks"]["download"] == {"leased": 1, "done": 1, "dead": 1}
    assert booru["in_flight"] == 1 and booru["cooldown_until"] is None and booru["configured"]
    assert stats["leases"] == {"active": 1, "tasks_leased": 3, "expired_unreclaimed": 0}
    by_name = {entry["name"]: entry for entry in stats["clients"]}
    assert by_name["node2"]["tasks_done"] == 1 and by_name["node2"]["bytes"] == 123
    assert by_name["node2"]["active_leases"] == 1 and by_name["node2"]["last_seen"]
    assert by_name["node1"]["tasks_done"] == 1 and by_name["node1"]["version"]
    assert stats["throughput"]["done"] == {"metadata": 1, "download": 1} and stats["throughput"]["bytes"] == 123
    errors = {(e["error_class"], e["error"]): e["count"] for e in stats["recent_errors"]}
    assert errors == {("permanent", "HTTP 404"): 1}


def test_stats_shows_cooldowns_and_unconfigured_sites(actions, client, session):
    from server.database import utcnow
    from server.site_state import set_cooldown

    actions.add_download_tasks("retired", 2)
    set_cooldown(session, "booru", utcnow() + timedelta(minutes=5), "HTTP 429")
    session.commit()
    stats = client.get("/stats", headers=actions.headers()).get_json()
    assert stats["sites"]["booru"]["cooldown_reason"] == "HTTP 429"
    assert stats["sites"]["retired"]["configured"] is False
    assert stats["sites"]["retired"]["tasks"]["download"] == {"queued": 2}


def test_stats_on_an_empty_database(actions, client):
    stats = client.get("/stats", headers=actions.headers()).get_json()
    assert stats["items"]["total"] == 0 and stats["tasks"]["download"]["total"] == 0
    assert set(stats["sites"]) == {"booru", "tube", "slow"}


def test_without_a_key_stats_show_counts_only(actions, client, session):
    from server.database import utcnow
    from server.site_state import set_cooldown

    actions.add_download_tasks("booru", 1)
    lease = actions.lease("download", 1, site="booru").get_json()
    failure = {"status": "failed", "error_class": "permanent", "error": "HTTP 404 for http://booru.test/secret"}
    actions.submit(lease["lease_id"], [{"task_id": lease["tasks"][0]["id"], **failure}])
    set_cooldown(session, "booru", utcnow() + timedelta(minutes=5), "HTTP 429 for http://booru.test/x")
    session.commit()
    public = client.get("/stats").get_json()
    full = client.get("/stats", headers=actions.headers()).get_json()
    assert public["detail"] == "counts" and full["detail"] == "full"
    assert "clients" not in public and "recent_errors" not in public and "booru.test" not in str(public)
    assert public["tasks"] == full["tasks"] and public["sites"]["booru"]["cooldown_until"]
    assert full["clients"] and "booru.test/secret" in str(full["recent_errors"])
    assert client.get("/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_a_requeued_done_task_is_queued_again_and_its_completion_stays_in_the_last_hour(actions, client):
    """Requeue and a re-import that changes a target reset a task the same way (one
    definition, ``server.transitions.fresh_start``): nothing of the old result stays on the
    task, and it no longer counts as done (for its node either); that it was completed an
    hour ago is history, which the last hour's throughput keeps."""
    [task_id] = actions.add_download_tasks("booru", 1)
    lease = actions.lease("download", 1, site="booru").get_json()
    assert (
        actions.submit(
            lease["lease_id"], [{"task_id": task_id, "status": "done", "files": [file_record()]}]
        ).status_code
        == 200
    )
    before = client.get("/stats", headers=actions.headers()).get_json()
    assert before["throughput"]["done"]["download"] == 1
    admin = actions.headers("ops", admin=True)
    assert client.post("/tasks/requeue", json={"task_ids": [task_id]}, headers=admin).get_json()["count"] == 1
    after = client.get("/stats", headers=actions.headers()).get_json()
    assert after["throughput"]["done"]["download"] == 1
    assert (before["tasks"]["download"]["done"], after["tasks"]["download"]["done"]) == (1, 0)
    assert after["tasks"]["download"]["queued"] == 1
    assert [c["tasks_done"] for c in before["clients"] if c["name"] == "node1"] == [1]
    assert [c["tasks_done"] for c in after["clients"] if c["name"] == "node1"] == [0]
    task = actions.task(task_id)
    assert task.state == "queued" and task.done_by is None and task.done_at is None and task.found_count is None


def test_recent_errors_group_only_the_newest_errors_of_the_day(actions, session, monkeypatch):
    """However many tasks failed in a day, a look reads a bounded number of them: the
    newest, through the index on ``last_error_at``."""
    from sqlalchemy import select

    from server import stats
    from server.database import utcnow
    from server.models import Task

    actions.import_csv("query\n" + "".join(f"q{n}\n" for n in range(5)))
    tasks = list(session.scalars(select(Task).order_by(Task.id)))
    assert len(tasks) >= 8
    now = utcnow()
    for minutes, task in zip([60 * 25, 300, 240, 180, 120, 3, 2, 1], tasks, strict=False):
        message = "old" if minutes > 60 else "new"
        task.error_class, task.last_error, task.last_error_at = "transient", message, now - timedelta(minutes=minutes)
    session.commit()

    def grouped() -> dict[str, int]:
        return {error["error"]: error["count"] for error in stats.recent_errors(session, now)}

    assert grouped() == {"old": 4, "new": 3}  # the one of yesterday is not in the day
    monkeypatch.setattr(stats, "RECENT_ERRORS_READ", 3)
    assert grouped() == {"new": 3}
    monkeypatch.setattr(stats, "RECENT_ERRORS_READ", 5)
    assert grouped() == {"new": 3, "old": 2}
