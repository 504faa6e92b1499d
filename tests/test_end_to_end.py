"""The whole loop over real HTTP: demo site, gunicorn coordinator, client subprocesses.

gallery-dl and yt-dlp make real requests to the demo site; tests recompute what the site
served from ``demo.catalog`` and compare it with what landed on disk and in the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest
import requests

from client.hashing import hamming
from demo.catalog import Catalog, video_bytes
from support.processes import REPO_ROOT, start_demo_site
from tests.fleet import FAST_RETRIES, Fleet, kill_group

#: Real processes (servers, nodes): ``make test-fast`` leaves these out.
pytestmark = pytest.mark.e2e

CATALOG = Catalog()
INVENTORY = """key,url,query,title,sites,priority,collection
artist-1,,artist_1,Artist one,demo,5,artists
dupes,,dupes,Near duplicates,demo,0,misc
post-7,{root}/post/show/7,,One post,,,singles
videos,,all,Every video,demotube,0,videos
clip-3,{root}/watch/clip3,,A page with a video,,,videos
clip-4,{root}/media/clip4.webm,,A direct media file,,,videos
"""


@pytest.fixture
def site(demo_site):
    requests.post(demo_site.url + "/_counter/reset", timeout=10)
    return demo_site


@pytest.fixture
def fleet(site, tmp_path):
    fleet = Fleet.start(site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    yield fleet
    fleet.stop()


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clip_name(remote_id: str) -> str:
    """A demo video's name from its remote id: the full media URL (``.../media/clip1.mp4``)."""
    return posixpath.splitext(posixpath.basename(urllib.parse.urlsplit(remote_id).path))[0]


def expected_sha256(record: dict) -> str:
    if record["site"] == "demotube":
        return hashlib.sha256(video_bytes(clip_name(record["remote_id"]))).hexdigest()
    return CATALOG.sha256(CATALOG.post(int(record["remote_id"])))


def run_everything(fleet: Fleet, jobs: str = "2", node: str = "node1") -> None:
    metadata = fleet.client("metadata", "100", "--jobs", "2", node=node)
    assert metadata.returncode == 0, metadata.stderr
    fleet.drain("download", "demo", "100", "--jobs", jobs, node=node)
    fleet.drain("download", "demotube", "20", "--jobs", jobs, node=node)


def on_disk(dest) -> dict[str, str]:
    return {
        path.relative_to(dest).as_posix(): sha256_of(path)
        for path in dest.rglob("*")
        if path.is_file() and path.suffix != ".json" and ".fetchfleet" not in path.parts
    }


def test_inventory_to_files_on_disk_with_the_served_hashes(fleet):
    assert fleet.import_csv(INVENTORY)["added"] == 6
    metadata = fleet.client("metadata", "100", "--jobs", "2")
    assert metadata.returncode == 0, metadata.stderr
    assert metadata.stdout.startswith("metadata: 6 done, 0 failed, 86 things found")
    fleet.drain("download", "demo", "100", "--jobs", "2")
    fleet.drain("download", "demotube", "20")

    stats = fleet.stats()
    downloads = stats["tasks"]["download"]
    assert downloads["done"] == downloads["total"] == 30 + 48 - 6 + 5, downloads  # artist_1 and dupes overlap on 6
    assert stats["items"]["found"] == 6 and stats["leases"]["active"] == 0
    [node] = [client for client in stats["clients"] if client["name"] == "node1"]
    assert node["tasks_done"] == downloads["done"] + 6

    records = fleet.files()
    assert len(records) == downloads["done"]  # one file per post here, each recorded once
    dest = fleet.dest()
    for record in records:
        path = dest / record["path"]
        assert sha256_of(path) == record["sha256"] == expected_sha256(record), record
        assert path.stat().st_size == record["size"]
        sidecar = json.loads(path.with_name(path.name + ".json").read_text())
        assert sidecar["fetchfleet"]["sha256"] == record["sha256"]
        assert sidecar["fetchfleet"]["remote_id"] == record["remote_id"]
        if record["site"] == "demo":
            post = CATALOG.post(int(record["remote_id"]))
            assert sidecar["metadata"]["md5"] == CATALOG.md5(post)
            assert sidecar["metadata"]["tags"] == " ".join(post.tags)
            assert record["mime"] == ("image/png" if post.ext == "png" else "image/jpeg")
            assert len(record["phash"]) == 16 and len(record["dhash"]) == 16
        else:
            assert record["mime"] in ("video/mp4", "video/webm") and record["phash"] is None
    videos = {record["remote_id"]: record for record in records if record["site"] == "demotube"}
    assert all(remote_id.startswith(fleet.site.url + "/media/") for remote_id in videos)  # the full media URL
    # page, direct file and search dedup'd
    assert sorted(map(clip_name, videos)) == ["clip1", "clip2", "clip3", "clip4", "clip5"]
    phashes = {int(record["remote_id"]): record["phash"] for record in records if record["site"] == "demo"}
    assert hamming(phashes[11], phashes[12]) <= 6  # 12 is a resized, recompressed copy of 11
    assert hamming(phashes[11], phashes[21]) > 20


