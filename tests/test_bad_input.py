"""No input makes a 500, on either database: huge integers, deep nesting, JSON's non-numbers,
NUL characters and unpaired surrogates in every string field, malformed lease ids and
headers. A user's bad byte is a 400 naming the field; a site's (in an error text or in
metadata, reported by an honest node) is stripped, and the report is stored."""

from __future__ import annotations

import json

import pytest

from tests.helpers import file_record

HUGE = 2**64


def raw_post(client, path: str, body: str, headers: dict):
    return client.post(path, data=body.encode("utf-8"), headers={**headers, "Content-Type": "application/json"})


@pytest.fixture
def lease(actions):
    """A download lease of one task, and that task's id."""
    [task_id] = actions.add_download_tasks("booru", 1)
    answer = actions.lease("download", 1, site="booru").get_json()
    return answer["lease_id"], task_id


def done(task_id: int, **record) -> dict:
    return {"task_id": task_id, "status": "done", "files": [file_record(**record)]}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/leases", {"kind": "metadata", "n": HUGE}, "json.n"),
        ("/leases", {"kind": "metadata", "n": 1, "lease_seconds": HUGE}, "json.lease_seconds"),
        ("/tasks/requeue", {"task_ids": [HUGE]}, "json.task_ids.0"),
    ],
)
def test_integers_beyond_64_bits_are_a_400_naming_the_field(actions, client, path, body, field):
    answer = client.post(path, json=body, headers=actions.headers("ops", admin=True))
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["message"].startswith(field), answer.get_json()


def test_a_file_size_or_task_id_of_2_to_the_63_is_a_400_and_nothing_is_recorded(actions, lease):
    lease_id, task_id = lease
    for result in (done(task_id, size=2**63), done(HUGE)):
        answer = actions.submit(lease_id, [result])
        assert answer.status_code == 400, answer.get_json()
    assert actions.task(task_id).state == "leased"
    assert actions.submit(lease_id, [done(task_id, size=2**63 - 1)]).status_code == 200  # the largest size is fine


def test_query_integers_and_text_no_database_holds_are_400(actions, client):
    headers = actions.headers("ops", admin=True)
    for query in (f"after_id={HUGE}", "after_id=-1", "site=%00", "limit=0"):
        answer = client.get(f"/tasks?{query}", headers=headers)
        assert answer.status_code == 400, (query, answer.get_json())


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000 + "]" * 100_000, '{"a":' * 1000 + "1" + "}" * 1000, '{"kind": "metadata", "n": NaN}', "{"],
    ids=["100k nested lists", "1000 nested objects", "NaN", "truncated"],
)
def test_bodies_too_deep_or_not_json_are_a_400(actions, client, body):
    answer = raw_post(client, "/leases", body, actions.headers())
    assert answer.status_code == 400 and answer.get_json()["message"].startswith("json"), answer.get_json()


def test_metadata_nested_deeper_than_the_limit_is_refused_before_anything_is_written(actions):
    actions.import_csv("query,sites\ncats,booru\n")
    lease = actions.lease("metadata", 1).get_json()
    task_id = lease["tasks"][0]["id"]
    deep: dict = {}
    for _ in range(40):
        deep = {"x": deep}
    found = [{"site": "booru", "remote_id": "1", "metadata": deep}]
    answer = actions.submit(lease["lease_id"], [{"task_id": task_id, "status": "done", "found": found}])
    assert answer.status_code == 400 and "nests deeper than" in answer.get_json()["message"]
    assert actions.count_tasks(kind="download") == 0 and actions.task(task_id).state == "leased"


NUL, SURROGATE = "\\u0000", "\\ud800"


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["NUL", "unpaired surrogate"])
@pytest.mark.parametrize("field", ["path", "mime", "sha256"])
def test_a_user_field_with_unstorable_text_is_a_400_naming_it(actions, client, lease, bad, field):
    lease_id, task_id = lease
    result = done(task_id)
    result["files"][0][field] = "x" + "\0" + ".png"
    body = json.dumps({"results": [result]}).replace("\\u0000", bad)
    answer = raw_post(client, f"/leases/{lease_id}/results", body, actions.headers())
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["message"].startswith(f"json.results.0.files.0.{field}"), answer.get_json()
    assert actions.task(task_id).state == "leased"


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["NUL", "unpaired surrogate"])
def test_a_site_s_unstorable_text_in_an_error_or_metadata_is_stripped_and_stored(actions, client, bad):
    actions.import_csv("query,sites\ncats,booru\ndogs,booru\n")
    lease = actions.lease("metadata", 2).get_json()
    first, second = (task["id"] for task in lease["tasks"])
    metadata = {"id": 7, "title": "a\0b", "tags": ["c\0"], "k\0ey": 1}
    results = [
        {"task_id": first, "status": "done", "found": [{"site": "booru", "remote_id": "7", "metadata": metadata}]},
        {"task_id": second, "status": "failed", "error_class": "transient", "error": "HTTP 500: \0"},
    ]
    body = json.dumps({"results": results}).replace("\\u0000", bad)
    answer = raw_post(client, f"/leases/{lease['lease_id']}/results", body, actions.headers())
    assert answer.status_code == 200, answer.get_json()
    assert actions.task(second).last_error == "HTTP 500: "
    [download] = actions.lease("download", 5, site="booru").get_json()["tasks"]
    assert download["metadata"] == {"id": 7, "title": "ab", "tags": ["c"], "key": 1}


