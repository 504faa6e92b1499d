"""The CouchDB cache backend, through the ``couchdb`` package (kept behind this module).

Only documented CouchDB HTTP API is used (``_all_docs`` with keys, ``_bulk_docs``,
``_replicator`` documents), so Apache CouchDB 3 and pouchdb-server both work.

Conflicts (two nodes resolved the same URL while apart) resolve on read, the same way
on every node: the newest resolution wins (then node name, then revision id); the
winner is written on the current branch and the losing revisions are deleted.
"""

from __future__ import annotations

from typing import Any

import couchdb
from couchdb.http import Session

from .base import MetadataCache, newest, redact

TIMEOUT_SECONDS = 10
#: A pooled connection idle past the server's keep-alive is closed by the server; the first
#: request on it fails at once and is sent again on a fresh one. (An empty list here makes
#: the ``couchdb`` package fail with UnboundLocalError on that path.)
RETRY_DELAYS = (0, 0.5)


def _server(url: str) -> couchdb.Server:
    return couchdb.Server(url.rstrip("/") + "/", session=Session(timeout=TIMEOUT_SECONDS, retry_delays=RETRY_DELAYS))


def _open_database(server: couchdb.Server, name: str) -> couchdb.Database:
    if name not in server:
        try:
            return server.create(name)
        except couchdb.PreconditionFailed:  # another node created it just now
            pass
    return server[name]


class CouchCache(MetadataCache):
    def __init__(self, url: str, database: str, *, max_age: float, node: str):
        super().__init__(max_age=max_age, node=node)
        self.url = url
        self.database_name = database
        self.db = _open_database(_server(url), database)

    def _rows(self, ids: list[str], **options):
        return self.db.view("_all_docs", keys=ids, **options)

    def _read(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        docs: dict[str, dict[str, Any]] = {}
        repairs: list[dict[str, Any]] = []
        for row in self._rows(ids, include_docs=True, conflicts=True):
            if row.doc is None:
                continue
            doc = dict(row.doc)
            conflicts = doc.pop("_conflicts", None)
            if conflicts:
                versions = [doc] + [dict(self.db.get(row.key, rev=rev)) for rev in conflicts]
                winner = newest(versions)
                repairs.extend(_repairs(row.key, doc, winner, conflicts))
                doc = winner
            docs[row.key] = doc
        if repairs:
            self.db.update(repairs)  # best effort: another node may be repairing the same way
        return docs

    def _current_revisions(self, ids: list[str]) -> dict[str, str]:
        return {row.key: row.value["rev"] for row in self._rows(ids) if row.value and not row.value.get("deleted")}

    def _write(self, docs: list[dict[str, Any]]) -> None:
        pending = docs
        for _ in range(2):  # a 409 means another writer got in between: once more with fresh revisions
            revisions = self._current_revisions([doc["_id"] for doc in pending])
            batch = []
            for doc in pending:
                doc = {key: value for key, value in doc.items() if key != "_rev"}
                if doc["_id"] in revisions:
                    doc["_rev"] = revisions[doc["_id"]]
                batch.append(doc)
            results = self.db.update(batch)
            pending = [doc for doc, (ok, _, _) in zip(batch, results, strict=True) if not ok]
            if not pending:
                return

    def describe(self) -> dict[str, Any]:
        info = self.db.info()
        return {
            "backend": "couchdb",
            "url": redact(self.url),
            "database": self.database_name,
            "documents": info.get("doc_count"),
        }


def _repairs(doc_id: str, current: dict[str, Any], winner: dict[str, Any], losers: list[str]) -> list[dict]:
    changes: list[dict[str, Any]] = []
    if winner.get("_rev") != current.get("_rev"):
        content = {key: value for key, value in winner.items() if not key.startswith("_")}
        changes.append({**content, "_id": doc_id, "_rev": current["_rev"]})
    changes.extend({"_id": doc_id, "_rev": rev, "_deleted": True} for rev in losers)
    return changes


# ------------------------------------------------------------------- replication


def _database_url(server_url: str, database: str) -> str:
    return server_url.rstrip("/") + "/" + database


def replication_documents(local_url: str, central_url: str, database: str) -> dict[str, dict[str, Any]]:
    """The two ``_replicator`` documents of a node: push to the central CouchDB, pull from it."""
    local, central = _database_url(local_url, database), _database_url(central_url, database)
    return {
        f"fetchfleet-push-{database}": {"source": local, "target": central, "continuous": True},
        f"fetchfleet-pull-{database}": {"source": central, "target": local, "continuous": True},
    }


def ensure_replication(local_url: str, central_url: str, database: str) -> list[dict[str, Any]]:
    """Set up continuous two-way replication (idempotent) and return its state.

    ``_replicator`` documents survive a restart of the local server, and the central
    database is created first, so a wrong URL or key fails here, clearly.
    """
    _open_database(_server(central_url), database)
    local = _server(local_url)
    _open_database(local, database)
    replicator = _open_database(local, "_replicator")
    for doc_id, wanted in replication_documents(local_url, central_url, database).items():
        existing = replicator.get(doc_id)
        if existing is not None and all(existing.get(key) == value for key, value in wanted.items()):
            continue
        if existing is not None:
            wanted = {**wanted, "_rev": existing.rev}
        replicator[doc_id] = wanted
    return replication_status(local_url, database)


def stop_replication(local_url: str, database: str) -> int:
    """Delete this node's replication documents (which cancels them); returns how many."""
    replicator = _open_database(_server(local_url), "_replicator")
    stopped = 0
    for direction in ("push", "pull"):
        doc = replicator.get(f"fetchfleet-{direction}-{database}")
        if doc is not None:
            replicator.delete(doc)
            stopped += 1
    return stopped


def replication_status(local_url: str, database: str) -> list[dict[str, Any]]:
    """Each replication's state as the server reports it: CouchDB 2.1 and later keep it in
    ``_scheduler/docs``; older servers (and pouchdb-server) write it into the document."""
    server = _server(local_url)
    if "_replicator" not in server:
        return []
    replicator = server["_replicator"]
    status = []
    for direction in ("push", "pull"):
        doc_id = f"fetchfleet-{direction}-{database}"
        doc = replicator.get(doc_id)
        if doc is None:
            continue
        state, reason = doc.get("_replication_state", "pending"), doc.get("_replication_state_reason")
        scheduled = _scheduler_doc(server, doc_id)
        if scheduled is not None:
            state = scheduled.get("state") or state
            info = scheduled.get("info")
            if isinstance(info, dict) and info.get("error"):
                reason = info["error"]
            elif isinstance(info, str):
                reason = info
        status.append(
            {
                "direction": direction,
                "source": redact(doc["source"]),
                "target": redact(doc["target"]),
                "state": state,
                "reason": redact(str(reason or "")) or None,
            }
        )
    return status


def _scheduler_doc(server: couchdb.Server, doc_id: str) -> dict[str, Any] | None:
    """``GET /_scheduler/docs/_replicator/<id>``, or None where the server has no scheduler."""
    try:
        _, _, body = server.resource("_scheduler", "docs", "_replicator", doc_id).get_json()
    except couchdb.HTTPError:  # 404 (no scheduler, or not scheduled yet), 400, 5xx
        return None
    return body if isinstance(body, dict) else None