def test_jobs_4_gives_the_same_result_as_jobs_1(fleet):
    fleet.import_csv(INVENTORY)
    run_everything(fleet, jobs="1", node="node1")
    fleet.admin("POST", "/tasks/requeue", json={"state": "done", "kind": "download"})
    fleet.drain("download", "demo", "100", "--jobs", "4", node="node2")
    fleet.drain("download", "demotube", "20", "--jobs", "4", node="node2")
    one, four = on_disk(fleet.dest("node1")), on_disk(fleet.dest("node2"))
    assert one == four and len(one) == 77


def test_every_video_of_a_page_is_its_own_task_and_only_http_videos_are_fetched(fleet):
    """Two videos sharing a file stem (clip.mp4, clip.webm) are two tasks, not one; a video
    served over ftp: is never dialled (the demo site's page points one at 127.0.0.1:9)."""
    fleet.import_csv("key,url,sites\npair,{root}/watch/pair,demotube\nelsewhere,{root}/watch/elsewhere,demotube\n")
    metadata = fleet.client("metadata", "10")
    assert metadata.returncode == 0, metadata.stdout + metadata.stderr
    tasks = fleet.download_tasks()
    media = fleet.site.url + "/media/"
    assert sorted(tasks) == [media + "clip2.mp4", media + "pair/clip.mp4", media + "pair/clip.webm"]
    run = fleet.client("download", "demotube", "10")
    assert run.returncode == 0 and "3 done, 0 failed" in run.stdout, run.stdout + run.stderr
    by_remote_id = {record["remote_id"]: record for record in fleet.files()}
    assert by_remote_id[media + "pair/clip.mp4"]["sha256"] == hashlib.sha256(video_bytes("clip1")).hexdigest()
    assert by_remote_id[media + "pair/clip.webm"]["sha256"] == hashlib.sha256(video_bytes("clip4")).hexdigest()
    paths = {record["path"] for record in by_remote_id.values()}
    assert len(paths) == 3  # no file overwrote another


def test_a_node_refuses_to_dial_anything_but_http(tmp_path):
    from yt_dlp.utils import DownloadError

    from client.engines.yt_dlp import _ConfinedYoutubeDL

    with _ConfinedYoutubeDL({"quiet": True}) as ydl:
        for url in ("ftp://127.0.0.1:9/clip.mp4", f"file://{tmp_path}/secret"):
            with pytest.raises(DownloadError):
                ydl.urlopen(url)
            assert ydl.refused.startswith("refused by this node: only http and https")


