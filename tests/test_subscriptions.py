"""Subscriptions (items checked again and again, each check recorded, re-checks that stop at
known posts) and pause / resume of items and sites, on both databases, through the domain
functions with a clock of the test's own (``now``) and over HTTP where no time passes."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.helpers import TEST_SITES


def leased(session, kind="metadata", now=None, site=None, n=100):
    from server import context
    from server.auth import Client
    from server.leasing import lease_tasks
    from server.models import ApiKey

    key = session.scalar(select(ApiKey).where(ApiKey.name == "node1"))
    session.commit()
    client = Client(key.id, key.name, key.role, None, False)
    grant = lease_tasks(
        session,
        client=client,
        kind=kind,
        n=n,
        site=site,
        sites=context.sites(),
        policy=context.policy(),
        now=now,
        events=context.events(),
    )
    return client, grant


def submit(session, client, grant, results, now=None):
    from server import context
    from server.leasing import submit_results

    return submit_results(
        session,
        lease_id=grant.lease.id,
        client=client,
        results=results,
        sites=context.sites(),
        policy=context.policy(),
        now=now,
        events=context.events(),
    )


def found(*ids) -> list[dict]:
    return [{"site": "booru", "remote_id": n, "metadata": {"id": n}} for n in ids]


def task_of(session, item_key: str):
    from server.models import Item, Task

    session.expire_all()
    item_id = session.scalar(select(Item.id).where(Item.key == item_key))
    task = session.scalar(select(Task).where(Task.item_id == item_id, Task.kind == "metadata"))
    session.commit()
    return task


@pytest.fixture
def node(actions):
    actions.key("node1")
    return actions


@pytest.fixture
def session_for():
    """An app built with other settings: its actions and session, inside its context."""
    from tests.helpers import Actions

    @contextlib.contextmanager
    def within(app):
        from server.extensions import db

        with app.app_context():
            actions = Actions(app, app.test_client())
            actions.key("node1")
            yield actions, db.session
            db.session.remove()

    return within


# ------------------------------------------------------------------ intervals


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("6h", 21600), ("1d", 86400), ("2w", 1209600), ("3600", 3600), ("", None)]
)
def test_intervals_are_seconds_or_a_number_with_a_unit(text, seconds):
    from server.schedule import parse_interval

    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5", "abc", "10y", "0m", "400d", "1.5h"])
def test_bad_intervals_name_the_problem(text):
    from server.schedule import parse_interval

    with pytest.raises(ValueError, match="must be"):
        parse_interval(text)


def test_csv_rows_with_a_bad_check_every_are_rejected_with_line_and_reason(node):
    report = node.import_csv(
        "query,sites,check_every\ncats,booru,1h\ndogs,booru,0\nfish,booru,-5\nemu,booru,abc\nant,booru,10y\n"
    )
    assert report.added == 1
    assert [(error.line, error.reason.split(":")[0]) for error in report.errors] == [
        (3, "check_every must be from 1 second to 366 days, got '0'"),
        (4, "check_every must be seconds or a number with a unit (s, m, h, d, w), got '-5'"),
        (5, "check_every must be seconds or a number with a unit (s, m, h, d, w), got 'abc'"),
        (6, "check_every must be seconds or a number with a unit (s, m, h, d, w), got '10y'"),
    ]


def test_a_bad_site_or_global_interval_stops_the_coordinator_at_start(app_config):
    from common.settings import ConfigError
    from server import create_app

    with pytest.raises(ConfigError, match="CHECK_EVERY"):
        create_app({**app_config, "CHECK_EVERY": "often"})
    sites = {**TEST_SITES, "booru": {**TEST_SITES["booru"], "check_every": "0"}}
    with pytest.raises(ConfigError, match=r"SITES\['booru'\].check_every"):
        create_app({**app_config, "SITES": sites})


# -------------------------------------------------------------- subscriptions


def test_a_subscription_is_checked_again_and_a_re_check_stops_at_known_posts(node, session):
    from server.database import utcnow

    node.import_csv("key,query,sites,check_every\ncats,cats,booru,1h\n")
    start = utcnow()
    client, grant = leased(session, now=start)
    [task] = grant.tasks
    assert task["check"] == {"number": 1, "full": True, "stop_after_known": None, "known_ids": []}
    outcome = submit(
        session, client, grant, [{"task_id": task["id"], "status": "done", "found": found(3, 2, 1)}], start
    )
    assert outcome.download_tasks_created == 3

    waiting = task_of(session, "cats")
    assert waiting.state == "scheduled" and waiting.check_count == 1 and waiting.attempts == 0
    assert timedelta(minutes=54) <= waiting.available_at - start <= timedelta(minutes=66)  # 1 h, +-10 %
    assert leased(session, now=start + timedelta(minutes=10))[1].lease is None  # not due

    later = start + timedelta(hours=2)
    client, grant = leased(session, now=later)
    [task] = grant.tasks
    assert task["check"] == {"number": 2, "full": False, "stop_after_known": 20, "known_ids": ["3", "2", "1"]}
    result = {"task_id": task["id"], "status": "done", "found": found(4, 3, 2, 1), "stopped_at_known": True}
    assert submit(session, client, grant, [result], later).download_tasks_created == 1

    from server.catalogue import show_item

    item = show_item(session, "cats")
    assert item["state"] == "found" and item["next_check_at"] is not None and item["check_every"] == 3600
    newest, first = item["checks"]
    assert (newest["posts_seen"], newest["new_posts"], newest["stopped_at_known"], newest["full"]) == (
        4,
        1,
        True,
        False,
    )
    assert (first["posts_seen"], first["new_posts"], first["stopped_at_known"], first["full"]) == (3, 3, False, True)
    assert newest["node"] == "node1" and newest["outcome"] == "done"
    assert item["check_totals"] == {"checks": 2, "new_posts": 4, "failed": 0}
    assert item["totals"]["found"] == 4


def test_every_full_check_every_th_check_goes_to_the_end(app_factory, session_for):
    app = app_factory(FULL_CHECK_EVERY=3)
    with session_for(app) as (actions, session):
        from server.database import utcnow

        actions.import_csv("key,query,sites,check_every\ncats,cats,booru,1h\n")
        now = utcnow()
        fulls = []
        for _ in range(7):
            client, grant = leased(session, now=now)
            [task] = grant.tasks
            fulls.append(task["check"]["full"])
            submit(session, client, grant, [{"task_id": task["id"], "status": "done", "found": found(1)}], now)
            now += timedelta(hours=2)
        assert fulls == [True, False, True, False, False, True, False]  # the first, then every third


def test_a_subscription_that_finds_nothing_or_fails_for_good_is_checked_again(node, session):
    from server.database import utcnow

    node.import_csv("key,query,sites,check_every\nempty,empty,booru,1d\nbroken,broken,booru,1d\n")
    now = utcnow()
    client, grant = leased(session, now=now)
    by_key = {task["item"]["key"]: task for task in grant.tasks}
    submit(
        session,
        client,
        grant,
        [
            {"task_id": by_key["empty"]["id"], "status": "done", "found": []},
            {"task_id": by_key["broken"]["id"], "status": "failed", "error_class": "permanent", "error": "HTTP 404"},
        ],
        now,
    )
    for key in ("empty", "broken"):
        task = task_of(session, key)
        assert task.state == "scheduled" and task.attempts == 0, key
        assert task.available_at - now > timedelta(hours=21)
    assert task_of(session, "broken").last_error == "HTTP 404"
    from server.catalogue import show_item

    [check] = show_item(session, "broken")["checks"]
    assert check["outcome"] == "failed" and check["error"] == "HTTP 404"
    assert show_item(session, "empty")["checks"][0]["outcome"] == "not_found"


def test_a_site_s_interval_applies_to_its_items_that_name_none(app_factory, session_for):
    sites = {**TEST_SITES, "booru": {**TEST_SITES["booru"], "check_every": "1d"}}
    app = app_factory(SITES=sites)
    with session_for(app) as (actions, session):
        from server.database import utcnow

        actions.import_csv("key,query,sites\ncats,cats,booru\n")
        now = utcnow()
        client, grant = leased(session, now=now)
        [task] = grant.tasks
        submit(session, client, grant, [{"task_id": task["id"], "status": "done", "found": found(1)}], now)
        assert task_of(session, "cats").state == "scheduled"


def test_an_item_that_is_not_a_subscription_is_done_after_one_check(node, session):
    node.import_csv("key,query,sites\ncats,cats,booru\n")
    client, grant = leased(session)
    [task] = grant.tasks
    assert "check" not in task
    submit(session, client, grant, [{"task_id": task["id"], "status": "done", "found": found(1)}])
    assert task_of(session, "cats").state == "done"


def test_re_importing_with_an_interval_makes_a_done_item_a_subscription(node, session):
    node.import_csv("key,query,sites\ncats,cats,booru\n")
    client, grant = leased(session)
    submit(session, client, grant, [{"task_id": grant.tasks[0]["id"], "status": "done", "found": found(1)}])
    node.import_csv("key,query,sites,check_every\ncats,cats,booru,6h\n")
    assert task_of(session, "cats").state == "scheduled"
    client, grant = leased(session)
    assert [task["check"]["number"] for task in grant.tasks] == [2]


def test_the_lease_carries_the_check_over_http(node, client):
    node.import_csv("key,query,sites,check_every\ncats,cats,booru,1h\n")
    lease = node.lease("metadata", n=10).get_json()
    assert lease["tasks"][0]["check"] == {"number": 1, "full": True, "stop_after_known": None, "known_ids": []}
    answer = node.submit(
        lease["lease_id"],
        [{"task_id": lease["tasks"][0]["id"], "status": "done", "found": found(1), "stopped_at_known": False}],
    )
    assert answer.status_code == 200, answer.get_json()


# ----------------------------------------------------------------- pausing


def test_a_paused_item_is_never_leased_and_resumes(node, client, session):
    node.import_csv("key,query,sites\ncats,cats,booru\ndogs,dogs,booru\n")
    admin = node.headers("ops", admin=True)
    answer = client.post("/items/cats/pause", headers=admin)
    assert answer.status_code == 200 and answer.get_json() == {"key": "cats", "paused": True, "tasks": 1}
    lease = node.lease("metadata", n=10).get_json()
    assert [task["item"]["key"] for task in lease["tasks"]] == ["dogs"]
    assert node.lease("metadata", n=10).get_json()["tasks"] == []
    assert client.post("/items/cats/resume", headers=admin).get_json() == {"key": "cats", "paused": False, "tasks": 1}
    assert [task["item"]["key"] for task in node.lease("metadata", n=10).get_json()["tasks"]] == ["cats"]
    assert client.post("/items/nothing/pause", headers=admin).status_code == 404
    assert client.post("/items/cats/pause", headers=node.headers()).status_code == 403


def test_work_of_a_paused_item_finishes_then_waits(node, session):
    """Leased before the pause: results are recorded; a retry, the downloads it found and
    an expired lease's tasks wait paused instead of going back to the queue."""
    from server.database import utcnow
    from server.leasing import reclaim_expired
    from server.models import Task
    from server.pausing import pause_item, resume_item

    node.import_csv("key,query,sites\ncats,cats,booru\ndogs,dogs,booru\n")
    client, grant = leased(session)
    by_key = {task["item"]["key"]: task for task in grant.tasks}
    pause_item(session, "cats")
    pause_item(session, "dogs")
    submit(
        session,
        client,
        grant,
        [
            {"task_id": by_key["cats"]["id"], "status": "done", "found": found(1, 2)},
            {"task_id": by_key["dogs"]["id"], "status": "failed", "error_class": "transient", "error": "HTTP 503"},
        ],
    )
    assert task_of(session, "cats").state == "done" and task_of(session, "dogs").state == "paused"
    states = session.scalars(select(Task.state).where(Task.kind == "download")).all()
    assert sorted(states) == ["paused", "paused"]
    session.commit()
    assert leased(session, kind="download", site="booru")[1].lease is None
    resume_item(session, "cats")
    client, grant = leased(session, kind="download", site="booru")
    assert len(grant.tasks) == 2

    # an expired lease of a paused item's tasks: they wait paused
    pause_item(session, "cats")
    from server import context

    reclaim_expired(session, policy=context.policy(), now=utcnow() + timedelta(days=1))
    session.commit()
    states = session.scalars(select(Task.state).where(Task.kind == "download")).all()
    session.commit()
    assert sorted(states) == ["paused", "paused"]


