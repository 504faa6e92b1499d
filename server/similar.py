"""Reverse image search: every file's perceptual hash in this process's memory, scanned
exactly (no approximate index: what it answers equals a brute-force comparison).

Why a scan: a vectorized XOR + popcount reads 8 bytes per hash and keeps up with memory
bandwidth; a tree (BK, VP) over random 64-bit hashes visits most nodes at the distances
people search (8-12) and is slower, and PostgreSQL's own scan converts and compares row
by row. Multi-index hashing is faster at small distances but holds a table per chunk
of the hash: two to four times the memory per file, in every worker. The scan walks
fixed-size blocks so its temporaries stay in cache.

Why it stays correct with several workers and hosts: the ``files`` table is the one
truth and is append-only. Each process keeps the hashes of ids it has read and, at most
``refresh_seconds`` before a query, reads the ids above the highest it has. An id below
that it has not seen (a transaction that took its id earlier and committed later, or
rolled back) is a gap, asked for again at each refresh until it appears or has been
missing for ``gap_seconds``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from .database import read_only
from .models import File

HASH_KINDS = ("phash", "dhash")
HASH_BITS = 64
#: Hashes per scanned block: the block's XOR (8 bytes each) and counts stay in cache.
BLOCK = 1 << 16
#: Rows per fetch while (re)reading the files table: each batch's rows are garbage after
#: it, and a small batch keeps that (and the process's memory high-water mark) small.
READ_BATCH = 20_000
#: Gaps kept at most; beyond that the index is rebuilt from scratch.
MAX_GAPS = 100_000

FILES = File.__table__


def hash_value(text: str) -> int:
    """A 16-hex-digit hash as an unsigned 64-bit integer."""
    return int(text, 16)


def _parse(hexes: list[str]) -> np.ndarray:
    """16-hex-digit strings as uint64, in one pass (a million in ~0.1 s)."""
    if not hexes:
        return np.empty(0, dtype=np.uint64)
    return np.frombuffer(bytes.fromhex("".join(hexes)), dtype=">u8").astype(np.uint64)


@dataclass(frozen=True)
class Match:
    file_id: int
    distance: int


class HashIndex:
    """One hash column (phash or dhash) of every file, for exact Hamming-distance search."""

    def __init__(
        self,
        column: str,
        *,
        refresh_seconds: float = 1.0,
        gap_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if column not in HASH_KINDS:
            raise ValueError(f"no hash column {column!r}")
        self.column = column
        self.refresh_seconds = refresh_seconds
        self.gap_seconds = gap_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._refreshed_at: float | None = None
        self.last_refresh_seconds = 0.0
        self._reset()

    def _reset(self) -> None:
        self._ids = np.empty(0, dtype=np.int64)
        self._hashes = np.empty(0, dtype=np.uint64)
        self._size = 0
        self._max_id = 0
        self._gaps: dict[int, float] = {}  # id -> when first missed

    # -------------------------------------------------------------- reading

    def __len__(self) -> int:
        return self._size

    @property
    def memory_bytes(self) -> int:
        """What the arrays hold (allocated capacity included)."""
        return self._ids.nbytes + self._hashes.nbytes

    def ensure_fresh(self, session: Session) -> None:
        """Read what other processes recorded since the last refresh, if it is due."""
        now = self._clock()
        if self._refreshed_at is not None and now - self._refreshed_at < self.refresh_seconds:
            return
        with self._lock:
            if self._refreshed_at is not None and self._clock() - self._refreshed_at < self.refresh_seconds:
                return
            started = time.perf_counter()
            self._refresh(session)
            self.last_refresh_seconds = time.perf_counter() - started
            self._refreshed_at = self._clock()

    def _refresh(self, session: Session) -> None:
        read_only(session)  # SQLite: a reader, never the write lock
        column = FILES.c[self.column]
        if len(self._gaps) > MAX_GAPS:
            self._reset()
        if self._gaps:
            ids, hexes = _rows(session, select(FILES.c.id, column).where(FILES.c.id.in_(sorted(self._gaps))))
            for file_id in ids.tolist():
                self._gaps.pop(file_id, None)
            self._add(ids, hexes)
            now = self._clock()
            self._gaps = {gap: since for gap, since in self._gaps.items() if now - since < self.gap_seconds}
        while True:
            statement = select(FILES.c.id, column).where(FILES.c.id > self._max_id).order_by(FILES.c.id)
            ids, hexes = _rows(session, statement.limit(READ_BATCH))
            if not len(ids):
                break
            self._note_gaps(ids)
            self._max_id = int(ids[-1])
            self._add(ids, hexes)
            if len(ids) < READ_BATCH:
                break
        session.commit()

    def _note_gaps(self, ids: np.ndarray) -> None:
        """Ids skipped between the highest read and these: their transactions may still commit."""
        previous = self._max_id if self._max_id else int(ids[0]) - 1
        steps = np.diff(ids, prepend=previous)
        now = self._clock()
        for at in np.flatnonzero(steps > 1).tolist():
            start, stop = int(ids[at] - steps[at]) + 1, int(ids[at])
            self._gaps.update(dict.fromkeys(range(start, min(stop, start + MAX_GAPS + 1)), now))

    def _add(self, ids: np.ndarray, hexes: list[str | None]) -> None:
        present = [position for position, value in enumerate(hexes) if value is not None]
        if not present:
            return
        if len(present) < len(hexes):
            ids, hexes = ids[present], [hexes[position] for position in present]
        hashes = _parse(hexes)
        needed = self._size + len(ids)
        if needed > len(self._ids):  # grow by doubling: appending stays amortized O(1)
            capacity = max(needed, 2 * len(self._ids), 1024)
            self._ids = _grown(self._ids, self._size, capacity)
            self._hashes = _grown(self._hashes, self._size, capacity)
        self._ids[self._size : needed] = ids
        self._hashes[self._size : needed] = hashes
        self._size = needed

    def load(self, ids: np.ndarray, hashes: np.ndarray) -> None:
        """Take these (ids ascending, hashes as uint64) as read: for benchmarks and tests
        that measure the search without a database."""
        with self._lock:
            self._reset()
            self._ids, self._hashes = ids.astype(np.int64), hashes.astype(np.uint64)
            self._size = len(ids)
            self._max_id = int(ids[-1]) if len(ids) else 0

    # ------------------------------------------------------------- searching

    def search(self, value: int, distance: int, limit: int | None = None) -> list[Match]:
        """Files whose hash is within ``distance`` bits of ``value``, nearest first (then by id)."""
        size, ids, hashes = self._size, self._ids, self._hashes  # a consistent snapshot
        query = np.uint64(value)
        if size >= PARALLEL_FROM and _SCANNERS > 1:
            # numpy lets go of the GIL: one share of the blocks per core (a core alone does
            # not draw all the memory bandwidth an index this big needs)
            step = -(-size // _SCANNERS // BLOCK) * BLOCK
            shares = [(start, min(start + step, size)) for start in range(0, size, step)]
            parts = list(_scanner_pool().map(lambda share: _scan(hashes, query, distance, *share), shares))
            positions = [array for part in parts for array in part[0]]
            distances = [array for part in parts for array in part[1]]
        else:
            positions, distances = _scan(hashes, query, distance, 0, size)
        if not positions:
            return []
        found_ids = ids[np.concatenate(positions)]
        found_distances = np.concatenate(distances)
        order = np.lexsort((found_ids, found_distances))
        if limit is not None:
            order = order[:limit]
        return [Match(int(found_ids[i]), int(found_distances[i])) for i in order]

    def hash_of(self, file_id: int) -> int | None:
        size = self._size
        where = np.flatnonzero(self._ids[:size] == file_id)
        return int(self._hashes[where[0]]) if where.size else None

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, hashes) as read so far, in the order they were read."""
        size = self._size
        return self._ids[:size], self._hashes[:size]