def test_failures_are_classified_retried_and_reported(fleet):
    fleet.import_csv("query,sites\nfailures,demo\n")
    assert fleet.client("metadata", "10").returncode == 0
    runs = fleet.drain("download", "demo", "20")
    assert runs[0].returncode == 1  # some tasks failed in the first round

    report = fleet.download_tasks()
    gone, flaky, throttled, dropped, slow, broken = (report[str(n)] for n in range(9001, 9007))
    assert (gone["state"], gone["attempts"], gone["error_class"]) == ("dead", 1, "permanent")
    assert "HTTP 404" in gone["last_error"]
    assert (broken["state"], broken["attempts"]) == ("dead", FAST_RETRIES["DOWNLOAD_MAX_ATTEMPTS"])
    assert broken["error_class"] == "transient" and "HTTP 500" in broken["last_error"]
    for task in (flaky, throttled, dropped, slow):
        assert task["state"] == "done", task
    assert flaky["attempts"] == 1 and dropped["attempts"] == 1  # failed once as a job, then succeeded
    # gallery-dl's own "Failed to download X" comes with its cause, the last retry's warning
    assert dropped["last_error"].startswith("Failed to download demo_9004_"), dropped
    assert "(3/3)" in dropped["last_error"], dropped
    assert throttled["attempts"] == 0  # a 429 is the site's state, not the task's fault

    counts = fleet.site_counter()["paths"]
    assert counts["/data/9001.png"] == 1  # permanent: never retried
    assert counts["/data/9002.png"] == 4  # 3 x 500 (1 job + 2 retries), then served
    assert counts["/data/9003.png"] == 2  # 429 then served after the cooldown
    assert counts["/data/9004.png"] == 4  # 3 dropped mid-file, then served
    dest = fleet.dest()
    records = {record["remote_id"]: record for record in fleet.files()}
    assert sorted(records) == ["9002", "9003", "9004", "9005"]
    for record in records.values():
        assert sha256_of(dest / record["path"]) == expected_sha256(record)
    assert not list(dest.rglob("*.part"))  # interrupted downloads were resumed, never reported

    dead = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "server", "tasks", "list"],
        cwd=REPO_ROOT,
        env={**fleet.coordinator.env, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
    )
    assert [line.split("\t")[0] for line in dead.stdout.splitlines()] == [str(gone["id"]), str(broken["id"])]


def test_rate_limit_cools_the_site_down_for_every_client(fleet):
    fleet.import_csv("query,sites\nthrottled,demo\nartist_2,demo\n")
    assert fleet.client("metadata", "10").returncode == 0
    first = fleet.client("download", "demo", "1")  # the oldest task: the throttled post
    assert first.returncode == 1 and "1 failed (1 rate_limited)" in first.stdout
    other = requests.post(
        fleet.coordinator.url + "/leases",
        json={"kind": "download", "site": "demo", "n": 10},
        headers={"Authorization": f"Bearer {fleet.keys['node2']}"},
    ).json()
    assert other["lease_id"] is None and 1 <= other["retry_after"] <= 2  # the site's Retry-After: 2
    assert fleet.stats()["sites"]["demo"]["cooldown_until"] is not None
    assert fleet.site_counter()["paths"]["/data/9003.png"] == 1
    time.sleep(other["retry_after"] + 0.2)
    fleet.drain("download", "demo", "100", node="node2")
    assert fleet.stats()["tasks"]["download"]["done"] == 31
    assert fleet.site_counter()["paths"]["/data/9003.png"] == 2


