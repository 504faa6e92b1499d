"""The central file store: an existing S3-compatible object store (SeaweedFS, MinIO, Ceph,
AWS S3, Backblaze B2), spoken to through boto3. Nodes upload into it; the coordinator
reads from it. Both sides configure it alike (``FILE_STORE``, ``FILE_STORE_ENDPOINT``,
``FILE_STORE_REGION``); credentials are each host's own, found by boto3 where it always
looks (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``~/.aws/credentials``,
``AWS_PROFILE``), never sent by the coordinator and never printed.

Content-addressed: a file is one object, ``<prefix>/sha256/ab/cd/<sha256>``, whoever
fetched it and however often; each post's sidecar is its own object beside it
(``<sha256>.<site>.<post>.json``). Every upload carries its SHA-256 (``ChecksumSHA256``,
per part for multipart uploads), so the store itself refuses bytes that changed on the
way, and a multipart upload is completed only when the whole file hashed to its key.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import ConfigError

#: Files up to this size go up in one request; larger ones in parts of this size, one
#: part in memory at a time (S3 wants parts of at least 5 MiB, except the last).
PART_BYTES = 16 << 20
MIN_PART_BYTES = 5 << 20
#: S3 allows 10,000 parts: a file larger than that many parts gets larger parts.
MAX_PARTS = 10_000

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")
#: The error codes with which a store says "those are not the bytes you said".
_DIGEST_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidRequest", "InvalidChecksum"}
#: Codes that mean "try again later", whatever the HTTP status says.
_PASSING_CODES = {"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError", "Throttling"}


class StoreError(Exception):
    """Something went wrong talking to the store; the message is one readable line."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or is not serving (down, 5xx, credentials or bucket
    gone): the upload waits, nothing about the file is wrong."""


class StoreRejected(StoreError):
    """The store refused these bytes (a checksum mismatch: changed in flight or on disk):
    the upload is tried again from the start."""


@dataclass(frozen=True)
class StoreConfig:
    bucket: str
    prefix: str
    endpoint: str | None
    region: str | None

    @property
    def where(self) -> str:
        """The store as a line may name it: endpoint and bucket, never credentials."""
        prefix = f" prefix {self.prefix!r}" if self.prefix else ""
        return f"{self.endpoint or 'AWS S3'} bucket {self.bucket!r}{prefix}"


def parse_config(settings: Mapping[str, Any]) -> StoreConfig | None:
    """``FILE_STORE`` (None, or ``s3://bucket/prefix``) with its endpoint and region, or
    a ConfigError naming the setting."""
    url = settings.get("FILE_STORE")
    if url is None or url == "":
        return None
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise ConfigError(f"FILE_STORE must be None or an s3://bucket/prefix URL, got {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if "@" in bucket or ":" in bucket:
        raise ConfigError("FILE_STORE names no credentials (they stay in the environment or ~/.aws/credentials)")
    if not _BUCKET.match(bucket):
        raise ConfigError(f"FILE_STORE: {bucket!r} is not a bucket name (3-63 of a-z 0-9 . -)")
    if prefix and not _is_prefix(prefix):
        raise ConfigError(f"FILE_STORE: prefix {prefix!r} may hold only A-Z a-z 0-9 . _ - and /")
    endpoint = settings.get("FILE_STORE_ENDPOINT") or None
    if endpoint is not None and (
        not isinstance(endpoint, str) or not re.match(r"^https?://[^/@\s]+(/[^\s]*)?$", endpoint)
    ):
        raise ConfigError(f"FILE_STORE_ENDPOINT must be an http(s) URL without credentials, got {endpoint!r}")
    region = settings.get("FILE_STORE_REGION") or None
    if region is not None and (not isinstance(region, str) or not re.match(r"^[a-z0-9-]{1,40}$", region)):
        raise ConfigError(f"FILE_STORE_REGION must be a region name such as 'us-east-1', got {region!r}")
    return StoreConfig(bucket, prefix, endpoint.rstrip("/") if endpoint else None, region)


def _is_prefix(prefix: str) -> bool:
    return bool(_PREFIX.match(prefix)) and not any(part in (".", "..") for part in prefix.split("/"))


def object_key(prefix: str, sha256: str) -> str:
    """Where a file's bytes live: ``<prefix>/sha256/ab/cd/<sha256>``."""
    if not _HEX64.match(sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return "/".join(part for part in (prefix, "sha256", sha256[:2], sha256[2:4], sha256) if part)


def sidecar_key(file_key: str, site: str, remote_id: str | None, task_id: int) -> str:
    """A post's sidecar, beside its file: one per post, so two posts of one picture keep two.
    A remote id that is not a plain name (it comes from a site) is named by its hash."""
    if remote_id is None:
        post = f"task-{int(task_id)}"
    elif _PLAIN_ID.match(remote_id):
        post = remote_id
    else:
        post = "h-" + hashlib.sha256(remote_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{file_key}.{site}.{post}.json"


def is_object_key(key: str, sha256: str) -> bool:
    """Does ``key`` name the content-addressed object of ``sha256`` (under any prefix)?"""
    tail = f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"
    return key == tail or (key.endswith("/" + tail) and _is_prefix(key[: -len(tail) - 1]))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


@dataclass
class Stored:
    key: str
    #: Bytes this call sent (0: the store held the object already).
    uploaded: int


class FileStore:
    """One boto3 client on one bucket; safe to share between threads, not processes."""

    def __init__(self, config: StoreConfig, *, part_bytes: int = PART_BYTES, timeout: float = 30):
        import boto3  # ~0.2 s to import: only hosts that use a store pay for it
        from botocore.config import Config

        self.config = config
        self.part_bytes = max(MIN_PART_BYTES, part_bytes)
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint,
            region_name=config.region or "us-east-1",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=min(timeout, 10),
                read_timeout=timeout,
                retries={"max_attempts": 3, "mode": "standard"},
                request_checksum_calculation="when_required",
                parameter_validation=False,
                response_checksum_validation="when_required",
            ),
        )

    # --------------------------------------------------------------------- asking

    def check(self) -> None:
        """Can this host use the bucket? A StoreError naming what is wrong otherwise."""
        self._call("reach", self._client.head_bucket, Bucket=self.config.bucket)

    def object_key(self, sha256: str) -> str:
        return object_key(self.config.prefix, sha256)

    def holds(self, key: str, size: int | None = None) -> bool:
        """Is there an object at ``key`` (of ``size`` bytes, when given)?"""
        try:
            head = self._call("look up", self._client.head_object, Bucket=self.config.bucket, Key=key)
        except _Missing:
            return False
        return size is None or head["ContentLength"] == size

    # ------------------------------------------------------------------- writing

    def put_file(self, path: Path, sha256: str, size: int, *, mime: str | None = None) -> Stored:
        """Store ``path`` under its sha256, unless the store holds it already. The store
        checks every byte against the SHA-256 sent with it."""
        key = self.object_key(sha256)
        if self.holds(key, size):
            return Stored(key, 0)
        content_type = mime or "application/octet-stream"
        if size <= self.part_bytes:
            with open(path, "rb") as stream:
                body = stream.read(self.part_bytes + 1)
            if len(body) != size:
                raise StoreRejected(f"{path} is {len(body)} bytes now, {size} when it was hashed")
            self.put_bytes(key, body, content_type=content_type, sha256=sha256)
        else:
            self._put_in_parts(path, key, sha256, size, content_type)
        return Stored(key, size)

    def put_bytes(
        self, key: str, body: bytes, *, content_type: str = "application/json", sha256: str | None = None
    ) -> None:
        """One PUT; ``sha256`` (what the bytes hashed to before) is checked by the store."""
        digest = bytes.fromhex(sha256) if sha256 else hashlib.sha256(body).digest()
        self._call(
            "upload",
            self._client.put_object,
            Bucket=self.config.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            ChecksumSHA256=_b64(digest),
        )

    def _put_in_parts(self, path: Path, key: str, sha256: str, size: int, content_type: str) -> None:
        """Multipart, one part in memory at a time, each part's SHA-256 checked by the
        store; completed only when the whole file hashed to ``sha256``."""
        part_bytes = max(self.part_bytes, -(-size // MAX_PARTS))
        upload = self._call(
            "upload",
            self._client.create_multipart_upload,
            Bucket=self.config.bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            ContentType=content_type,
        )
        upload_id = upload["UploadId"]
        try:
            whole = hashlib.sha256()
            parts = []
            with open(path, "rb") as stream:
                for number, chunk in enumerate(iter(lambda: stream.read(part_bytes), b""), start=1):
                    whole.update(chunk)
                    checksum = _b64(hashlib.sha256(chunk).digest())
                    answer = self._call(
                        "upload",
                        self._client.upload_part,
                        Bucket=self.config.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumSHA256=checksum,
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum})
            if whole.hexdigest() != sha256:
                raise StoreRejected(f"{path} no longer hashes to {sha256[:12]}…: changed since it was hashed")
            self._call(
                "upload",
                self._client.complete_multipart_upload,
                Bucket=self.config.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=self.config.bucket, Key=key, UploadId=upload_id)
            except Exception:  # the store is down: it expires unfinished uploads itself
                pass
            raise

    # ------------------------------------------------------------------- reading

    def presigned_url(self, key: str, seconds: int, *, filename: str | None = None) -> str:
        params = {"Bucket": self.config.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{safe_filename(filename)}"'
        return self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)

    def open(self, key: str) -> tuple[Iterator[bytes], int]:
        """The object's bytes as chunks, and its size."""
        try:
            answer = self._call("read", self._client.get_object, Bucket=self.config.bucket, Key=key)
        except _Missing:
            raise StoreError(f"the store has no object {key}") from None
        return answer["Body"].iter_chunks(1 << 20), answer["ContentLength"]

    def read(self, key: str) -> bytes:
        chunks, _ = self.open(key)
        return b"".join(chunks)

    def fetch_to(self, key: str, sha256: str, target: Path) -> int:
        """Write the object to ``target`` (atomically), checking its sha256 on the way."""
        from botocore.exceptions import BotoCoreError

        chunks, _ = self.open(key)
        temporary = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        size = 0
        try:
            with open(temporary, "wb") as stream:
                try:
                    for chunk in chunks:
                        digest.update(chunk)
                        stream.write(chunk)
                        size += len(chunk)
                except BotoCoreError as error:  # the connection broke off mid-object
                    raise StoreUnavailable(f"reading {key} from the file store broke off: {error}") from None
            if digest.hexdigest() != sha256:
                raise StoreError(f"object {key} does not hash to its sha256 (got {digest.hexdigest()[:12]}…)")
            temporary.replace(target)
        finally:
            temporary.unlink(missing_ok=True)
        return size

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ errors

    def _call(self, doing: str, operation, **params) -> Any:
        """One S3 call (botocore retries passing trouble itself), its failure as one line."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        try:
            return operation(**params)
        except ClientError as error:
            raise self._classify(doing, error, params.get("Key")) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise StoreUnavailable(
                f"no credentials for the file store ({self.config.where}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials"
            ) from None
        except BotoCoreError as error:  # connection refused, timed out, dropped
            reason = re.sub(r': "[^"]*"', "", str(error))  # the object's URL adds nothing
            raise StoreUnavailable(f"file store unreachable ({self.config.where}): {reason}") from None

    def _classify(self, doing: str, error, key: str | None) -> StoreError:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(error.response.get("Error", {}).get("Code") or status)
        text = error.response.get("Error", {}).get("Message") or code
        if status == 404 and key is not None and code in ("404", "NoSuchKey", "NotFound"):
            return _Missing(key)
        if status == 404:
            return StoreUnavailable(f"the file store has no bucket {self.config.bucket!r} ({self.config.where})")
        if status in (401, 403):
            return StoreUnavailable(
                f"the file store refused this host's credentials ({self.config.where}): {code}: {text}"
            )
        if status >= 500 or code in _PASSING_CODES:
            return StoreUnavailable(f"the file store failed to {doing} ({self.config.where}): {code}: {text}")
        if code in _DIGEST_CODES or status == 400:
            return StoreRejected(f"the file store refused the bytes of {key}: {code}: {text}")
        return StoreRejected(f"the file store refused to {doing} {key}: {code}: {text}")


class _Missing(StoreError):
    """No object at that key (HEAD or GET answered 404)."""


def safe_filename(name: str) -> str:
    """A file name fit for a Content-Disposition header."""
    return re.sub(r"[^A-Za-z0-9._ -]", "_", name)[:200]


def open_store(settings: Mapping[str, Any], **options) -> FileStore | None:
    """The store the settings name, or None (files stay where they were written)."""
    config = parse_config(settings)
    return FileStore(config, **options) if config is not None else None
