"""The archive catalogue over HTTP on both databases: items and files with keyset pages,
exact duplicates, reverse image search (equal to brute force), anchors that keep known
posts from being fetched, and the errors bad input gets."""

from __future__ import annotations

import hashlib
import random
import sqlite3

import pytest
from sqlalchemy import select

from server.counts import rebuild
from server.database import utcnow
from tests.helpers import file_record


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def md5(n: int) -> str:
    return hashlib.md5(str(n).encode()).hexdigest()


def resolve(actions, found_by_key: dict[str, list[dict]], who: str = "node1") -> dict:
    """Lease the metadata tasks of booru and submit these found posts per item key."""
    lease = actions.lease("metadata", n=100, who=who).get_json()
    results = []
    for task in lease["tasks"]:
        found = found_by_key.get(task["item"]["key"], []) if task["site"] == "booru" else []
        if task["site"] == "booru":
            results.append({"task_id": task["id"], "status": "done", "found": found})
        else:
            results.append({"task_id": task["id"], "status": "failed", "error_class": "permanent", "error": "no"})
    answer = actions.submit(lease["lease_id"], results, who=who)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def post(n: int, **metadata) -> dict:
    return {"site": "booru", "remote_id": n, "metadata": {"id": n, **metadata}}


def download_all(actions, files_for, who: str = "node1") -> list[int]:
    """Lease every queued booru download and submit the files ``files_for(task)`` gives."""
    done = []
    while True:
        lease = actions.lease("download", n=100, site="booru", who=who).get_json()
        if not lease["tasks"]:
            return done
        results = [{"task_id": t["id"], "status": "done", "files": files_for(t)} for t in lease["tasks"]]
        assert actions.submit(lease["lease_id"], results, who=who).status_code == 200
        done += [t["id"] for t in lease["tasks"]]


def get(client, actions, path, status=200, **query):
    answer = client.get(path, query_string=query, headers=actions.headers())
    assert answer.status_code == status, answer.get_json()
    return answer.get_json()


# ------------------------------------------------------------------------ items


def test_items_list_filters_and_pages_without_missing_or_repeating_rows(client, actions):
    actions.import_csv("query,title,sites\n" + "".join(f"tag{n},Title {n},booru\n" for n in range(1, 26)))
    seen, cursor = [], None
    added = 0
    while True:
        page = get(client, actions, "/items", limit=7, **({"cursor": cursor} if cursor else {}))
        seen += [item["key"] for item in page["items"]]
        if added < 2:  # rows arriving between pages come at the end, once
            actions.import_csv(f"query,sites\nlate{added},booru\n")
            added += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"query:tag{n}" for n in range(1, 26)] + ["query:late0", "query:late1"]

    by_text = get(client, actions, "/items", q="TITLE 1")  # case-insensitive, in the title
    assert [i["key"] for i in by_text["items"]] == [
        f"query:tag{n}" for n in (1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19)
    ]
    assert get(client, actions, "/items", q="%")["items"] == []  # LIKE's wildcards are literal
    assert len(get(client, actions, "/items", site="booru", limit=1000)["items"]) == 27
    assert get(client, actions, "/items", site="tube")["items"] == []
    assert len(get(client, actions, "/items", state="pending", limit=1000)["items"]) == 27
    assert get(client, actions, "/items", state="found")["items"] == []


def test_an_item_shows_its_tasks_the_posts_it_found_and_their_files(client, actions):
    actions.import_csv("query,sites\ncats,booru\nkittens,booru\n")
    resolve(actions, {"query:cats": [post(1), post(2)], "query:kittens": [post(2), post(3)]})
    download_all(actions, lambda t: [file_record(f"booru/{t['remote_id']}.png", 100, sha256=sha(int(t["remote_id"])))])

    cats = get(client, actions, "/items/query:cats")
    assert cats["state"] == "found"
    [metadata] = cats["metadata_tasks"]
    assert metadata["site"] == "booru" and metadata["state"] == "done" and metadata["found_count"] == 2
    assert metadata["found_at"] is not None
    assert [(d["remote_id"], d["state"]) for d in cats["downloads"]] == [("1", "done"), ("2", "done")]
    assert [f["path"] for d in cats["downloads"] for f in d["files"]] == ["booru/1.png", "booru/2.png"]
    assert cats["totals"] == {
        "found": 2,
        "known": 0,
        "downloads": {"done": 2},
        "files": 2,
        "bytes": 200,
        "gone_upstream": 0,
    }
    # post 2 was found by both items: one task, listed under each
    kittens = get(client, actions, "/items/query:kittens", downloads_limit=1)
    assert [d["remote_id"] for d in kittens["downloads"]] == ["2"]
    rest = get(client, actions, "/items/query:kittens", downloads_cursor=kittens["next_downloads_cursor"])
    assert [d["remote_id"] for d in rest["downloads"]] == ["3"] and rest["next_downloads_cursor"] is None

    missing = get(client, actions, "/items/query:dogs", status=404)
    assert "query:dogs" in missing["message"]
    assert client.get("/items").status_code == 401  # the catalogue is for key holders