def test_a_killed_client_s_tasks_are_completed_by_another_exactly_once(site, tmp_path):
    slow_site = start_demo_site(tmp_path, latency=0.15)
    fleet = Fleet.start(slow_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    try:
        fleet.import_csv("query,sites\nartist_1,demo\nartist_2,demo\n")
        assert fleet.client("metadata", "10").returncode == 0
        victim = fleet.start_client("download", "demo", "60", "--jobs", "2", "--lease-seconds", "4")
        fleet.wait_for(lambda s: s["tasks"]["download"]["done"] >= 5, what="some results from the first client")
        kill_group(victim, signal.SIGKILL)
        victim.wait(10)
        stats = fleet.stats()
        assert stats["tasks"]["download"]["leased"] > 0  # it died holding tasks
        time.sleep(4.5)  # the lease expires; the next lease request reclaims it
        fleet.drain("download", "demo", "60", "--jobs", "2", node="node2")
        stats = fleet.stats()
        assert stats["tasks"]["download"] == {**stats["tasks"]["download"], "done": 60, "total": 60}
        records = fleet.files()
        assert len(records) == len({record["task_id"] for record in records}) == 60  # nothing recorded twice
        by_node = {client["name"]: client["tasks_done"] for client in stats["clients"]}
        assert by_node["node1"] >= 5 and by_node["node2"] >= 1
        assert by_node["node1"] + by_node["node2"] == 60 + 2  # downloads + the two metadata tasks
        charged = [task for task in fleet.download_tasks().values() if task["attempts"]]
        assert any("lease expired" in task["last_error"] for task in charged)  # the dead client's lease
        # Rarely (under CPU load) a download on loopback fails once too: retried, never lost.
        assert all(task["state"] == "done" and task["error_class"] == "transient" for task in charged)
    finally:
        fleet.stop()
        slow_site.stop()


@pytest.mark.parametrize("to", ["node", "process group"])
def test_sigterm_finishes_running_jobs_and_releases_the_rest(site, tmp_path, to):
    """To the node process alone, or to its whole process group (systemd's default on
    stop): either way running jobs finish, nothing fails, the rest is released."""
    slow_site = start_demo_site(tmp_path, latency=0.15)
    fleet = Fleet.start(slow_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    try:
        fleet.import_csv("query,sites\nartist_1,demo\n")
        assert fleet.client("metadata", "10").returncode == 0
        client = fleet.start_client("download", "demo", "30", "--jobs", "2")
        fleet.wait_for(lambda s: s["tasks"]["download"]["leased"] == 30, what="the lease")
        time.sleep(1.0)
        if to == "node":
            os.kill(client.pid, signal.SIGTERM)
        else:
            kill_group(client, signal.SIGTERM)
        assert client.wait(60) == 128 + signal.SIGTERM
        output = next(fleet.workdir.glob("client-node1-*.log")).read_text()
        assert "stopped by SIGTERM" in output and "released" in output and " 0 failed" in output, output
        stats = fleet.stats()
        downloads = stats["tasks"]["download"]
        assert downloads["leased"] == 0 and downloads["done"] + downloads["queued"] == 30
        assert 0 < downloads["queued"] < 30 and stats["leases"]["active"] == 0
        released = [t for t in fleet.admin("GET", "/tasks?state=queued&limit=100")["tasks"] if t["kind"] == "download"]
        assert all(task["attempts"] == 0 for task in released)  # a release charges nothing
    finally:
        fleet.stop()
        slow_site.stop()


def test_released_work_already_on_disk_is_reported_without_fetching(fleet):
    fleet.import_csv("query,sites\nartist_1,demo\n")
    assert fleet.client("metadata", "10").returncode == 0
    assert fleet.client("download", "demo", "100").returncode == 0
    fleet.admin("POST", "/tasks/requeue", json={"state": "done", "kind": "download"})
    before = fleet.site_counter()["total"]
    again = fleet.client("download", "demo", "100")
    assert again.returncode == 0 and "30 done" in again.stdout and "30 already on disk" in again.stdout
    assert fleet.site_counter()["total"] == before  # not one request to the site


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["download", "nowhere", "5"], 1, "json.site: unknown site 'nowhere'"),  # the coordinator says so
    ],
)
def test_client_usage_errors(fleet, args, code, message):
    result = fleet.client(*args)
    assert result.returncode == code and message in result.stderr, result.stderr


