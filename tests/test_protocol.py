"""One definition of each wire shape: the typed shapes both sides build from
(``common/protocol.py``) and the coordinator's schemas (which validate requests and make
``/openapi.json``) name the same fields."""

from __future__ import annotations

import typing

import pytest

from common import protocol
from server import schemas


def keys(shape) -> set[str]:
    return set(typing.get_type_hints(shape))


@pytest.mark.parametrize(
    ("shape", "schema"),
    [
        (protocol.FileRecord, schemas.FileRecordSchema),
        (protocol.FoundPost, schemas.FoundSchema),
        (protocol.LeasedTask, schemas.LeasedTaskSchema),
        (protocol.ItemRef, schemas.ItemRefSchema),
        (protocol.CheckOrder, schemas.CheckOrderSchema),
    ],
)
def test_a_shape_and_its_schema_name_the_same_fields(shape, schema):
    assert keys(shape) == set(schema().fields)


def test_every_result_shape_is_a_result_the_schema_takes():
    fields = set(schemas.ResultSchema().fields)
    results = (protocol.DoneDownload, protocol.DoneMetadata, protocol.FailedResult)
    assert set().union(*map(keys, results)) == fields


def test_the_statuses_and_limits_are_the_schema_s():
    lease = schemas.LeaseRequestSchema().fields["n"].validate
    assert (lease.min, lease.max) == (protocol.MIN_BATCH, protocol.MAX_BATCH)
    status = schemas.ResultSchema().fields["status"].validate
    assert set(status.choices) == {status.value for status in protocol.ResultStatus}
