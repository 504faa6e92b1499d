"""Events delivered for real: a demo run through the gunicorn coordinator and real nodes,
then ``flask events run`` to the local RabbitMQ and to webhooks; the broker cut off
mid-run and the sender killed with SIGKILL lose no event."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from sqlalchemy import create_engine, text

from support.processes import REPO_ROOT, VENV_BIN, coordinator_env
from tests.event_taps import AmqpTap, TcpGate, WebhookReceiver
from tests.fleet import Fleet
from tests.helpers import TEST_SITES, Actions, file_record
from tests.test_end_to_end import INVENTORY, run_everything

pytestmark = pytest.mark.e2e
SECRET = "a-webhook-secret-of-some-length"


@pytest.fixture
def tap(rabbitmq_url, exchange):
    tap = AmqpTap(rabbitmq_url, exchange)
    yield tap
    tap.close()


def test_a_demo_run_is_one_event_per_file_and_per_item_on_rabbitmq_and_webhooks(
    demo_site, tmp_path, rabbitmq_url, exchange, tap
):
    hook = WebhookReceiver(SECRET, fail_first=2)
    hooks = [
        {"url": hook.url, "secret": SECRET, "types": ["file.downloaded", "item.synchronized"]},
        {"url": "http://127.0.0.1:9/gone", "secret": SECRET},  # nobody listens: never blocks the others
    ]
    settings = {"EVENTS_AMQP_URL": rabbitmq_url, "EVENTS_AMQP_EXCHANGE": exchange, "EVENTS_WEBHOOKS": hooks}
    fleet = Fleet.start(demo_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}", **settings)
    try:
        fleet.import_csv(INVENTORY)
        run_everything(fleet)
        sent = fleet.flask("events", "run", "--drain", "--give-up-after", "3", timeout=180)
        status = fleet.flask("events", "status", "--json")
    finally:
        fleet.stop()
        hook.close()
    assert sent.returncode == 1 and "gave up on webhook http://127.0.0.1:9/gone" in sent.stderr, sent.stderr
    assert "token=hidden" not in sent.stderr + status.stdout  # a webhook's query may hold a token

    files = fleet.files()
    engine = create_engine(fleet.database_url)
    with engine.connect() as connection:
        found_items = set(connection.execute(text("SELECT key FROM items WHERE state = 'found'")).scalars())
    engine.dispose()
    assert len(files) > 50 and len(found_items) >= 5

    messages = tap.collect()
    assert len({m["id"] for m in messages}) == len(messages)  # a clean run sends each event once
    downloaded = Counter((m["body"]["task_id"], m["body"]["path"]) for m in messages if m["type"] == "file.downloaded")
    assert downloaded == Counter((f["task_id"], f["path"]) for f in files)
    by_file = {(f["task_id"], f["path"]): f for f in files}
    for message in messages:
        if message["type"] == "file.downloaded":
            record = by_file[(message["body"]["task_id"], message["body"]["path"])]
            assert (message["body"]["sha256"], message["body"]["size"]) == (record["sha256"], record["size"])
            assert message["body"]["node"] == "node1" and message["body"]["site"] == record["site"]
    synchronized = Counter(m["body"]["item_key"] for m in messages if m["type"] == "item.synchronized")
    assert synchronized == Counter(found_items)

    assert hook.calls >= len(hook.received) + 2 and hook.bad_signatures == 0
    assert sorted(m["id"] for m in hook.received) == sorted(
        m["id"] for m in messages if m["type"] in ("file.downloaded", "item.synchronized")
    )
    backlog = {entry["name"]: entry for entry in json.loads(status.stdout)}
    assert backlog["amqp"]["pending"] == 0 and backlog["webhook " + hook.url.split("?")[0]]["pending"] == 0
    gone = backlog["webhook http://127.0.0.1:9/gone"]
    assert gone["pending"] == len(messages) and gone["failures"] >= 3 and "ConnectionError" in gone["last_error"]


def produce(actions: Actions, count: int) -> None:
    """``count`` done downloads, one file each: ``count`` file.downloaded events."""
    actions.add_download_tasks("booru", count, start=actions.produced + 1)
    actions.produced += count
    while True:
        lease = actions.lease("download", n=100, site="booru").get_json()
        if not lease["tasks"]:
            return
        results = [
            {"task_id": t["id"], "status": "done", "files": [file_record(f"booru/{t['id']}.png", 9)]}
            for t in lease["tasks"]
        ]
        assert actions.submit(lease["lease_id"], results).status_code == 200


def wait_for_ids(tap: AmqpTap, wanted: set[int], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= {m["id"] for m in tap.collect(idle=0.3, timeout=2)}:
            return
    missing = wanted - {m["id"] for m in tap.messages}
    raise AssertionError(f"{len(missing)} event(s) never arrived, e.g. {sorted(missing)[:10]}")


def event_ids(app) -> set[int]:
    from server.extensions import db
    from server.models import Event

    with app.app_context():
        ids = set(db.session.scalars(db.select(Event.id)))
        db.session.commit()
    return ids


def test_the_broker_cut_off_and_the_sender_killed_lose_no_event(
    app_factory, app_config, tmp_path, rabbitmq_url, exchange, tap
):
    from urllib.parse import urlsplit

    gate = TcpGate(urlsplit(rabbitmq_url).port or 5672)
    through_gate = rabbitmq_url.replace(f":{urlsplit(rabbitmq_url).port or 5672}/", f":{gate.port}/")
    settings = {"EVENTS_AMQP_URL": through_gate, "EVENTS_AMQP_EXCHANGE": exchange}
    app = app_factory(**settings)
    actions = Actions(app, app.test_client())
    actions.produced = 0
    config = tmp_path / "config.py"
    config.write_text("# from the environment\n")
    env = {**os.environ, **coordinator_env(app_config["DATABASE_URL"], TEST_SITES, config, **settings)}
    command = [str(VENV_BIN / "flask"), "--app", "server", "events", "run"]

    log = tmp_path / "sender.log"

    def start_sender() -> subprocess.Popen:
        with log.open("a") as output:
            return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    sender = start_sender()
    try:
        produce(actions, 150)
        wait_for_ids(tap, event_ids(app))

        gate.shut()  # the broker goes away: connections dropped, new ones refused
        produce(actions, 150)
        time.sleep(3)
        status = subprocess.run(
            [*command[:-1], "status"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert "amqp: 150 pending" in status.stdout and "failing" in status.stdout, status.stdout
        gate.open()
        wait_for_ids(tap, event_ids(app))  # delivered once it is back

        produce(actions, 1500)
        deadline = time.monotonic() + 60
        before = len(tap.messages)
        while len(tap.collect(idle=0.05, timeout=0.2)) == before and time.monotonic() < deadline:
            pass
        sender.send_signal(signal.SIGKILL)  # in the middle of the batch
        sender.wait(timeout=30)
        assert len({m["id"] for m in tap.messages}) < len(event_ids(app))  # it did not get to the end
        sender = start_sender()
        wait_for_ids(tap, event_ids(app))
        assert all(count == 1 or count == 2 for count in Counter(m["id"] for m in tap.messages).values())
        sender.send_signal(signal.SIGTERM)
        assert sender.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if sender.poll() is None:
            sender.kill()
        gate.shut()
