"""Files leave the nodes: real nodes (gallery-dl against the demo site) upload into a real
SeaweedFS through the coordinator's leases, and the coordinator serves them back.

What is checked is what the store holds, read back and hashed, not what anyone says.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import requests

from common.file_store import object_key, sidecar_key
from demo.catalog import Catalog
from support.processes import free_port, start_demo_site
from tests.corrupting_proxy import CorruptingProxy
from tests.fleet import Fleet, kill_group

pytestmark = pytest.mark.e2e

CATALOG = Catalog()
ARTIST_1 = "key,query,sites\nartist-1,artist_1,demo\n"  # 30 posts, every one served whole
TWO_ITEMS = ARTIST_1 + "artist-2,artist_2,demo\n"


@pytest.fixture
def site(demo_site):
    requests.post(demo_site.url + "/_counter/reset", timeout=10)
    return demo_site


@pytest.fixture
def fleet(site, tmp_path, seaweedfs, bucket):
    fleet = Fleet.start(site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}", env=seaweedfs.env(bucket))
    yield fleet
    fleet.stop()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_files(dest) -> list:
    return [p for p in dest.rglob("*") if p.is_file() and ".fetchfleet" not in p.relative_to(dest).parts]


def assert_every_file_in_the_store_once(fleet: Fleet, seaweedfs, bucket: str) -> list[dict]:
    """Every recorded file names its object; each object holds exactly those bytes; each
    post's sidecar is beside it; nothing else is in the bucket."""
    client = seaweedfs.client()
    records = fleet.files()
    assert records
    expected = {}
    for record in records:
        key = object_key("", record["sha256"])
        assert record["store_key"] == key, record
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert sha256(body) == record["sha256"] == CATALOG.sha256(CATALOG.post(int(record["remote_id"])))
        sidecar = json.loads(
            client.get_object(Bucket=bucket, Key=sidecar_key(key, "demo", record["remote_id"], record["task_id"]))[
                "Body"
            ].read()
        )
        assert sidecar["fetchfleet"]["sha256"] == record["sha256"]
        assert sidecar["fetchfleet"]["remote_id"] == record["remote_id"]
        expected[key] = record["size"]
        expected[sidecar_key(key, "demo", record["remote_id"], record["task_id"])] = None
    held = seaweedfs.objects(bucket)
    assert set(held) == set(expected)
    assert all(held[key] == size for key, size in expected.items() if size is not None)
    return records


def test_two_nodes_fill_the_store_once_each_file_and_keep_no_local_copy(fleet, seaweedfs, bucket, tmp_path):
    assert fleet.import_csv(TWO_ITEMS)["added"] == 2
    assert fleet.client("metadata", "10").returncode == 0
    no_copy = {"FETCHFLEET_KEEP_LOCAL_COPY": "false"}
    nodes = [
        fleet.start_client("download", "demo", "5", "--drain", "--jobs", "2", node=node, env=no_copy)
        for node in ("node1", "node2")
    ]
    for node in nodes:
        assert node.wait(240) in (0, 1), fleet.newest_client_log()
    downloads = fleet.stats()["tasks"]["download"]
    assert downloads["done"] == downloads["total"] == 60, downloads
    records = assert_every_file_in_the_store_once(fleet, seaweedfs, bucket)
    assert {record["client_id"] for record in records} == {2, 3}  # both nodes did some
    assert not any(record["on_node"] for record in records)
    assert local_files(fleet.dest("node1")) == [] and local_files(fleet.dest("node2")) == []

    # Read back through the coordinator: a redirect to a presigned URL of the store...
    first = records[0]
    headers = {"Authorization": f"Bearer {fleet.admin_key}"}
    answer = requests.get(f"{fleet.coordinator.url}/files/{first['id']}/content", headers=headers, timeout=30)
    assert answer.history and answer.history[0].status_code == 302
    assert answer.history[0].headers["Location"].startswith(seaweedfs.s3_url)
    assert sha256(answer.content) == first["sha256"]
    # ...and flask files fetch, hashed on the way.
    fetched = fleet.flask("files", "fetch", str(first["id"]), str(records[1]["id"]), "--to", str(tmp_path / "out"))
    assert fetched.returncode == 0, fetched.stderr
    for line, record in zip(fetched.stdout.split(), records[:2], strict=True):
        assert sha256(Path(line).read_bytes()) == record["sha256"]

    # The same posts fetched again by a node with an empty --dest upload zero bytes.
    before = seaweedfs.received_bytes(bucket)
    fleet.admin("POST", "/tasks/requeue", json={"state": "done", "kind": "download"})
    third = fleet.client("download", "demo", "100", "--drain", "--jobs", "2", node="node1", env=no_copy)
    assert third.returncode == 0, third.stderr
    assert fleet.stats()["tasks"]["download"]["done"] == 60
    assert seaweedfs.received_bytes(bucket) == before


