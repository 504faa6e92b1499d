"""The metadata cache on both backends (embedded file, real CouchDB protocol server):
hits, misses, expiry, and CouchDB conflicts resolving the same way on every node."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from client.cache.base import GuardedCache, redact
from client.cache.couch import CouchCache
from client.cache.file import FileCache
from support.couch import start_couchdb

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
URL = "http://booru.test/post?tags=cats"
FOUND = [
    {"site": "booru", "remote_id": "1", "url": "http://booru.test/data/1.png", "metadata": {"id": 1, "tags": "cat"}},
    {"site": "booru", "remote_id": "2", "url": "http://booru.test/data/2.png", "metadata": {"id": 2}},
]


@pytest.fixture(scope="module")
def couch(tmp_path_factory):
    server = start_couchdb(tmp_path_factory.mktemp("couch"))
    yield server
    server.stop()


@pytest.fixture(params=["file", "couchdb"])
def make_cache(request, tmp_path):
    def make(node: str = "node-a", max_age: float = 3600):
        if request.param == "file":
            return FileCache(tmp_path / "cache", max_age=max_age, node=node)
        couch = request.getfixturevalue("couch")
        return CouchCache(couch.url, database, max_age=max_age, node=node)

    database = f"cache_{uuid.uuid4().hex[:10]}"
    return make


def test_a_stored_resolution_is_a_hit(make_cache):
    cache = make_cache()
    assert cache.lookup([("booru", URL)], now=T0) == {}
    assert cache.store([("booru", URL, FOUND)], now=T0) == 1
    assert cache.lookup([("booru", URL), ("booru", "http://booru.test/other")], now=T0) == {("booru", URL): FOUND}


def test_entries_expire_after_the_freshness_window(make_cache):
    cache = make_cache(max_age=600)
    cache.store([("booru", URL, FOUND)], now=T0)
    assert cache.lookup([("booru", URL)], now=T0 + timedelta(seconds=600)) == {("booru", URL): FOUND}
    assert cache.lookup([("booru", URL)], now=T0 + timedelta(seconds=601)) == {}
    cache.store([("booru", URL, FOUND[:1])], now=T0 + timedelta(seconds=700))  # resolved again
    assert cache.lookup([("booru", URL)], now=T0 + timedelta(seconds=701)) == {("booru", URL): FOUND[:1]}


def test_nothing_found_is_not_cached(make_cache):
    cache = make_cache()
    assert cache.store([("booru", URL, [])], now=T0) == 0
    assert cache.lookup([("booru", URL)], now=T0) == {}


def test_posts_are_shared_between_resolutions_and_read_in_bulk(make_cache):
    cache = make_cache()
    searches = [(f"http://booru.test/post?tags=t{n}", [{**FOUND[n % 2], "remote_id": str(n)}]) for n in range(300)]
    cache.store([("booru", url, found) for url, found in searches] + [("booru", URL, FOUND)], now=T0)
    hits = cache.lookup([("booru", url) for url, _ in searches] + [("booru", URL)], now=T0)
    assert len(hits) == 301 and hits[("booru", searches[7][0])][0]["remote_id"] == "7"


def test_a_resolution_whose_posts_are_missing_is_a_miss(make_cache):
    cache = make_cache()
    cache.store([("booru", URL, FOUND)], now=T0)
    cache._write(
        [
            {
                "_id": "resolution:booru:" + URL,
                "type": "resolution",
                "site": "booru",
                "url": URL,
                "posts": [["booru", "1"], ["booru", "999"]],
                "resolved_at": T0.isoformat(),
                "node": "x",
            }
        ]
    )
    assert cache.lookup([("booru", URL)], now=T0) == {}


def test_conflicts_resolve_to_the_newest_resolution_on_every_node(tmp_path):
    node_a, node_b = start_couchdb(tmp_path / "a"), start_couchdb(tmp_path / "b")
    try:
        database = "cache"
        cache_a = CouchCache(node_a.url, database, max_age=3600, node="node-a")
        cache_b = CouchCache(node_b.url, database, max_age=3600, node="node-b")
        cache_a.store([("booru", URL, FOUND)], now=T0 + timedelta(seconds=30))  # newer, on A
        cache_b.store([("booru", URL, FOUND[:1])], now=T0)  # older, on B
        for source, target in ((node_a, node_b), (node_b, node_a)):
            reply = requests.post(
                f"{source.url}/_replicate",
                timeout=30,
                json={"source": f"{source.url}/{database}", "target": f"{target.url}/{database}"},
            )
            assert reply.json()["ok"]
        doc_id = requests.utils.quote(f"resolution:booru:{URL}", safe="")
        for node in (node_a, node_b):  # CouchDB kept both revisions and picked a winner by revision id
            assert requests.get(f"{node.url}/{database}/{doc_id}?conflicts=true", timeout=10).json()["_conflicts"]
        later = T0 + timedelta(seconds=60)
        assert cache_a.lookup([("booru", URL)], now=later) == {("booru", URL): FOUND}
        assert cache_b.lookup([("booru", URL)], now=later) == {("booru", URL): FOUND}
        for node in (node_a, node_b):  # reading repaired it: one revision, the newest resolution
            doc = requests.get(f"{node.url}/{database}/{doc_id}?conflicts=true", timeout=10).json()
            assert "_conflicts" not in doc and doc["node"] == "node-a" and len(doc["posts"]) == 2
    finally:
        node_a.stop()
        node_b.stop()


def test_guard_turns_the_cache_off_after_one_failure_with_one_warning(couch, caplog):
    cache = CouchCache(couch.url, f"cache_{uuid.uuid4().hex[:10]}", max_age=3600, node="n")
    guarded = GuardedCache(cache, "CouchDB test", secret_source="http://user:hunter2@127.0.0.1:1/")
    guarded.store([("booru", URL, FOUND)])
    assert guarded.lookup([("booru", URL)]) == {("booru", URL): FOUND}

    def broken(*args, **kwargs):
        raise ConnectionRefusedError("http://user:hunter2@127.0.0.1:1/ refused")

    cache._read = broken
    with caplog.at_level("WARNING", logger="fetchfleet"):
        assert guarded.lookup([("booru", URL)]) == {}
        assert guarded.lookup([("booru", URL)]) == {}
        guarded.store([("booru", URL, FOUND)])
    assert not guarded.enabled
    [warning] = [record.getMessage() for record in caplog.records]
    assert "going on without it" in warning and "hunter2" not in warning and "***@127.0.0.1" in warning


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("http://admin:s3cret@db:5984/x", "http://***@db:5984/x"),
        ("https://tok@h/", "https://***@h/"),
        ("no url here", "no url here"),
        ("a http://u:p@h b https://v:q@i c", "a http://***@h b https://***@i c"),
    ],
)
def test_redact(text, clean):
    assert redact(text) == clean


def couchdb3_replicator(docs: dict[str, dict], scheduler: dict[str, dict]):
    """What CouchDB 3 answers about replications (its documented API, since CouchDB itself
    does not install here): the documents carry no state; ``_scheduler/docs`` does."""
    from flask import Flask, jsonify

    app = Flask("couchdb3")

    @app.route("/")
    def welcome():
        return jsonify({"couchdb": "Welcome", "version": "3.4.2"})

    @app.route("/<any(_replicator, fetchfleet_cache):name>", methods=["GET", "HEAD"])
    def database(name):
        return jsonify({"db_name": name, "doc_count": len(docs) if name == "_replicator" else 0})

    @app.route("/_replicator/<doc_id>")
    def replicator_doc(doc_id):
        if doc_id not in docs:
            return jsonify({"error": "not_found", "reason": "missing"}), 404
        return jsonify({"_id": doc_id, "_rev": "1-a", **docs[doc_id]})

    @app.route("/_scheduler/docs/_replicator/<doc_id>")
    def scheduled(doc_id):
        if doc_id not in scheduler:
            return jsonify({"error": "not_found", "reason": "unknown"}), 404
        return jsonify({"database": "_replicator", "doc_id": doc_id, **scheduler[doc_id]})

    return app


@pytest.mark.e2e
def test_cache_status_reads_replication_state_from_couchdb_3_s_scheduler(tmp_path):
    import subprocess
    import sys

    from werkzeug.serving import make_server

    from support.processes import REPO_ROOT

    database = "fetchfleet_cache"
    docs = {
        f"fetchfleet-push-{database}": {"source": "http://a/x", "target": "https://u:secret@central/x"},
        f"fetchfleet-pull-{database}": {"source": "https://u:secret@central/x", "target": "http://a/x"},
    }
    scheduler = {
        f"fetchfleet-push-{database}": {"state": "running", "info": {"changes_pending": 0}},
        f"fetchfleet-pull-{database}": {"state": "crashing", "info": {"error": "unauthorized: bad password"}},
    }
    server = make_server("127.0.0.1", 0, couchdb3_replicator(docs, scheduler), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        from client.cache.couch import replication_status

        url = f"http://127.0.0.1:{server.server_port}"
        status = {entry["direction"]: entry for entry in replication_status(url, database)}
        assert status["push"]["state"] == "running" and status["push"]["reason"] is None
        assert status["pull"]["state"] == "crashing" and status["pull"]["reason"] == "unauthorized: bad password"
        assert "secret" not in str(status)
        del scheduler[f"fetchfleet-push-{database}"]  # not scheduled (yet): the document's own state, or pending
        assert replication_status(url, database)[0]["state"] == "pending"

        # The CLI says the same, and needs no API key: it never talks to the coordinator.
        config = tmp_path / "node.py"
        config.write_text(f"COUCHDB_URL = {url!r}\n")
        env = {name: value for name, value in os.environ.items() if not name.startswith("FETCHFLEET_")}
        env["FETCHFLEET_CONFIG"] = str(config)
        shown = subprocess.run(
            [sys.executable, "-m", "client", "cache", "status"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
        )
    finally:
        server.shutdown()
    assert "replication pull" in shown.stdout and "crashing (unauthorized: bad password)" in shown.stdout, (
        shown.stdout + shown.stderr
    )
