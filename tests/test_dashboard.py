"""``/dashboard`` and its data on both databases: per-site counts as the database has them,
what a caller without a key sees, and the 24-hour series minute by minute."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from tests.helpers import Actions, file_record
from tests.test_leasing import done, lease, submit


def data(client, actions=None, who=None, status=200):
    headers = actions.headers(who) if who else {}
    answer = client.get("/dashboard/data", headers=headers)
    assert answer.status_code == status, answer.get_json()
    return answer.get_json()


def test_the_page_is_served_and_its_data_has_per_site_counts(client, actions, session):
    from server.models import Task

    page = client.get("/dashboard")
    assert page.status_code == 200 and b"/static/dashboard.js" in page.data
    with client.get("/static/dashboard.js") as script:
        assert script.status_code == 200 and b"/dashboard/data" in script.data

    actions.add_download_tasks("booru", 6)
    lease = actions.lease("download", n=4, site="booru").get_json()
    a, b, c, _leased = lease["tasks"]
    results = [
        {"task_id": a["id"], "status": "done", "files": [file_record("a.png", 10)]},
        {"task_id": b["id"], "status": "failed", "error_class": "transient", "error": "HTTP 503"},
        {"task_id": c["id"], "status": "failed", "error_class": "permanent", "error": "HTTP 404"},
    ]
    assert actions.submit(lease["lease_id"], results).status_code == 200
    sites = {site["name"]: site for site in data(client)["sites"]}
    assert sites["booru"]["download"] == {"done": 1, "retrying": 1, "dead": 1, "leased": 1, "queued": 2}
    stats = client.get("/stats").get_json()["sites"]["booru"]["tasks"]["download"]
    assert stats["queued"] == 3  # /stats and /metrics count a task waiting to be retried as queued
    assert sites["booru"]["in_flight"] == 1 and sites["slow"]["max_in_flight"] == 3
    assert set(sites) == {"booru", "tube", "slow"} and sites["tube"]["download"] == {}
    total = session.scalar(select(func.count()).select_from(Task).where(Task.site == "booru"))
    assert sum(sites["booru"]["download"].values()) == total


def test_nodes_errors_and_dead_tasks_are_for_key_holders(client, actions):
    [task_id] = actions.add_download_tasks("booru", 1)
    lease = actions.lease("download", n=1, site="booru").get_json()
    failure = {"task_id": task_id, "status": "failed", "error_class": "permanent", "error": "HTTP 404 at http://x"}
    assert actions.submit(lease["lease_id"], [failure]).status_code == 200
    public = data(client)
    assert public["full"] is False and "nodes" not in public and "dead" not in public
    full = data(client, actions, who="node1")
    assert [task["id"] for task in full["dead"]] == [task_id]
    assert full["errors"][0]["error"] == "HTTP 404 at http://x"
    [node] = [n for n in full["nodes"] if n["name"] == "node1"]
    assert node["silent_minutes"] is None and node["active_leases"] == 0


def test_stats_require_key_closes_the_data_not_the_page(app_factory):
    app = app_factory(STATS_REQUIRE_KEY=True)
    client = app.test_client()
    assert client.get("/dashboard").status_code == 200  # the page holds no data: it asks for a key
    answer = client.get("/dashboard/data")
    assert answer.status_code == 401 and answer.get_json()["message"]
    assert data(client, Actions(app, client), who="node1")["full"] is True


def test_a_snapshot_is_shared_for_the_refresh_interval_and_an_action_renews_it(app_factory):
    app = app_factory(DASHBOARD_REFRESH_SECONDS=3600)
    client = app.test_client()
    actions = Actions(app, client)
    first = data(client)
    actions.add_download_tasks("booru", 2)
    assert data(client)["generated_at"] == first["generated_at"]  # the same snapshot
    requeue = client.post("/tasks/requeue", json={"state": "dead"}, headers=actions.headers("ops", admin=True))
    assert requeue.status_code == 200
    assert {s["name"]: s for s in data(client)["sites"]}["booru"]["download"] == {"queued": 2}


def test_the_series_is_the_kept_minutes_of_the_last_day(session, actions):
    from server.auth import create_key
    from server.dashboard import SERIES_MINUTES, series
    from server.database import utcnow
    from server.models import ApiKey, MinuteCount

    create_key(session, "node1")
    node = session.scalar(select(ApiKey).where(ApiKey.name == "node1"))

    now = (utcnow() + timedelta(minutes=1)).replace(second=30, microsecond=0)
    actions.add_download_tasks("booru", 5)
    for minutes_ago, n in ((26 * 60, 1), (10, 2), (10, 1), (1, 1)):
        at = now - timedelta(minutes=minutes_ago)
        grant = lease(session, node, n=n, now=now)  # results of leases of that time
        submit(session, node, grant, [done(task["id"], f"{task['id']}.png") for task in grant.tasks], now=at)
    got = series(session, now)
    assert len(got["downloads"]) == SERIES_MINUTES
    assert got["downloads"][-11] == 3 and got["downloads"][-2] == 1 and sum(got["downloads"]) == 4
    assert got["bytes"][-11] == 30 and sum(got["metadata"]) == 0
    # the minute of more than a day ago was forgotten when a newer one was written
    oldest = session.scalar(select(func.min(MinuteCount.minute)))
    assert oldest == now.replace(second=0) - timedelta(minutes=10)
