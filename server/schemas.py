"""Request and response schemas: they validate every request, shape every response,
and are the source of the OpenAPI document at ``/openapi.json``."""

from __future__ import annotations

from datetime import UTC

import marshmallow as ma
from marshmallow import fields, validate

from common.protocol import MAX_BATCH, MIN_BATCH, UNSTORABLE_TEXT
from common.states import FailureClass, ItemState, ResultStatus, TaskKind, TaskState

from .validation import UNSTORABLE_PROBLEM

MAX_RESULTS_PER_SUBMIT = 1000
MAX_FOUND_PER_RESULT = 100_000
#: What every integer column holds (64-bit on both databases): larger ids cannot exist.
MAX_ID = 2**63 - 1
MAX_SIZE = 2**63 - 1
#: Seconds anyone may ask for (leases are capped lower by MAX_LEASE_SECONDS anyway).
MAX_SECONDS = 2**31 - 1
_ID = validate.Range(0, MAX_ID)


#: Text a user sends that no database stores: refused where it is declared (the JSON
#: bodies' own check, ``validation.storable``, covers every string of a body).
def _storable_text(value: str) -> None:
    if UNSTORABLE_TEXT.search(value):
        raise ma.ValidationError(UNSTORABLE_PROBLEM)


_HEX64 = validate.Regexp(r"^[0-9a-fA-F]{64}$", error="must be 64 hexadecimal digits")
_HEX32 = validate.Regexp(r"^[0-9a-fA-F]{32}$", error="must be 32 hexadecimal digits")
_HEX16 = validate.Regexp(r"^[0-9a-f]{16}$", error="must be 16 lowercase hexadecimal digits")
_HEX16_ANY_CASE = validate.Regexp(r"^[0-9a-fA-F]{16}$", error="must be 16 hexadecimal digits")


class StrictSchema(ma.Schema):
    """Unknown fields are an error: a typo should not be silently dropped."""

    class Meta:
        unknown = ma.RAISE


class RemoteId(fields.Field):
    """A site's id for a post: a string or an integer, stored as a string."""

    def __init__(self, **kwargs):
        # Declared for the JSON Schema too (apispec copies these), so compiled validators agree.
        metadata = {"type": ["string", "integer"], "minLength": 1, "maxLength": 255, **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ma.ValidationError("must be a string or an integer")
        value = str(value).strip()
        if not 1 <= len(value) <= 255:
            raise ma.ValidationError("must be 1 to 255 characters")
        return value

    def _serialize(self, value, attr, obj, **kwargs):
        return value


#: Relative, "/"-separated, never climbing out with "..": a path inside the node's --dest.
_RELATIVE_PATH = validate.Regexp(
    r"^(?!/)(?!(?:.*/)?\.\.(?:/|$))[^\\\x00]+$",
    error="must be a relative path inside the node's --dest, with / separators",
)


class ErrorBodySchema(ma.Schema):
    """The one error shape (``server.errors``); a 409 on a lease also says its ``state``."""

    code = fields.Integer()
    status = fields.String()
    message = fields.String()
    errors = fields.Dict()
    state = fields.String(metadata={"description": "409 on a lease: the lease's state (completed, released, ...)"})


# ----------------------------------------------------------------------- leases


class LeaseRequestSchema(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf([k.value for k in TaskKind]))
    n = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(MIN_BATCH, MAX_BATCH),
        metadata={"description": "tasks wanted"},
    )
    site = fields.String(validate=validate.Length(1, 100), metadata={"description": "required for download leases"})
    lease_seconds = fields.Integer(
        strict=True,
        validate=validate.Range(1, MAX_SECONDS),
        metadata={"description": "lease length; capped by the server"},
    )


class ItemRefSchema(ma.Schema):
    id = fields.Integer()
    key = fields.String()
    title = fields.String(allow_none=True)
    query = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    extra = fields.Dict()


