"""SQLite plumbing: writers queue on a file lock (held from BEGIN IMMEDIATE to commit or
rollback) instead of sleeping in SQLite's busy handler. Real files, real processes."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import create_engine, text

from common.settings import REPO_ROOT
from server.database import WriterQueuedConnection, engine_options, install_sqlite_behaviour


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'queue.sqlite3'}"


@pytest.fixture
def engine(sqlite_url):
    engine = create_engine(sqlite_url, **engine_options(sqlite_url))
    install_sqlite_behaviour(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
    yield engine
    engine.dispose()


def lock_path(url: str) -> str:
    return WriterQueuedConnection.lock_path_for(url.removeprefix("sqlite:///"))


def lock_is_free(url: str) -> bool:
    """Try the writer lock from an open file of our own (flock locks per open file)."""
    fd = os.open(lock_path(url), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases it if we got it
    return True


def test_a_write_transaction_holds_the_lock_until_commit_or_rollback(engine, sqlite_url):
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (1)"))
        assert not lock_is_free(sqlite_url)
    assert lock_is_free(sqlite_url)

    with pytest.raises(ZeroDivisionError), engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (2)"))
        assert not lock_is_free(sqlite_url)
        raise ZeroDivisionError
    assert lock_is_free(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM t")).scalars().all() == [1]


def test_readers_do_not_take_the_lock(engine, sqlite_url):
    with engine.connect().execution_options(sqlite_begin="DEFERRED") as connection, connection.begin():
        connection.execute(text("SELECT count(*) FROM t"))
        assert lock_is_free(sqlite_url)


def test_a_waiting_writer_goes_on_as_soon_as_the_holder_commits(engine):
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def holder():
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            release.wait(10)
            order.append("holder commits")

    def waiter():
        holding.wait(10)
        with engine.begin() as connection:
            order.append("waiter writes")
            connection.execute(text("INSERT INTO t VALUES (2)"))

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for thread in threads:
        thread.start()
    holding.wait(10)
    time.sleep(0.3)
    assert order == []  # the waiter is queued, not writing
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == ["holder commits", "waiter writes"]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2]


def test_a_second_writer_in_the_same_thread_fails_instead_of_waiting_forever(engine):
    with engine.begin() as first:
        first.execute(text("INSERT INTO t VALUES (1)"))
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="this thread's other connection"), engine.begin():
            pass
        assert time.monotonic() - started < 5


def test_the_lock_of_a_killed_writer_is_released(engine, sqlite_url):
    script = (
        "import sys, time\n"
        "from sqlalchemy import create_engine, text\n"
        "from server.database import engine_options, install_sqlite_behaviour\n"
        "url = sys.argv[1]\n"
        "engine = create_engine(url, **engine_options(url))\n"
        "install_sqlite_behaviour(engine)\n"
        "with engine.begin() as connection:\n"
        "    connection.execute(text('INSERT INTO t VALUES (9)'))\n"
        "    print('holding', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, sqlite_url], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert not lock_is_free(sqlite_url)
        holder.kill()
        holder.wait(10)
        with engine.begin() as connection:  # neither the file lock nor SQLite's stays behind
            connection.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM t")).scalars().all() == [1]


def test_in_memory_databases_need_no_lock_file():
    engine = create_engine("sqlite://", **engine_options("sqlite://"))
    install_sqlite_behaviour(engine)
    with engine.begin() as connection:
        assert not isinstance(connection.connection.driver_connection, WriterQueuedConnection)
        assert connection.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_update_rows_sets_every_column_of_the_matching_rows(session):
    """``update_rows`` on both backends: JSON (lists, objects, none), timestamps and text
    land on the rows named by id, in one call; other rows are left alone."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from server import counts
    from server.database import insert_rows, prepare_rows, update_rows
    from server.models import Item

    items = Item.__table__
    then, now = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 5, 13, 0, 0, 123456, tzinfo=UTC)

    def item(n: int, **values) -> dict:
        row = {"id": n, "key": f"k{n}", "title": f"t{n}", "sites": ["a"], "priority": 0, "extra": {"x": "1"}}
        return row | {"content_hash": "h", "state": "pending", "created_at": then, "updated_at": then} | values

    insert_rows(session, prepare_rows(session, items, [item(1), item(2), item(3)]))
    changes = [
        {"id": 1, "title": "one", "sites": None, "extra": {}, "priority": 5, "updated_at": now},
        {"id": 3, "title": "three", "sites": ["b", "c"], "extra": {"y": "2"}, "priority": -1, "updated_at": now},
    ]
    update_rows(session, prepare_rows(session, items, changes), by="id")
    session.commit()
    stored = {row.id: row for row in session.execute(select(items).order_by(items.c.id))}
    assert (stored[1].title, stored[1].sites, stored[1].extra, stored[1].priority) == ("one", None, {}, 5)
    assert (stored[3].title, stored[3].sites, stored[3].extra, stored[3].priority) == (
        "three",
        ["b", "c"],
        {"y": "2"},
        -1,
    )
    assert stored[1].updated_at == stored[3].updated_at == now
    assert (stored[2].title, stored[2].sites, stored[2].updated_at) == ("t2", ["a"], then)  # not named: unchanged
    assert stored[1].key == "k1" and stored[1].created_at == then  # columns not given: unchanged
    counts.rebuild(session, now)  # rows written straight into the table
