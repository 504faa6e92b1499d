"""The coordinator's side of the file store, on both databases: what a submit may say about
where a file lives, what ``upload-existing`` tells it, and reading a file back (a
presigned redirect, or the bytes streamed) from a real SeaweedFS."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests

from common.file_store import object_key
from tests.helpers import SHA, file_record

KEY = object_key("archive", SHA)


def done(task_id: int, *records) -> dict:
    return {"task_id": task_id, "status": "done", "files": list(records)}


def lease_one(actions) -> tuple[str, int]:
    [task_id] = actions.add_download_tasks("booru", 1)
    lease = actions.lease("download", 1, site="booru").get_json()
    return lease["lease_id"], task_id


def test_a_done_download_records_its_store_key_and_whether_the_node_kept_it(actions, client):
    lease_id, task_id = lease_one(actions)
    answer = actions.submit(lease_id, [done(task_id, file_record(store_key=KEY, kept=False))])
    assert answer.status_code == 200, answer.get_json()
    [record] = client.get("/files", headers=actions.headers()).get_json()["files"]
    assert (record["store_key"], record["on_node"]) == (KEY, False)


def test_an_older_nodes_file_has_no_store_key_and_stays_on_its_node(actions, client):
    lease_id, task_id = lease_one(actions)
    assert actions.submit(lease_id, [done(task_id, file_record())]).status_code == 200
    [record] = client.get("/files", headers=actions.headers()).get_json()["files"]
    assert (record["store_key"], record["on_node"]) == (None, True)
    answer = client.get(f"/files/{record['id']}/content", headers=actions.headers())
    assert answer.status_code == 404 and "only on node 'node1'" in answer.get_json()["message"]


@pytest.mark.parametrize(
    ("extra", "field", "problem"),
    [
        ({"store_key": object_key("archive", "cd" * 32)}, "store_key", "object of this sha256"),
        ({"store_key": f"../sha256/ab/ab/{SHA}"}, "store_key", "object of this sha256"),
        ({"kept": False}, "kept", "must be in the file store"),
    ],
)
def test_a_submit_cannot_name_another_files_object_or_lose_a_file(actions, extra, field, problem):
    lease_id, task_id = lease_one(actions)
    answer = actions.submit(lease_id, [done(task_id, file_record(**extra))])
    assert answer.status_code == 400
    assert f"results.0.files.0.{field}" in answer.get_json()["message"] and problem in answer.get_json()["message"]
    assert actions.task(task_id).state == "leased"  # nothing recorded


def test_upload_existing_updates_only_the_callers_own_records(actions, client):
    lease_id, task_id = lease_one(actions)
    assert actions.submit(lease_id, [done(task_id, file_record())]).status_code == 200
    moved = {"task_id": task_id, "path": "booru/1.png", "sha256": SHA, "store_key": KEY, "kept": False}
    other = client.post("/files/stored", json={"files": [moved]}, headers=actions.headers("node2"))
    assert other.get_json() == {"recorded": 0, "unknown": 1}
    mine = client.post("/files/stored", json={"files": [moved]}, headers=actions.headers())
    assert mine.get_json() == {"recorded": 1, "unknown": 0}
    [record] = client.get("/files", headers=actions.headers()).get_json()["files"]
    assert (record["store_key"], record["on_node"]) == (KEY, False)
    bad = client.post("/files/stored", json={"files": [{**moved, "store_key": "elsewhere"}]}, headers=actions.headers())
    assert bad.status_code == 400 and "files.0.store_key" in bad.get_json()["message"]


@pytest.mark.e2e
@pytest.mark.parametrize("serve", ["redirect", "stream"])
def test_content_comes_from_the_store_as_a_redirect_or_streamed(
    app_factory, actions, seaweedfs, bucket, monkeypatch, serve
):
    for name, value in seaweedfs.env(bucket).items():
        monkeypatch.setenv(name, value)
    app = app_factory(FILE_STORE=f"s3://{bucket}/archive", FILE_STORE_ENDPOINT=seaweedfs.s3_url, FILE_STORE_SERVE=serve)
    client = app.test_client()
    actions.app, actions.client = app, client
    data = os.urandom(30_000)
    sha = hashlib.sha256(data).hexdigest()
    key = object_key("archive", sha)
    seaweedfs.client().put_object(Bucket=bucket, Key=key, Body=data)
    lease_id, task_id = lease_one(actions)
    record = {"path": 'booru/a "b".png', "size": len(data), "sha256": sha, "mime": "image/png", "store_key": key}
    assert actions.submit(lease_id, [done(task_id, record)]).status_code == 200
    file_id = client.get("/files", headers=actions.headers()).get_json()["files"][0]["id"]
    answer = client.get(f"/files/{file_id}/content", headers=actions.headers())
    if serve == "redirect":
        assert answer.status_code == 302
        fetched = requests.get(answer.headers["Location"], timeout=30)
        assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() == sha
        assert 'filename="a _b_.png"' in fetched.headers["Content-Disposition"]
    else:
        assert answer.status_code == 200 and hashlib.sha256(answer.data).hexdigest() == sha
        assert answer.headers["Content-Type"] == "image/png" and answer.headers["ETag"] == f'"{sha}"'
        assert answer.headers["Content-Disposition"] == 'attachment; filename="a _b_.png"'
    assert client.get("/files/999999/content", headers=actions.headers()).status_code == 404
    assert client.get(f"/files/{file_id}/content").status_code == 401


def test_content_without_a_configured_store_is_a_503_naming_the_setting(actions, client):
    lease_id, task_id = lease_one(actions)
    assert actions.submit(lease_id, [done(task_id, file_record(store_key=KEY))]).status_code == 200
    file_id = client.get("/files", headers=actions.headers()).get_json()["files"][0]["id"]
    answer = client.get(f"/files/{file_id}/content", headers=actions.headers())
    assert answer.status_code == 503 and "FILE_STORE" in answer.get_json()["message"]


def test_files_fetch_names_each_file_it_cannot_fetch_and_exits_1(actions, runner, tmp_path):
    lease_id, task_id = lease_one(actions)
    assert actions.submit(lease_id, [done(task_id, file_record())]).status_code == 200
    answer = runner.invoke(args=["files", "fetch", "1", "999", "--to", str(tmp_path / "out")])
    assert answer.exit_code == 1
    assert answer.stderr.splitlines() == [
        "error: file 1: file 1 is not in the file store: it is only on node 'node1' at booru/1.png",
        "error: file 999: no file 999",
    ]
    assert list((tmp_path / "out").iterdir()) == []