def _rows(session: Session, statement) -> tuple[np.ndarray, list[str | None]]:
    """(ids, hex hashes) of (id, hash) rows, as the driver's plain tuples: SQLAlchemy's
    Row objects cost more than the database's own work for a million of them."""
    result = session.execute(statement)
    try:
        rows = result.cursor.fetchall()
    finally:
        result.close()
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    return ids, [row[1] for row in rows]


def _scan(hashes: np.ndarray, query: np.uint64, distance: int, start: int, stop: int):
    """(positions, distances) of the hashes in [start, stop) within ``distance`` of ``query``."""
    positions, distances = [], []
    for block in range(start, stop, BLOCK):
        counts = np.bitwise_count(hashes[block : min(block + BLOCK, stop)] ^ query)
        hits = np.flatnonzero(counts <= distance)
        if hits.size:
            positions.append(hits + block)
            distances.append(counts[hits])
    return positions, distances


#: Indexes this big are scanned by several threads, one per core (at most four).
PARALLEL_FROM = 1 << 21
_SCANNERS = min(4, os.cpu_count() or 1)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _scanner_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_SCANNERS, thread_name_prefix="similar-scan")
        return _pool


def _grown(array: np.ndarray, used: int, capacity: int) -> np.ndarray:
    grown = np.empty(capacity, dtype=array.dtype)
    grown[:used] = array[:used]
    return grown


