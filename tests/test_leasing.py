"""Leasing domain logic, called without HTTP, the clock passed in. Runs on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from common.states import ItemState, TaskState
from server import context
from server.auth import create_key
from server.database import utcnow
from server.errors import Conflict, InvalidInput, NotFound
from server.leasing import extend_lease, lease_tasks, reclaim_expired, release_lease, submit_results
from server.models import ApiKey, File, Item, Lease, Role, SiteState
from tests.helpers import file_record

#: The test clock: a day ahead, so every task created "now" by a helper is already available.
T0 = (utcnow() + timedelta(days=1)).replace(microsecond=0)


@pytest.fixture
def node(session):
    create_key(session, "node1", Role.CLIENT)
    return session.scalar(select(ApiKey).where(ApiKey.name == "node1"))


@pytest.fixture
def other(session):
    create_key(session, "node2", Role.CLIENT)
    return session.scalar(select(ApiKey).where(ApiKey.name == "node2"))


def lease(session, client, kind="download", n=10, site="booru", now=T0, **extra):
    return lease_tasks(
        session,
        client=client,
        kind=kind,
        n=n,
        site=site,
        sites=context.sites(),
        policy=context.policy(),
        now=now,
        **extra,
    )


def submit(session, client, grant_or_id, results, now=T0):
    lease_id = grant_or_id if isinstance(grant_or_id, str) else grant_or_id.lease.id
    return submit_results(
        session,
        lease_id=lease_id,
        client=client,
        results=results,
        sites=context.sites(),
        policy=context.policy(),
        now=now,
    )


def done(task_id, path=None):
    return {"task_id": task_id, "status": "done", "files": [file_record(path or f"booru/{task_id}.png")]}


def failed(task_id, error_class, **extra):
    return {"task_id": task_id, "status": "failed", "error_class": error_class, "error": "boom", **extra}


def ids(grant):
    return [task["id"] for task in grant.tasks]


def test_lease_orders_by_priority_then_age_and_respects_n(session, node, actions):
    low = actions.add_download_tasks("booru", 3, start=1, priority=0)
    high = actions.add_download_tasks("booru", 2, start=10, priority=5)
    grant = lease(session, node, n=4)
    assert ids(grant) == high + low[:2]
    assert grant.lease.expires_at == T0 + timedelta(seconds=3600)
    assert len(grant.lease.id) >= 40  # 256 random bits, url-safe


def test_a_task_is_never_in_two_live_leases(session, node, other, actions):
    actions.add_download_tasks("booru", 5)
    first = lease(session, node, n=3)
    second = lease(session, other, n=10)
    assert set(ids(first)).isdisjoint(ids(second))
    assert len(ids(first)) + len(ids(second)) == 5
    assert lease(session, other, n=10).lease is None


def test_empty_queue_gives_no_lease_and_a_retry_hint(session, node):
    grant = lease(session, node)
    assert grant.lease is None and grant.tasks == []
    assert grant.retry_after == context.policy().empty_queue_retry_after
    assert session.scalar(select(Lease.id)) is None  # no empty lease rows left behind


def test_lease_skips_tasks_in_backoff(session, node, actions):
    [task_id] = actions.add_download_tasks("booru", 1)
    grant = lease(session, node)
    submit(session, node, grant, [failed(task_id, "transient")])
    assert lease(session, node, now=T0 + timedelta(seconds=59)).lease is None
    assert ids(lease(session, node, now=T0 + timedelta(seconds=61))) == [task_id]


def test_bad_arguments_are_refused(session, node):
    for n in (0, 101, -1, "3", 2.0, True):
        with pytest.raises(InvalidInput):
            lease(session, node, n=n)
    with pytest.raises(InvalidInput, match="per site"):
        lease(session, node, site=None)
    with pytest.raises(InvalidInput, match="unknown site"):
        lease(session, node, site="nope")
    with pytest.raises(InvalidInput, match="kind"):
        lease(session, node, kind="upload")


def test_expired_lease_is_reclaimed_by_the_next_lease_request(session, node, other, actions):
    task_ids = actions.add_download_tasks("booru", 2)
    first = lease(session, node, n=2, lease_seconds=60)
    assert lease(session, other, now=T0 + timedelta(seconds=59)).lease is None
    second = lease(session, other, now=T0 + timedelta(seconds=60))
    assert ids(second) == task_ids
    session.expire_all()
    assert session.get(Lease, first.lease.id).state == "expired"
    task = actions.task(task_ids[0])
    assert task.attempts == 1 and task.lease_id == second.lease.id
    assert "lease expired" in task.last_error


def test_late_result_for_reassigned_tasks_is_refused_others_accepted(session, node, other, actions):
    a, b = actions.add_download_tasks("booru", 2)
    first = lease(session, node, n=1, lease_seconds=60)  # holds a
    later = T0 + timedelta(seconds=61)
    second = lease(session, other, n=1, now=later)  # a is reclaimed and handed on
    assert ids(second) == [a]
    third = lease(session, node, n=1, now=later)  # node now also holds b
    outcome = submit(session, node, first, [done(a)], now=later)
    assert outcome.conflicts == [a] and outcome.accepted == []
    assert actions.task(a).state == TaskState.LEASED and actions.task(a).lease_id == second.lease.id
    # A mixed batch on one lease: refused for what it does not hold, recorded for the rest.
    mixed = submit(session, node, third, [done(b), done(a)], now=later)
    assert mixed.accepted == [b] and mixed.conflicts == [a]
    assert actions.task(b).state == TaskState.DONE
    assert session.scalars(select(File.task_id)).all() == [b]  # no file record for the refused task


def test_late_result_is_accepted_when_nobody_took_the_tasks(session, node, actions):
    [task_id] = actions.add_download_tasks("booru", 1)
    grant = lease(session, node, lease_seconds=60)
    outcome = submit(session, node, grant, [done(task_id)], now=T0 + timedelta(hours=2))
    assert outcome.accepted == [task_id]


def test_resubmitting_the_same_results_changes_nothing(session, node, actions):
    a, b = actions.add_download_tasks("booru", 2)
    grant = lease(session, node)
    first = submit(session, node, grant, [done(a), failed(b, "transient")])
    before = actions.task(b)
    again = submit(session, node, grant, [done(a), failed(b, "transient")], now=T0 + timedelta(seconds=5))
    assert first.accepted == [a, b]
    assert again.accepted == [] and again.unchanged == [a, b] and again.conflicts == []
    after = actions.task(b)
    assert (after.attempts, after.available_at) == (before.attempts, before.available_at)
    assert actions.count_tasks(state="done") == 1


def test_extend_pushes_expiry_and_keeps_tasks(session, node, other, actions):
    actions.add_download_tasks("booru", 1)
    grant = lease(session, node, lease_seconds=60)
    extended = extend_lease(
        session,
        lease_id=grant.lease.id,
        client=node,
        seconds=600,
        policy=context.policy(),
        now=T0 + timedelta(seconds=50),
    )
    assert extended.expires_at == T0 + timedelta(seconds=650)
    assert lease(session, other, now=T0 + timedelta(seconds=300)).lease is None


def test_extend_after_reclaim_is_a_conflict_and_unknown_lease_not_found(session, node, other, actions):
    actions.add_download_tasks("booru", 1)
    grant = lease(session, node, lease_seconds=60)
    reclaim_expired(session, policy=context.policy(), now=T0 + timedelta(seconds=61))
    session.commit()
    with pytest.raises(Conflict, match="expired"):
        extend_lease(session, lease_id=grant.lease.id, client=node, policy=context.policy())
    with pytest.raises(NotFound):
        extend_lease(session, lease_id="nope", client=node, policy=context.policy())
    with pytest.raises(NotFound):  # someone else's lease id is as good as unknown
        extend_lease(session, lease_id=grant.lease.id, client=other, policy=context.policy())


def test_extend_is_capped_by_max_lease_seconds(session, node, actions):
    actions.add_download_tasks("booru", 1)
    grant = lease(session, node, lease_seconds=10**9)
    assert grant.lease.expires_at == T0 + timedelta(seconds=context.policy().max_lease_seconds)


def test_release_hands_back_without_charging_an_attempt(session, node, other, actions):
    a, b, c = actions.add_download_tasks("booru", 3)
    grant = lease(session, node, n=3)
    assert release_lease(session, lease_id=grant.lease.id, client=node, task_ids=[b], now=T0) == [b]
    assert ids(lease(session, other, n=3)) == [b]
    assert actions.task(b).attempts == 0
    assert release_lease(session, lease_id=grant.lease.id, client=node, now=T0) == [a, c]
    session.expire_all()
    assert session.get(Lease, grant.lease.id).state == "released"


def test_transient_failures_back_off_exponentially_then_die(session, node, actions, app):
    [task_id] = actions.add_download_tasks("booru", 1)
    policy = context.policy()
    now = T0
    for attempt in range(1, policy.max_attempts["download"]):
        grant = lease(session, node, now=now)
        assert ids(grant) == [task_id]
        submit(session, node, grant, [failed(task_id, "transient")], now=now)
        task = actions.task(task_id)
        expected = min(policy.retry_backoff * 2 ** (attempt - 1), policy.retry_backoff_max)
        assert (task.state, task.attempts) == (TaskState.QUEUED, attempt)
        assert task.available_at == now + timedelta(seconds=expected)
        now = task.available_at
    grant = lease(session, node, now=now)
    submit(session, node, grant, [failed(task_id, "transient")], now=now)
    task = actions.task(task_id)
    assert task.state == TaskState.DEAD and task.attempts == policy.max_attempts["download"]


def test_permanent_failure_is_dead_at_once(session, node, actions):
    [task_id] = actions.add_download_tasks("booru", 1)
    submit(session, node, lease(session, node), [failed(task_id, "permanent", error="HTTP 404")])
    task = actions.task(task_id)
    assert (task.state, task.attempts, task.error_class) == (TaskState.DEAD, 1, "permanent")
    assert task.last_error == "HTTP 404"


def test_rate_limit_cools_the_site_down_for_everyone(session, node, other, actions):
    booru = actions.add_download_tasks("booru", 3)
    tube = actions.add_download_tasks("tube", 1)
    grant = lease(session, node, n=1)
    submit(session, node, grant, [failed(booru[0], "rate_limited", retry_after=120)])
    task = actions.task(booru[0])
    assert task.state == TaskState.QUEUED and task.attempts == 0  # not the task's fault
    cooling = lease(session, other, n=5, now=T0 + timedelta(seconds=30))
    assert cooling.lease is None and cooling.retry_after == 90
    assert ids(lease(session, other, n=5, site="tube", now=T0 + timedelta(seconds=30))) == tube
    resumed = lease(session, other, n=5, now=T0 + timedelta(seconds=121))
    assert sorted(ids(resumed)) == booru


def test_shorter_retry_after_never_shortens_a_cooldown(session, node, actions):
    a, b = actions.add_download_tasks("booru", 2)
    grant = lease(session, node, n=2)
    submit(session, node, grant, [failed(a, "rate_limited", retry_after=600), failed(b, "rate_limited", retry_after=5)])
    assert session.get(SiteState, "booru").cooldown_until == T0 + timedelta(seconds=600)


def test_metadata_lease_skips_cooling_sites(session, node, actions):
    actions.import_csv("query\ncats\n")  # one task per searchable site: booru and tube
    grant = lease(session, node, kind="metadata", site=None, n=1)
    first_site = grant.tasks[0]["site"]
    submit(session, node, grant, [failed(grant.tasks[0]["id"], "rate_limited", retry_after=60)])
    follow = lease(session, node, kind="metadata", site=None, n=5)
    assert [task["site"] for task in follow.tasks] == [s for s in ("booru", "tube") if s != first_site]


def test_max_in_flight_limits_leased_downloads_per_site(session, node, other, actions):
    actions.add_download_tasks("slow", 5)
    assert len(ids(lease(session, node, site="slow", n=10))) == 3
    grant = lease(session, other, site="slow", n=10)
    assert grant.lease is None and grant.retry_after


def test_metadata_found_things_become_deduplicated_download_tasks(session, node, actions):
    actions.import_csv("query,priority\ncats,7\nkittens,3\n")
    grant = lease(session, node, kind="metadata", site="booru", n=10)
    cats, kittens = grant.tasks
    assert cats["item"]["query"] == "cats" and cats["url"] == "http://booru.test/post?tags=cats"
    found_cats = [{"site": "booru", "remote_id": n, "metadata": {"id": n, "md5": f"m{n}"}} for n in (1, 2, 3)]
    found_kittens = [
        {"site": "booru", "remote_id": "3", "metadata": {"id": 3}},
        {"site": "booru", "remote_id": 4, "metadata": {"id": 4}},
    ]
    outcome = submit(
        session,
        node,
        grant,
        [
            {"task_id": cats["id"], "status": "done", "found": found_cats},
            {"task_id": kittens["id"], "status": "done", "found": found_kittens},
        ],
    )
    assert outcome.download_tasks_created == 4
    downloads = lease(session, node, site="booru", n=10)
    by_remote = {task["remote_id"]: task for task in downloads.tasks}
    assert sorted(by_remote) == ["1", "2", "3", "4"]
    assert by_remote["1"]["url"] == "http://booru.test/post/show/1"  # from the site's post_url
    assert by_remote["1"]["payload"] == {"id": 1, "md5": "m1"}
    assert by_remote["1"]["priority"] == 7 and by_remote["4"]["priority"] == 3
    states = dict(session.execute(select(Item.key, Item.state)).all())
    # Found on one site is found, even while the other site (tube) is still queued.
    assert states == {"query:cats": ItemState.FOUND, "query:kittens": ItemState.FOUND}


def test_nothing_found_backs_off_then_not_found(session, node, actions):
    actions.import_csv("url\nhttp://booru.test/post/show/9\n")
    policy = context.policy()
    now = T0
    for attempt in range(1, policy.max_attempts["metadata"] + 1):
        grant = lease(session, node, kind="metadata", site=None, n=1, now=now)
        assert len(grant.tasks) == 1, attempt
        submit(session, node, grant, [{"task_id": grant.tasks[0]["id"], "status": "done", "found": []}], now=now)
        task = actions.task(grant.tasks[0]["id"])
        if attempt < policy.max_attempts["metadata"]:
            assert task.available_at == now + policy.not_found_delay(attempt)
            now = task.available_at
    assert task.state == TaskState.NOT_FOUND
    assert session.scalar(select(Item.state)) == ItemState.NOT_FOUND


def test_item_is_found_when_any_site_finds_it_and_failed_when_all_die(session, node, actions):
    actions.import_csv("key,query\na,cats\nb,dogs\n")
    grant = lease(session, node, kind="metadata", site=None, n=10)
    by_item_site = {(t["item"]["key"], t["site"]): t["id"] for t in grant.tasks}
    submit(
        session,
        node,
        grant,
        [
            {
                "task_id": by_item_site[("a", "booru")],
                "status": "done",
                "found": [{"site": "booru", "remote_id": 1, "metadata": {"id": 1}}],
            },
            failed(by_item_site[("a", "tube")], "permanent"),
            failed(by_item_site[("b", "booru")], "permanent"),
            failed(by_item_site[("b", "tube")], "permanent"),
        ],
    )
    states = dict(session.execute(select(Item.key, Item.state)).all())
    assert states == {"a": ItemState.FOUND, "b": ItemState.FAILED}


def test_invalid_results_change_nothing(session, node, actions):
    a, b = actions.add_download_tasks("booru", 2)
    grant = lease(session, node, n=2)
    with pytest.raises(InvalidInput, match="at least one file"):
        submit(session, node, grant, [done(a), {"task_id": b, "status": "done", "files": []}])
    # The kind-dependent checks run inside the write transaction: it is gone, not left holding the lock.
    assert not session().in_transaction()
    with pytest.raises(InvalidInput, match="twice"):
        submit(session, node, grant, [done(a), done(a)])
    assert actions.task(a).state == TaskState.LEASED and actions.task(b).state == TaskState.LEASED


def test_submit_to_an_unknown_or_someone_elses_lease_is_not_found(session, node, other, actions):
    [task_id] = actions.add_download_tasks("booru", 1)
    grant = lease(session, node, n=1)
    for client, lease_id in ((node, "nope"), (other, grant.lease.id)):
        with pytest.raises(NotFound, match="no lease"):
            submit(session, client, lease_id, [done(task_id)])
        assert not session().in_transaction()
    assert actions.task(task_id).state == TaskState.LEASED
    assert submit(session, node, grant, [done(task_id)]).accepted == [task_id]


def test_unknown_found_site_is_refused(session, node, actions):
    actions.import_csv("url\nhttp://booru.test/post/show/9\n")
    grant = lease(session, node, kind="metadata", site=None)
    bad = {"task_id": grant.tasks[0]["id"], "status": "done", "found": [{"site": "nowhere", "remote_id": 1}]}
    with pytest.raises(InvalidInput, match="unknown site"):
        submit(session, node, grant, [bad])
    assert actions.task(grant.tasks[0]["id"]).state == TaskState.LEASED


def test_completed_lease_is_marked_and_files_recorded(session, node, actions):
    [task_id] = actions.add_download_tasks("booru", 1)
    grant = lease(session, node)
    submit(session, node, grant, [done(task_id)])
    session.expire_all()
    assert session.get(Lease, grant.lease.id).state == "completed"
    [record] = session.scalars(select(File)).all()
    assert (record.task_id, record.client_id, record.path, record.size) == (task_id, node.id, "booru/1.png", 10)
    assert record.created_at == T0
    assert actions.task(task_id).done_by == node.id


def test_heartbeat_extends_by_the_lease_s_own_length(session, node, actions):
    actions.add_download_tasks("booru", 1)
    grant = lease(session, node, lease_seconds=40)
    extended = extend_lease(
        session, lease_id=grant.lease.id, client=node, policy=context.policy(), now=T0 + timedelta(seconds=30)
    )
    assert extended.seconds == 40 and extended.expires_at == T0 + timedelta(seconds=70)


def test_a_batch_insert_says_how_many_rows_went_in(session):
    """What a submit counts rests on it (a wrong answer sends every submit down the slow
    path that reads its file records back): rows that conflict are skipped, not counted."""
    from server.database import insert_rows, prepare_rows
    from server.models import ItemPost

    links = [{"item_id": 7, "task_id": task_id, "found_at": T0} for task_id in (1, 2, 3)]
    assert insert_rows(session, prepare_rows(session, ItemPost.__table__, links)) == 3
    again = [*links[1:], {"item_id": 7, "task_id": 4, "found_at": T0}]
    assert insert_rows(session, prepare_rows(session, ItemPost.__table__, again)) == 1
    session.rollback()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_statement_run_on_an_empty_table_is_planned_again_when_the_table_has_grown(session):
    """A coordinator starts on empty tables; the plan of a statement it runs on every
    submit must not stay the one made then (a whole-table scan of ``files``), even when
    nothing ever runs ``ANALYZE``."""
    from server.counts import HELD_POSTGRESQL, new_content

    hashes = [f"{n:064x}" for n in range(10)]
    for _ in range(8):  # psycopg prepares it; PostgreSQL may then keep a generic plan
        assert new_content(session, hashes) == set(hashes)
    session.execute(
        text(
            "INSERT INTO files (task_id, client_id, path, size, sha256, created_at) "
            "SELECT n, 1, 'f' || n, 1, lpad(to_hex(n), 64, '0'), now() FROM generate_series(100, 40099) AS n"
        )
    )
    assert new_content(session, hashes) == set(hashes)
    held = str(HELD_POSTGRESQL).replace(":hashes", "$1")
    name = session.execute(
        text("SELECT name FROM pg_prepared_statements WHERE statement = :sql"), {"sql": held}
    ).scalar_one()
    listed = ", ".join(f"'{h}'" for h in hashes)  # EXPLAIN takes no parameters; hex digits only
    plan = "\n".join(session.execute(text(f"EXPLAIN EXECUTE {name}(ARRAY[{listed}])")).scalars())
    assert "Seq Scan on files" not in plan and "ix_files_sha256" in plan, plan
    session.rollback()
