"""The embedded cache: the same documents in one SQLite file, for a node without CouchDB."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from .base import MetadataCache

#: SQLite's limit on bound parameters per statement (999 on old builds).
_BATCH = 900


class FileCache(MetadataCache):
    def __init__(self, folder: Path, *, max_age: float, node: str):
        super().__init__(max_age=max_age, node=node)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "metadata-cache.sqlite3"
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS docs (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
        self._db.commit()

    def _read(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            for identifier, doc in self._db.execute(f"SELECT id, doc FROM docs WHERE id IN ({marks})", chunk):
                found[identifier] = json.loads(doc)
        return found

    def _write(self, docs: list[dict[str, Any]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO docs (id, doc) VALUES (?, ?)", [(doc["_id"], json.dumps(doc)) for doc in docs]
            )

    def describe(self) -> dict[str, Any]:
        count = self._db.execute("SELECT count(*) FROM docs").fetchone()[0]
        return {"backend": "file", "path": str(self.path), "documents": count}

    def close(self) -> None:
        self._db.close()