def test_a_paused_site_is_never_leased_and_resumes(node, client, runner):
    node.import_csv("key,query,sites\ncats,cats,booru\nclips,clips,tube\n")
    admin = node.headers("ops", admin=True)
    assert client.post("/sites/booru/pause", headers=admin).get_json() == {"name": "booru", "paused": True}
    assert [task["site"] for task in node.lease("metadata", n=10).get_json()["tasks"]] == ["tube"]
    node.add_download_tasks("booru", 3)
    assert node.lease("download", n=10, site="booru").get_json()["tasks"] == []
    result = runner.invoke(args=["sites", "resume", "booru"])
    assert result.exit_code == 0 and "resumed site booru" in result.output
    assert len(node.lease("download", n=10, site="booru").get_json()["tasks"]) == 3
    assert client.post("/sites/nowhere/pause", headers=admin).status_code == 404
    result = runner.invoke(args=["sites", "pause", "nowhere"])
    assert result.exit_code == 1 and "no site 'nowhere'" in result.output


def test_pause_commands(node, runner):
    node.import_csv("key,query,sites\ncats,cats,booru\n")
    result = runner.invoke(args=["items", "pause", "cats"])
    assert result.exit_code == 0 and result.output.strip() == "paused cats: 1 task(s) wait"
    shown = runner.invoke(args=["items", "show", "cats"])
    assert "paused since" in shown.output
    assert runner.invoke(args=["items", "resume", "cats"]).exit_code == 0
    missing = runner.invoke(args=["items", "pause", "dogs"])
    assert missing.exit_code == 1 and missing.output.strip() == "error: no item 'dogs'"