class LeasedTaskSchema(ma.Schema):
    id = fields.Integer()
    kind = fields.String()
    site = fields.String()
    url = fields.String(metadata={"description": "what to resolve (metadata) or download"})
    remote_id = fields.String(allow_none=True)
    priority = fields.Integer()
    attempts = fields.Integer()
    metadata = fields.Dict(
        attribute="payload", allow_none=True, metadata={"description": "download: the post's metadata as found"}
    )
    item = fields.Nested(ItemRefSchema, allow_none=True, metadata={"description": "metadata: the inventory item"})
    check = fields.Nested(
        "CheckOrderSchema", metadata={"description": "metadata of a subscription: which check, where it may stop"}
    )
    video = fields.Nested(
        "VideoOrderSchema", metadata={"description": "download of a yt-dlp site: format, container and limits"}
    )


class VideoOrderSchema(ma.Schema):
    format = fields.String(metadata={"description": "a yt-dlp format selector"})
    preset = fields.String(metadata={"description": "the named preset it came from (best, 720p, audio, ...)"})
    merge_output_format = fields.String(metadata={"description": "the container streams are merged into"})
    max_duration_seconds = fields.Integer(metadata={"description": "a longer video is not fetched"})
    max_filesize_bytes = fields.Integer(metadata={"description": "a larger video is not fetched"})


class CheckOrderSchema(ma.Schema):
    number = fields.Integer()
    full = fields.Boolean(metadata={"description": "enumerate to the end (deletions are found after those)"})
    stop_after_known = fields.Integer(
        allow_none=True, metadata={"description": "stop after this many posts in a row that are in known_ids"}
    )
    known_ids = fields.List(fields.String(), metadata={"description": "the newest posts the last check saw"})


class SiteInfoSchema(ma.Schema):
    engine = fields.String()
    options = fields.Dict()


class LeaseSchema(ma.Schema):
    lease_id = fields.String(allow_none=True)
    kind = fields.String()
    site = fields.String(allow_none=True)
    expires_at = fields.AwareDateTime(allow_none=True)
    tasks = fields.List(fields.Nested(LeasedTaskSchema))
    sites = fields.Dict(keys=fields.String(), values=fields.Nested(SiteInfoSchema))
    retry_after = fields.Integer(
        allow_none=True, metadata={"description": "no tasks: seconds until asking again is worthwhile"}
    )


class ExtendRequestSchema(StrictSchema):
    seconds = fields.Integer(strict=True, validate=validate.Range(1, MAX_SECONDS))


class LeaseStateSchema(ma.Schema):
    lease_id = fields.String(attribute="id")
    kind = fields.String()
    site = fields.String(allow_none=True)
    state = fields.String()
    seconds = fields.Integer(metadata={"description": "the lease's length; a heartbeat extends by this much"})
    expires_at = fields.AwareDateTime()
    task_count = fields.Integer()


class ReleaseRequestSchema(StrictSchema):
    task_ids = fields.List(
        fields.Integer(strict=True, validate=_ID),
        validate=validate.Length(max=MAX_BATCH),
        metadata={"description": "omit to release every unfinished task"},
    )


class ReleaseResponseSchema(ma.Schema):
    released = fields.List(fields.Integer())


class FoundSchema(StrictSchema):
    site = fields.String(required=True, validate=validate.Length(1, 100))
    remote_id = RemoteId(required=True)
    url = fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=4000))
    metadata = fields.Dict(keys=fields.String())


class FileRecordSchema(StrictSchema):
    path = fields.String(required=True, validate=[validate.Length(1, 4000), _RELATIVE_PATH])
    size = fields.Integer(required=True, strict=True, validate=validate.Range(0, MAX_SIZE))
    sha256 = fields.String(required=True, validate=_HEX64)
    md5 = fields.String(validate=_HEX32, allow_none=True, metadata={"description": "since 0.2; older nodes omit it"})
    mime = fields.String(validate=validate.Length(max=100), allow_none=True)
    phash = fields.String(validate=_HEX16, allow_none=True)
    dhash = fields.String(validate=_HEX16, allow_none=True)
    store_key = fields.String(
        validate=validate.Length(1, 1024),
        metadata={"description": "since 0.3: its object in the file store, <prefix>/sha256/ab/cd/<sha256>"},
    )
    kept = fields.Boolean(
        metadata={"description": "since 0.3: false when the node removed its copy after a verified upload"}
    )
    video = fields.Nested(
        "VideoInfoSchema", metadata={"description": "since 0.5, video and audio files: what a probe found"}
    )