def brute_force(pairs: list[tuple[int, int]], value: int, distance: int) -> list[Match]:
    """The reference answer: every (file id, hash) compared one by one."""
    matches = [Match(file_id, (h ^ value).bit_count()) for file_id, h in pairs]
    return sorted((m for m in matches if m.distance <= distance), key=lambda m: (m.distance, m.file_id))


def clusters(index: HashIndex, distance: int, *, after_id: int = 0, limit: int = 50, budget_seconds: float = 2.0):
    """Groups of files linked by chains of near-duplicates (within ``distance``), each
    named by its smallest file id, in that order from ``after_id``.

    Each file is one scan; a page stops after ``limit`` clusters or ``budget_seconds``
    and says where to go on (``next_after``), so a large archive is walked page by page.
    Returns (clusters, next_after): each cluster a list of (file id, distance to the
    cluster's first file) sorted by id.
    """
    ids, hashes = index.snapshot()
    order = np.argsort(ids, kind="stable")
    ids, hashes = ids[order], hashes[order]
    start = int(np.searchsorted(ids, after_id, side="right"))
    deadline = time.perf_counter() + budget_seconds
    found: list[list[tuple[int, int]]] = []
    assigned: set[int] = set()  # members of clusters on this page: no scan of their own
    position = start
    while position < len(ids) and len(found) < limit:
        if time.perf_counter() > deadline and position > start:
            break
        first = int(ids[position])
        position += 1
        if first in assigned:
            continue
        origin = int(hashes[position - 1])
        members = _component(index, origin, distance)
        if len(members) > 1 and min(members) == first:
            assigned |= members
            found.append([(member, (index.hash_of(member) ^ origin).bit_count()) for member in sorted(members)])
    next_after = int(ids[position - 1]) if position < len(ids) else None
    return found, next_after


def _component(index: HashIndex, value: int, distance: int) -> set[int]:
    """Every file reachable from ``value`` by steps of at most ``distance`` bits."""
    members = {match.file_id: match for match in index.search(value, distance)}
    frontier = [m for m in members.values() if m.distance > 0]
    seen_values = {value}
    while frontier:
        match = frontier.pop()
        member_value = index.hash_of(match.file_id)
        if member_value is None or member_value in seen_values:
            continue
        seen_values.add(member_value)
        for other in index.search(member_value, distance):
            if other.file_id not in members:
                members[other.file_id] = other
                frontier.append(other)
    return set(members)
