"""The HTTP API through the Flask test client: status codes, error shape, nothing changed on 400."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from common.version import CLIENT_VERSION_HEADER
from tests.helpers import file_record


def snapshot(app):
    """Everything a bad request must leave as it was."""
    from server.extensions import db
    from server.models import File, Item, Lease, SiteState, Task

    with app.app_context():
        tasks = db.session.execute(
            select(Task.id, Task.state, Task.attempts, Task.lease_id, Task.available_at).order_by(Task.id)
        ).all()
        counts = [
            db.session.scalar(select(func.count()).select_from(model)) for model in (Item, Lease, File, SiteState)
        ]
        db.session.commit()
    return tasks, counts


def assert_error(response, status: int, field_path: tuple[str, ...] | None = None):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == status and body["status"] and body["message"], body
    if field_path is not None:
        node = body["errors"]
        for part in field_path:
            assert part in node, (field_path, body)
            node = node[part]
    return body


@pytest.fixture
def leased(actions):
    """One download lease of two tasks held by node1."""
    actions.add_download_tasks("booru", 2)
    response = actions.lease("download", 2, site="booru")
    assert response.status_code == 201
    return response.get_json()


LEASE_CASES = [
    ({"kind": "metadata", "n": 0}, ("json", "n")),
    ({"kind": "metadata", "n": 101}, ("json", "n")),
    ({"kind": "metadata", "n": -1}, ("json", "n")),
    ({"kind": "metadata", "n": "abc"}, ("json", "n")),
    ({"kind": "metadata", "n": "5"}, ("json", "n")),
    ({"kind": "metadata", "n": 2.5}, ("json", "n")),
    ({"kind": "metadata", "n": True}, ("json", "n")),
    ({"kind": "metadata"}, ("json", "n")),
    ({"n": 5}, ("json", "kind")),
    ({"kind": "uploads", "n": 5}, ("json", "kind")),
    ({"kind": "download", "n": 5}, ("json", "site")),
    ({"kind": "download", "n": 5, "site": "nowhere"}, ("json", "site")),
    ({"kind": "metadata", "n": 5, "sites": "booru"}, ("json", "sites")),
    ({"kind": "metadata", "n": 5, "lease_seconds": 0}, ("json", "lease_seconds")),
    ([1, 2], ("json",)),
]


@pytest.mark.parametrize(("body", "field"), LEASE_CASES)
def test_bad_lease_requests_are_400_naming_the_field_and_change_nothing(app, actions, body, field):
    actions.import_csv("query\ncats\n")
    actions.add_download_tasks("booru", 3)
    before = snapshot(app)
    response = actions.client.post("/leases", json=body, headers=actions.headers())
    assert_error(response, 400, field)
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("data", "content_type"),
    [("{not json", "application/json"), ('{"kind": "metadata", "n": 5', "application/json"), ("", "application/json")],
)
def test_malformed_json_is_400(app, actions, data, content_type):
    actions.add_download_tasks("booru", 1)
    before = snapshot(app)
    response = actions.client.post("/leases", data=data, headers={**actions.headers(), "Content-Type": content_type})
    assert_error(response, 400)
    assert snapshot(app) == before


def test_lease_over_http_carries_tasks_sites_and_expiry(actions):
    actions.import_csv("query,title\ncats,Cats\n")
    response = actions.lease("metadata", 100)
    assert response.status_code == 201
    body = response.get_json()
    assert body["lease_id"] and body["expires_at"].endswith("+00:00")
    assert {task["site"] for task in body["tasks"]} == {"booru", "tube"}
    assert body["sites"]["booru"] == {"engine": "gallery-dl", "options": {}}
    assert body["tasks"][0]["item"]["title"] == "Cats"
    empty = actions.lease("metadata", 5)
    assert empty.status_code == 200
    assert empty.get_json()["lease_id"] is None and empty.get_json()["retry_after"] > 0


SUBMIT_CASES = [
    ({"results": []}, ("json", "results")),
    ({}, ("json", "results")),
    ({"results": [{"task_id": "1", "status": "done"}]}, ("json", "results", "0", "task_id")),
    ({"results": [{"task_id": 1, "status": "finished"}]}, ("json", "results", "0", "status")),
    ({"results": [{"task_id": 1, "status": "failed", "error_class": "oops"}]}, ("json", "results", "0", "error_class")),
    ({"results": [{"task_id": 1, "status": "failed"}]}, ("json", "results", "0", "error_class")),
    ({"results": [{"task_id": 1, "status": "done", "files": []}]}, ("json", "results", "0", "files")),
    (
        {"results": [{"task_id": 1, "status": "done", "files": [file_record(path="/etc/passwd")]}]},
        ("json", "results", "0", "files", "0", "path"),
    ),
    (
        {"results": [{"task_id": 1, "status": "done", "files": [file_record(path="../up.png")]}]},
        ("json", "results", "0", "files", "0", "path"),
    ),
    (
        {"results": [{"task_id": 1, "status": "done", "files": [file_record(sha256="xyz")]}]},
        ("json", "results", "0", "files", "0", "sha256"),
    ),
    (
        {"results": [{"task_id": 1, "status": "done", "files": [file_record(size=-1)]}]},
        ("json", "results", "0", "files", "0", "size"),
    ),
    (
        {"results": [{"task_id": 1, "status": "done", "files": [file_record(phash="zz")]}]},
        ("json", "results", "0", "files", "0", "phash"),
    ),
    (
        {"results": [{"task_id": 1, "status": "failed", "error_class": "rate_limited", "retry_after": -5}]},
        ("json", "results", "0", "retry_after"),
    ),
    (
        {"results": [{"task_id": 1, "status": "done", "files": [file_record()], "colour": "red"}]},
        ("json", "results", "0", "colour"),
    ),
]


@pytest.mark.parametrize(("body", "field"), SUBMIT_CASES)
def test_bad_submits_are_400_and_change_nothing(app, actions, leased, body, field):
    before = snapshot(app)
    response = actions.client.post(f"/leases/{leased['lease_id']}/results", json=body, headers=actions.headers())
    assert_error(response, 400, field)
    assert snapshot(app) == before


def test_submit_conflict_is_409_with_ids_and_the_rest_recorded(actions):
    first, second = actions.add_download_tasks("booru", 2)
    lease_a = actions.lease("download", 1, site="booru").get_json()
    lease_b = actions.lease("download", 1, site="booru").get_json()
    results = [
        {"task_id": first, "status": "done", "files": [file_record("a.png")]},
        {"task_id": second, "status": "done", "files": [file_record("b.png")]},
    ]
    response = actions.submit(lease_a["lease_id"], results)
    body = assert_error(response, 409)
    assert body["accepted"] == [first] and body["conflicts"] == [second]
    assert str(second) in body["message"]
    again = actions.submit(lease_a["lease_id"], results[:1])
    assert again.status_code == 200 and again.get_json()["unchanged"] == [first]
    assert actions.submit(lease_b["lease_id"], results[1:]).status_code == 200
    assert_submit_schema(body)
    assert_submit_schema(again.get_json())


def assert_submit_schema(body):
    """The submit view builds its JSON directly (speed): it must be what the schema
    it documents would dump, every field and nothing else."""
    from server.schemas import SubmitResponseSchema

    schema = SubmitResponseSchema()
    assert set(body) == set(schema.fields)
    assert schema.dump(body) == body


def test_extend_release_and_unknown_lease(actions, leased):
    lease_id = leased["lease_id"]
    extended = actions.client.post(f"/leases/{lease_id}/extend", json={"seconds": 7200}, headers=actions.headers())
    assert extended.status_code == 200 and extended.get_json()["expires_at"] > leased["expires_at"]
    released = actions.client.post(f"/leases/{lease_id}/release", json={}, headers=actions.headers())
    assert sorted(released.get_json()["released"]) == sorted(task["id"] for task in leased["tasks"])
    for path in ("extend", "release", "results"):
        body = (
            {"results": [{"task_id": 1, "status": "failed", "error_class": "transient"}]} if path == "results" else {}
        )
        response = actions.client.post(f"/leases/no-such-lease/{path}", json=body, headers=actions.headers())
        assert_error(response, 404)
    other = actions.client.post(f"/leases/{lease_id}/extend", json={}, headers=actions.headers("node2"))
    assert_error(other, 404)


def test_extend_of_a_released_lease_is_409(actions, leased):
    lease_id = leased["lease_id"]
    actions.client.post(f"/leases/{lease_id}/release", json={}, headers=actions.headers())
    body = assert_error(actions.client.post(f"/leases/{lease_id}/extend", json={}, headers=actions.headers()), 409)
    assert body["state"] == "released"


def test_inventory_upload_raw_and_multipart(actions):
    csv_text = "query,title\ncats,Cats\n,nothing\n"
    raw = actions.client.post(
        "/inventory", data=csv_text.encode(), headers={**actions.headers("ops", admin=True), "Content-Type": "text/csv"}
    )
    assert raw.status_code == 200
    assert raw.get_json() | {"import_id": None} == {
        "import_id": None,
        "added": 1,
        "updated": 0,
        "unchanged": 0,
        "rejected": 1,
        "errors": [{"line": 3, "reason": "needs a url or a query", "key": None}],
        "errors_truncated": False,
        "aborted": None,
    }
    form = actions.client.post(
        "/inventory",
        data={"file": (io.BytesIO(b"query,title\ncats,Cats\ndogs,\n"), "inventory.csv")},
        headers=actions.headers("ops", admin=True),
        content_type="multipart/form-data",
    )
    assert (form.get_json()["added"], form.get_json()["unchanged"]) == (1, 1)
    missing = actions.client.post(
        "/inventory",
        data={"other": "x"},
        headers=actions.headers("ops", admin=True),
        content_type="multipart/form-data",
    )
    assert_error(missing, 400, ("form", "file"))
    header = actions.client.post(
        "/inventory", data=b"title\nx\n", headers={**actions.headers("ops", admin=True), "Content-Type": "text/csv"}
    )
    assert_error(header, 400, ("csv", "header"))


def test_task_report_requeue_and_reclaim(actions):
    task_ids = actions.add_download_tasks("booru", 3)
    lease = actions.lease("download", 3, site="booru").get_json()
    actions.submit(
        lease["lease_id"],
        [
            {"task_id": task_ids[0], "status": "failed", "error_class": "permanent", "error": "HTTP 404"},
            {"task_id": task_ids[1], "status": "failed", "error_class": "permanent", "error": "HTTP 404"},
        ],
    )
    admin = actions.headers("ops", admin=True)
    report = actions.client.get("/tasks?state=dead&limit=1", headers=admin).get_json()
    assert [task["id"] for task in report["tasks"]] == [task_ids[0]] and report["next_after_id"] == task_ids[0]
    page2 = actions.client.get(f"/tasks?state=dead&after_id={report['next_after_id']}", headers=admin).get_json()
    assert [task["id"] for task in page2["tasks"]] == [task_ids[1]] and page2["tasks"][0]["last_error"] == "HTTP 404"
    assert_error(actions.client.get("/tasks?state=zombie", headers=admin), 400, ("query", "state"))
    assert_error(actions.client.post("/tasks/requeue", json={}, headers=admin), 400, ("json", "state"))
    requeued = actions.client.post("/tasks/requeue", json={"state": "dead"}, headers=admin)
    assert requeued.get_json() == {"count": 2, "by_kind": {"metadata": 0, "download": 2}}
    assert actions.task(task_ids[0]).state == "queued" and actions.task(task_ids[0]).attempts == 0
    reclaimed = actions.client.post("/tasks/reclaim", headers=admin)
    assert reclaimed.get_json() == {"count": 0}  # the remaining lease is still live


def test_client_version_gate(app_factory):
    from tests.helpers import Actions

    app = app_factory(MIN_CLIENT_VERSION="0.2.0")
    actions = Actions(app, app.test_client())
    headers = {"Authorization": f"Bearer {actions.key()}"}
    body = {"kind": "metadata", "n": 1}
    old = actions.client.post("/leases", json=body, headers={**headers, CLIENT_VERSION_HEADER: "0.1.9"})
    assert "older than the minimum 0.2.0" in assert_error(old, 426)["message"]
    assert_error(actions.client.post("/leases", json=body, headers=headers), 426)
    bad = actions.client.post("/leases", json=body, headers={**headers, CLIENT_VERSION_HEADER: "banana"})
    assert_error(bad, 400, ("headers", CLIENT_VERSION_HEADER))
    ok = actions.client.post("/leases", json=body, headers={**headers, CLIENT_VERSION_HEADER: "0.2.0"})
    assert ok.status_code == 200
    with app.app_context():
        from server.extensions import db
        from server.models import ApiKey

        assert db.session.scalar(select(ApiKey.client_version)) == "0.2.0"


def test_health_and_openapi(client):
    health = client.get("/health").get_json()
    assert health["status"] == "ok" and health["database"] in ("sqlite", "postgresql")
    spec = client.get("/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path in ("/leases", "/leases/{lease_id}/results", "/inventory", "/stats", "/tasks", "/tasks/requeue"):
        assert path in spec["paths"], path
    lease_request = spec["components"]["schemas"]["LeaseRequest"]
    assert lease_request["properties"]["n"]["minimum"] == 1 and lease_request["properties"]["n"]["maximum"] == 100
    assert "400" in spec["paths"]["/leases"]["post"]["responses"]


def test_fast_lease_body_is_what_the_schema_dumps(actions, ctx):
    """The lease view builds its JSON directly (speed); it must equal LeaseSchema's dump."""
    import json as json_module

    from server import context
    from server.api.leases import lease_body
    from server.database import utcnow
    from server.extensions import db
    from server.leasing import lease_tasks
    from server.models import ApiKey
    from server.schemas import LeaseSchema

    actions.import_csv("query,title,artist\ncats,Cats,bob\n")
    actions.add_download_tasks("booru", 2)
    client = db.session.scalar(select(ApiKey).where(ApiKey.name == "node1")) if actions.key() else None
    for kind, site in (("metadata", None), ("download", "booru")):
        grant = lease_tasks(
            db.session,
            client=client,
            kind=kind,
            n=10,
            site=site,
            sites=context.sites(),
            policy=context.policy(),
            now=utcnow(),
        )
        assert grant.tasks
        raw = {
            "lease_id": grant.lease.id,
            "kind": kind,
            "site": site,
            "expires_at": grant.lease.expires_at,
            "tasks": grant.tasks,
            "sites": {
                n: context.sites().get(n).describe()
                for n in {"booru", "tube"}
                if any(t["site"] == n for t in grant.tasks)
            },
            "retry_after": None,
        }
        fast = json_module.loads(json_module.dumps(lease_body(grant, kind, site, context.sites())))
        assert fast == json_module.loads(json_module.dumps(LeaseSchema().dump(raw)))