class VideoInfoSchema(StrictSchema):
    duration = fields.Float(allow_none=True, allow_nan=False, validate=validate.Range(0, 10**7))
    width = fields.Integer(allow_none=True, strict=True, validate=validate.Range(0, 100_000))
    height = fields.Integer(allow_none=True, strict=True, validate=validate.Range(0, 100_000))
    vcodec = fields.String(allow_none=True, validate=validate.Length(max=32))
    acodec = fields.String(allow_none=True, validate=validate.Length(max=32))
    container = fields.String(allow_none=True, validate=validate.Length(max=32))


class StoredFileSchema(StrictSchema):
    task_id = fields.Integer(required=True, strict=True, validate=_ID)
    path = fields.String(required=True, validate=[validate.Length(1, 4000), _RELATIVE_PATH])
    sha256 = fields.String(required=True, validate=_HEX64)
    store_key = fields.String(required=True, validate=validate.Length(1, 1024))
    kept = fields.Boolean(load_default=True, metadata={"description": "false: the node removed its copy"})


class StoredFilesSchema(StrictSchema):
    files = fields.List(fields.Nested(StoredFileSchema), required=True, validate=validate.Length(1, 1000))


class StoredAnswerSchema(ma.Schema):
    recorded = fields.Integer(metadata={"description": "file records of this node that now name their object"})
    unknown = fields.Integer(metadata={"description": "files this node never reported (nothing changed)"})


class ResultSchema(StrictSchema):
    task_id = fields.Integer(required=True, strict=True, validate=_ID)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in ResultStatus]))
    found = fields.List(
        fields.Nested(FoundSchema),
        validate=validate.Length(max=MAX_FOUND_PER_RESULT),
        metadata={"description": "metadata done: what exists (empty: nothing found, retried later)"},
    )
    files = fields.List(
        fields.Nested(FileRecordSchema),
        validate=validate.Length(max=10_000),
        metadata={"description": "download done: the files written"},
    )
    error_class = fields.String(validate=validate.OneOf([c.value for c in FailureClass]))
    error = fields.String(validate=validate.Length(max=2000))
    retry_after = fields.Float(
        validate=validate.Range(0, MAX_SECONDS),
        metadata={"description": "rate_limited: seconds the site asked to wait"},
    )
    stopped_at_known = fields.Boolean(
        metadata={"description": "metadata done: the re-check stopped at known posts (not enumerated to the end)"}
    )
    already_on_node = fields.Boolean(
        metadata={"description": "download done: the node held these files already and fetched nothing"}
    )


class SubmitRequestSchema(StrictSchema):
    results = fields.List(
        fields.Nested(ResultSchema), required=True, validate=validate.Length(1, MAX_RESULTS_PER_SUBMIT)
    )


class SubmitResponseSchema(ma.Schema):
    code = fields.Integer()
    status = fields.String()
    message = fields.String()
    accepted = fields.List(fields.Integer())
    unchanged = fields.List(fields.Integer(), metadata={"description": "already recorded for this lease"})
    conflicts = fields.List(fields.Integer(), metadata={"description": "refused: this lease does not hold them"})
    download_tasks_created = fields.Integer()


# -------------------------------------------------------------------- inventory


class RowErrorSchema(ma.Schema):
    line = fields.Integer()
    reason = fields.String()
    key = fields.String(allow_none=True)


class ImportReportSchema(ma.Schema):
    import_id = fields.String()
    added = fields.Integer()
    updated = fields.Integer()
    unchanged = fields.Integer()
    rejected = fields.Integer()
    errors = fields.List(fields.Nested(RowErrorSchema))
    errors_truncated = fields.Boolean()
    aborted = fields.String(allow_none=True)