# ------------------------------------------------------------------------ files


def test_files_are_found_by_hash_site_node_item_mime_and_time(client, actions):
    actions.import_csv("query,sites\ncats,booru\ndogs,booru\n")
    resolve(actions, {"query:cats": [post(n) for n in range(1, 6)], "query:dogs": [post(9)]})

    def files_for(task):
        n = int(task["remote_id"])
        mime = "video/mp4" if n == 5 else "image/png"
        return [file_record(f"booru/{n}.bin", n, sha256=sha(n % 4), md5=md5(n % 4), mime=mime)]

    download_all(actions, files_for, who="node1")
    everything = get(client, actions, "/files")["files"]
    assert len(everything) == 6 and [f["id"] for f in everything] == sorted(f["id"] for f in everything)
    one = everything[0]
    assert one["node"] == "node1" and one["site"] == "booru" and one["item"] in ("query:cats", "query:dogs")
    assert get(client, actions, f"/files/{one['id']}") == one

    assert sorted(f["remote_id"] for f in get(client, actions, "/files", sha256=sha(1))["files"]) == ["1", "5", "9"]
    assert sorted(f["remote_id"] for f in get(client, actions, "/files", md5=md5(2).upper())["files"]) == ["2"]
    assert sorted(f["remote_id"] for f in get(client, actions, "/files", item="query:dogs")["files"]) == ["9"]
    assert [f["remote_id"] for f in get(client, actions, "/files", mime="video/")["files"]] == ["5"]
    assert len(get(client, actions, "/files", mime="image/png")["files"]) == 5
    assert len(get(client, actions, "/files", site="booru")["files"]) == 6
    assert get(client, actions, "/files", site="tube")["files"] == []
    assert len(get(client, actions, "/files", node="node1")["files"]) == 6
    assert get(client, actions, "/files", node="nobody")["files"] == []
    created = one["created_at"]
    assert len(get(client, actions, "/files", since=created)["files"]) == 6
    assert get(client, actions, "/files", until=created)["files"] == []
    get(client, actions, "/files/999999", status=404)


def test_file_pages_miss_and_repeat_nothing_while_files_arrive(client, actions):
    actions.import_csv("query,sites\ncats,booru\n")
    resolve(actions, {"query:cats": [post(n) for n in range(1, 41)]})
    lease = actions.lease("download", n=40, site="booru").get_json()
    tasks = lease["tasks"]
    first, later = tasks[:20], tasks[20:]

    def submit(batch):
        results = [
            {"task_id": t["id"], "status": "done", "files": [file_record(f"booru/{t['remote_id']}.png")]} for t in batch
        ]
        assert actions.submit(lease["lease_id"], results).status_code == 200

    submit(first)
    seen, cursor, step = [], None, 0
    while True:
        page = get(client, actions, "/files", limit=6, **({"cursor": cursor} if cursor else {}))
        seen += [f["id"] for f in page["files"]]
        if step == 1:
            submit(later)
        step += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 40 and len(set(seen)) == 40 and seen == sorted(seen)


# ------------------------------------------------------------ exact duplicates


