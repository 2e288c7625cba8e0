"""The notes as they are on disk right now: a listing kept in an SQLite file that every process shares.

A person may edit, add or delete notes at any time (an editor, Obsidian, `git pull`); every read
starts with `refresh()`, which compares each note folder's stamp with the listing and lists again only
the folders that changed, re-parsing only the files whose stamp (size, times, inode) changed. A file
that cannot be parsed becomes a `Problem`, never an exception.

The listing lives in `catalog.sqlite` of the vault's cache folder, not in each process's memory: a new
server opens it instead of parsing every note, several servers on one vault share it (and the pages
the kernel caches of it), and a server's memory does not grow with the vault. It holds what ranking,
filters and listings need (front matter, hashes; insights whole, chunks without their body): `read()`
and `body()` take the text from the file. Every change bumps a sequence number, so each process learns
what changed since it last looked, whoever noticed it: hand edits become pending edits, and the search
caches update only what moved. The file is a cache: a damaged or older one is deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from . import markdown
from .errors import Busy, InvalidNote, StorageError, VaultError, storage_message
from .filelock import file_lock
from .models import Chunk, Insight, field_text
from .notes import aliases_of, note_from_file, note_from_meta
from .vault import Stamp, Vault

__all__ = ["Catalog", "Entry", "Problem", "aliases_of", "note_from_file", "note_from_meta"]

# A folder whose last listing took longer than this is left to `sweep()` (a server's background
# thread) once its interval has passed, so a tool call never pays for a stat of every note.
QUICK_SCAN = 0.02
# `sweep()` lists a big folder again after this many times what its last listing cost (at most 2 %
# of one core), and never sooner than the scan interval.
SWEEP_FACTOR = 50
PARSE_BATCH = 500  # parsed files per write transaction, so other processes are never held up long
# Parsed notes a process keeps for listings (a few MB): a small vault's listings are then reused, a
# big one's parsed again at each call, so a server's memory does not grow with the vault.
PARSED_KEPT = 5_000
TRIM_EVERY = 1000
KEEP_GONE = 100_000  # changes for which deletions stay listed; a process further behind reads all again
LOCK_PARSE = 50  # a folder with more files to parse than this is parsed by one process at a time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (seq INTEGER NOT NULL, floor INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS notes (
    path TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    stamp TEXT NOT NULL,
    sha TEXT NOT NULL,
    id TEXT,
    kind TEXT,
    project TEXT,
    created TEXT,
    chunk_type TEXT,
    digest TEXT,
    id_prefix TEXT,
    id_number INTEGER,
    meta TEXT,
    content TEXT,
    problem TEXT,
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_id ON notes (id, path, sha);
CREATE INDEX IF NOT EXISTS notes_folder ON notes (folder, path, stamp);
CREATE INDEX IF NOT EXISTS notes_digest ON notes (digest);
CREATE INDEX IF NOT EXISTS notes_number ON notes (id_prefix, id_number);
CREATE INDEX IF NOT EXISTS notes_created ON notes (created, id);
CREATE INDEX IF NOT EXISTS notes_kind ON notes (kind, project);
CREATE INDEX IF NOT EXISTS notes_list ON notes (kind, path, sha);
CREATE INDEX IF NOT EXISTS notes_problem ON notes (path, problem) WHERE problem IS NOT NULL;
CREATE INDEX IF NOT EXISTS notes_seq ON notes (seq);
CREATE TABLE IF NOT EXISTS gone (seq INTEGER NOT NULL, path TEXT NOT NULL, id TEXT, origin TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS gone_seq ON gone (seq);
CREATE TABLE IF NOT EXISTS aliases (alias TEXT NOT NULL, id TEXT NOT NULL, path TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS aliases_alias ON aliases (alias);
CREATE INDEX IF NOT EXISTS aliases_path ON aliases (path);
CREATE TABLE IF NOT EXISTS folders (rel TEXT PRIMARY KEY, stamp TEXT NOT NULL, scanned REAL NOT NULL,
    cost REAL NOT NULL);
"""

_NOTE_COLUMNS = "path, meta, content"


@dataclass(frozen=True)
class ChunkFacts:
    """What sessions and domains are derived from ("" for what a chunk does not say)."""

    project: str
    domain: str
    session: str
    created: str