# ------------------------------------------------------------------------ tasks


class TaskQuerySchema(StrictSchema):
    state = fields.String(validate=validate.OneOf([s.value for s in TaskState]))
    kind = fields.String(validate=validate.OneOf([k.value for k in TaskKind]))
    site = fields.String(validate=[validate.Length(1, 100), _storable_text])
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    after_id = fields.Integer(load_default=0, validate=_ID)


class TaskReportSchema(ma.Schema):
    id = fields.Integer()
    kind = fields.String()
    site = fields.String()
    state = fields.String()
    url = fields.String()
    remote_id = fields.String(allow_none=True)
    item_id = fields.Integer(allow_none=True)
    attempts = fields.Integer()
    error_class = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)
    last_error_at = fields.AwareDateTime(allow_none=True)
    available_at = fields.AwareDateTime()
    lease_id = fields.String(allow_none=True)
    updated_at = fields.AwareDateTime()


class TaskListSchema(ma.Schema):
    tasks = fields.List(fields.Nested(TaskReportSchema))
    next_after_id = fields.Integer(allow_none=True, metadata={"description": "pass as after_id for the next page"})


class RequeueRequestSchema(StrictSchema):
    task_ids = fields.List(fields.Integer(strict=True, validate=_ID), validate=validate.Length(1, 100_000))
    state = fields.String(validate=validate.OneOf([s.value for s in TaskState]))
    kind = fields.String(validate=validate.OneOf([k.value for k in TaskKind]))
    site = fields.String(validate=validate.Length(1, 100))


class CountSchema(ma.Schema):
    count = fields.Integer()


class RequeueResponseSchema(CountSchema):
    by_kind = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "requeued per kind"})


# ------------------------------------------------------------------------ stats


class ClientStatsSchema(ma.Schema):
    name = fields.String()
    role = fields.String()
    version = fields.String(allow_none=True)
    last_seen = fields.AwareDateTime(allow_none=True)
    revoked = fields.Boolean()
    tasks_done = fields.Integer()
    bytes = fields.Integer()
    done_last_hour = fields.Integer()
    active_leases = fields.Integer()


class SiteStatsSchema(ma.Schema):
    tasks = fields.Dict(keys=fields.String(), values=fields.Dict(keys=fields.String(), values=fields.Integer()))
    in_flight = fields.Integer()
    max_in_flight = fields.Integer(allow_none=True)
    cooldown_until = fields.AwareDateTime(allow_none=True)
    cooldown_reason = fields.String(allow_none=True)
    paused_at = fields.AwareDateTime(allow_none=True, metadata={"description": "paused by an operator since"})
    last_test = fields.Dict(
        allow_none=True, metadata={"description": "the last health test: at, node, passed, failed checks"}
    )
    configured = fields.Boolean()
    video_hours = fields.Float(metadata={"description": "hours of video and audio recorded (probed durations)"})


class ErrorStatsSchema(ma.Schema):
    error_class = fields.String()
    error = fields.String(allow_none=True)
    count = fields.Integer()
    last_seen = fields.AwareDateTime()


class ThroughputSchema(ma.Schema):
    window_seconds = fields.Integer()
    done = fields.Dict(keys=fields.String(), values=fields.Integer())
    bytes = fields.Integer()


class LeaseStatsSchema(ma.Schema):
    active = fields.Integer()
    tasks_leased = fields.Integer()
    expired_unreclaimed = fields.Integer()