def test_stop_at_known_counts_known_posts_in_a_row():
    from client.engines.base import KnownRun, StopAtKnown

    order = {"number": 2, "full": False, "stop_after_known": 3, "known_ids": ["6", "5", "4", "3", "2"]}
    run = KnownRun(StopAtKnown.from_check(order))
    seen = [run.saw(n) for n in ("9", "6", "5", "8", "4", "4", "3", "2")]  # a post twice counts once
    assert seen == [False] * 7 + [True]
    assert run.stopped
    assert StopAtKnown.from_check({"number": 1, "full": True, "stop_after_known": None, "known_ids": []}) is None
    assert StopAtKnown.from_check(None) is None
    assert not KnownRun(None).saw("1")


# ------------------------------------------------------------ deletion sync


def _check(session, now, found_ids, *, stopped=False):
    client, grant = leased(session, now=now)
    [task] = grant.tasks
    result = {"task_id": task["id"], "status": "done", "found": found(*found_ids)}
    if stopped:
        result["stopped_at_known"] = True
    submit(session, client, grant, [result], now)
    return task["check"]


def _download_all(session, now):
    from tests.helpers import file_record

    client, grant = leased(session, kind="download", site="booru", now=now)
    if grant.lease is not None:
        results = [
            {"task_id": t["id"], "status": "done", "files": [file_record(f"booru/{t['remote_id']}.png")]}
            for t in grant.tasks
        ]
        submit(session, client, grant, results, now)


