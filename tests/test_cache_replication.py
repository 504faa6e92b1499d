"""The cache across nodes, end to end: each node has its own CouchDB, replicating through
a central one; the demo site's request counter proves which node touched the site."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from support.couch import start_couchdb
from support.processes import start_demo_site
from tests.fleet import Fleet

#: Real processes (servers, nodes): ``make test-fast`` leaves these out.
pytestmark = pytest.mark.e2e

TWO_ITEMS_ONE_SEARCH = "key,query,sites\nfrom-list-a,artist_1,demo\nfrom-list-b,artist_1,demo\n"
DATABASE = "fetchfleet_cache"


@pytest.fixture
def site(tmp_path):
    server = start_demo_site(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def fleet(site, tmp_path):
    fleet = Fleet.start(site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    yield fleet
    fleet.stop()


@pytest.fixture
def couches(tmp_path):
    servers = {name: start_couchdb(tmp_path / f"couch-{name}") for name in ("a", "b", "central")}
    yield servers
    for server in servers.values():
        server.stop()


def wait_for_doc(couch_url: str, doc_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    quoted = requests.utils.quote(doc_id, safe="")
    while time.monotonic() < deadline:
        response = requests.get(f"{couch_url}/{DATABASE}/{quoted}", timeout=5)
        if response.status_code == 200:
            return response.json()
        time.sleep(0.2)
    raise AssertionError(f"{doc_id} never reached {couch_url}")


def search_requests(fleet: Fleet) -> int:
    return sum(count for path, count in fleet.site_counter()["paths"].items() if path.startswith("/post.json"))


def test_node_b_reuses_what_node_a_resolved_without_asking_the_site(fleet, couches):
    env_a = {"FETCHFLEET_COUCHDB_URL": couches["a"].url}
    env_b = {"FETCHFLEET_COUCHDB_URL": couches["b"].url}
    for node, couch, env in (("node1", couches["a"], env_a), ("node2", couches["b"], env_b)):
        revisions = []
        for _ in range(2):  # idempotent: the second run changes nothing
            setup = fleet.client("cache", "replicate", couches["central"].url, node=node, env=env)
            assert setup.returncode == 0, setup.stderr
            rows = requests.get(f"{couch.url}/_replicator/_all_docs", timeout=5).json()["rows"]
            revisions.append({row["id"]: row["value"]["rev"] for row in rows if row["id"].startswith("fetchfleet")})
        assert revisions[0] == revisions[1]
        assert sorted(revisions[0]) == [f"fetchfleet-pull-{DATABASE}", f"fetchfleet-push-{DATABASE}"]
        assert setup.stdout.count("replication") == 2 and "push" in setup.stdout and "pull" in setup.stdout

    fleet.import_csv(TWO_ITEMS_ONE_SEARCH)
    first = fleet.client("metadata", "1", node="node1", env=env_a)
    assert first.returncode == 0 and "30 things found" in first.stdout, first.stdout + first.stderr
    asked = search_requests(fleet)
    assert asked >= 1
    url = f"{fleet.site.url}/post?tags=artist_1"
    wait_for_doc(couches["b"].url, f"resolution:demo:{url}")  # a -> central -> b
    second = fleet.client("metadata", "1", node="node2", env=env_b)
    assert second.returncode == 0 and "30 things found, 1 from the cache" in second.stdout, second.stdout
    assert search_requests(fleet) == asked  # node B made no request to the site at all
    stats = fleet.stats()
    assert stats["tasks"]["metadata"]["done"] == 2 and stats["tasks"]["download"]["total"] == 30
    status = fleet.client("cache", "status", node="node2", env=env_b)
    assert "backend: couchdb" in status.stdout and "replication pull" in status.stdout, status.stdout


def test_replication_resumes_after_the_central_server_restarts(tmp_path, couches):
    from client.cache import couch

    for node in ("a", "b"):
        couch.ensure_replication(couches[node].url, couches["central"].url, DATABASE)
    writer = couch.CouchCache(couches["a"].url, DATABASE, max_age=3600, node="a")
    writer.store([("demo", "http://x/first", [{"site": "demo", "remote_id": "1", "url": None, "metadata": {}}])])
    wait_for_doc(couches["b"].url, "resolution:demo:http://x/first")

    central = couches["central"]
    port = int(central.url.rsplit(":", 1)[1])
    central.stop()
    writer.store([("demo", "http://x/second", [{"site": "demo", "remote_id": "2", "url": None, "metadata": {}}])])
    time.sleep(2)
    couches["central"] = start_couchdb(tmp_path / "couch-central", port=port)  # same port, same data
    wait_for_doc(couches["b"].url, "resolution:demo:http://x/second", timeout=90)
    reader = couch.CouchCache(couches["b"].url, DATABASE, max_age=3600, node="b")
    assert reader.lookup([("demo", "http://x/second")])[("demo", "http://x/second")][0]["remote_id"] == "2"


def test_the_metadata_job_completes_when_couchdb_dies_mid_run(tmp_path, couches):
    slow_site = start_demo_site(tmp_path, latency=0.4)
    fleet = Fleet.start(slow_site, tmp_path, f"sqlite:///{tmp_path / 'slow.sqlite3'}")
    try:
        fleet.import_csv("query,sites\n" + "".join(f"artist_{n},demo\n" for n in range(1, 7)))
        env = {"FETCHFLEET_COUCHDB_URL": couches["a"].url}
        client = fleet.start_client("metadata", "1", "--drain", node="node1", env=env)
        fleet.wait_for(lambda s: s["tasks"]["metadata"]["done"] >= 1, what="the first resolution")
        couches["a"].process.send_signal(signal.SIGKILL)
        assert client.wait(120) == 0
        stats = fleet.stats()
        assert stats["tasks"]["metadata"]["done"] == 6 and stats["tasks"]["download"]["total"] == 180
        log = next(tmp_path.glob("client-node1-*.log")).read_text()
        assert log.count("going on without it") == 1, log
        assert "refused" in log.lower() and "UnboundLocalError" not in log, log  # the real cause, readable
        assert "metadata: 6 done, 0 failed" in log
    finally:
        fleet.stop()
        slow_site.stop()


def test_credentials_in_couchdb_url_never_appear(fleet, tmp_path):
    couch = start_couchdb(tmp_path / "locked")
    try:
        requests.put(f"{couch.url}/_config/admins/admin", data='"right-password"', timeout=10).raise_for_status()
        host = couch.url.split("://", 1)[1]
        fleet.import_csv("query,sites\nartist_1,demo\n")
        wrong = {"FETCHFLEET_COUCHDB_URL": f"http://admin:wrong-password@{host}"}
        run = fleet.client("metadata", "5", node="node1", env=wrong)
        assert run.returncode == 0 and "1 done" in run.stdout
        assert "going on without it" in run.stderr and "***@" in run.stderr
        dead = {"FETCHFLEET_COUCHDB_URL": "http://admin:dead-password@127.0.0.1:9/"}
        setup = fleet.client("cache", "replicate", "http://central:central-password@127.0.0.1:9/", env=dead)
        assert setup.returncode == 3 and setup.stderr.startswith("error: CouchDB call failed")
        status = fleet.client("cache", "status", env=dead)
        assert status.returncode == 3
        right = {"FETCHFLEET_COUCHDB_URL": f"http://admin:right-password@{host}"}
        works = fleet.client("cache", "status", env=right)
        assert works.returncode == 0 and "***@" in works.stdout, works.stderr
        for output in (
            run.stdout + run.stderr,
            setup.stdout + setup.stderr,
            status.stdout + status.stderr,
            works.stdout + works.stderr,
        ):
            assert "password" not in output, output
    finally:
        couch.stop()


def test_the_embedded_cache_needs_no_couchdb(fleet):
    fleet.import_csv(TWO_ITEMS_ONE_SEARCH)
    assert fleet.client("metadata", "1").returncode == 0
    asked = search_requests(fleet)
    again = fleet.client("metadata", "1")
    assert "1 from the cache" in again.stdout and search_requests(fleet) == asked
    status = fleet.client("cache", "status")
    assert "backend: file" in status.stdout and "replication" not in status.stdout


def test_a_lease_that_outlives_couchdb_s_keep_alive_still_fills_the_cache(tmp_path, couches):
    """Resolving takes longer than the server keeps an idle connection open (pouchdb-server,
    like CouchDB, closes it after 5 s): the write at the end of the lease still lands, and
    a second node asks the site nothing."""
    slow_site = start_demo_site(tmp_path, latency=0.8)
    fleet = Fleet.start(slow_site, tmp_path, f"sqlite:///{tmp_path / 'slow.sqlite3'}")
    try:
        queries = [f"artist_{n}" for n in range(1, 9)]
        rows = [f"first-{q},{q},demo\n" for q in queries] + [f"second-{q},{q},demo\n" for q in queries]
        fleet.import_csv("key,query,sites\n" + "".join(rows))
        env = {"FETCHFLEET_COUCHDB_URL": couches["a"].url}  # both nodes use one CouchDB here
        started = time.monotonic()
        first = fleet.client("metadata", "8", node="node1", env=env)
        assert first.returncode == 0 and "going on without it" not in first.stderr, first.stderr
        assert time.monotonic() - started > 6  # longer than the server's keep-alive
        documents = requests.get(f"{couches['a'].url}/{DATABASE}", timeout=10).json()["doc_count"]
        assert documents == 8 + 240  # eight resolutions, every post of them
        asked = fleet.site_counter()["total"]
        second = fleet.client("metadata", "8", node="node2", env=env)
        assert second.returncode == 0 and "8 from the cache" in second.stdout, second.stdout + second.stderr
        assert fleet.site_counter()["total"] == asked
    finally:
        fleet.stop()
        slow_site.stop()
