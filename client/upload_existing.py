"""``python -m client store upload-existing``: move what a node already holds under
``--dest`` into the file store, and tell the coordinator where each file lives now.

Every fetchfleet file has its JSON sidecar beside it (sha256, task, site, post): that is
what is walked, not the coordinator's records, so it also works for a node whose
coordinator database was rebuilt. Each file is hashed again before it goes up (a file
that changed since its download is reported and left alone) and uploaded with its
SHA-256, once: the store is asked first, and a ledger in
``DEST/.fetchfleet/uploads.sqlite3`` remembers what went up and what the coordinator was
told, so a second run (or one after an interruption) uploads nothing twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.file_store import FileStore
from common.sites import is_site_name

from .archive import Archive
from .coordinator import Coordinator
from .hashing import content_hashes
from .reporting import human_bytes
from .sidecar import SUFFIX, sidecar_path
from .uploads import put_with_sidecar

log = logging.getLogger("fetchfleet")

#: Files told to the coordinator per request.
BATCH = 500
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ExistingFile:
    path: Path
    relative: str
    task_id: int
    site: str
    remote_id: str | None
    sha256: str
    mime: str | None


@dataclass
class UploadTally:
    files: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    in_store: int = 0
    done_before: int = 0
    changed: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    recorded: int = 0
    unknown: int = 0

    def line(self) -> str:
        parts = [
            f"{self.uploaded} uploaded ({human_bytes(self.uploaded_bytes)})",
            f"{self.in_store} already in the store",
            f"{self.done_before} done by an earlier run",
        ]
        if self.changed:
            parts.append(f"{len(self.changed)} changed since download, left alone: {', '.join(self.changed[:5])}")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} with an unreadable sidecar: {', '.join(self.unreadable[:5])}")
        told = f"the coordinator recorded {self.recorded}" + (f", knows {self.unknown} not" if self.unknown else "")
        return f"upload-existing: {self.files} file(s): {', '.join(parts)}; {told}"

    def exit_code(self) -> int:
        return 1 if self.changed or self.unreadable else 0


class Ledger:
    """What an earlier run uploaded, by path, size and modification time."""

    def __init__(self, dest: Path):
        folder = dest / ".fetchfleet"
        folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(folder / "uploads.sqlite3", timeout=60)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS existing (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "mtime_ns INTEGER NOT NULL, store_key TEXT NOT NULL, told INTEGER NOT NULL DEFAULT 0)"
        )
        self._db.commit()

    def done(self, relative: str, stat: os.stat_result) -> bool:
        row = self._db.execute("SELECT size, mtime_ns, told FROM existing WHERE path = ?", (relative,)).fetchone()
        return row is not None and row == (stat.st_size, stat.st_mtime_ns, 1)

    def uploaded(self, relative: str, stat: os.stat_result, key: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO existing (path, size, mtime_ns, store_key, told) VALUES (?, ?, ?, ?, 0)",
            (relative, stat.st_size, stat.st_mtime_ns, key),
        )
        self._db.commit()

    def told(self, relatives: list[str]) -> None:
        self._db.executemany("UPDATE existing SET told = 1 WHERE path = ?", [(r,) for r in relatives])
        self._db.commit()

    def close(self) -> None:
        self._db.close()


def existing_files(dest: Path, unreadable: list[str]) -> Iterator[ExistingFile]:
    """Every file under ``dest`` with a fetchfleet sidecar (symbolic links and the node's
    own ``.fetchfleet`` folder are not followed)."""
    for folder, directories, names in os.walk(dest):
        directories[:] = sorted(d for d in directories if not (folder == str(dest) and d == ".fetchfleet"))
        for name in sorted(names):
            if not name.endswith(SUFFIX):
                continue
            sidecar = Path(folder) / name
            path = sidecar.with_name(name[: -len(SUFFIX)])
            if path.is_symlink() or sidecar.is_symlink() or not path.is_file():
                continue
            relative = path.relative_to(dest).as_posix()
            described = _describe(sidecar)
            if described is None:
                unreadable.append(relative)
                continue
            yield ExistingFile(path, relative, **described)


def _describe(sidecar: Path) -> dict[str, Any] | None:
    try:
        about = json.loads(sidecar.read_text(encoding="utf-8"))["fetchfleet"]
        task_id, site, sha256 = about["task_id"], about["site"], about["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    remote_id = about.get("remote_id")
    if not (isinstance(task_id, int) and is_site_name(site) and isinstance(sha256, str) and _HEX64.match(sha256)):
        return None  # a site name that is no plain folder name never names an object
    return {
        "task_id": task_id,
        "site": site,
        "remote_id": remote_id if isinstance(remote_id, str) else None,
        "sha256": sha256,
        "mime": about.get("mime") if isinstance(about.get("mime"), str) else None,
    }


def upload_existing(
    store: FileStore, coordinator: Coordinator, dest: Path, *, keep_local: bool, progress: bool = False
) -> UploadTally:
    tally = UploadTally()
    ledger = Ledger(dest)
    archive = Archive(dest)
    batch: list[tuple[ExistingFile, str]] = []
    try:
        for found in tqdm(existing_files(dest, tally.unreadable), unit="file", disable=not progress):
            tally.files += 1
            stat = found.path.stat()
            if ledger.done(found.relative, stat):
                tally.done_before += 1
                continue
            sha256, _, size = content_hashes(found.path)
            if sha256 != found.sha256:
                log.warning("%s changed since its download (its sidecar says %s…)", found.relative, found.sha256[:12])
                tally.changed.append(found.relative)
                continue
            put = put_with_sidecar(
                store,
                found.path,
                {"sha256": sha256, "size": size, "mime": found.mime},
                site=found.site,
                remote_id=found.remote_id,
                task_id=found.task_id,
            )
            tally.uploaded += bool(put.uploaded)
            tally.uploaded_bytes += put.uploaded
            tally.in_store += not put.uploaded
            ledger.uploaded(found.relative, stat, put.key)
            batch.append((found, put.key))
            if len(batch) >= BATCH:
                _tell(coordinator, batch, tally, ledger, archive, keep_local)
        _tell(coordinator, batch, tally, ledger, archive, keep_local)
    finally:
        ledger.close()
        archive.close()
    return tally


def _tell(
    coordinator: Coordinator,
    batch: list[tuple[ExistingFile, str]],
    tally: UploadTally,
    ledger: Ledger,
    archive: Archive,
    keep_local: bool,
) -> None:
    """Tell the coordinator where a batch lives now; only then drop local copies."""
    if not batch:
        return
    answer = coordinator.files_stored(
        [
            {"task_id": f.task_id, "path": f.relative, "sha256": f.sha256, "store_key": key, "kept": keep_local}
            for f, key in batch
        ]
    )
    tally.recorded += answer.get("recorded", 0)
    tally.unknown += answer.get("unknown", 0)
    ledger.told([f.relative for f, _ in batch])
    for found, key in batch:
        archive.note_stored(found.site, found.remote_id, found.relative, key, kept=keep_local)
        if not keep_local:
            found.path.unlink(missing_ok=True)
            sidecar_path(found.path).unlink(missing_ok=True)
    batch.clear()
