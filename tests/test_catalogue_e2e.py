"""The catalogue over real HTTP with real nodes: plain gallery-dl's download archive
imported as anchors keeps fetchfleet from fetching those posts again, a known md5 ends
a post ``duplicate`` with no request for its file, and the demo site's resized copies
are found by reverse image search."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from demo.catalog import Catalog
from support.processes import REPO_ROOT
from tests.fleet import Fleet

pytestmark = pytest.mark.e2e
CATALOG = Catalog()


@pytest.fixture
def fleet(demo_site, tmp_path):
    requests.post(demo_site.url + "/_counter/reset", timeout=10)
    fleet = Fleet.start(demo_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    yield fleet
    fleet.stop()


def api(fleet: Fleet, path: str, **params) -> dict:
    answer = requests.get(
        fleet.coordinator.url + path,
        params=params,
        headers={"Authorization": f"Bearer {fleet.keys['node1']}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def post_known(fleet: Fleet, body: bytes, **params) -> requests.Response:
    return requests.post(
        fleet.coordinator.url + "/known",
        data=body,
        params=params,
        headers={"Authorization": f"Bearer {fleet.admin_key}"},
        timeout=60,
    )


def file_requests(fleet: Fleet) -> dict[str, int]:
    return {path: n for path, n in fleet.site_counter()["paths"].items() if path.startswith("/data/")}


def test_a_gallery_dl_download_archive_keeps_its_posts_from_being_fetched_again(fleet, tmp_path):
    """gallery-dl itself downloads a tag with --download-archive; that archive, imported,
    makes fetchfleet create no download task for those posts and ask for none of their files."""
    config = tmp_path / "gallery-dl.json"
    config.write_text(json.dumps({"extractor": {"moebooru": {"demo": {"root": fleet.site.url}}}}))
    archive = tmp_path / "A.sqlite3"
    plain = subprocess.run(
        [
            sys.executable,
            "-m",
            "gallery_dl",
            "--config-ignore",
            "--config",
            str(config),
            "--download-archive",
            str(archive),
            "--dest",
            str(tmp_path / "plain"),
            f"{fleet.site.url}/post?tags=artist_2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0, plain.stderr
    posts = [post.id for post in CATALOG.search(["artist_2"])]
    assert len(list((tmp_path / "plain").rglob("*.*"))) == len(posts) == 30

    answer = post_known(fleet, archive.read_bytes(), site="demo", source="A.sqlite3")
    assert answer.status_code == 200, answer.text
    assert answer.json()["format"] == "gallery-dl archive" and answer.json()["added"] == 30

    requests.post(fleet.site.url + "/_counter/reset", timeout=10)
    fleet.import_csv("key,query,sites\nartist-2,artist_2,demo\nartist-3,artist_3,demo\n")
    fleet.drain("metadata", "100")
    fleet.drain("download", "demo", "100")
    item = api(fleet, "/items/artist-2")
    assert item["state"] == "found" and item["downloads"] == []
    assert item["metadata_tasks"][0]["known_count"] == 30 and item["totals"]["known"] == 30
    fetched = file_requests(fleet)
    assert not any(path.split("/")[-1].split(".")[0] in {str(n) for n in posts} for path in fetched), fetched
    assert len(fetched) == 30  # artist_3's posts, which nobody had
    assert api(fleet, "/stats")["archive"]["known_skipped"] == 30


def test_a_post_whose_md5_is_known_ends_duplicate_with_no_request_for_its_file(fleet):
    known = CATALOG.post(65)  # artist_3
    answer = post_known(fleet, f"md5\n{CATALOG.md5(known)}\n".encode())
    assert answer.status_code == 200, answer.text
    fleet.import_csv("key,query,sites\nartist-3,artist_3,demo\n")
    fleet.drain("metadata", "100")
    fleet.drain("download", "demo", "100")
    downloads = {d["remote_id"]: d for d in api(fleet, "/items/artist-3")["downloads"]}
    assert downloads["65"]["state"] == "duplicate" and downloads["65"]["files"] == []
    assert sum(d["state"] == "done" for d in downloads.values()) == 29
    fetched = file_requests(fleet)
    assert f"/data/{known.file_name}" not in fetched and len(fetched) == 29


def test_resized_copies_on_the_demo_site_are_found_and_unrelated_images_are_not(fleet):
    fleet.import_csv("key,query,sites\ndupes,dupes,demo\n")
    fleet.drain("metadata", "100")
    fleet.drain("download", "demo", "100")
    files = {f["remote_id"]: f for f in api(fleet, "/files", site="demo", limit=1000)["files"]}
    originals = [post.id for post in CATALOG.search(["dupes"]) if post.id % 10 == 1]
    assert len(originals) == 24 and len(files) == 48
    for original in originals:
        found = api(fleet, "/files/similar", file=files[str(original)]["id"], distance=10)["files"]
        assert [f["remote_id"] for f in found] == [str(original + 1)], (original, found)
        assert found[0]["distance"] <= 10
    clusters = api(fleet, "/duplicates", kind="similar", distance=10, limit=100)["groups"]
    assert sorted(sorted(f["remote_id"] for f in group["files"]) for group in clusters) == sorted(
        sorted([str(n), str(n + 1)]) for n in originals
    )
    by_dhash = api(fleet, "/files/similar", file=files["11"]["id"], hash="dhash", distance=10)["files"]
    assert [f["remote_id"] for f in by_dhash] == ["12"]
