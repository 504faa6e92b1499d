"""Subscriptions over real HTTP with real nodes and the demo site's growing tag: a re-check
picks up only the new posts and stops at known ones (one API page for a 130-post tag), a
full check marks a vanished post gone upstream and keeps its files, pause holds the next
check back, and the checks go on after the coordinator restarts."""

from __future__ import annotations

import time

import pytest
import requests

from demo.catalog import GROWING_AT_START, GROWING_FIRST
from support.processes import demo_sites, start_coordinator
from tests.fleet import FAST_RETRIES, Fleet

pytestmark = pytest.mark.e2e
INTERVAL = 2  # seconds between checks (a real site gets hours)


@pytest.fixture
def fleet(demo_site, tmp_path):
    requests.post(demo_site.url + "/_counter/reset", timeout=10)
    fleet = Fleet.start(demo_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}", FULL_CHECK_EVERY=3)
    yield fleet
    fleet.stop()


def item(fleet: Fleet, key: str) -> dict:
    answer = requests.get(
        f"{fleet.coordinator.url}/items/{key}", headers={"Authorization": f"Bearer {fleet.admin_key}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def site_requests(fleet: Fleet, prefix: str) -> int:
    return sum(n for path, n in fleet.site_counter()["paths"].items() if path.startswith(prefix))


def check_now(fleet: Fleet) -> None:
    """Wait for the next check to come due, then run a node's metadata round."""
    time.sleep(INTERVAL * 1.2)
    run = fleet.client("metadata", "10")
    assert run.returncode == 0, run.stderr


def test_a_subscription_fetches_only_new_posts_and_syncs_deletions(fleet):
    fleet.import_csv(f"key,query,sites,check_every\ngrowing,growing,demo,{INTERVAL}\n")
    fleet.drain("metadata", "10")
    fleet.drain("download", "demo", "100")
    first = item(fleet, "growing")
    assert first["totals"]["downloads"] == {"done": GROWING_AT_START}
    assert first["checks"][0]["full"] and first["checks"][0]["posts_seen"] == GROWING_AT_START

    requests.post(fleet.site.url + "/_grow?n=3", timeout=10)
    requests.post(fleet.site.url + f"/_vanish?post={GROWING_FIRST + 5}", timeout=10)
    before_api, before_files = site_requests(fleet, "/post.json"), site_requests(fleet, "/data/")
    check_now(fleet)
    second = item(fleet, "growing")["checks"][0]
    assert (second["new_posts"], second["stopped_at_known"], second["full"]) == (3, True, False), second
    assert site_requests(fleet, "/post.json") - before_api == 1  # one API page for a 133-post tag
    fleet.drain("download", "demo", "100")
    assert site_requests(fleet, "/data/") - before_files == 3  # only the new posts are fetched
    assert item(fleet, "growing")["totals"]["gone_upstream"] == 0  # a partial check proves nothing

    check_now(fleet)  # the third check goes to the end (FULL_CHECK_EVERY=3)
    third = item(fleet, "growing")
    assert third["checks"][0]["full"] and not third["checks"][0]["stopped_at_known"]
    gone = [d for d in third["downloads"] if d["gone_at"]]
    assert [d["remote_id"] for d in gone] == [str(GROWING_FIRST + 5)] and gone[0]["files"]  # files kept
    assert third["totals"]["gone_upstream"] == 1 and fleet.stats()["archive"]["gone_upstream"] == 1


def test_pause_holds_a_subscription_back_and_checks_survive_a_restart(fleet, tmp_path):
    fleet.import_csv(f"key,query,sites,check_every\ngrowing,growing,demo,{INTERVAL}\n")
    fleet.drain("metadata", "10")
    fleet.admin("POST", "/items/growing/pause")
    time.sleep(INTERVAL * 1.2)
    run = fleet.client("metadata", "10")
    assert run.returncode == 0 and "nothing to do" in run.stdout + run.stderr, run.stdout + run.stderr
    fleet.admin("POST", "/items/growing/resume")

    fleet.coordinator.stop()  # the schedule lives in the database: a new coordinator goes on
    settings = {**FAST_RETRIES, "FULL_CHECK_EVERY": 3}
    fleet.coordinator = start_coordinator(
        fleet.database_url, demo_sites(fleet.site.url), tmp_path, workers=2, **settings
    )
    requests.post(fleet.site.url + "/_grow?n=2", timeout=10)
    check_now(fleet)
    checks = item(fleet, "growing")["checks"]
    assert len(checks) == 2 and checks[0]["new_posts"] == 2


# ------------------------------------------------------------- site tests


@pytest.fixture
def tested_fleet(demo_site, tmp_path):
    """A fleet whose demo site has a health test: artist_2's posts, with md5 metadata, and
    the newest one's file."""
    from demo.catalog import Catalog

    requests.post(demo_site.url + "/_counter/reset", timeout=10)
    fleet = Fleet.start(demo_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    fleet.coordinator.stop()
    catalog = Catalog()
    newest = catalog.search(["artist_2"])[0]
    sites = demo_sites(demo_site.url)
    sites["demo"]["test"] = {
        "query": "artist_2",
        "min_posts": 30,
        "metadata_keys": ["md5", "tags"],
        "download": 1,
        "sha256": [catalog.sha256(newest)],
    }
    fleet.coordinator = start_coordinator(fleet.database_url, sites, tmp_path, workers=2, **FAST_RETRIES)
    yield fleet
    fleet.stop()


def test_site_tests_pass_on_a_healthy_site_and_fail_with_the_reason(tested_fleet, tmp_path):
    fleet = tested_fleet
    dest = tmp_path / "node-dest"
    healthy = fleet.client("test-site", "demo", env={"FETCHFLEET_DEST": str(dest)})
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    lines = healthy.stdout.splitlines()
    assert lines[0] == "ok   demo: found 30 post(s), at least 30 wanted" and lines[-1] == "1 of 1 site test(s) passed"
    assert "ok   demo: downloaded 1 of 1 post(s)" in lines and any("a file with sha256" in line for line in lines)
    assert not dest.exists() or not any(dest.rglob("*"))  # nothing in the node's DEST
    last = fleet.stats()["sites"]["demo"]["last_test"]
    assert last["passed"] and last["node"] == "node1" and last["failed"] == []

    requests.post(fleet.site.url + "/_break?mode=wrong", timeout=10)
    wrong = fleet.client("test-site", "--all")
    assert wrong.returncode == 1
    assert "FAIL demo: a file with sha256" in wrong.stdout and "not among the files downloaded" in wrong.stdout

    requests.post(fleet.site.url + "/_break?mode=500", timeout=10)
    down = fleet.client("test-site", "demo")
    assert down.returncode == 1 and "FAIL demo: resolve" in down.stdout and "500" in down.stdout, down.stdout
    last = fleet.stats()["sites"]["demo"]["last_test"]
    assert not last["passed"] and "500" in last["failed"][0]["detail"]
    report = fleet.admin("GET", "/report")
    assert report["sections"]["failing_site_tests"]["count"] == 1

    unknown = fleet.client("test-site", "nowhere")
    assert unknown.returncode == 2 and unknown.stderr.strip().startswith("error: the coordinator has no site 'nowhere'")
    untested = fleet.client("test-site", "demotube")
    assert untested.returncode == 2 and "has no test" in untested.stderr
