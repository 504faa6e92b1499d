"""The compiled validator (JSON Schema from the marshmallow schemas) and marshmallow's own
``load`` must agree: one declaration, two ways of checking it."""

from __future__ import annotations

import marshmallow as ma
import pytest

from server.errors import InvalidInput
from server.schemas import (
    ExtendRequestSchema,
    LeaseRequestSchema,
    ReleaseRequestSchema,
    RequeueRequestSchema,
    SubmitRequestSchema,
)
from server.validation import json_schema, validate

SHA = "ab" * 32
FILE = {"path": "booru/1.png", "size": 3, "sha256": SHA, "mime": "image/png", "phash": "0" * 16, "dhash": None}
CASES = [
    (LeaseRequestSchema, {"kind": "metadata", "n": 1}),
    (LeaseRequestSchema, {"kind": "download", "n": 100, "site": "booru", "lease_seconds": 60}),
    (LeaseRequestSchema, {"kind": "download", "n": 0}),
    (LeaseRequestSchema, {"kind": "download", "n": 101}),
    (LeaseRequestSchema, {"kind": "download", "n": "5"}),
    (LeaseRequestSchema, {"kind": "download", "n": True}),
    (LeaseRequestSchema, {"kind": "upload", "n": 5}),
    (LeaseRequestSchema, {"n": 5}),
    (LeaseRequestSchema, {"kind": "metadata", "n": 5, "extra": 1}),
    (LeaseRequestSchema, {"kind": "metadata", "n": 5, "site": ""}),
    (ExtendRequestSchema, {}),
    (ExtendRequestSchema, {"seconds": 0}),
    (ReleaseRequestSchema, {"task_ids": [1, 2]}),
    (ReleaseRequestSchema, {"task_ids": ["1"]}),
    (RequeueRequestSchema, {"state": "dead", "kind": "download"}),
    (RequeueRequestSchema, {"state": "zombie"}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "files": [FILE]}]}),
    (
        SubmitRequestSchema,
        {
            "results": [
                {
                    "task_id": 1,
                    "status": "done",
                    "found": [
                        {
                            "site": "booru",
                            "remote_id": 7,
                            "url": "http://booru.test/7",
                            "metadata": {"a": [1, {"b": None}]},
                        },
                        {"site": "booru", "remote_id": "x7"},
                    ],
                }
            ]
        },
    ),
    (
        SubmitRequestSchema,
        {
            "results": [
                {
                    "task_id": 1,
                    "status": "failed",
                    "error_class": "rate_limited",
                    "retry_after": 2.5,
                    "error": "HTTP 429",
                }
            ]
        },
    ),
    (SubmitRequestSchema, {"results": []}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "files": [{**FILE, "path": "/abs"}]}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "files": [{**FILE, "path": "a/../../b"}]}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "files": [{**FILE, "sha256": "zz"}]}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "files": [{**FILE, "size": -1}]}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "files": [{**FILE, "phash": "XYZ"}]}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "found": [{"site": "b", "remote_id": ""}]}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "found": [{"site": "b", "remote_id": True}]}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "found": [{"site": "b", "remote_id": 1.5}]}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "failed", "error_class": "oops"}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "failed", "retry_after": -1}]}),
    (SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "colour": "red"}]}),
]


@pytest.mark.parametrize(("schema", "body"), CASES, ids=[f"{s.__name__}-{i}" for i, (s, _) in enumerate(CASES)])
def test_compiled_validator_agrees_with_marshmallow(schema, body):
    try:
        schema().load(body)
        marshmallow_ok = True
    except ma.ValidationError:
        marshmallow_ok = False
    try:
        validate(schema, body)
        compiled_ok = True
    except InvalidInput:
        compiled_ok = False
    assert compiled_ok == marshmallow_ok


def test_errors_name_the_field_and_the_problem():
    with pytest.raises(InvalidInput) as caught:
        validate(SubmitRequestSchema, {"results": [{"task_id": 1, "status": "done", "files": [{**FILE, "size": -1}]}]})
    problem = f"Must be greater than or equal to 0 and less than or equal to {2**63 - 1}."
    assert caught.value.errors == {"json": {"results": {"0": {"files": {"0": {"size": [problem]}}}}}}
    assert caught.value.message == f"json.results.0.files.0.size: {problem}"
    with pytest.raises(InvalidInput, match=r"json.n: Missing data for required field."):
        validate(LeaseRequestSchema, {"kind": "metadata"})


def test_json_schema_is_the_openapi_one(client):
    """The validator checks against what /openapi.json publishes for the same schema."""
    published = client.get("/openapi.json").get_json()["components"]["schemas"]["LeaseRequest"]
    compiled = json_schema(LeaseRequestSchema)
    assert compiled["properties"]["n"] == published["properties"]["n"]
    assert compiled["required"] == published["required"]