def test_a_full_check_marks_vanished_posts_gone_upstream_and_back(app_factory, session_for):
    from server.catalogue import show_item
    from server.counts import GONE_UPSTREAM, counter_values
    from server.models import File

    app = app_factory(FULL_CHECK_EVERY=3)
    with session_for(app) as (actions, session):
        from server.database import utcnow

        actions.import_csv("key,query,sites,check_every\ncats,cats,booru,1h\n")
        now = utcnow()
        assert _check(session, now, (3, 2, 1))["full"]
        _download_all(session, now)
        now += timedelta(hours=2)
        assert not _check(session, now, (3, 1))["full"]  # a partial check proves nothing
        assert show_item(session, "cats")["totals"]["gone_upstream"] == 0
        now += timedelta(hours=2)
        assert _check(session, now, (3, 1))["full"]
        item = show_item(session, "cats")
        gone = {d["remote_id"]: d["gone_at"] for d in item["downloads"]}
        assert gone["2"] is not None and gone["1"] is None and gone["3"] is None
        assert item["totals"]["gone_upstream"] == 1 and [d["state"] for d in item["downloads"]] == ["done"] * 3
        assert len(item["downloads"][1]["files"]) == 1 and session.scalar(select(func_count(File))) == 3  # kept
        assert counter_values(session)[GONE_UPSTREAM] == 1
        session.commit()
        for _ in range(2):
            now += timedelta(hours=2)
            assert not _check(session, now, (3, 2, 1))["full"]
        now += timedelta(hours=2)
        assert _check(session, now, (3, 2, 1))["full"]  # the sixth: 2 is back
        assert show_item(session, "cats")["totals"]["gone_upstream"] == 0