def test_exact_duplicates_are_grouped_by_content_most_wasted_first(client, actions):
    actions.import_csv("query,sites\ncats,booru\n")
    resolve(actions, {"query:cats": [post(n) for n in range(1, 8)]})
    sizes = {1: 10, 2: 10, 3: 10, 4: 500, 5: 500, 6: 7, 7: 8}
    content = {1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: "c", 7: "d"}
    download_all(
        actions,
        lambda t: [
            file_record(f"booru/{t['remote_id']}", sizes[int(t["remote_id"])], sha256=sha(content[int(t["remote_id"])]))
        ],
    )
    groups = get(client, actions, "/duplicates", kind="exact")["groups"]
    assert [(g["sha256"], g["copies"], g["wasted"]) for g in groups] == [(sha("b"), 2, 500), (sha("a"), 3, 20)]
    assert sorted(f["remote_id"] for f in groups[1]["files"]) == ["1", "2", "3"]
    first = get(client, actions, "/duplicates", kind="exact", limit=1)
    second = get(client, actions, "/duplicates", kind="exact", limit=1, cursor=first["next_cursor"])
    assert [g["sha256"] for g in first["groups"] + second["groups"]] == [sha("b"), sha("a")]
    assert second["next_cursor"] is None

    archive = get(client, actions, "/stats")["archive"]
    assert archive["files"] == 7 and archive["bytes"] == sum(sizes.values())
    assert archive["unique_files"] == 4 and archive["unique_bytes"] == 10 + 500 + 7 + 8


# ------------------------------------------------------------- near duplicates


def _random_files(actions, count: int, seed: int, start: int = 1) -> dict[int, int]:
    """Download tasks with one image file each, with random phashes clustered around a few
    centres (so there is something within small distances); returns file id -> phash."""
    from server.extensions import db
    from server.models import File

    rng = random.Random(seed)
    centres = [rng.getrandbits(64) for _ in range(8)]
    hashes = []
    for _ in range(count):
        value = rng.choice(centres)
        for _ in range(rng.randrange(0, 14)):
            value ^= 1 << rng.randrange(64)
        hashes.append(value if rng.random() < 0.7 else rng.getrandbits(64))
    ids = actions.add_download_tasks("booru", count, start=start)
    rows = [
        {
            "task_id": task_id,
            "client_id": 1,
            "path": f"booru/{task_id}",
            "size": 1,
            "sha256": sha(task_id),
            "phash": f"{value:016x}",
            "dhash": f"{value ^ 0xFFFF:016x}",
        }
        for task_id, value in zip(ids, hashes, strict=True)
    ]
    with actions.context():
        db.session.execute(File.__table__.insert(), rows)
        db.session.commit()
        rebuild(db.session, utcnow())  # written straight into the table: counted again
        rows = db.session.execute(select(File.id, File.phash).where(File.task_id.in_(ids))).all()
        return {row.id: int(row.phash, 16) for row in rows}


def test_similar_search_equals_brute_force_on_random_hashes(client, actions):
    from server.similar import brute_force

    by_file = _random_files(actions, 600, seed=7)
    pairs = list(by_file.items())
    rng = random.Random(11)
    for _ in range(12):
        query = rng.choice(pairs)[1] ^ (1 << rng.randrange(64)) if rng.random() < 0.8 else rng.getrandbits(64)
        for distance in (0, 4, 8, 12, 16):
            answer = get(client, actions, "/files/similar", phash=f"{query:016x}", distance=distance, limit=1000)
            got = [(f["id"], f["distance"]) for f in answer["files"]]
            assert got == [(m.file_id, m.distance) for m in brute_force(pairs, query, distance)]
    some_file, value = pairs[3]
    by_file_answer = get(client, actions, "/files/similar", file=some_file, distance=10, limit=1000)
    expected = [(m.file_id, m.distance) for m in brute_force(pairs, value, 10) if m.file_id != some_file]
    assert [(f["id"], f["distance"]) for f in by_file_answer["files"]] == expected
    dhash = get(client, actions, "/files/similar", dhash=f"{value ^ 0xFFFF:016x}", distance=10, limit=1000)
    assert [(f["id"], f["distance"]) for f in dhash["files"]] == [
        (m.file_id, m.distance) for m in brute_force(pairs, value, 10)
    ]
    assert len(get(client, actions, "/files/similar", phash=f"{value:016x}", distance=16, limit=3)["files"]) == 3