def test_client_without_key_or_coordinator_fails_in_one_line(fleet, tmp_path):
    env = {**fleet.env, "FETCHFLEET_CONFIG": str(tmp_path / "none.py")}
    (tmp_path / "none.py").write_text("")
    no_key = subprocess.run(
        [sys.executable, "-m", "client", "metadata", "5"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert no_key.returncode == 2 and no_key.stderr.strip().startswith("error: no API key")
    unreachable = subprocess.run(
        [sys.executable, "-m", "client", "--server", "http://127.0.0.1:9", "--key", "x", "metadata", "5"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert unreachable.returncode == 3
    assert unreachable.stderr.strip() == "error: cannot reach the coordinator at http://127.0.0.1:9: connection refused"
    wrong_key = subprocess.run(
        [sys.executable, "-m", "client", "--server", fleet.coordinator.url, "--key", "ff_x", "metadata", "5"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong_key.returncode == 3 and "401" in wrong_key.stderr and len(wrong_key.stderr.strip().splitlines()) == 1


def test_the_whole_loop_on_postgresql(site, tmp_path, postgres_url):
    from server import create_app
    from server.cli import init_db
    from tests.conftest import close_app, empty_database

    app = create_app({"DATABASE_URL": postgres_url})
    with app.app_context():
        init_db()
    empty_database(app)
    close_app(app)
    fleet = Fleet.start(site, tmp_path, postgres_url)
    try:
        fleet.import_csv(INVENTORY)
        run_everything(fleet, jobs="2")
        downloads = fleet.stats()["tasks"]["download"]
        assert downloads["done"] == downloads["total"] == 77
        for record in fleet.files():
            assert record["sha256"] == expected_sha256(record)
    finally:
        fleet.stop()


def test_a_looping_client_survives_a_coordinator_restart(site, tmp_path):
    from support.processes import start_coordinator

    slow_site = start_demo_site(tmp_path, latency=0.3)
    fleet = Fleet.start(slow_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    try:
        fleet.import_csv("query,sites\nartist_1,demo\nartist_2,demo\n")
        assert fleet.client("metadata", "10").returncode == 0
        client = fleet.start_client("download", "demo", "10", "--loop", "--lease-seconds", "5", "--jobs", "2")
        fleet.wait_for(lambda s: s["tasks"]["download"]["done"] >= 10, what="the first results")
        port = int(fleet.coordinator.url.rsplit(":", 1)[1])
        fleet.coordinator.stop()
        time.sleep(8)  # longer than the HTTP retries (~3.5 s) and than the 5 s leases
        sites = json.loads(fleet.coordinator.env["FETCHFLEET_SITES"])
        fleet.coordinator = start_coordinator(fleet.database_url, sites, tmp_path, workers=2, port=port, **FAST_RETRIES)
        stats = fleet.wait_for(lambda s: s["tasks"]["download"]["done"] == 60, timeout=120, what="all 60 done")
        os.kill(client.pid, signal.SIGTERM)
        assert client.wait(60) == 128 + signal.SIGTERM
        log = next(fleet.workdir.glob("client-node1-*.log")).read_text()
        assert "cannot reach the coordinator" in log, log
        assert "is completed; it can no longer be extended" not in log, log
        records = fleet.files()
        assert len(records) == len({record["task_id"] for record in records}) == 60
        assert stats["tasks"]["download"]["dead"] == 0
    finally:
        fleet.stop()
        slow_site.stop()


def test_a_worker_that_dies_fails_its_tasks_transiently_and_the_run_goes_on(fleet):
    """A worker process killed mid-job (out of memory, say): its batch comes back as
    transient failures, no lease stays open, and the next batch gets new workers."""
    fleet.import_csv("query,sites\nslow,demo\nartist_1,demo\n")
    assert fleet.client("metadata", "10").returncode == 0
    client = fleet.start_client("download", "demo", "1", "--drain", "--jobs", "1")
    fleet.wait_for(lambda s: s["tasks"]["download"]["leased"] == 1, what="the slow post leased")
    from support.proc import children, tree

    def workers() -> list[int]:
        """Forked by the fork server: the client's grandchildren (its children are the
        fork server and multiprocessing's resource tracker, which an OOM kill spares)."""
        return [pid for pid in tree(client.pid)[1:] if pid not in children(client.pid)]

    deadline = time.monotonic() + 60
    while not workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers(), "the client has no worker process"
    time.sleep(0.3)  # the worker is inside the 1.5 s slow download
    for pid in workers():
        os.kill(pid, signal.SIGKILL)
    assert client.wait(120) == 1  # a failure was reported
    log = fleet.newest_client_log()
    assert fleet.stats()["leases"]["active"] == 0, log
    tasks = fleet.download_tasks()
    # Charged: the task the worker was running, and the one already queued for it (the
    # client keeps one more than --jobs in hand). Whether the same --drain run retried
    # them depends on how fast it did the rest: their backoff (1 s) may not have ended.
    charged = {remote_id for remote_id, t in tasks.items() if t["attempts"]}
    assert "9005" in charged and len(charged) <= 2, (len(charged), {t["last_error"] for t in tasks.values()})
    for remote_id in charged:
        assert tasks[remote_id]["error_class"] == "transient", tasks[remote_id]
        assert "worker process died" in tasks[remote_id]["last_error"]
    # The run went on with new workers: everything else was done by it.
    assert all(t["state"] == "done" for remote_id, t in tasks.items() if remote_id not in charged), log

    fleet.drain("download", "demo", "10")
    tasks = fleet.download_tasks()
    assert len(tasks) == 31 and all(t["state"] == "done" for t in tasks.values())
    # Failed once when its worker died, retried after the backoff, done; never charged twice.
    assert (tasks["9005"]["attempts"], tasks["9005"]["error_class"]) == (1, "transient")
    assert {remote_id for remote_id, t in tasks.items() if t["attempts"]} == charged