class StatsSchema(ma.Schema):
    generated_at = fields.AwareDateTime()
    detail = fields.String(
        metadata={"description": "'full' for key holders; 'counts' without a key (no clients, errors or reasons)"}
    )
    items = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={"description": f"by state ({', '.join(s.value for s in ItemState)}) and total"},
    )
    tasks = fields.Dict(keys=fields.String(), values=fields.Dict(keys=fields.String(), values=fields.Integer()))
    sites = fields.Dict(keys=fields.String(), values=fields.Nested(SiteStatsSchema))
    leases = fields.Nested(LeaseStatsSchema)
    clients = fields.List(fields.Nested(ClientStatsSchema))
    throughput = fields.Nested(ThroughputSchema)
    recent_errors = fields.List(fields.Nested(ErrorStatsSchema))
    archive = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={"description": "files and bytes recorded, distinct content (unique_*), posts skipped as known"},
    )
    known = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "anchors by kind"})


class SiteTestSchema(ma.Schema):
    url = fields.String()
    min_posts = fields.Integer()
    download = fields.Integer(metadata={"description": "posts to download (into a temporary folder)"})
    sha256 = fields.List(fields.String(), metadata={"description": "files that must be among them"})
    metadata_keys = fields.List(fields.String(), metadata={"description": "every found post carries these"})


class SiteSchema(ma.Schema):
    name = fields.String()
    engine = fields.String()
    search_url = fields.String(allow_none=True)
    post_url = fields.String(allow_none=True)
    max_in_flight = fields.Integer(allow_none=True)
    options = fields.Dict()
    test = fields.Nested(SiteTestSchema, allow_none=True, metadata={"description": "its health test, if any"})


class SiteTestCheckSchema(StrictSchema):
    name = fields.String(required=True, validate=[validate.Length(1, 200), _storable_text])
    passed = fields.Boolean(required=True)
    detail = fields.String(validate=[validate.Length(max=2000), _storable_text])


class SiteTestResultSchema(StrictSchema):
    passed = fields.Boolean(required=True)
    checks = fields.List(fields.Nested(SiteTestCheckSchema), required=True, validate=validate.Length(max=100))


class SiteTestRecordedSchema(ma.Schema):
    name = fields.String()
    passed = fields.Boolean()
    at = fields.AwareDateTime()


class HealthSchema(ma.Schema):
    status = fields.String()
    version = fields.String()
    database = fields.String()


# -------------------------------------------------------------------- catalogue

_CURSOR = {"metadata": {"description": "next_cursor of the previous page"}}


class PageQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    cursor = fields.String(validate=validate.Length(max=100), **_CURSOR)


class ItemQuerySchema(PageQuerySchema):
    state = fields.String(validate=validate.OneOf([s.value for s in ItemState]))
    site = fields.String(validate=[validate.Length(1, 100), _storable_text])
    q = fields.String(
        validate=[validate.Length(1, 500), _storable_text],
        metadata={"description": "text in the key, title or query (case-insensitive)"},
    )


class ItemSchema(ma.Schema):
    id = fields.Integer()
    key = fields.String()
    check_every = fields.Integer(allow_none=True, metadata={"description": "a subscription: seconds between checks"})
    paused_at = fields.AwareDateTime(allow_none=True)
    url = fields.String(allow_none=True)
    query = fields.String(allow_none=True)
    title = fields.String(allow_none=True)
    state = fields.String()
    sites = fields.List(fields.String(), allow_none=True)
    priority = fields.Integer()
    extra = fields.Dict()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class ItemListSchema(ma.Schema):
    items = fields.List(fields.Nested(ItemSchema))
    next_cursor = fields.String(allow_none=True)


class ItemDetailQuerySchema(StrictSchema):
    downloads_limit = fields.Integer(load_default=1000, validate=validate.Range(1, 10_000))
    checks_limit = fields.Integer(load_default=10, validate=validate.Range(1, 1000))
    downloads_cursor = fields.String(validate=validate.Length(max=100), **_CURSOR)


class MetadataTaskSchema(ma.Schema):
    id = fields.Integer()
    site = fields.String()
    url = fields.String()
    state = fields.String()
    attempts = fields.Integer()
    error_class = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)
    last_error_at = fields.AwareDateTime(allow_none=True)
    found_count = fields.Integer(allow_none=True)
    known_count = fields.Integer(allow_none=True, metadata={"description": "found posts skipped as known"})
    found_at = fields.AwareDateTime(allow_none=True)
    available_at = fields.AwareDateTime(
        metadata={"description": "when it may go out again (scheduled: the next check)"}
    )
    check_count = fields.Integer(allow_none=True)


