"""Durable update log of one shared document, in sqlite3.

One file per document. It holds the document's pycrdt (Yjs v1) updates in order, plus a
small key/value table for the daemon's bookkeeping (the last file text it wrote or read,
share metadata...). Loading the document is applying every stored update in order.

Since schema 2 it also keeps a *change log*: for each stored update, who made it, when, and
a JSON summary (the cells it changed...), written in the same transaction as the update.
Compaction folds updates, never log entries: the log keeps the newest ``MAX_LOG_ENTRIES``.
A schema 1 store (written by an older p2prtc) is migrated when opened; its log starts then.

Durability (design rule 7): every write is one sqlite transaction in WAL mode with
`synchronous=FULL`, so when a method returns, its data survives a process crash and a power
loss; a crash in the middle of a write leaves the store as it was before that write.

Compaction replaces a run of updates with one full-state update in a single transaction, so a
crash leaves either the old rows or the new one, and both load to the same document.

Methods are serialised by a lock, so the store may be used from a worker thread (e.g. through
`asyncio.to_thread`) as well as from the event loop, one call at a time.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

# Marks the file as ours in the sqlite header ("p2rt"), so a foreign database is refused.
APPLICATION_ID = 0x70327274
SCHEMA_VERSION = 2
# Log entries kept (the newest): each save or peer's update adds one or a few.
MAX_LOG_ENTRIES = 2000

_CHANGES_TABLE = (
    "CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL,"
    " at REAL NOT NULL, member TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,"
    " concurrent INTEGER NOT NULL DEFAULT 0)"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS updates (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    _CHANGES_TABLE,
)
# What brings a store of each older schema to the next one, in one transaction each.
_MIGRATIONS: dict[int, tuple[str, ...]] = {1: (_CHANGES_TABLE,)}


@dataclass(frozen=True)
class LogEntry:
    """One change log entry: the update at ``seq`` (or part of it), by ``member``."""

    seq: int
    at: float  # seconds since the epoch
    member: str  # the daemon that made the change
    kind: str  # what made it (a save, a peer's update...), for people
    detail: str  # JSON, the caller's
    concurrent: bool = False  # it reports concurrent edits (status lists those)


class StoreCorrupt(P2PError):
    """The saved state of a shared document is damaged or is not a p2prtc store."""


class StoreWriteFailed(P2PError):
    """The shared document's saved state could not be updated (disk full or unwritable?)."""


class StoreTooNew(P2PError):
    """The saved state of a shared document was written by a newer p2prtc."""