def test_a_malformed_lease_id_is_a_404_not_a_database_error(actions, client):
    for lease_id in ("%00", "x" * 200, "a%20b", "%ED%A0%80"):
        answer = client.post(f"/leases/{lease_id}/extend", json={}, headers=actions.headers())
        assert answer.status_code == 404, (lease_id, answer.get_json())


def test_a_strange_client_version_header_is_not_stored(actions, client, app):
    headers = {**actions.headers(), "Fetchfleet-Client-Version": "1.0\x7f" + "9" * 100}
    assert client.post("/leases", json={"kind": "metadata", "n": 1}, headers=headers).status_code == 200
    from server.auth import list_keys

    with actions.context():
        from server.extensions import db

        [key] = [key for key in list_keys(db.session) if key.name == "node1"]
        from common.version import __version__

        assert key.client_version in (None, __version__)


def test_405_says_which_methods_are_allowed(client):
    answer = client.get("/leases")
    assert answer.status_code == 405 and set(answer.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert answer.get_json()["code"] == 405


def test_the_409_of_a_finished_lease_s_heartbeat_is_documented_with_its_state(actions, client, lease):
    lease_id, task_id = lease
    assert actions.submit(lease_id, [done(task_id)]).status_code == 200
    answer = client.post(f"/leases/{lease_id}/extend", json={}, headers=actions.headers())
    assert answer.status_code == 409 and answer.get_json()["state"] == "completed"
    document = client.get("/openapi.json").get_json()
    conflict = document["paths"]["/leases/{lease_id}/extend"]["post"]["responses"]["409"]
    schema = conflict["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "state" in document["components"]["schemas"][schema]["properties"]


def test_every_integer_a_request_may_carry_has_a_bound_the_databases_hold(client):
    document = client.get("/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    unbounded: list[str] = []
    seen: set[str] = set()

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[1]
                if name not in seen:
                    seen.add(name)
                    walk(schemas[name], name)
                return
            if node.get("type") == "integer" and "maximum" not in node:
                unbounded.append(where)
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):  # the path's own parameters
                continue
            walk(operation.get("requestBody", {}), f"{method} {path} body")
            walk(operation.get("parameters", []), f"{method} {path} query")
    assert "Result" in seen and "FileRecord" in seen  # the walk reached the nested bodies
    assert unbounded == []


def with_nul(body: dict, path: list) -> str:
    """``body`` as JSON with a NUL escape put into the string at ``path``."""
    body = json.loads(json.dumps(body))
    node = body
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = node[path[-1]] + "\0"
    return json.dumps(body)


def test_every_string_a_user_sends_with_a_nul_is_a_400_naming_it(actions, client):
    actions.import_csv("query,sites\ncats,booru\n")
    metadata_lease = actions.lease("metadata", 1).get_json()
    task_id = metadata_lease["tasks"][0]["id"]
    found = {"site": "booru", "remote_id": "1", "url": "http://booru.test/1", "metadata": {"id": 1}}
    submit = {"results": [{"task_id": task_id, "status": "done", "found": [found]}]}
    cases = [
        ("/leases", {"kind": "download", "n": 1, "site": "booru"}, ["site"], actions.headers()),
        ("/leases", {"kind": "metadata", "n": 1}, ["kind"], actions.headers()),
        (
            f"/leases/{metadata_lease['lease_id']}/results",
            submit,
            ["results", 0, "found", 0, "site"],
            actions.headers(),
        ),
        (
            f"/leases/{metadata_lease['lease_id']}/results",
            submit,
            ["results", 0, "found", 0, "remote_id"],
            actions.headers(),
        ),
        (f"/leases/{metadata_lease['lease_id']}/results", submit, ["results", 0, "found", 0, "url"], actions.headers()),
        (f"/leases/{metadata_lease['lease_id']}/results", submit, ["results", 0, "status"], actions.headers()),
        ("/tasks/requeue", {"state": "dead", "site": "booru"}, ["site"], actions.headers("ops", admin=True)),
    ]
    for path, body, field, headers in cases:
        answer = raw_post(client, path, with_nul(body, field), headers)
        assert answer.status_code == 400, (path, field, answer.get_json())
        assert answer.get_json()["message"].startswith("json." + ".".join(map(str, field))), answer.get_json()
    assert actions.count_tasks(kind="download") == 0 and actions.task(task_id).state == "leased"


def test_a_broken_csv_over_http_keeps_its_good_rows_and_says_which_were_rejected(actions, client):
    body = b'query,title\ncats,"never closed\ndogs,ok\nbirds \xe9t\xe9,x\nfish\x00,y\nowls,ok\n'
    headers = {**actions.headers("ops", admin=True), "Content-Type": "text/csv"}
    answer = client.post("/inventory", data=body, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    report = answer.get_json()
    assert report["added"] == 2 and report["rejected"] == 3
    assert [error["line"] for error in report["errors"]] == [2, 4, 5]
    assert actions.count_tasks(kind="metadata") == 2 * 2  # dogs and owls, on both searchable sites