IN_BATCH = 500  # values per `IN (...)` query
STREAM_FIRST_PAGE = 50  # notes `stream` reads first; each next page is 4x larger, up to STREAM_PAGE
STREAM_PAGE = 2000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Problem:
    """A file in the vault that is not a readable note, and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One note file: its stamp, its content hash, and what it parsed to."""

    stamp: Stamp
    sha256: str
    note: Insight | Chunk | None
    problem: Problem | None


class Catalog:
    """Every insight and chunk file of a vault, listed in `catalog.sqlite` and kept in step with the disk.

    A folder whose own stamp has not changed is listed again only once `scan_interval` seconds have
    passed: files added, removed or replaced (the way most editors save) change the folder's stamp and
    are seen at once; a file rewritten in place is seen within the interval. A folder too big to list
    quickly (a stat per note: 0.1-0.5 s at 20,000) is listed again at an interval that grows with
    what listing it costs (at most 2 % of one core), by whichever process looks first; with
    `defer_scans` (a server, whose background thread calls `sweep()`) never in a tool call.
    """

    FILE = "catalog.sqlite"
    VERSION = 7  # 3+: an SQLite listing shared by every process (2: catalog.json, no chunk bodies)

    def __init__(self, vault: Vault, scan_interval: float = 1.0, defer_scans: bool = False) -> None:
        self.vault = vault
        self.scan_interval = scan_interval
        self.defer_scans = defer_scans
        self.version = 0  # the last change this process has taken in; moves whenever a note changes
        self._mutex = threading.RLock()  # one connection, shared by this process's threads
        self._db: sqlite3.Connection | None = None
        self._loaded = False
        self._parsed = 0  # files this process parsed (the others came from the shared listing)
        self.lapsed = False  # set when deletions this process never took in were forgotten (KEEP_GONE)
        self._kept: dict[str, tuple[str, Insight | Chunk]] = {}  # path -> (sha, parsed note), see _listed
        self._listings: dict[tuple[str, tuple[str, ...]], tuple[int, list[Insight | Chunk]]] = {}

    # ------------------------------------------------------------------ the SQLite file

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        path = self.vault.cache / self.FILE
        try:
            self.vault.cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(storage_message(exc, self.vault.cache), exc.errno) from exc
        for attempt in range(2):
            try:
                db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
                _wal(db)
                db.execute("PRAGMA synchronous=NORMAL")  # a cache: a power cut may lose the last changes
                if db.execute("PRAGMA user_version").fetchone()[0] != self.VERSION:
                    self._create(db)
                    (self.vault.cache / "catalog.json").unlink(missing_ok=True)  # the older listing
                for statement in _SCHEMA.split(";"):  # indexes added since the file was made
                    if statement.strip().startswith("CREATE INDEX"):
                        db.execute(statement)
                return db
            except sqlite3.OperationalError as exc:
                raise _translated(exc, path) from exc
            except sqlite3.DatabaseError:
                if attempt:
                    raise
                self._delete_files()  # damaged: a cache, rebuilt from the vault
        raise AssertionError("unreachable")

    def _create(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # two processes opening a new file: one creates it
        if db.execute("PRAGMA user_version").fetchone()[0] == self.VERSION:
            db.execute("COMMIT")
            return
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:  # an older layout
            db.execute(f'DROP TABLE "{table}"')
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO counter VALUES (0, 0)")
        db.execute(f"PRAGMA user_version={self.VERSION}")
        db.execute("COMMIT")

    def _delete_files(self) -> None:
        if self._db is not None:
            with suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        for suffix in ("", "-wal", "-shm"):
            with suppress(FileNotFoundError):
                (self.vault.cache / f"{self.FILE}{suffix}").unlink()

    @contextmanager
    def _writing(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """One write transaction with the next sequence number (processes take turns, briefly)."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("UPDATE counter SET seq = seq + 1")
            seq = db.execute("SELECT seq FROM counter").fetchone()[0]
            if seq % TRIM_EVERY == 0:  # deletions are remembered for the last KEEP_GONE changes
                db.execute("DELETE FROM gone WHERE seq <= ?", (seq - KEEP_GONE,))
                db.execute("UPDATE counter SET floor = max(floor, ?)", (seq - KEEP_GONE,))
            yield db, seq
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._guarded(lambda: self._conn().execute(sql, args).fetchall())
        except UnicodeEncodeError:
            return []  # a name with a lone surrogate: no note (they are all valid UTF-8) is called that

    def _rows_in(self, sql: str, values: list[str]) -> list[Any]:
        """The rows of `sql`, whose `{}` is an IN list, for all of `values`: IN_BATCH values per query
        (older SQLite builds take 999 parameters at the most)."""
        rows: list[Any] = []
        for start in range(0, len(values), IN_BATCH):
            part = values[start : start + IN_BATCH]
            rows += self._query(sql.format(",".join("?" * len(part))), tuple(part))
        return rows

    def _guarded(self, action: Callable[[], T]) -> T:
        """Run `action` on the file; a damaged file is rebuilt from the vault and the action retried."""
        with self._mutex:
            try:
                return action()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and not str(exc).startswith("no such"):
                    raise _translated(exc, self.vault.cache / self.FILE) from exc  # locked, or refused
                self._delete_files()  # damaged, or a table gone: rebuilt from the notes
                self._loaded = False
                self._scan_all()
                return action()

    def close(self) -> None:
        """Close the SQLite file (a later call opens it again)."""
        with self._mutex:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------ keeping in step with the disk

    def refresh(self) -> set[str]:
        """Re-read whatever changed on disk; returns the paths a person (or git) added, changed or removed
        since this process last looked, whichever process noticed them.

        The first refresh only takes stock: it reports nothing.
        """
        return self._guarded(self._refresh)

    def _refresh(self) -> set[str]:
        first = not self._loaded
        self._scan_all()
        self._loaded = True
        if first:
            self.version = self._seq()
            return set()
        return self._taken_in()

    def _scan_all(self) -> None:
        now = time.time()
        folders = self.vault.note_folders()
        known = {r[0]: r[1:] for r in self._conn().execute("SELECT rel, stamp, scanned, cost FROM folders")}
        for rel in [f for f in known if f not in folders]:
            self._drop_folder(rel)
        for rel, stamp in folders.items():
            seen = known.get(rel)
            if seen is None or seen[0] != _key(stamp) or self._due(now, *seen[1:]):
                self._rescan(rel, stamp)

    def _due(self, now: float, scanned: float, cost: float) -> bool:
        """Whether a folder whose stamp has not changed must be listed again now.

        A quick one: at a process's first look, then once the scan interval has passed. A big one (a
        stat per note adds up): by the background sweep in a server, else once its own interval, which
        grows with what listing it costs, has passed since any process listed it.
        """
        if cost <= QUICK_SCAN:
            return not self._loaded or now - scanned >= self.scan_interval
        return not self.defer_scans and now - scanned >= max(self.scan_interval, SWEEP_FACTOR * cost)

    def sweep(self) -> None:
        """List again the big folders `refresh()` leaves to a background thread, when their time has come."""
        if self._loaded:
            self._guarded(self._sweep)

    def _sweep(self) -> None:
        now = time.time()
        folders = self.vault.note_folders()
        for rel, scanned, cost in self._conn().execute("SELECT rel, scanned, cost FROM folders").fetchall():
            if rel in folders and now - scanned >= max(self.scan_interval, SWEEP_FACTOR * cost):
                self._rescan(rel, folders[rel])

    def _seq(self) -> int:
        return int(self._conn().execute("SELECT seq FROM counter").fetchone()[0])

    def _floor(self) -> int:
        return int(self._conn().execute("SELECT floor FROM counter").fetchone()[0])

    def head(self) -> int:
        """The number of the last change any process made to the listing."""
        return self._guarded(self._seq)

    def _taken_in(self) -> set[str]:
        """Paths changed on disk since `version` (this process's own writes excluded); moves `version`.
        A process so far behind that deletions since were forgotten is told by `lapsed`."""
        seq = self._seq()
        if seq == self.version:
            return set()
        self.lapsed = self.lapsed or self.version < self._floor()
        rows = self._conn().execute(
            "SELECT path FROM notes WHERE seq > ? AND origin = 'disk' "
            "UNION SELECT path FROM gone WHERE seq > ? AND origin = 'disk'",
            (self.version, self.version),
        )
        self.version = seq
        return {r[0] for r in rows}

    def _rescan(self, rel: str, stamp: Stamp) -> None:
        started = time.perf_counter()
        listing = self.vault.scan_folder(rel)
        changed, gone = self._changed(rel, listing)
        if len(changed) <= LOCK_PARSE:
            self._apply(rel, stamp, listing, changed, gone, started)
            return
        # Many files to parse (a new cache, a large pull): one process parses, the others then find
        # them in the listing. Only here does a process wait for another.
        with file_lock(self.vault.cache / "catalog.lock"):
            changed, gone = self._changed(rel, listing)
            self._apply(rel, stamp, listing, changed, gone, started)

    def _changed(self, rel: str, listing: dict[str, Stamp]) -> tuple[list[str], list[str]]:
        """(files new or changed since the listing, files the listing has that are gone)."""
        known = dict(self._conn().execute("SELECT path, stamp FROM notes WHERE folder = ?", (rel,)))
        changed = [p for p, s in listing.items() if known.get(p) != _key(s)]
        return changed, [p for p in known if p not in listing]

    def _apply(
        self,
        rel: str,
        stamp: Stamp,
        listing: dict[str, Stamp],
        changed: list[str],
        gone: list[str],
        started: float,
    ) -> None:
        gone = [p for p in gone if not os.path.lexists(self.vault.root / p)]  # else written meanwhile
        for start in range(0, len(changed), PARSE_BATCH):
            batch = [(p, self._load(p, listing[p])) for p in changed[start : start + PARSE_BATCH]]
            with self._writing() as (db, seq):
                for path, entry in batch:
                    self._put(db, seq, path, entry, "disk")
        if gone:
            with self._writing() as (db, seq):
                for path in gone:
                    self._drop(db, seq, path, "disk")
        # The stamp taken before listing: a change made while listing is seen at the next look. Not a
        # change of any note, so no new sequence number: nobody has anything to catch up on.
        row = (rel, _key(stamp), time.time(), time.perf_counter() - started)
        self._conn().execute("INSERT OR REPLACE INTO folders VALUES (?, ?, ?, ?)", row)

    def _drop_folder(self, rel: str) -> None:
        with self._writing() as (db, seq):
            for (path,) in db.execute("SELECT path FROM notes WHERE folder = ?", (rel,)).fetchall():
                self._drop(db, seq, path, "disk")
            db.execute("DELETE FROM folders WHERE rel = ?", (rel,))

    def absorb(self, paths: list[str]) -> None:
        """Take in files this process just wrote or deleted (not reported as a person's changes)."""
        with self._mutex:
            if not self._loaded:
                return
            entries: list[tuple[str, Entry | None]] = []
            for path in paths:
                try:
                    st = os.stat(self.vault.root / path, follow_symlinks=False)
                except FileNotFoundError:
                    entries.append((path, None))
                    continue
                if _is_note(path):
                    entries.append((path, self._load(path, _stamp(st))))
            with self._writing() as (db, seq):
                for path, entry in entries:
                    if entry is None:
                        self._drop(db, seq, path, "tool")
                    else:
                        self._put(db, seq, path, entry, "tool")
                self._restamp_folders(db, paths)

    def _restamp_folders(self, db: sqlite3.Connection, paths: list[str]) -> None:
        # Our own write changed its folder's stamp; that alone must not make a reader list it again.
        for rel in {p.rsplit("/", 1)[0] for p in paths if _is_note(p)}:
            try:
                st = os.stat(self.vault.root / rel, follow_symlinks=False)
            except OSError:
                continue
            updated = db.execute("UPDATE folders SET stamp = ? WHERE rel = ?", (_key(_stamp(st)), rel))
            if not updated.rowcount:
                db.execute("INSERT INTO folders VALUES (?, ?, ?, 0)", (rel, _key(_stamp(st)), time.time()))

    def _put(self, db: sqlite3.Connection, seq: int, path: str, entry: Entry, origin: str) -> None:
        old = db.execute("SELECT id FROM notes WHERE path = ?", (path,)).fetchone()
        note = entry.note
        if old is not None and old[0] is not None and (note is None or note.id != old[0]):
            db.execute("INSERT INTO gone VALUES (?, ?, ?, ?)", (seq, path, old[0], origin))
        db.execute("DELETE FROM aliases WHERE path = ?", (path,))
        row: tuple[Any, ...]
        if note is None:
            reason = entry.problem.reason if entry.problem else "cannot be read"
            row = (None, None, None, None, None, None, None, None, None, None, reason)
        else:
            chunk = isinstance(note, Chunk)
            row = (
                note.id,
                "chunk" if chunk else "insight",
                note.project,
                note.created,
                note.chunk_type if isinstance(note, Chunk) else None,
                note.sha256 if isinstance(note, Chunk) and note.sha256 else None,
                *(_numbered(note.id, path) if chunk else (None, None)),
                json.dumps(note.to_meta(), ensure_ascii=False, default=str),
                "" if chunk else note.content,
                None,
            )
            db.executemany(
                "INSERT INTO aliases VALUES (?, ?, ?)", [(a, note.id, path) for a in aliases_of(note)]
            )
        db.execute(
            "INSERT OR REPLACE INTO notes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (path, path.rsplit("/", 1)[0], _key(entry.stamp), entry.sha256, *row, origin, seq),
        )

    def _drop(self, db: sqlite3.Connection, seq: int, path: str, origin: str) -> None:
        old = db.execute("SELECT id FROM notes WHERE path = ?", (path,)).fetchone()
        if old is None:
            return
        db.execute("DELETE FROM notes WHERE path = ?", (path,))
        db.execute("DELETE FROM aliases WHERE path = ?", (path,))
        db.execute("INSERT INTO gone VALUES (?, ?, ?, ?)", (seq, path, old[0], origin))

    def _load(self, path: str, stamp: Stamp) -> Entry:
        try:
            raw = self.vault.read_bytes(path)
        except OSError as exc:
            return Entry(stamp, "", None, Problem(path, f"cannot be read: {exc.strerror or exc}"))
        except InvalidNote as exc:
            return Entry(stamp, "", None, Problem(path, exc.reason))
        sha = hashlib.sha256(raw).hexdigest()
        self._parsed += 1
        try:
            note = note_from_file(path, raw, stamp.mtime_ns)
        except InvalidNote as exc:
            return Entry(stamp, sha, None, Problem(path, exc.reason))
        return Entry(stamp, sha, note, None)

    @property
    def loaded(self) -> bool:
        """True once this process's first refresh has read the vault."""
        return self._loaded

    # ------------------------------------------------------------------ lookups

    def problem(self, path: str) -> Problem | None:
        rows = self._query("SELECT problem FROM notes WHERE path = ? AND problem IS NOT NULL", (path,))
        return Problem(path, rows[0][0]) if rows else None

    def note(self, note_id: str) -> Insight | Chunk | None:
        """The note with this id as the listing holds it (a chunk without its body), if any."""
        rows = self._query(
            f"SELECT {_NOTE_COLUMNS} FROM notes WHERE id = ? ORDER BY path LIMIT 1", (note_id,)
        )
        return _note(rows[0]) if rows else None

    def read(self, note_id: str) -> Insight | Chunk | None:
        """The note with this id as its file holds it now, body included (None if gone or unreadable)."""
        path = self.path_of(note_id)
        if path is None:
            return None
        try:
            return note_from_file(path, self._raw(path))
        except (OSError, InvalidNote):
            return None

    def body(self, note_id: str) -> str | None:
        """The Markdown body of a note as its file holds it now (front matter not parsed), or None."""
        path = self.path_of(note_id)
        return None if path is None else self.body_at(path)

    def _raw(self, path: str) -> bytes:
        # A path the catalog listed is inside the vault already; only a symlink put there since is
        # refused (O_NOFOLLOW). Vault.read_bytes resolves the whole path: 0.1-0.4 ms, too slow for
        # a grep that reads thousands of notes.
        fd = os.open(self.vault.root / path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def resolve(self, note_id: str) -> str | None:
        """The id of the note known by `note_id`: its own id, or an old id listed in its `aliases`."""
        if self.path_of(note_id) is not None:
            return note_id
        rows = self._query("SELECT id FROM aliases WHERE alias = ? ORDER BY path LIMIT 1", (note_id,))
        return rows[0][0] if rows else None

    def path_of(self, note_id: str) -> str | None:
        rows = self._query("SELECT path FROM notes WHERE id = ? ORDER BY path LIMIT 1", (note_id,))
        return rows[0][0] if rows else None

    def insights(self) -> list[Insight]:
        return [n for n in self._listed("kind = 'insight'", ()) if isinstance(n, Insight)]

    def _listed(self, where: str, args: tuple[str, ...]) -> list[Insight | Chunk]:
        """The notes `where` selects, in path order: parsed once per file version, then reused (a listing
        of 3,000 notes parses in 100 ms, reuses in 3), up to PARSED_KEPT of them per process; a listing
        that long is handed back as it is while nothing changed."""
        with self._mutex:
            head = self.head()
            listing = self._listings.get((where, args))
            if listing is not None and listing[0] == head:
                return list(listing[1])  # nothing changed since: the same notes
            notes = self._notes_of(
                self._query(f"SELECT path, sha FROM notes WHERE {where} ORDER BY path", args)
            )
            if len(self._listings) >= 4:
                self._listings.clear()
            if len(notes) <= PARSED_KEPT:
                self._listings[(where, args)] = (head, notes)
            return notes

    def chunks(self, full: bool = False, project: str = "", chunk_type: str = "") -> list[Chunk]:
        """Chunks without their body (of one project folder, ASCII case ignored, and of one type, when
        asked); with `full`, each file is read again for it (importers)."""
        where = "kind = 'chunk'"
        args: list[str] = []
        if project:
            where, args = where + " AND folder = ? COLLATE NOCASE", [*args, f"chunks/{project}"]
        if chunk_type:
            where, args = where + " AND chunk_type = ?", [*args, chunk_type]
        light = [n for n in self._listed(where, tuple(args)) if isinstance(n, Chunk)]
        if not full:
            return light
        read = (self.read(c.id) for c in light)
        return [c for c in read if isinstance(c, Chunk)]

    def chunks_created_by(self, day: str) -> list[Chunk]:
        """The chunks created on `day` (YYYY-MM-DD) or before, and those whose creation time does not start
        with a date (read them to know): retention's candidates, without building the newer chunks."""
        rows = self._query(
            "SELECT path, sha, created, id FROM notes WHERE kind = 'chunk' AND (created IS NULL"
            " OR created NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' OR substr(created, 1, 10) <= ?)"
            " ORDER BY path",
            (day,),
        )
        return [note for note in self._notes_of(rows) if isinstance(note, Chunk)]

    def chunk_facts(self) -> list[ChunkFacts]:
        """Project folder, domain, session and creation time of every chunk, from the listing's columns and
        its stored front matter: no note is built (`chunks()` builds each: 6 s at 100,000; this, 1-1.5 s)."""
        rows = self._query("SELECT project, meta, created FROM notes WHERE kind = 'chunk' ORDER BY path")
        facts = []
        for project, meta, created in rows:
            try:
                stored = json.loads(meta)
            except (TypeError, ValueError):
                stored = None
            if not isinstance(stored, dict):
                continue  # never written so; `chunks()` leaves such a row out too
            facts.append(
                ChunkFacts(
                    project or "",
                    field_text(stored.get("domain")),
                    field_text(stored.get("session")),
                    created or "",
                )
            )
        return facts

    def newest(
        self, limit: int, after: tuple[str, str] | None = None, kind: str = "", project: str = ""
    ) -> list[Insight | Chunk]:
        """Up to `limit` notes newest first (by creation time, then id), older than `after` (created, id)
        when given, of one kind and one project folder (ASCII case ignored) when asked."""
        return self._notes_of(self._newest_rows(limit, after, kind, project))

    def stream(self, kind: str = "", project: str = "") -> Iterator[Insight | Chunk]:
        """Every note `newest` would list, newest first, read a page at a time: a caller that stops early
        (a grep that found its lines) parses only the notes it looked at."""
        after, page = None, STREAM_FIRST_PAGE
        while True:
            rows = self._newest_rows(page, after, kind, project)
            yield from self._notes_of(rows)
            if len(rows) < page:
                return
            after, page = (rows[-1][2], rows[-1][3]), min(page * 4, STREAM_PAGE)

    def _newest_rows(
        self, limit: int, after: tuple[str, str] | None, kind: str, project: str
    ) -> list[tuple[str, str, str, str]]:
        """(path, sha, created, id) of the notes `newest` lists."""
        where, args = ["kind IS NOT NULL"], []
        if after is not None:
            where.append("(created, id) < (?, ?)")
            args += list(after)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if project:
            where.append("folder = ? COLLATE NOCASE")
            args.append(f"chunks/{project}")
        # In creation order from its index, filters checked row by row: with `kind = ?` the planner took the
        # kind index and sorted every chunk (260 ms at 100,000 for a page of one).
        sql = (
            "SELECT path, sha, created, id FROM notes INDEXED BY notes_created"
            f" WHERE {' AND '.join(where)} ORDER BY created DESC, id DESC LIMIT ?"
        )
        return self._query(sql, (*args, limit))

    def _notes_of(self, rows: Sequence[tuple[str, ...]]) -> list[Insight | Chunk]:
        """The notes of listing rows (path, sha, ...), in their order: those parsed before for the same file
        version are reused, the others are read from the listing, parsed and kept (the oldest kept go past
        PARSED_KEPT)."""
        with self._mutex:
            kept = self._kept
            self._keep([row[0] for row in rows if kept.get(row[0], ("",))[0] != row[1]])
            notes = [kept[row[0]][1] for row in rows if row[0] in kept and kept[row[0]][0] == row[1]]
            while len(kept) > PARSED_KEPT:  # the oldest parsed go first
                kept.pop(next(iter(kept)))
            return notes

    def _keep(self, paths: list[str]) -> None:
        """Parse the listed notes at `paths` into `_kept`, newest last (call with the mutex held)."""
        sql = f"SELECT {_NOTE_COLUMNS}, sha FROM notes WHERE path IN ({{}})"
        for path, meta, content, sha in self._rows_in(sql, paths):
            note = _note((path, meta, content))
            if note is not None:
                self._kept.pop(path, None)
                self._kept[path] = (sha, note)

    def kept_whole(self, kind: str) -> bool:
        """True when every note of `kind` fits in what a process keeps parsed (PARSED_KEPT): a listing of
        them all is then quicker than reading them a page at a time (`stream`)."""
        sql = "SELECT count(*) FROM (SELECT 1 FROM notes WHERE kind = ? LIMIT ?)"
        return bool(self._query(sql, (kind, PARSED_KEPT + 1))[0][0] <= PARSED_KEPT)

    def counts(self) -> dict[str, int]:
        """How many insights and chunks the vault holds."""
        rows = self._query("SELECT kind, count(*) FROM notes WHERE kind IS NOT NULL GROUP BY kind")
        return {"insight": 0, "chunk": 0, **dict(rows)}

    def projects(self) -> dict[str, int]:
        """Chunks per project folder."""
        rows = self._query("SELECT project, count(*) FROM notes WHERE kind = 'chunk' GROUP BY project")
        return {str(p): n for p, n in rows}

    def problems(self) -> list[Problem]:
        rows = self._query("SELECT path, problem FROM notes WHERE problem IS NOT NULL ORDER BY path")
        return [Problem(p, r) for p, r in rows]

    def hashes(self) -> dict[str, str]:
        """id -> sha256 of the file bytes, the key the search caches use."""
        found: dict[str, str] = {}
        # In (id, path) order from the covering index: the table's pages are not read.
        for note_id, sha in self._query("SELECT id, sha FROM notes WHERE id IS NOT NULL ORDER BY id, path"):
            # The smallest path wins, as in path_of; one string per id and hash, shared by every cache.
            found.setdefault(sys.intern(note_id), sys.intern(sha))
        return found

    def hashes_since(self, version: int) -> tuple[int, dict[str, str | None] | None]:
        """(the version now, id -> sha256 for each note changed since `version`, None for one gone);
        None instead of the changes when deletions since `version` were forgotten: read `hashes()`."""
        with self._mutex:
            now = self.head()
            if version < self._guarded(self._floor):
                return now, None
            ids = {
                r[0]
                for r in self._query(
                    "SELECT id FROM notes WHERE seq > ? AND id IS NOT NULL "
                    "UNION SELECT id FROM gone WHERE seq > ? AND id IS NOT NULL",
                    (version, version),
                )
            }
            found: dict[str, str | None] = dict.fromkeys(ids)
            rows = self._rows_in("SELECT id, sha FROM notes WHERE id IN ({}) ORDER BY path DESC", list(ids))
            found.update((i, sys.intern(s)) for i, s in rows)
            return now, found

    def listed(self, ids: list[str]) -> dict[str, tuple[Insight | Chunk, str, str]]:
        """id -> (note as listed, path, sha256) for each of `ids` the vault holds, a few queries in all."""
        found: dict[str, tuple[Insight | Chunk, str, str]] = {}
        sql = f"SELECT {_NOTE_COLUMNS}, id, sha FROM notes WHERE id IN ({{}}) ORDER BY path DESC"
        for path, meta, content, note_id, sha in self._rows_in(sql, ids):
            if (note := _note((path, meta, content))) is not None:  # the smallest path wins, as in path_of
                found[note_id] = (note, path, sha)
        return found

    def body_at(self, path: str) -> str | None:
        """The body of the note file at `path` as it is now (None when gone or unreadable)."""
        try:
            return body_of(self._raw(path))
        except (OSError, InvalidNote, UnicodeDecodeError):
            return None

    def sha_of(self, note_id: str) -> str:
        """sha256 of the file holding `note_id` ("" when unknown)."""
        rows = self._query("SELECT sha FROM notes WHERE id = ? ORDER BY path LIMIT 1", (note_id,))
        return str(rows[0][0]) if rows else ""

    def chunk_with_digest(self, digest: str) -> Chunk | None:
        """The chunk whose content hash (front matter `sha256`) is `digest`, if any."""
        rows = self._query(
            f"SELECT {_NOTE_COLUMNS} FROM notes INDEXED BY notes_digest WHERE digest = ? AND kind = 'chunk' ORDER BY path LIMIT 1",
            (digest,),
        )
        note = _note(rows[0]) if rows else None
        return note if isinstance(note, Chunk) else None

    def max_seq(self, prefix: str) -> int:
        """The highest sequence number of chunk ids `<day>_<project>_<seq>` seen for that prefix."""
        rows = self._query("SELECT max(id_number) FROM notes WHERE id_prefix = ?", (prefix,))
        return int(rows[0][0] or 0) if rows else 0

    def ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT id FROM notes WHERE id IS NOT NULL")}


def _numbered(chunk_id: str, path: str) -> tuple[str | None, int | None]:
    """(`<day>_<folder>_`, seq) of a chunk id `<day>_<project>_<seq>...` in its project's folder, so the
    next id of a day needs no listing; (None, None) for an id of another form."""
    prefix = f"{chunk_id[:10]}_{path.split('/')[1]}_"
    digits = re.match(r"\d+", chunk_id[len(prefix) :]) if chunk_id.startswith(prefix) else None
    return (prefix, int(digits.group(0))) if digits else (None, None)


def _wal(db: sqlite3.Connection, wait: float = 30.0) -> None:
    """Put a new file in WAL mode (a file already in it stays). The switch needs the file to itself and
    SQLite does not wait for it: another process creating the file at the same moment is waited for."""
    deadline = time.monotonic() + wait
    while db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _translated(exc: sqlite3.OperationalError, path: os.PathLike[str]) -> VaultError:
    """An SQLite error that is no damage: the file held by another process too long, or refused."""
    if "locked" in str(exc) or "busy" in str(exc):
        return Busy(f"the note listing at {path} was held by another process for 30 s; try again")
    return StorageError(
        f"the note listing at {path} cannot be used ({exc}): check that folder's space and rights"
    )


def _key(stamp: Stamp) -> str:
    return "{},{},{},{}".format(*stamp.astuple())


def _stamp(st: os.stat_result) -> Stamp:
    return Stamp(st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino)


def _is_note(path: str) -> bool:
    return path.endswith(".md") and path.split("/")[0] in ("insights", "chunks")


def _note(row: tuple[str, str, str]) -> Insight | Chunk | None:
    path, meta, content = row
    try:
        return note_from_meta(path, json.loads(meta), content or "")
    except (InvalidNote, TypeError, ValueError, AttributeError):
        return None


def body_of(raw: bytes) -> str:
    """The body of a note file as `Chunk.content` holds it, without parsing the front matter (a note a
    person wrote without front matter is all body, as `note_from_file` reads it)."""
    text = raw.decode("utf-8").removeprefix("\ufeff")
    if not text.startswith("---"):
        return text.strip("\n")
    return markdown.body(text).strip("\n")