def test_similar_clusters_link_chains_of_near_duplicates(client, actions):
    from server.similar import brute_force

    by_file = _random_files(actions, 300, seed=3)
    pairs = list(by_file.items())
    seen: set[int] = set()
    cursor, groups = None, []
    while True:
        page = get(
            client,
            actions,
            "/duplicates",
            kind="similar",
            distance=4,
            limit=5,
            **({"cursor": cursor} if cursor else {}),
        )
        groups += page["groups"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    for group in groups:
        members = {f["id"] for f in group["files"]}
        assert not members & seen and len(members) > 1 and group["first"] == min(members)
        seen |= members
        for member in members:  # closed under "within 4 bits": every neighbour is in the group
            assert {m.file_id for m in brute_force(pairs, by_file[member], 4)} <= members
    lonely = [f for f, v in pairs if len(brute_force(pairs, v, 4)) == 1]
    assert seen.isdisjoint(lonely) and len(seen) + len(lonely) == len(pairs)


def test_a_file_recorded_by_another_process_is_found(app_factory, actions, client, backend):
    """Two apps (as two gunicorn workers or hosts) on one database: what one records the
    other finds at its next refresh."""
    from server import context
    from server.catalogue import similar_files
    from server.extensions import db

    other = app_factory(SIMILAR_REFRESH_SECONDS=0)
    by_file = _random_files(actions, 20, seed=1)
    with other.app_context():
        index = context.hash_index("phash")
        value = next(iter(by_file.values()))
        assert len(similar_files(db.session, index, value=value, distance=0)) >= 1
        before = len(index)
    more = _random_files(actions, 20, seed=2, start=100)
    with other.app_context():
        found = similar_files(db.session, index, value=next(iter(more.values())), distance=0)
        assert len(index) == before + 20 and {f["id"] for f in found} & set(more)


def test_bad_similar_queries_are_400_naming_the_field(client, actions):
    for query, field in (
        ({"phash": "xyz"}, "phash"),
        ({"phash": "0" * 15}, "phash"),
        ({"phash": "0" * 16, "distance": 17}, "distance"),
        ({"phash": "0" * 16, "distance": -1}, "distance"),
        ({}, "phash"),
        ({"phash": "0" * 16, "file": 1}, "phash"),
        ({"phash": "0" * 16, "hash": "dhash"}, "hash"),
    ):
        answer = client.get("/files/similar", query_string=query, headers=actions.headers())
        assert answer.status_code == 400, (query, answer.get_json())
        assert field in str(answer.get_json()["errors"]), (query, answer.get_json())
    assert client.get("/duplicates?kind=nearly", headers=actions.headers()).status_code == 400
    assert client.get("/files?sha256=12", headers=actions.headers()).status_code == 400
    assert client.get("/files?cursor=abc", headers=actions.headers()).status_code == 400
    assert client.get("/duplicates?cursor=5:zz", headers=actions.headers()).status_code == 400


# ------------------------------------------------------------------ anchors


def upload_known(client, actions, body: bytes, status: int = 200, **query):
    answer = client.post("/known", data=body, query_string=query, headers=actions.headers("admin", admin=True))
    assert answer.status_code == status, answer.get_json()
    return answer.get_json()


def test_known_posts_become_no_download_task_and_are_counted(client, actions):
    actions.import_csv("query,sites\ncats,booru\n")
    csv_text = (
        "site,remote_id,url,md5\n"
        "booru,2,,\n"
        ",,http://booru.test/post/show/3,\n"  # by URL: post_url makes the found post's URL
        f",,,{md5(4)}\n"
    )
    report = upload_known(client, actions, csv_text.encode(), source="old-archive.csv")
    assert report == {"source": "old-archive.csv", "format": "csv", "rows": 3, "added": 3, "already_known": 0}
    assert upload_known(client, actions, csv_text.encode())["already_known"] == 3  # again: nothing new

    answer = resolve(actions, {"query:cats": [post(1), post(2), post(3), post(4, md5=md5(4)), post(5)]})
    assert answer["download_tasks_created"] == 3  # 1 and 5, and 4 already a duplicate
    assert actions.count_tasks(kind="download", state="queued") == 2
    [duplicate] = [d for d in get(client, actions, "/items/query:cats")["downloads"] if d["state"] == "duplicate"]
    assert duplicate["remote_id"] == "4" and duplicate["duplicate_of"] is None  # only an anchor had it
    item = get(client, actions, "/items/query:cats")
    assert item["totals"]["known"] == 2 and item["metadata_tasks"][0]["known_count"] == 2
    stats = get(client, actions, "/stats")
    assert stats["archive"]["known_skipped"] == 2 and stats["tasks"]["download"]["duplicate"] == 1
    assert stats["known"] == {"posts": 1, "urls": 1, "sha256": 0, "md5": 1}


def test_a_post_whose_md5_the_archive_holds_ends_duplicate_of_that_file(client, actions):
    actions.import_csv("query,sites\ncats,booru\n")
    resolve(actions, {"query:cats": [post(1, md5=md5(1))]})
    download_all(actions, lambda t: [file_record("booru/1.png", 5, sha256=sha(1), md5=md5(1))])
    [held] = get(client, actions, "/files")["files"]
    actions.import_csv("query,sites\ndogs,booru\n")
    # another post (another item) carries the same md5: the archive has it, nobody fetches it
    resolve(actions, {"query:dogs": [post(77, md5=md5(1).upper()), post(78, sha256=sha(1)), post(79, md5=md5(2))]})
    states = {d["remote_id"]: d for d in get(client, actions, "/items/query:dogs")["downloads"]}
    assert states["77"]["state"] == "duplicate" and states["77"]["duplicate_of"] == held["id"]
    assert states["78"]["state"] == "duplicate" and states["78"]["duplicate_of"] == held["id"]
    assert states["79"]["state"] == "queued"
    lease = actions.lease("download", n=100, site="booru").get_json()
    assert [t["remote_id"] for t in lease["tasks"]] == ["79"]


def test_skip_known_hashes_can_be_turned_off_per_site(app_factory, actions):
    from tests.helpers import TEST_SITES

    sites = {**TEST_SITES, "booru": {**TEST_SITES["booru"], "skip_known_hashes": False}}
    app = app_factory(SITES=sites)
    client = app.test_client()
    from tests.helpers import Actions

    actions = Actions(app, client)
    actions.import_csv("query,sites\ncats,booru\n")
    upload_known(client, actions, f"md5\n{md5(1)}\n".encode())
    resolve(actions, {"query:cats": [post(1, md5=md5(1))]})
    assert actions.count_tasks(kind="download", state="queued") == 1


def test_a_gallery_dl_archive_names_posts_by_their_trailing_id(client, actions, tmp_path):
    archive = tmp_path / "archive.sqlite3"
    with sqlite3.connect(archive) as connection:
        connection.execute("CREATE TABLE archive (entry TEXT PRIMARY KEY) WITHOUT ROWID")
        connection.executemany(
            "INSERT INTO archive VALUES (?)", [("booru11",), ("boorut_cats_dogs_12",), ("boorup_5_13",)]
        )
    report = upload_known(client, actions, archive.read_bytes(), site="booru", source="archive.sqlite3")
    assert report["format"] == "gallery-dl archive" and report["added"] == 3
    actions.import_csv("query,sites\ncats,booru\n")
    resolve(actions, {"query:cats": [post(11), post(12), post(13), post(14)]})
    assert [d["remote_id"] for d in get(client, actions, "/items/query:cats")["downloads"]] == ["14"]


@pytest.mark.parametrize(
    ("body", "query", "reason"),
    [
        (b"site,remote_id\nbooru,1\nnowhere,2\n", {}, "line 3: unknown site 'nowhere'"),
        (b"remote_id\n1\n", {}, "line 2: remote_id needs a site"),
        (b"md5\nabc\n", {}, "line 2: md5 must be 32 hexadecimal digits"),
        (b"sha256,md5\n" + b"a" * 64 + b',\n,\n"x\n', {}, "line 4: not CSV"),
        (b"url\nftp://x/y\n", {}, "line 2: url must be an http(s) URL"),
        (b"colour\nred\n", {}, "line 1: unknown column(s) colour"),
        (b"\xff\xfe\x00garbage", {}, "not UTF-8"),
        (b"site,remote_id\n", {"site": "nowhere"}, "unknown site 'nowhere'"),
        (b"SQLite format 3\x00" + b"\x00" * 100, {"site": "booru"}, "not a readable gallery-dl archive"),
        (b"SQLite format 3\x00", {}, "name the site"),
    ],
)
def test_bad_anchor_files_are_400_with_line_and_reason_and_nothing_imported(client, actions, body, query, reason):
    from server.extensions import db
    from server.models import KnownFile

    answer = upload_known(client, actions, body, status=400, **query)
    assert reason in answer["message"], answer
    with actions.context():
        assert db.session.scalar(select(KnownFile.id)) is None


def test_an_archive_that_is_not_gallery_dl_s_is_refused(client, actions, tmp_path):
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE things (x)")
        connection.execute("CREATE VIEW archive AS SELECT x AS entry FROM things")
    answer = upload_known(client, actions, other.read_bytes(), status=400, site="booru")
    assert "no table named archive" in answer["message"]
    assert client.post("/known", data=b"md5\n", headers=actions.headers()).status_code == 403  # admins only


def test_import_known_cli_exit_status_and_report(runner, tmp_path, ctx):
    good = tmp_path / "known.csv"
    good.write_text(f"sha256\n{sha(1)}\n{sha(2)}\n")
    result = runner.invoke(args=["import-known", str(good)])
    assert result.exit_code == 0 and "2 anchor(s) added" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text(f"sha256\n{sha(3)}\nnope\n")
    result = runner.invoke(args=["import-known", str(bad)])
    assert result.exit_code == 1 and "line 3: sha256 must be 64 hexadecimal digits" in result.output
    result = runner.invoke(args=["import-known", str(good), "--site", "nowhere"])
    assert result.exit_code == 1 and "unknown site" in result.output


def test_the_index_finds_rows_that_commit_late_below_its_highest_id(ctx, backend):
    """A row whose id is below the highest one read (its transaction took the id first and
    committed later) is found at a later refresh; a gap that never fills is dropped."""
    from server.extensions import db
    from server.models import File
    from server.similar import HashIndex

    clock = [0.0]
    index = HashIndex("phash", refresh_seconds=0, gap_seconds=60, clock=lambda: clock[0])

    def add(*ids):
        rows = [
            {"id": i, "task_id": i, "client_id": 1, "path": f"p{i}", "size": 1, "sha256": sha(i), "phash": f"{i:016x}"}
            for i in ids
        ]
        db.session.execute(File.__table__.insert(), rows)
        db.session.commit()
        rebuild(db.session, utcnow())  # written straight into the table: counted again

    def found(i):
        index.ensure_fresh(db.session)
        return [m.file_id for m in index.search(i, 0)] == [i]

    add(1, 3)  # 2 is a gap within the very first read
    assert found(3) and len(index) == 2
    add(2)
    assert found(2) and len(index) == 3
    add(6)  # 4 and 5 are gaps now
    assert found(6) and not found(4)
    add(4)
    assert found(4) and len(index) == 5
    clock[0] = 61  # 5 never came: forgotten, not asked for forever
    index.ensure_fresh(db.session)
    add(5)
    index.ensure_fresh(db.session)
    assert not [m for m in index.search(5, 0)]

    if backend == "postgresql":  # the real thing: two open transactions, ids from the sequence
        from sqlalchemy import text

        db.session.execute(text("SELECT setval(pg_get_serial_sequence('files', 'id'), 100)"))
        db.session.commit()
        columns = "(task_id, client_id, path, size, sha256, phash, created_at)"
        values = f"VALUES (1, 1, :path, 1, '{sha(0)}', :phash, now()) RETURNING id"
        with db.engine.connect() as early, db.engine.connect() as later:
            early_id = early.execute(text(f"INSERT INTO files {columns} {values}"), {"path": "e", "phash": "e" * 16})
            early_id = early_id.scalar()
            later_id = later.execute(text(f"INSERT INTO files {columns} {values}"), {"path": "l", "phash": "f" * 16})
            later_id = later_id.scalar()
            later.commit()
            assert later_id > early_id
            index.ensure_fresh(db.session)
            assert [m.file_id for m in index.search(int("f" * 16, 16), 0)] == [later_id]
            assert index.search(int("e" * 16, 16), 0) == []
            early.commit()
        index.ensure_fresh(db.session)
        assert [m.file_id for m in index.search(int("e" * 16, 16), 0)] == [early_id]
        rebuild(db.session, utcnow())  # written straight into the table: counted again


def test_catalogue_commands_print_tab_separated_rows_or_json(runner, client, actions):
    import json

    actions.import_csv("key,query,title,sites\ncats,cats,Cats!,booru\n")
    resolve(actions, {"cats": [post(1), post(2)]})
    download_all(
        actions,
        lambda t: [
            file_record(
                f"booru/{t['remote_id']}.png",
                7,
                sha256=sha(1),
                md5=md5(1),
                phash="0" * 15 + {"1": "1", "2": "3"}[t["remote_id"]],
            )
        ],
    )
    shown = runner.invoke(args=["items", "show", "cats"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == "cats\tfound\tCats!" and "found 2 post(s), 0 known, 2 file(s), 14 bytes" in lines[1]
    assert [line.split("\t")[3] for line in lines if line.startswith("download\t")] == ["1", "2"]
    as_json = json.loads(runner.invoke(args=["items", "show", "cats", "--json"]).output)
    assert as_json["totals"]["files"] == 2
    missing = runner.invoke(args=["items", "show", "dogs"])
    assert missing.exit_code == 1 and missing.output.strip() == "error: no item 'dogs'"

    found = runner.invoke(args=["files", "find", "--sha256", sha(1)])
    rows = [line.split("\t") for line in found.stdout.splitlines()]
    assert found.exit_code == 0 and [row[2] for row in rows] == ["1", "2"] and rows[0][4] == "node1"
    assert [
        json.loads(line)["md5"]
        for line in runner.invoke(args=["files", "find", "--md5", md5(1), "--json"]).output.splitlines()
    ] == [md5(1)] * 2
    bad = runner.invoke(args=["files", "find", "--sha256", "zz"])
    assert bad.exit_code == 1 and "--sha256: must be 64 hexadecimal digits" in bad.output

    near = runner.invoke(args=["files", "similar", "--phash", "0" * 15 + "1", "--distance", "1"])
    assert near.exit_code == 0 and [
        line.split("\t")[:1] + line.split("\t")[3:4] for line in near.output.splitlines()
    ] == [["0", "1"], ["1", "2"]]
    assert runner.invoke(args=["files", "similar", "--phash", "xyz"]).exit_code == 1
    assert runner.invoke(args=["files", "similar", "--distance", "17", "--phash", "0" * 16]).exit_code == 2

    groups = runner.invoke(args=["duplicates"])
    assert groups.exit_code == 0 and groups.output.splitlines()[0] == f"{sha(1)}\t2 copies\t7 bytes wasted"
    clusters = runner.invoke(args=["duplicates", "--kind", "similar", "--distance", "1", "--json"])
    [cluster] = [json.loads(line) for line in clusters.output.splitlines()]
    assert sorted(f["remote_id"] for f in cluster["files"]) == ["1", "2"]


def test_a_scan_shared_between_threads_equals_brute_force(monkeypatch):
    """Big indexes are scanned in one share per core; small blocks and a low threshold make
    a small one take that path too."""
    import numpy as np

    import server.similar as similar

    monkeypatch.setattr(similar, "BLOCK", 128)
    monkeypatch.setattr(similar, "PARALLEL_FROM", 1)
    monkeypatch.setattr(similar, "_SCANNERS", 3)
    rng = random.Random(5)
    values = [rng.getrandbits(64) for _ in range(5000)]
    values += [values[7] ^ (1 << bit) for bit in range(10)]
    index = similar.HashIndex("phash")
    index.load(np.arange(1, len(values) + 1, dtype=np.int64), np.array(values, dtype=np.uint64))
    pairs = list(enumerate(values, 1))
    for query in (values[7], values[4000] ^ 0xFF, rng.getrandbits(64)):
        for distance in (0, 3, 8, 16):
            assert index.search(query, distance) == similar.brute_force(pairs, query, distance)


def test_a_cursor_that_is_not_one_we_gave_out_is_a_400_naming_it(client, actions):
    """Found by fuzzing: "³" is a digit to str.isdigit but not to int."""
    for path, cursor in [
        ("/items", "³"),
        ("/items", "٣"),
        ("/items", "9999999999999999999"),  # beyond a BIGINT
        ("/duplicates", "³:" + "a" * 64),
    ]:
        answer = client.get(path, query_string={"cursor": cursor}, headers=actions.headers())
        assert answer.status_code == 400, (path, cursor, answer.get_json())
        assert "cursor" in answer.get_json()["message"]
    assert get(client, actions, "/items", cursor="5")["items"] == []
