"""Shared fixtures: every database test runs on SQLite and on a fresh PostgreSQL database.

PostgreSQL comes from TEST_DATABASE_URL (default: the local server). When it cannot be
reached the PostgreSQL half is skipped with the reason, unless REQUIRE_POSTGRES=1
(as in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine

from tests.helpers import TEST_SITES, Actions

DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TABLES = (
    "files",
    "tasks",
    "leases",
    "site_states",
    "items",
    "item_imports",
    "api_keys",
    "item_posts",
    "known_files",
    "checks",
    "events",
    "event_deliveries",
    "event_destinations",
    "task_counts",
    "node_counts",
    "minute_counts",
    "counters",
)
#: The local RabbitMQ of the event tests (TEST_AMQP_URL overrides it).
DEFAULT_TEST_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory) -> Iterator[None]:
    """No developer config.py or FETCHFLEET_* variable leaks into the tests."""
    saved = {name: value for name, value in os.environ.items() if name.startswith("FETCHFLEET_")}
    for name in saved:
        del os.environ[name]
    empty = tmp_path_factory.mktemp("config") / "empty_config.py"
    empty.write_text("# tests: defaults only\n")
    os.environ["FETCHFLEET_CONFIG"] = str(empty)
    yield
    del os.environ["FETCHFLEET_CONFIG"]
    os.environ.update(saved)


def _postgres_server_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


def _admin_engine() -> Engine:
    """An engine on the test server's own database, for creating and dropping others."""
    return create_engine(make_url(_postgres_server_url()), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A brand-new PostgreSQL database for this test run, dropped at the end."""
    admin = _admin_engine()
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        reason = (
            f"PostgreSQL not reachable at {admin.url.render_as_string(hide_password=True)}: {exc.__class__.__name__}"
        )
        admin.dispose()
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    try:
        with _new_database(admin, "fetchfleet_test") as url:
            yield url
    finally:
        admin.dispose()


@contextlib.contextmanager
def _new_database(admin: Engine, prefix: str) -> Iterator[str]:
    """A database made on ``admin``'s server for the ``with`` block, dropped after it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory) -> str:
    """A migrated database of each backend, created once per run."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'fetchfleet.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    from server import create_app
    from server.cli import init_db

    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        init_db()
        from server.extensions import db

        db.engine.dispose()
    return url


@pytest.fixture
def empty_postgres_url(postgres_url) -> Iterator[str]:
    """Another PostgreSQL database of the test's own, with no tables (dropped after it)."""
    admin = _admin_engine()
    try:
        with _new_database(admin, "fetchfleet_empty") as url:
            yield url
    finally:
        admin.dispose()


def make_config(database_url: str, **overrides) -> dict:
    config = {"DATABASE_URL": database_url, "SITES": TEST_SITES}
    config.update(overrides)
    return config


def empty_database(app) -> None:
    from server.extensions import db

    with app.app_context():
        with db.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
            else:
                for table in TABLES:
                    connection.execute(text(f"DELETE FROM {table}"))
        db.session.remove()


@pytest.fixture
def app_config(database_url) -> dict:
    """Override settings for one test by mutating this dict before asking for ``app``."""
    return make_config(database_url)


def close_app(app) -> None:
    from server.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app_factory(app_config):
    """Build extra apps with other settings over the same (emptied) database; closed after the test."""
    from server import create_app

    made = []

    def make(**overrides):
        app = create_app({**app_config, **overrides})
        if not made:
            empty_database(app)
        made.append(app)
        return app

    yield make
    try:
        if made:
            assert_counts_kept(made[0])
    finally:
        for app in made:
            close_app(app)


def assert_counts_kept(app) -> None:
    """After every test: the counts /stats reads equal a recount of the tables (whatever
    the test did through the domain functions and the API)."""
    from server.counts import differences
    from server.extensions import db

    with app.app_context():
        found = differences(db.session)
        db.session.rollback()
    assert not found, "kept counts differ from a recount:\n" + "\n".join(found)


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def ctx(app):
    """An app context, for calling domain functions directly."""
    with app.app_context():
        yield app


@pytest.fixture
def session(ctx):
    from server.extensions import db

    return db.session


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def actions(app, client) -> Actions:
    return Actions(app, client)


@pytest.fixture
def backend(database_url) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory):
    """The demo site as its own process, one per test module (tests reset its counter)."""
    from support.processes import start_demo_site

    site = start_demo_site(tmp_path_factory.mktemp("site"))
    yield site
    site.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A real SeaweedFS serving S3 on loopback, one per test run. Skipped, saying why, when
    it cannot start here, unless REQUIRE_S3=1 (as in CI), which makes that a failure."""
    from support.seaweedfs import SeaweedFS, seaweedfs_problem

    problem = seaweedfs_problem()
    store = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    if problem is None:
        try:
            store.start()
        except RuntimeError as error:
            problem = f"SeaweedFS did not start: {str(error)[:500]}"
    if problem is not None:
        if os.environ.get("REQUIRE_S3") == "1":
            pytest.fail(f"REQUIRE_S3=1 but {problem}")
        pytest.skip(problem)
    yield store
    store.stop()


@pytest.fixture
def bucket(seaweedfs) -> str:
    """A new, empty bucket of the test's own."""
    if not seaweedfs.alive():  # a test that stopped the store (and failed before restarting it)
        seaweedfs.start()
    return seaweedfs.create_bucket(f"t-{uuid.uuid4().hex[:16]}")


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """A real RabbitMQ on loopback. Skipped, saying why, when it cannot be reached, unless
    REQUIRE_RABBITMQ=1 (as in CI), which makes that a failure."""
    import pika

    url = os.environ.get("TEST_AMQP_URL", DEFAULT_TEST_AMQP_URL)
    try:
        parameters = pika.URLParameters(url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = 5
        pika.BlockingConnection(parameters).close()
    except Exception as problem:
        reason = f"RabbitMQ not reachable at {parameters.host}:{parameters.port}: {problem.__class__.__name__}"
        if os.environ.get("REQUIRE_RABBITMQ") == "1":
            pytest.fail(f"REQUIRE_RABBITMQ=1 but {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture
def exchange() -> str:
    """A topic exchange of the test's own."""
    return f"fetchfleet-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ffmpeg() -> str:
    """ffmpeg's path: tests of streamed video are skipped, saying why, without it, unless
    REQUIRE_FFMPEG=1 (as in CI), which makes that a failure."""
    import shutil

    found = shutil.which("ffmpeg")
    if found is None or shutil.which("ffprobe") is None:
        reason = "ffmpeg/ffprobe is not installed (make tools installs Debian's ffmpeg)"
        if os.environ.get("REQUIRE_FFMPEG") == "1":
            pytest.fail(f"REQUIRE_FFMPEG=1 but {reason}")
        pytest.skip(reason)
    return found