class CatalogueFileSchema(ma.Schema):
    id = fields.Integer()
    task_id = fields.Integer()
    site = fields.String(allow_none=True)
    remote_id = fields.String(allow_none=True)
    task_url = fields.String(allow_none=True)
    item = fields.String(allow_none=True, metadata={"description": "key of the item that found its post first"})
    node = fields.String(allow_none=True, metadata={"description": "the node that keeps it"})
    path = fields.String(metadata={"description": "relative to that node's --dest"})
    size = fields.Integer()
    sha256 = fields.String()
    md5 = fields.String(allow_none=True)
    mime = fields.String(allow_none=True)
    phash = fields.String(allow_none=True)
    dhash = fields.String(allow_none=True)
    store_key = fields.String(
        allow_none=True, metadata={"description": "its object in the file store (GET /files/<id>/content); null: none"}
    )
    on_node = fields.Boolean(metadata={"description": "the node still keeps it at path"})
    created_at = fields.AwareDateTime()


class SimilarFileSchema(CatalogueFileSchema):
    distance = fields.Integer(metadata={"description": "Hamming distance to the query hash, in bits"})


class DownloadTaskSchema(ma.Schema):
    id = fields.Integer()
    site = fields.String()
    remote_id = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    state = fields.String()
    attempts = fields.Integer()
    error_class = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)
    duplicate_of = fields.Integer(allow_none=True, metadata={"description": "duplicate: the file that has it"})
    done_at = fields.AwareDateTime(allow_none=True)
    gone_at = fields.AwareDateTime(
        allow_none=True, metadata={"description": "a full check no longer found it upstream (files kept)"}
    )
    files = fields.List(fields.Nested(CatalogueFileSchema))


class ItemTotalsSchema(ma.Schema):
    found = fields.Integer(metadata={"description": "download tasks of the posts it found"})
    known = fields.Integer(metadata={"description": "found posts skipped as known anchors"})
    downloads = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "by state"})
    files = fields.Integer()
    bytes = fields.Integer()
    gone_upstream = fields.Integer(metadata={"description": "downloaded posts a full check found no more"})


class CheckSchema(ma.Schema):
    id = fields.Integer()
    site = fields.String()
    checked_at = fields.AwareDateTime()
    outcome = fields.String(metadata={"description": "done, not_found or failed"})
    posts_seen = fields.Integer()
    new_posts = fields.Integer()
    known_posts = fields.Integer()
    stopped_at_known = fields.Boolean()
    full = fields.Boolean()
    error = fields.String(allow_none=True)
    node = fields.String(allow_none=True, metadata={"description": "the node that checked"})


class CheckTotalsSchema(ma.Schema):
    checks = fields.Integer()
    new_posts = fields.Integer()
    failed = fields.Integer()


class ItemDetailSchema(ItemSchema):
    checks = fields.List(fields.Nested(CheckSchema), metadata={"description": "the last checks, newest first"})
    check_totals = fields.Nested(CheckTotalsSchema)
    next_check_at = fields.AwareDateTime(allow_none=True)
    metadata_tasks = fields.List(fields.Nested(MetadataTaskSchema))
    downloads = fields.List(fields.Nested(DownloadTaskSchema))
    next_downloads_cursor = fields.String(allow_none=True)
    totals = fields.Nested(ItemTotalsSchema)


class FileQuerySchema(PageQuerySchema):
    sha256 = fields.String(validate=_HEX64)
    md5 = fields.String(validate=_HEX32)
    site = fields.String(validate=[validate.Length(1, 100), _storable_text])
    node = fields.String(validate=[validate.Length(1, 100), _storable_text])
    item = fields.String(validate=[validate.Length(1, 500), _storable_text], metadata={"description": "an item key"})
    mime = fields.String(
        validate=[validate.Length(1, 100), _storable_text],
        metadata={"description": "a MIME type, or a prefix ending in / (image/)"},
    )
    since = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "recorded at or after"})
    until = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "recorded before"})