@contextmanager
def _corruption_as_typed_error(path: Path) -> Iterator[None]:
    """Turn sqlite's "file is broken" errors into StoreCorrupt, naming the file.

    sqlite3 raises exactly DatabaseError (no subclass) for SQLITE_CORRUPT and SQLITE_NOTADB;
    operational problems (locked, disk full, I/O error) become StoreWriteFailed.
    """
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreWriteFailed(f"{path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        if type(exc) is sqlite3.DatabaseError:
            raise StoreCorrupt(f"{path}: {exc}") from exc
        raise


class UpdateStore:
    """Append-only log of a document's binary updates, with compaction and metadata."""

    def __init__(self, path: Path) -> None:
        """Open the store at `path`, creating it when missing; raise StoreCorrupt if broken."""
        self.path = path
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so every transaction is
        # exactly the statements we group, nothing implicit.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            with _corruption_as_typed_error(path):
                _open(self._db, path)
        except BaseException:
            self._db.close()
            raise

    @contextmanager
    def _guarded(self) -> Iterator[sqlite3.Connection]:
        """One caller at a time, sqlite corruption reported as StoreCorrupt."""
        with self._lock, _corruption_as_typed_error(self.path):
            yield self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """All statements in the block commit together (durably) or not at all."""
        with self._guarded() as db, _committed(db):
            yield db

    def append(self, update: bytes, log: Sequence[LogEntry] = ()) -> int:
        """Persist one update durably; return its sequence number (for `compact(upto=)`).

        ``log``: its change log entries (their ``seq`` is set to the update's).
        """
        return self.append_with_meta(update, {}, log)

    def append_with_meta(
        self, update: bytes, meta: Mapping[str, bytes], log: Sequence[LogEntry] = ()
    ) -> int:
        """Persist an update, its log entries and metadata keys in one atomic, durable
        transaction."""
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO updates(data) VALUES (?)", (update,))
            assert cursor.lastrowid is not None  # an INSERT into a rowid table always sets it
            _write_log(db, cursor.lastrowid, log)
            _write_meta(db, meta)
        return cursor.lastrowid

    def log(self, limit: int, *, concurrent_only: bool = False) -> list[LogEntry]:
        """The newest ``limit`` change log entries (only those reporting concurrent edits,
        when asked), newest first."""
        with self._guarded() as db:
            rows = db.execute(
                "SELECT seq, at, member, kind, detail, concurrent FROM changes"
                " WHERE concurrent OR NOT ? ORDER BY id DESC LIMIT ?",
                (concurrent_only, limit),
            )
            return [
                LogEntry(int(seq), float(at), str(member), str(kind), str(detail), bool(flag))
                for seq, at, member, kind, detail, flag in rows
            ]

    def updates(self, upto: int | None = None) -> list[bytes]:
        """Stored updates, oldest first (those with seq <= `upto` when given).

        Applying them in order rebuilds the document (as it was just after update `upto`).
        """
        limit = upto if upto is not None else -1
        with self._guarded() as db:
            rows = db.execute(
                "SELECT data FROM updates WHERE ? < 0 OR seq <= ? ORDER BY seq", (limit, limit)
            )
            return [row[0] for row in rows]

    def entries(self) -> list[tuple[int, bytes]]:
        """Every stored update with its sequence number, oldest first."""
        with self._guarded() as db:
            rows = db.execute("SELECT seq, data FROM updates ORDER BY seq")
            return [(int(seq), bytes(data)) for seq, data in rows]

    def last_seq(self) -> int | None:
        """The sequence number of the newest update, None for an empty store."""
        with self._guarded() as db:
            return _last_seq(db)

    def compact(self, full_state: bytes, upto: int | None = None) -> None:
        """Replace the updates with sequence number <= `upto` (all when None) by `full_state`.

        `full_state` must contain the effect of every update it replaces (e.g.
        `doc.get_update()` taken after update `upto` was applied). Updates appended after
        `upto` are kept, after the full state. Atomic: a crash leaves the old rows or the new.
        """
        with self._transaction() as db:
            last = upto if upto is not None else _last_seq(db)
            if last is None:
                db.execute("INSERT INTO updates(data) VALUES (?)", (full_state,))
            else:
                db.execute("DELETE FROM updates WHERE seq <= ?", (last,))
                # Reusing the last replaced number keeps the full state before later updates.
                db.execute("INSERT INTO updates(seq, data) VALUES (?, ?)", (last, full_state))
        logger.debug("compacted %s up to update %s", self.path, last)

    def count(self, upto: int | None = None) -> int:
        """How many updates are stored (with seq <= `upto` when given); compaction brings
        this down to one."""
        limit = upto if upto is not None else -1
        with self._guarded() as db:
            (count,) = db.execute(
                "SELECT count(*) FROM updates WHERE ? < 0 OR seq <= ?", (limit, limit)
            ).fetchone()
            return int(count)

    def total_bytes(self) -> int:
        """Total size of the stored updates in bytes (to decide when to compact)."""
        with self._guarded() as db:
            (size,) = db.execute("SELECT coalesce(sum(length(data)), 0) FROM updates").fetchone()
            return int(size)

    def get_meta(self, key: str) -> bytes | None:
        """The value stored under `key`, or None."""
        with self._guarded() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        """Store `value` under `key` durably, replacing any previous value."""
        self.set_metas({key: value})

    def set_metas(self, meta: Mapping[str, bytes]) -> None:
        """Store several keys durably in one transaction."""
        with self._transaction() as db:
            _write_meta(db, meta)

    def close(self) -> None:
        """Close the database (checkpointing the WAL); further calls fail."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> UpdateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _write_meta(db: sqlite3.Connection, meta: Mapping[str, bytes]) -> None:
    db.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        meta.items(),
    )


def _write_log(db: sqlite3.Connection, seq: int, log: Sequence[LogEntry]) -> None:
    if not log:
        return
    db.executemany(
        "INSERT INTO changes(seq, at, member, kind, detail, concurrent) VALUES (?, ?, ?, ?, ?, ?)",
        [(seq, e.at, e.member, e.kind, e.detail, e.concurrent) for e in log],
    )
    # Bounded: the newest entries only (ids only grow; a primary key range delete is cheap).
    db.execute(
        "DELETE FROM changes WHERE id <= (SELECT max(id) FROM changes) - ?", (MAX_LOG_ENTRIES,)
    )


def _last_seq(db: sqlite3.Connection) -> int | None:
    (last,) = db.execute("SELECT max(seq) FROM updates").fetchone()
    return None if last is None else int(last)


# --- opening a store file: what it must be, and its schema brought up to date ----------------


def _open(db: sqlite3.Connection, path: Path) -> None:
    _check_integrity(db, path)
    if not _has_tables(db):
        _create(db, path)
    _check_identity(db, path)
    _migrate(db, path)
    db.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every commit, so a returned write survives power loss.
    db.execute("PRAGMA synchronous=FULL")


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise StoreCorrupt(f"{path}: {problems[0]}")


def _has_tables(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return bool(row[0])


def _create(db: sqlite3.Connection, path: Path) -> None:
    # auto_vacuum must be chosen before the first table exists; FULL gives the space of
    # compacted rows back to the file system at each commit.
    db.execute("PRAGMA auto_vacuum=FULL")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN IMMEDIATE")
    for statement in _SCHEMA:
        db.execute(statement)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    db.execute("COMMIT")
    logger.debug("created update store %s", path)


def _check_identity(db: sqlite3.Connection, path: Path) -> None:
    (application_id,) = db.execute("PRAGMA application_id").fetchone()
    if application_id != APPLICATION_ID:
        raise StoreCorrupt(f"{path}: not a p2prtc store")
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreTooNew(f"{path}: schema {version}, this p2prtc reads {SCHEMA_VERSION}")


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring a store written by an older p2prtc to this schema, one version at a time."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    while version < SCHEMA_VERSION:
        if version not in _MIGRATIONS:
            raise StoreCorrupt(f"{path}: unknown schema {version}")
        with _committed(db):
            for statement in _MIGRATIONS[version]:
                db.execute(statement)
            version += 1
            db.execute(f"PRAGMA user_version={version}")
        logger.info("migrated update store %s to schema %d", path, version)


@contextmanager
def _committed(db: sqlite3.Connection) -> Iterator[None]:
    """All statements in the block commit together (durably) or not at all."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
