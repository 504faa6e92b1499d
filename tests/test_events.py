"""The event outbox on both databases: which changes write which events, in the change's
own transaction, and nothing when no destination is configured; the sender's bookkeeping
(floor, backoff, pruning) and its settings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from common.settings import ConfigError
from tests.helpers import Actions, file_record
from tests.test_catalogue import download_all, md5, post, resolve, sha, upload_known

HOOK = [{"url": "http://127.0.0.1:9/hook", "secret": "s" * 32}]


@pytest.fixture
def app(app_factory):
    """A coordinator with a destination configured: its changes write events."""
    return app_factory(EVENTS_WEBHOOKS=HOOK)


def outbox(app, type_: str | None = None) -> list[dict]:
    from server.extensions import db
    from server.models import Event

    with app.app_context():
        statement = select(Event).order_by(Event.id)
        if type_ is not None:
            statement = statement.where(Event.type == type_)
        events = [{"id": e.id, "type": e.type, "at": e.created_at, **e.body} for e in db.session.scalars(statement)]
        db.session.commit()
        return events


def test_no_destination_means_no_event_and_no_synchronized_bookkeeping(app_factory):
    app = app_factory()
    actions = Actions(app, app.test_client())
    actions.import_csv("query,sites\ncats,booru\n")
    resolve(actions, {"query:cats": [post(1)]})
    download_all(actions, lambda t: [file_record("booru/1.png", 5)])
    assert outbox(app) == []


def test_each_downloaded_file_is_one_event_and_the_item_is_synchronized_once(app, actions):
    actions.import_csv("query,sites\ncats,booru\n")
    resolve(actions, {"query:cats": [post(1), post(2)]})
    assert outbox(app) == []  # found, nothing settled yet

    lease = actions.lease("download", n=1, site="booru").get_json()
    [first] = lease["tasks"]
    files = [file_record("booru/a.png", 5, sha256=sha(1)), file_record("booru/b.png", 7, sha256=sha(2))]
    results = [{"task_id": first["id"], "status": "done", "files": files}]
    assert actions.submit(lease["lease_id"], results).status_code == 200
    assert actions.submit(lease["lease_id"], results).status_code == 200  # sent again: nothing new
    downloaded = outbox(app, "file.downloaded")
    assert [(e["path"], e["size"], e["sha256"]) for e in downloaded] == [
        ("booru/a.png", 5, sha(1)),
        ("booru/b.png", 7, sha(2)),
    ]
    assert {(e["task_id"], e["site"], e["remote_id"], e["item_key"], e["node"]) for e in downloaded} == {
        (first["id"], "booru", first["remote_id"], "query:cats", "node1")
    }
    assert outbox(app, "item.synchronized") == []  # its other post is still queued

    download_all(actions, lambda t: [file_record("booru/c.png", 3, sha256=sha(3))])
    [synchronized] = outbox(app, "item.synchronized")
    assert synchronized["item_key"] == "query:cats"
    assert len(outbox(app, "file.downloaded")) == 3


def test_a_requeued_post_makes_its_item_synchronized_again_when_done(app, actions, runner):
    actions.import_csv("query,sites\ncats,booru\n")
    resolve(actions, {"query:cats": [post(1)]})
    [task_id] = download_all(actions, lambda t: [file_record("booru/1.png", 5)])
    assert len(outbox(app, "item.synchronized")) == 1
    result = runner.invoke(args=["tasks", "requeue", "--state", "done", "--kind", "download"])
    assert result.exit_code == 0, result.output
    download_all(actions, lambda t: [file_record("booru/1.png", 5)])
    assert [e["item_key"] for e in outbox(app, "item.synchronized")] == ["query:cats", "query:cats"]
    assert [e["task_id"] for e in outbox(app, "file.downloaded")] == [task_id, task_id]


def test_dead_tasks_are_events_and_settle_their_item(app, actions):
    actions.import_csv("query,sites\ncats,booru\n")
    resolve(actions, {"query:cats": [post(1)]})
    lease = actions.lease("download", n=1, site="booru").get_json()
    [task] = lease["tasks"]
    failure = {"task_id": task["id"], "status": "failed", "error_class": "permanent", "error": "HTTP 404"}
    assert actions.submit(lease["lease_id"], [failure]).status_code == 200
    [dead] = outbox(app, "task.dead")
    assert dead | {"id": None, "at": None} == {
        "id": None,
        "at": None,
        "type": "task.dead",
        "task_id": task["id"],
        "kind": "download",
        "site": "booru",
        "remote_id": "1",
        "item_key": "query:cats",
        "error_class": "permanent",
        "error": "HTTP 404",
    }
    assert [e["item_key"] for e in outbox(app, "item.synchronized")] == ["query:cats"]


def test_a_lease_that_expires_on_the_last_attempt_is_a_dead_task_event(app_factory):
    app = app_factory(EVENTS_WEBHOOKS=HOOK, DOWNLOAD_MAX_ATTEMPTS=1, DOWNLOAD_LEASE_SECONDS=1)
    actions = Actions(app, app.test_client())
    [task_id] = actions.add_download_tasks("booru", 1)
    assert actions.lease("download", n=1, site="booru", lease_seconds=1).get_json()["tasks"]
    from server import context
    from server.database import utcnow
    from server.extensions import db
    from server.maintenance import reclaim_stuck

    with app.app_context():
        later = utcnow() + timedelta(seconds=5)
        assert reclaim_stuck(db.session, policy=context.policy(), now=later, events=context.events()) == 1
    [dead] = outbox(app, "task.dead")
    assert dead["task_id"] == task_id and dead["error"] == "lease expired before a result arrived"


def test_a_cooldown_is_one_event_when_it_starts_not_one_per_429(app, actions):
    actions.add_download_tasks("booru", 3)
    lease = actions.lease("download", n=3, site="booru").get_json()
    limited = [
        {"task_id": t["id"], "status": "failed", "error_class": "rate_limited", "retry_after": 60 + n}
        for n, t in enumerate(lease["tasks"][:2])
    ]
    assert actions.submit(lease["lease_id"], limited).status_code == 200
    more = [{"task_id": lease["tasks"][2]["id"], "status": "failed", "error_class": "rate_limited", "retry_after": 90}]
    assert actions.submit(lease["lease_id"], more).status_code == 200  # still cooling: longer, no new event
    [cooldown] = outbox(app, "site.cooldown")
    assert cooldown["site"] == "booru" and cooldown["reason"] == "rate_limited"


def test_posts_not_fetched_are_skipped_events_with_the_reason(app, client, actions):
    actions.import_csv("query,sites\ncats,booru\n")
    resolve(actions, {"query:cats": [post(1, md5=md5(1))]})
    download_all(actions, lambda t: [file_record("booru/1.png", 5, sha256=sha(1), md5=md5(1))])
    upload_known(client, actions, b"site,remote_id\nbooru,2\n", source="old.csv")
    actions.import_csv("query,sites\ndogs,booru\n")
    resolve(actions, {"query:dogs": [post(2), post(3, md5=md5(1)), post(4)]})
    skipped = {e["remote_id"]: e for e in outbox(app, "file.skipped")}
    assert set(skipped) == {"2", "3"}
    assert skipped["2"]["reason"] == "known" and skipped["2"]["item_key"] == "query:dogs"
    assert skipped["3"]["reason"] == "duplicate" and skipped["3"]["duplicate_of_file_id"] is not None
    assert outbox(app, "item.synchronized")[-1]["item_key"] == "query:cats"  # dogs still has post 4 to fetch


# ------------------------------------------------------------------ the sender's books


class Recorder:
    """A destination that keeps what it is given (and fails on request)."""

    def __init__(self, name="recorder", types=None, fail_after=None):
        self.name, self.types, self.fail_after, self.got = name, types, fail_after, []

    def deliver(self, messages):
        from server.event_sender import DeliveryError

        for count, message in enumerate(messages):
            if self.fail_after is not None and count >= self.fail_after:
                raise DeliveryError("refused", count)
            self.got.append(message)

    def close(self):
        pass


def add_events(session, count, now, type_="file.downloaded"):
    from server.events import EventType, Outbox

    Outbox(enabled=True).add(session, EventType(type_), ({"n": n} for n in range(count)), now)
    session.commit()


def test_a_failing_destination_keeps_what_it_took_and_backs_off(session):
    from server.database import utcnow
    from server.event_sender import Sender
    from server.models import EventDestination

    now = utcnow()
    add_events(session, 5, now)
    flaky = Recorder(fail_after=2)
    sender = Sender(session.get_bind(), [flaky], keep=timedelta(days=1))
    wait, failing = sender._deliver_once(flaky, False)
    assert failing and [m["body"]["n"] for m in flaky.got] == [0, 1]
    from server.event_sender import backlog

    [entry] = backlog(session, [flaky])
    assert entry.pending == 3 and entry.failures == 1 and entry.last_error == "refused"
    assert entry.next_attempt_at > now
    wait, _ = sender._deliver_once(flaky, True)  # within the backoff: nothing sent
    assert wait > 0 and len(flaky.got) == 2
    flaky.fail_after = None
    session.execute(update(EventDestination).values(next_attempt_at=None))
    session.commit()
    sender._deliver_once(flaky, True)
    assert [m["body"]["n"] for m in flaky.got] == [0, 1, 2, 3, 4]  # in order, none twice
    assert backlog(session, [flaky])[0].pending == 0


def test_the_floor_never_passes_a_young_event_and_pruning_keeps_what_is_pending(session):
    from server.database import utcnow
    from server.event_sender import FLOOR_LAG, Sender, advance_floor, backlog, prune
    from server.models import Event

    now = utcnow()
    old = now - FLOOR_LAG - timedelta(days=10)
    add_events(session, 3, old)
    add_events(session, 2, now)
    only_dead = Recorder("dead-only", types={"task.dead"})
    everything = Recorder("everything")
    sender = Sender(session.get_bind(), [only_dead, everything], keep=timedelta(days=7))
    sender._deliver_once(only_dead, False)
    assert only_dead.got == []
    floor = advance_floor(session, only_dead, now)
    session.commit()
    ids = session.scalars(select(Event.id).order_by(Event.id)).all()
    assert floor == ids[2]  # past the old events it does not want, not past the young ones
    # "everything" has nothing yet: pruning keeps every event it waits for
    assert prune(session, [only_dead, everything], timedelta(days=7), now) == 0
    session.commit()
    sender._deliver_once(everything, False)
    assert len(everything.got) == 5
    assert prune(session, [only_dead, everything], timedelta(days=7), now) == 3  # the old delivered ones
    session.commit()
    assert session.scalar(select(func.count()).select_from(Event)) == 2
    assert [entry.pending for entry in backlog(session, [only_dead, everything])] == [0, 0]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"EVENTS_AMQP_URL": "http://127.0.0.1:5672"}, "EVENTS_AMQP_URL must be an amqp://"),
        ({"EVENTS_AMQP_URL": "amqp://127.0.0.1", "EVENTS_AMQP_EXCHANGE": ""}, "EVENTS_AMQP_EXCHANGE"),
        ({"EVENTS_WEBHOOKS": {"url": "http://x"}}, "EVENTS_WEBHOOKS must be a list"),
        ({"EVENTS_WEBHOOKS": [{"url": "ftp://x", "secret": "s" * 16}]}, "EVENTS_WEBHOOKS[0].url"),
        ({"EVENTS_WEBHOOKS": [{"url": "http://x"}]}, "EVENTS_WEBHOOKS[0].secret"),
        ({"EVENTS_WEBHOOKS": [{"url": "http://x", "secret": "s" * 16, "types": ["file.moved"]}]}, "file.moved"),
        ({"EVENTS_WEBHOOKS": [{"url": "http://x", "secret": "s" * 16, "token": 1}]}, "EVENTS_WEBHOOKS[0] must"),
        ({"EVENTS_WEBHOOKS": HOOK + HOOK}, "the same URL twice"),
        ({"EVENTS_KEEP_DAYS": 0}, "EVENTS_KEEP_DAYS"),
    ],
)
def test_bad_event_settings_are_refused_at_start_naming_the_setting(app_config, settings, problem):
    from server import create_app

    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        create_app({**app_config, **settings})


def test_a_webhook_is_named_without_its_credentials_or_query():
    from server.event_sender import destinations_from_config

    [hook] = destinations_from_config(
        {"EVENTS_WEBHOOKS": [{"url": "https://user:pw@hooks.example:8443/in?token=abc", "secret": "s" * 16}]}
    )
    assert hook.name == "webhook https://hooks.example:8443/in"


def test_events_run_without_a_destination_says_so_and_exits_2(app_factory):
    result = app_factory().test_cli_runner().invoke(args=["events", "run", "--drain"])
    assert result.exit_code == 2
    assert "no event destination: set EVENTS_AMQP_URL and/or EVENTS_WEBHOOKS" in result.output


def test_events_status_names_each_destination_and_its_backlog(app, actions):
    actions.add_download_tasks("booru", 2)
    lease = actions.lease("download", n=2, site="booru").get_json()
    results = [
        {"task_id": t["id"], "status": "done", "files": [file_record(f"{t['id']}.png", 4)]} for t in lease["tasks"]
    ]
    assert actions.submit(lease["lease_id"], results).status_code == 200
    result = app.test_cli_runner().invoke(args=["events", "status"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("webhook http://127.0.0.1:9/hook: 2 pending, oldest ")


def test_files_a_node_already_held_are_skipped_events_not_downloads(app, actions):
    actions.add_download_tasks("booru", 2)
    lease = actions.lease("download", n=2, site="booru").get_json()
    fresh, held = lease["tasks"]
    results = [
        {"task_id": fresh["id"], "status": "done", "files": [file_record("booru/new.png", 4)]},
        {"task_id": held["id"], "status": "done", "files": [file_record("booru/old.png", 4)], "already_on_node": True},
    ]
    assert actions.submit(lease["lease_id"], results).status_code == 200
    assert [(e["task_id"], e["path"]) for e in outbox(app, "file.downloaded")] == [(fresh["id"], "booru/new.png")]
    [skipped] = outbox(app, "file.skipped")
    assert (skipped["reason"], skipped["task_id"], skipped["path"]) == ("on_node", held["id"], "booru/old.png")


def test_a_full_check_that_misses_a_downloaded_post_is_a_gone_upstream_event(app_factory):
    app = app_factory(EVENTS_WEBHOOKS=HOOK, FULL_CHECK_EVERY=2)
    with app.app_context():
        from server.extensions import db

        check_twice_losing_a_post(app, db.session)
    [gone] = outbox(app, "post.gone_upstream")
    assert (gone["site"], gone["remote_id"], gone["item_key"]) == ("booru", "1", "cats")
    assert gone["check_id"] is not None and "item_id" not in gone


def check_twice_losing_a_post(app, session) -> None:
    """A subscription's first check finds posts 2 and 1, both are downloaded, and its second
    (a full one) finds only 2."""
    from server.database import utcnow
    from tests.test_subscriptions import found, leased, submit

    actions = Actions(app, app.test_client())
    actions.key("node1")
    actions.import_csv("key,query,sites,check_every\ncats,cats,booru,1h\n")
    now = utcnow()

    client, grant = leased(session, now=now)
    submit(session, client, grant, [{"task_id": grant.tasks[0]["id"], "status": "done", "found": found(2, 1)}], now)
    client, grant = leased(session, kind="download", site="booru", now=now)
    files = {t["id"]: [file_record(f"booru/{t['remote_id']}.png", 3)] for t in grant.tasks}
    submit(session, client, grant, [{"task_id": i, "status": "done", "files": f} for i, f in files.items()], now)
    later = now + timedelta(hours=2)
    client, grant = leased(session, now=later)
    assert grant.tasks[0]["check"]["full"] is True  # the second check (FULL_CHECK_EVERY=2)
    submit(session, client, grant, [{"task_id": grant.tasks[0]["id"], "status": "done", "found": found(2)}], later)
