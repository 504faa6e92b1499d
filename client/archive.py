"""The node's own record of finished downloads (``DEST/.fetchfleet/archive.sqlite3``).

A task that comes back to this node (its first result was lost, or an operator requeued
it) is reported again from this record, without fetching anything, as long as its files
are still on disk with the recorded sizes, or were removed after a verified upload into
the file store (``kept`` False). Only the parent process writes it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


class Archive:
    def __init__(self, dest: Path):
        self.dest = dest
        folder = dest / ".fetchfleet"
        folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(folder / "archive.sqlite3", timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS downloads (site TEXT NOT NULL, remote_id TEXT NOT NULL, files TEXT NOT NULL, "
            "recorded_at TEXT DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (site, remote_id))"
        )
        self._db.commit()

    def lookup(self, site: str, remote_id: str | None) -> list[dict[str, Any]] | None:
        """The recorded files of a download, if every one is still on disk at its size
        (or lives in the file store only)."""
        if remote_id is None:
            return None
        row = self._db.execute(
            "SELECT files FROM downloads WHERE site = ? AND remote_id = ?", (site, remote_id)
        ).fetchone()
        if row is None:
            return None
        files = json.loads(row[0])
        for record in files:
            if record.get("kept") is False and record.get("store_key"):
                continue
            path = self.dest / record["path"]
            if not path.is_file() or path.stat().st_size != record["size"]:
                return None
        return files

    def record(self, site: str, remote_id: str | None, files: list[dict[str, Any]]) -> None:
        if remote_id is None:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO downloads (site, remote_id, files) VALUES (?, ?, ?)",
            (site, remote_id, json.dumps(files)),
        )
        self._db.commit()

    def note_stored(self, site: str, remote_id: str | None, path: str, store_key: str, *, kept: bool) -> None:
        """A recorded file went into the file store (and was removed here unless ``kept``)."""
        if remote_id is None:
            return
        row = self._db.execute(
            "SELECT files FROM downloads WHERE site = ? AND remote_id = ?", (site, remote_id)
        ).fetchone()
        if row is None:
            return
        files = json.loads(row[0])
        for record in files:
            if record["path"] == path:
                record["store_key"] = store_key
                if not kept:
                    record["kept"] = False
        self.record(site, remote_id, files)

    def close(self) -> None:
        self._db.close()
