"""Every endpoint x (no key, wrong key, client key, admin key), plus revocation and key storage."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from common.version import CLIENT_VERSION_HEADER, __version__

#: (method, path, body, expected status for: none, wrong, client, admin)
MATRIX = [
    ("POST", "/leases", {"kind": "metadata", "n": 1}, (401, 401, 200, 200)),
    ("POST", "/leases/{lease}/extend", {}, (401, 401, 200, 404)),  # a lease belongs to its client
    ("POST", "/leases/{lease}/release", {"task_ids": []}, (401, 401, 200, 404)),
    (
        "POST",
        "/leases/{lease}/results",
        {"results": [{"task_id": 0, "status": "failed", "error_class": "transient"}]},
        (401, 401, 409, 404),
    ),
    ("POST", "/inventory", None, (401, 401, 403, 200)),
    ("GET", "/tasks", None, (401, 401, 403, 200)),
    ("POST", "/tasks/requeue", {"state": "dead"}, (401, 401, 403, 200)),
    ("POST", "/tasks/reclaim", None, (401, 401, 403, 200)),
    ("GET", "/sites", None, (401, 401, 200, 200)),
    ("GET", "/stats", None, (200, 401, 200, 200)),  # counts are public by default; a key sent is checked
    ("GET", "/health", None, (200, 200, 200, 200)),
    ("GET", "/openapi.json", None, (200, 200, 200, 200)),
]
WHO = ("none", "wrong", "client", "admin")


@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_auth_matrix(actions, method, path, body, expected):
    actions.add_download_tasks("booru", 1)
    lease = actions.lease("download", 1, site="booru", who="client-node").get_json()
    keys = {
        "none": None,
        "wrong": "ff_" + "x" * 43,
        "client": actions.key("client-node"),
        "admin": actions.key("ops", admin=True),
    }
    for who, status in zip(WHO, expected, strict=True):
        headers = {CLIENT_VERSION_HEADER: __version__}
        if keys[who]:
            headers["Authorization"] = f"Bearer {keys[who]}"
        url = path.format(lease=lease["lease_id"])
        if path == "/inventory":
            response = actions.client.post(url, data=b"query\ncats\n", headers={**headers, "Content-Type": "text/csv"})
        else:
            response = actions.client.open(url, method=method, json=body, headers=headers)
        assert response.status_code == status, (who, response.get_json())
        if status in (401, 403):
            error = response.get_json()
            assert error["code"] == status and error["message"]
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer    ", "token"])
def test_malformed_authorization_is_401(client, header):
    response = client.get("/sites", headers={"Authorization": header})
    assert response.status_code == 401 and "Bearer" in response.get_json()["message"]


def test_revoked_key_is_refused(actions, runner):
    headers = actions.headers("node9")
    assert actions.client.get("/sites", headers=headers).status_code == 200
    result = runner.invoke(args=["revoke-key", "node9"])
    assert result.exit_code == 0, result.output
    assert actions.client.get("/sites", headers=headers).status_code == 401


def test_keys_are_stored_hashed_and_shown_once(runner, ctx):
    from server.extensions import db
    from server.models import ApiKey

    result = runner.invoke(args=["create-key", "node7", "--admin"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("ff_") and len(key) > 40
    stored = db.session.scalar(select(ApiKey).where(ApiKey.name == "node7"))
    assert stored.role == "admin" and stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored.key_hash
    again = runner.invoke(args=["create-key", "node7"])
    assert again.exit_code == 1 and "already exists" in again.output


def test_stats_can_require_a_key(app_factory):
    from tests.helpers import Actions

    app = app_factory(STATS_REQUIRE_KEY=True)
    actions = Actions(app, app.test_client())
    assert actions.client.get("/stats").status_code == 401
    assert actions.client.get("/stats", headers=actions.headers()).status_code == 200