class FileListSchema(ma.Schema):
    files = fields.List(fields.Nested(CatalogueFileSchema))
    next_cursor = fields.String(allow_none=True)


_DISTANCE = fields.Integer(
    load_default=8, validate=validate.Range(0, 16), metadata={"description": "at most this many bits apart"}
)
_HASH_KIND = fields.String(
    validate=validate.OneOf(["phash", "dhash"]),
    metadata={"description": "which perceptual hash to compare (default: the one given, else phash)"},
)


class SimilarQuerySchema(StrictSchema):
    phash = fields.String(validate=_HEX16_ANY_CASE)
    dhash = fields.String(validate=_HEX16_ANY_CASE)
    file = fields.Integer(validate=_ID, metadata={"description": "search with this file's hash"})
    hash = _HASH_KIND
    distance = _DISTANCE
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))

    @ma.validates_schema
    def _one_query(self, data, **kwargs):
        given = [name for name in ("phash", "dhash", "file") if name in data]
        if len(given) != 1:
            raise ma.ValidationError("give exactly one of phash, dhash or file", field_name="phash")
        if "hash" in data and given[0] != "file" and data["hash"] != given[0]:
            raise ma.ValidationError(f"hash={data['hash']} with {given[0]}=: give one", field_name="hash")


class SimilarListSchema(ma.Schema):
    hash = fields.String()
    query = fields.String(metadata={"description": "the hash searched for"})
    distance = fields.Integer()
    files = fields.List(fields.Nested(SimilarFileSchema))


class DuplicateQuerySchema(PageQuerySchema):
    kind = fields.String(load_default="exact", validate=validate.OneOf(["exact", "similar"]))
    distance = _DISTANCE
    hash = _HASH_KIND
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))


class DuplicateGroupSchema(ma.Schema):
    sha256 = fields.String(metadata={"description": "exact: the content"})
    copies = fields.Integer(metadata={"description": "exact: file records holding it"})
    size = fields.Integer()
    wasted = fields.Integer(metadata={"description": "exact: bytes beyond the first copy"})
    first = fields.Integer(metadata={"description": "similar: the cluster's smallest file id"})
    files = fields.List(fields.Nested(SimilarFileSchema))


class DuplicateListSchema(ma.Schema):
    kind = fields.String()
    distance = fields.Integer(allow_none=True)
    groups = fields.List(fields.Nested(DuplicateGroupSchema))
    next_cursor = fields.String(allow_none=True)


class KnownQuerySchema(StrictSchema):
    site = fields.String(
        validate=[validate.Length(1, 100), _storable_text],
        metadata={"description": "the site of a gallery-dl archive, or of CSV rows without a site column"},
    )
    source = fields.String(validate=[validate.Length(1, 500), _storable_text], metadata={"description": "a name"})


class KnownReportSchema(ma.Schema):
    source = fields.String()
    format = fields.String()
    rows = fields.Integer()
    added = fields.Integer()
    already_known = fields.Integer()


class PausedSchema(ma.Schema):
    key = fields.String(metadata={"description": "the item (item pause)"})
    name = fields.String(metadata={"description": "the site (site pause)"})
    paused = fields.Boolean()
    tasks = fields.Integer(metadata={"description": "item: its tasks paused or resumed"})


class ReportSectionSchema(ma.Schema):
    title = fields.String()
    count = fields.Integer(metadata={"description": "how many in all (rows lists the first few)"})
    rows = fields.List(fields.Dict())


class ReportSchema(ma.Schema):
    generated_at = fields.String()
    needs_attention = fields.Boolean(metadata={"description": "false: all is well"})
    sections = fields.Dict(keys=fields.String(), values=fields.Nested(ReportSectionSchema))