def func_count(model):
    from sqlalchemy import func

    return func.count(model.id)


# ------------------------------------------------------------------ report


def test_the_report_lists_what_needs_a_look_and_exits_1(node, session, runner, client):
    from server.database import utcnow

    result = runner.invoke(args=["report"])
    assert result.exit_code == 0 and "all is well" in result.output
    node.import_csv("key,query,sites,check_every\ncats,cats,booru,1h\nnothing,nothing,booru,\n")
    now = utcnow()
    client_, grant = leased(session, now=now)
    by_key = {task["item"]["key"]: task for task in grant.tasks}
    submit(
        session,
        client_,
        grant,
        [
            {"task_id": by_key["cats"]["id"], "status": "failed", "error_class": "permanent", "error": "HTTP 404"},
            {"task_id": by_key["nothing"]["id"], "status": "failed", "error_class": "permanent", "error": "gone"},
        ],
        now,
    )
    from server import context
    from server.pausing import set_site_paused

    set_site_paused(session, "tube", True, sites=context.sites())
    result = runner.invoke(args=["report"])
    assert result.exit_code == 1, result.output
    assert "items whose last check failed: 2" in result.output and "HTTP 404" in result.output
    assert "dead tasks, by site and error: 1" in result.output
    assert "sites paused or cooling down: 1" in result.output
    answer = client.get("/report", headers=node.headers("ops", admin=True))
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["needs_attention"] and body["sections"]["failing_checks"]["count"] == 2
    assert client.get("/report", headers=node.headers()).status_code == 403

    from server.report import build_report

    later = build_report(session, sites=context.sites(), policy=context.policy(), now=now + timedelta(hours=3))
    assert [row["key"] for row in later.sections["overdue"].rows] == ["cats"]


# -------------------------------------------------------------- site tests


def test_a_site_test_is_described_to_nodes_and_its_outcome_kept(app_factory):
    sites = {
        **TEST_SITES,
        "booru": {**TEST_SITES["booru"], "test": {"query": "cats", "min_posts": 2, "metadata_keys": ["md5"]}},
    }
    app = app_factory(SITES=sites)
    client = app.test_client()
    from tests.helpers import Actions

    actions = Actions(app, client)
    [booru] = [site for site in client.get("/sites", headers=actions.headers()).get_json() if site["name"] == "booru"]
    assert booru["test"] == {
        "url": "http://booru.test/post?tags=cats",
        "min_posts": 2,
        "download": 1,
        "sha256": [],
        "metadata_keys": ["md5"],
    }
    checks = [{"name": "found 1 post(s), at least 2 wanted", "passed": False, "detail": ""}]
    answer = client.post(
        "/sites/booru/test-results", json={"passed": False, "checks": checks}, headers=actions.headers()
    )
    assert answer.status_code == 200 and answer.get_json()["passed"] is False
    stats = client.get("/stats", headers=actions.headers()).get_json()
    assert stats["sites"]["booru"]["last_test"]["node"] == "node1"
    assert stats["sites"]["booru"]["last_test"]["failed"] == checks
    public = client.get("/stats").get_json()
    assert set(public["sites"]["booru"]["last_test"]) == {"at", "passed"}  # not who, not why
    bad = client.post("/sites/nowhere/test-results", json={"passed": True, "checks": []}, headers=actions.headers())
    assert bad.status_code == 404
    bad = client.post("/sites/booru/test-results", json={"passed": "yes", "checks": []}, headers=actions.headers())
    assert bad.status_code == 400 and "passed" in bad.get_json()["errors"]["json"]


@pytest.mark.parametrize(
    ("test", "problem"),
    [
        ({"query": "x", "url": "http://booru.test/"}, "names a url or a query"),
        ({}, "names a url or a query"),
        ({"url": "ftp://booru.test/"}, "must be an http"),
        ({"query": "x", "sha256": ["abc"]}, "sha256 must be a list"),
        ({"query": "x", "min_posts": -1}, "min_posts must be an integer"),
        ({"query": "x", "colour": "red"}, "must be a mapping of"),
    ],
)
def test_a_bad_site_test_stops_the_coordinator_at_start(app_config, test, problem):
    from common.settings import ConfigError
    from server import create_app

    sites = {**TEST_SITES, "booru": {**TEST_SITES["booru"], "test": test}}
    with pytest.raises(ConfigError, match=problem):
        create_app({**app_config, "SITES": sites})
