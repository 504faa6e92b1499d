"""What a node reports about each file it keeps: size, sha256, md5, MIME type and, for images,
perceptual hashes (phash, dhash) that find re-uploads across posts and sites.

Both hashes come from one decode; JPEGs are decoded at reduced size (``draft``), which
is ~4x cheaper and does not change the 8x8 hashes.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
#: Leading bytes of the media types a node usually keeps.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"ftyp", 4, "video/mp4"),
    (b"\x1a\x45\xdf\xa3", 0, "video/webm"),
    (b"%PDF", 0, "application/pdf"),
    (b"PK\x03\x04", 0, "application/zip"),
)


def content_hashes(path: str | os.PathLike) -> tuple[str, str, int]:
    """(sha256, md5, size) from one read: md5 is what boorus publish for each post."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha256.hexdigest(), md5.hexdigest(), size


def sniff_mime(path: str | os.PathLike) -> str:
    with open(path, "rb") as stream:
        head = stream.read(16)
    for magic, offset, mime in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if mime == "video/mp4" and head[8:12] in (b"qt  ",):
                return "video/quicktime"
            return mime
    guessed, _ = mimetypes.guess_type(str(path))
    return guessed or "application/octet-stream"


def image_hashes(path: str | os.PathLike) -> tuple[str, str] | None:
    """(phash, dhash) as 16 hex digits each, or None when the file is not a readable image."""
    import imagehash
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("L", (128, 128))
            gray = image.convert("L")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return str(imagehash.phash(gray)), str(imagehash.dhash(gray))


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """size, sha256, md5, mime, and phash/dhash for images (None otherwise)."""
    path = Path(path)
    sha256, md5, size = content_hashes(path)
    mime = sniff_mime(path)
    hashes = image_hashes(path) if mime.startswith("image/") else None
    return {
        "size": size,
        "sha256": sha256,
        "md5": md5,
        "mime": mime,
        "phash": hashes[0] if hashes else None,
        "dhash": hashes[1] if hashes else None,
    }


def hamming(first: str, second: str) -> int:
    """Distance between two hex perceptual hashes: ~0-6 near-duplicates, ~30 unrelated."""
    return bin(int(first, 16) ^ int(second, 16)).count("1")