def test_the_store_down_mid_run_holds_every_task_until_its_files_are_in_it(slow_site, tmp_path, seaweedfs, bucket):
    fleet = Fleet.start(slow_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}", env=seaweedfs.env(bucket))
    node = None
    try:
        fleet.import_csv(ARTIST_1)
        assert fleet.client("metadata", "10").returncode == 0
        node = fleet.start_client("download", "demo", "5", "--loop", "--jobs", "2")
        fleet.wait_for(lambda s: s["tasks"]["download"]["done"] >= 3, timeout=120, what="a few downloads")
        seaweedfs.stop()
        backlog = fleet.dest() / ".fetchfleet" / "uploads.sqlite3"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _waiting(backlog) < 3:
            time.sleep(0.5)
        assert _waiting(backlog) >= 3, fleet.newest_client_log()
        log = fleet.newest_client_log()
        assert log.count("file store unreachable") == 1, log  # said once per outage

        # The node is stopped in the middle; its backlog stays on disk.
        node.send_signal(signal.SIGTERM)  # as systemctl stop would
        assert node.wait(60) == 128 + signal.SIGTERM
        waiting = _waiting(backlog)
        assert waiting >= 3
        assert "0 failed" in fleet.newest_client_log()  # a store outage is no task's fault

        seaweedfs.start()
        # No task was reported done without its objects: every file recorded so far is in the store.
        held = seaweedfs.objects(bucket)
        assert all(record["store_key"] in held for record in fleet.files())
        runs = fleet.drain("download", "demo", "10", "--jobs", "2")
        assert "wait for the file store" in runs[0].stderr  # the earlier run's backlog, named at start
        stats = fleet.stats()["tasks"]["download"]
        assert stats["done"] == stats["total"] == 30, stats
        assert _waiting(backlog) == 0
        assert_every_file_in_the_store_once(fleet, seaweedfs, bucket)
    finally:
        if node is not None and node.poll() is None:
            kill_group(node)
        fleet.stop()
        if not seaweedfs.alive():
            seaweedfs.start()


def _waiting(backlog) -> int:
    if not backlog.exists():
        return 0
    with sqlite3.connect(backlog) as db:
        return db.execute("SELECT count(*) FROM waiting").fetchone()[0]


@pytest.fixture(scope="module")
def slow_site(tmp_path_factory):
    site = start_demo_site(tmp_path_factory.mktemp("slow-site"), latency=0.25)
    yield site
    site.stop()


def test_objects_corrupted_in_flight_are_refused_by_the_store_and_sent_again(fleet, seaweedfs, bucket):
    proxy = CorruptingProxy(seaweedfs.ports["s3"], corrupt=3)
    try:
        fleet.import_csv(ARTIST_1)
        assert fleet.client("metadata", "10").returncode == 0
        run = fleet.client("download", "demo", "30", "--jobs", "2", env={"FETCHFLEET_FILE_STORE_ENDPOINT": proxy.url})
        assert run.returncode == 0, run.stderr
        assert len(proxy.corrupted) == 3
        assert fleet.stats()["tasks"]["download"]["done"] == 30
        assert_every_file_in_the_store_once(fleet, seaweedfs, bucket)
    finally:
        proxy.stop()


def test_upload_existing_moves_a_nodes_archive_into_the_store_once(fleet, seaweedfs, bucket):
    fleet.import_csv(ARTIST_1)
    assert fleet.client("metadata", "10").returncode == 0
    without_store = {"FETCHFLEET_FILE_STORE": ""}
    assert fleet.client("download", "demo", "30", "--jobs", "2", env=without_store).returncode == 0
    assert not any(record["store_key"] for record in fleet.files())
    assert seaweedfs.objects(bucket) == {}

    first = fleet.client("store", "upload-existing", "--dest", str(fleet.dest()))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("upload-existing: 30 file(s): 30 uploaded"), first.stdout
    assert "the coordinator recorded 30" in first.stdout
    records = assert_every_file_in_the_store_once(fleet, seaweedfs, bucket)
    assert all(record["on_node"] for record in records) and len(local_files(fleet.dest())) == 60

    received = seaweedfs.received_bytes(bucket)
    second = fleet.client("store", "upload-existing", "--dest", str(fleet.dest()))
    assert second.returncode == 0, second.stderr
    assert "0 uploaded" in second.stdout and "30 done by an earlier run" in second.stdout, second.stdout
    assert seaweedfs.received_bytes(bucket) == received


@pytest.mark.parametrize("problem", ["unreachable", "no bucket", "credentials"])
def test_a_store_that_cannot_be_used_stops_the_node_before_any_lease(fleet, seaweedfs, problem):
    fleet.import_csv(ARTIST_1)
    assert fleet.client("metadata", "10").returncode == 0
    env = {
        "unreachable": {"FETCHFLEET_FILE_STORE_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
        "no bucket": {"FETCHFLEET_FILE_STORE": "s3://no-such-bucket"},
        "credentials": {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
    }[problem]
    run = fleet.client("download", "demo", "10", env=env)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem.split()[-1] in lines[0], run.stderr
    assert "not-the-secret" not in run.stderr
    stats = fleet.stats()
    assert stats["leases"]["active"] == 0 and stats["tasks"]["download"]["queued"] == 30
