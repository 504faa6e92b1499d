"""The file store client (``common.file_store``) against a real SeaweedFS: content-addressed
objects, checksums the store itself checks, multipart with bounded memory, bytes changed
in flight refused, and one clear line for each way a store cannot be used."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from common.file_store import (
    MIN_PART_BYTES,
    FileStore,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    is_object_key,
    object_key,
    parse_config,
    sidecar_key,
)
from common.settings import ConfigError
from support.processes import free_port
from tests.corrupting_proxy import CorruptingProxy

pytestmark = pytest.mark.e2e


@pytest.fixture
def credentials(seaweedfs, monkeypatch):
    for name, value in seaweedfs.env("unused").items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


def make_store(seaweedfs, bucket, *, endpoint=None, prefix="archive", **options) -> FileStore:
    settings = {"FILE_STORE": f"s3://{bucket}/{prefix}", "FILE_STORE_ENDPOINT": endpoint or seaweedfs.s3_url}
    return FileStore(parse_config(settings), **options)


def write(path: Path, data: bytes) -> tuple[Path, str]:
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_a_file_is_stored_once_under_its_sha256_and_reads_back_whole(seaweedfs, bucket, credentials, tmp_path):
    store = make_store(seaweedfs, bucket)
    path, sha = write(tmp_path / "a.png", os.urandom(50_000))
    first = store.put_file(path, sha, 50_000, mime="image/png")
    assert first.key == f"archive/sha256/{sha[:2]}/{sha[2:4]}/{sha}"
    assert first.uploaded == 50_000
    again = store.put_file(path, sha, 50_000)
    assert (again.key, again.uploaded) == (first.key, 0)
    assert hashlib.sha256(store.read(first.key)).hexdigest() == sha
    assert seaweedfs.objects(bucket) == {first.key: 50_000}
    head = seaweedfs.client().head_object(Bucket=bucket, Key=first.key)
    assert head["ContentType"] == "image/png"


def test_large_files_go_up_in_parts_each_checked_and_the_whole_hashed(seaweedfs, bucket, credentials, tmp_path):
    store = make_store(seaweedfs, bucket, part_bytes=MIN_PART_BYTES)
    data = os.urandom(2 * MIN_PART_BYTES + 12345)
    path, sha = write(tmp_path / "big.mp4", data)
    stored = store.put_file(path, sha, len(data))
    assert stored.uploaded == len(data)
    assert hashlib.sha256(store.read(stored.key)).hexdigest() == sha
    head = seaweedfs.client().head_object(Bucket=bucket, Key=stored.key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"].endswith("-3")  # three parts, each checked by the store


def test_bytes_that_no_longer_match_their_hash_are_refused_and_nothing_is_stored(
    seaweedfs, bucket, credentials, tmp_path
):
    store = make_store(seaweedfs, bucket, part_bytes=MIN_PART_BYTES)
    small, small_sha = write(tmp_path / "small", b"x" * 1000)
    small.write_bytes(b"y" * 1000)  # changed after it was hashed
    with pytest.raises(StoreRejected, match=r"BadDigest|refused"):
        store.put_file(small, small_sha, 1000)
    big, big_sha = write(tmp_path / "big", os.urandom(MIN_PART_BYTES + 10))
    big.write_bytes(os.urandom(MIN_PART_BYTES + 10))
    with pytest.raises(StoreRejected, match="no longer hashes"):
        store.put_file(big, big_sha, MIN_PART_BYTES + 10)
    assert seaweedfs.objects(bucket) == {}
    uploads = seaweedfs.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []  # the unfinished multipart upload was aborted


def test_an_object_corrupted_in_flight_is_rejected_by_the_store_and_retried(seaweedfs, bucket, credentials, tmp_path):
    from client.uploads import upload_with_retries

    proxy = CorruptingProxy(seaweedfs.ports["s3"])
    try:
        store = make_store(seaweedfs, bucket, endpoint=proxy.url)
        path, sha = write(tmp_path / "p.jpg", os.urandom(20_000))
        proxy.arm(1)
        with pytest.raises(StoreRejected):
            store.put_file(path, sha, 20_000)
        assert len(proxy.corrupted) == 1
        assert seaweedfs.objects(bucket) == {}

        (tmp_path / "p.jpg.json").write_text('{"fetchfleet": {}}')
        proxy.arm(2)
        task = {"id": 7, "site": "demo", "remote_id": "42"}
        pauses = []
        files = upload_with_retries(
            store,
            tmp_path,
            task,
            [{"path": "p.jpg", "size": 20_000, "sha256": sha}],
            keep_local=True,
            sleep=pauses.append,
        )
        assert len(proxy.corrupted) == 3 and pauses == [0.5, 1.0]
        assert hashlib.sha256(store.read(files[0]["store_key"])).hexdigest() == sha
        assert store.read(sidecar_key(files[0]["store_key"], "demo", "42", 7)) == b'{"fetchfleet": {}}'
    finally:
        proxy.stop()


def test_a_store_that_cannot_be_used_says_why_in_one_line(seaweedfs, bucket, credentials, monkeypatch):
    closed = free_port()
    with pytest.raises(StoreUnavailable, match=f"unreachable.*127.0.0.1:{closed}"):
        make_store(seaweedfs, bucket, endpoint=f"http://127.0.0.1:{closed}").check()
    with pytest.raises(StoreUnavailable, match="no bucket 'no-such-bucket'"):
        make_store(seaweedfs, "no-such-bucket").check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreUnavailable, match="refused this host's credentials") as refused:
        make_store(seaweedfs, bucket).check()
    assert "wrong" not in str(refused.value)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"FILE_STORE": "http://bucket"}, "s3://bucket/prefix"),
        ({"FILE_STORE": "s3://ab"}, "not a bucket name"),
        ({"FILE_STORE": "s3://Bucket"}, "not a bucket name"),
        ({"FILE_STORE": "s3://key:secret@bucket"}, "no credentials"),
        ({"FILE_STORE": "s3://bucket/../x"}, "prefix"),
        ({"FILE_STORE": "s3://bucket/a b"}, "prefix"),
        ({"FILE_STORE": "s3://bucket", "FILE_STORE_ENDPOINT": "ftp://x"}, "FILE_STORE_ENDPOINT"),
        ({"FILE_STORE": "s3://bucket", "FILE_STORE_ENDPOINT": "http://u:p@host"}, "FILE_STORE_ENDPOINT"),
        ({"FILE_STORE": "s3://bucket", "FILE_STORE_REGION": "Mars 1"}, "FILE_STORE_REGION"),
    ],
)
def test_bad_store_settings_are_named(settings, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_config(settings)


def test_store_settings_parse():
    assert parse_config({"FILE_STORE": None}) is None
    config = parse_config({"FILE_STORE": "s3://my-archive/a/b/", "FILE_STORE_ENDPOINT": "http://127.0.0.1:8333/"})
    assert (config.bucket, config.prefix, config.endpoint) == ("my-archive", "a/b", "http://127.0.0.1:8333")


def test_keys_are_content_addressed_and_a_sidecar_key_never_carries_a_sites_text():
    sha = "ab" * 32
    assert object_key("", sha) == f"sha256/ab/ab/{sha}"
    assert is_object_key(object_key("p/q", sha), sha) and is_object_key(object_key("", sha), sha)
    assert not is_object_key(object_key("p", sha), "cd" * 32)
    assert not is_object_key(f"../sha256/ab/ab/{sha}", sha)
    assert sidecar_key("k", "demo", "123", 9) == "k.demo.123.json"
    assert sidecar_key("k", "demo", None, 9) == "k.demo.task-9.json"
    hostile = sidecar_key("k", "demo", "../../x/\n", 9)
    assert hostile.startswith("k.demo.h-") and "/" not in hostile[2:] and "\n" not in hostile


def test_reading_back_checks_the_sha256_and_leaves_nothing_half_written(seaweedfs, bucket, credentials, tmp_path):
    store = make_store(seaweedfs, bucket)
    path, sha = write(tmp_path / "a.bin", os.urandom(10_000))
    key = store.put_file(path, sha, 10_000).key
    assert store.fetch_to(key, sha, tmp_path / "copy") == 10_000
    assert (tmp_path / "copy").read_bytes() == path.read_bytes()
    seaweedfs.client().put_object(Bucket=bucket, Key=key, Body=b"something else")  # tampered with in the store
    with pytest.raises(StoreError, match="does not hash to its sha256"):
        store.fetch_to(key, sha, tmp_path / "second")
    assert not (tmp_path / "second").exists() and not (tmp_path / "second.part").exists()
    with pytest.raises(StoreError, match="has no object"):
        store.fetch_to(object_key("archive", "0" * 64), "0" * 64, tmp_path / "third")


def test_seaweedfs_starts_on_new_ports_when_one_it_was_given_is_taken(seaweedfs, tmp_path, monkeypatch):
    """A port picked free can be taken before weed binds it (CI saw one of weed's own
    outgoing connections take it): the harness (tests, demo, bench) then starts it again
    on new ports instead of failing."""
    import socket

    from support import seaweedfs as harness

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    first = iter([taken])  # the S3 port, picked first
    monkeypatch.setattr(harness, "free_port", lambda: next(first, None) or free_port())
    store = harness.SeaweedFS(tmp_path)
    try:
        store.start()
        assert store.alive() and store.ports["s3"] != taken
        assert "address already in use" in (tmp_path / f"seaweedfs-{taken}.log").read_text(errors="replace")
        assert store.client().list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        store.stop()
        holder.close()
