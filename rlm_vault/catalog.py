"""The notes as they are on disk right now, parsed once and refreshed by file stamps.

A person may edit, add or delete notes at any time (an editor, Obsidian, `git pull`); every read
starts with `refresh()`, which lists the note folders and re-parses only the files whose stamp
(size, times, inode) changed. A file that cannot be parsed becomes a `Problem`, never an exception.
Chunks are kept without their body (what ranking, filters and listings need), so a server's memory
does not grow with the text of the vault; `read()` and `body()` take the text from the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from . import markdown
from .errors import InvalidNote
from .models import Chunk, Insight
from .notes import aliases_of, note_from_file, note_from_meta
from .vault import Stamp, Vault

__all__ = ["Catalog", "Entry", "Problem", "aliases_of", "note_from_file", "note_from_meta"]


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
    """In-memory view of every insight and chunk file, kept in step with the disk.

    A folder whose own stamp has not changed is listed again only once `scan_interval` seconds have
    passed: files added, removed or replaced (the way most editors save) change the folder's stamp and
    are seen at once; a file rewritten in place is seen within the interval. Parsed notes are kept in
    `catalog.json` of the vault's cache folder so a new process does not parse ten thousand files again.
    A chunk is held with an empty `content`: its text is read from the file when asked (`read`, `body`).
    """

    CACHE = "catalog.json"
    VERSION = 2  # 2: chunk bodies are no longer stored
    SAVE_AFTER = 200  # parsed files before the cache is written again

    def __init__(self, vault: Vault, scan_interval: float = 1.0) -> None:
        self.vault = vault
        self.scan_interval = scan_interval
        self._entries: dict[str, Entry] = {}
        self._by_id: dict[str, str] = {}
        self._by_alias: dict[str, str] = {}  # an old id in a note's `aliases` -> the note's id
        self._by_digest: dict[str, str] = {}  # a chunk's content hash -> its id, to spot duplicates
        self._hashes: dict[str, str] = {}  # id -> sha256 of the file, what the search caches key on
        self._max_seq: dict[str, int] = {}
        self.version = 0  # bumped on every change, so readers can skip work when nothing moved
        self._folders: dict[str, tuple[Stamp, float]] = {}
        self._mutex = threading.RLock()  # readers take it too: each gets a consistent snapshot
        self._loaded = False
        self._cached: dict[str, list[Any]] = {}
        self._parsed = 0

    def refresh(self) -> set[str]:
        """Re-read whatever changed on disk; returns the paths added, changed or removed.

        The first refresh only takes stock: it reports nothing.
        """
        with self._mutex:
            if not self._loaded:
                self._cached = self._read_cache()
            now = time.monotonic()
            folders = self.vault.note_folders()
            changes: set[str] = set()
            for rel in [f for f in self._folders if f not in folders]:
                changes |= self._drop_folder(rel)
            for rel, stamp in folders.items():
                seen = self._folders.get(rel)
                if seen is None or seen[0] != stamp or now - seen[1] >= self.scan_interval:
                    changes |= self._rescan(rel, self.vault.scan_folder(rel))
                    self._folders[rel] = (stamp, time.monotonic())
            first, self._loaded = not self._loaded, True
            if self._parsed >= self.SAVE_AFTER or (first and self._parsed):
                self._write_cache()
            self._cached = {} if not first else self._cached
            return set() if first else changes

    def _rescan(self, rel: str, listing: dict[str, Stamp]) -> set[str]:
        prefix = rel + "/"
        gone = [
            p
            for p in self._entries
            if p.startswith(prefix) and "/" not in p[len(prefix) :] and p not in listing
        ]
        changed = [
            p for p, stamp in listing.items() if (e := self._entries.get(p)) is None or e.stamp != stamp
        ]
        for path in gone:
            self._put(path, None)
        for path in changed:
            self._put(path, self._from_cache(path, listing[path]) or self._load(path, listing[path]))
        return {*gone, *changed}

    def _drop_folder(self, rel: str) -> set[str]:
        del self._folders[rel]
        prefix = rel + "/"
        gone = {p for p in self._entries if p.startswith(prefix) and "/" not in p[len(prefix) :]}
        for path in gone:
            self._put(path, None)
        return gone

    def absorb(self, paths: list[str]) -> None:
        """Take in files this process just wrote or deleted, without reporting them as changes."""
        with self._mutex:
            if not self._loaded:
                return
            for path in paths:
                try:
                    st = os.stat(self.vault.root / path, follow_symlinks=False)
                except FileNotFoundError:
                    self._put(path, None)
                    continue
                if path.endswith(".md") and path.split("/")[0] in ("insights", "chunks"):
                    self._put(
                        path, self._load(path, Stamp(st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino))
                    )
            self._restamp_folders(paths)

    def _restamp_folders(self, paths: list[str]) -> None:
        # Our own write changed its folder's stamp; that alone must not make the next read list it again.
        for rel in {p.rsplit("/", 1)[0] for p in paths}:
            if rel in self._folders:
                try:
                    st = os.stat(self.vault.root / rel, follow_symlinks=False)
                except OSError:
                    continue
                self._folders[rel] = (
                    Stamp(st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino),
                    self._folders[rel][1],
                )

    # ------------------------------------------------------------------ the on-disk cache

    def _read_cache(self) -> dict[str, list[Any]]:
        data = self.vault.read_cache(self.CACHE, {})
        entries = (
            data.get("entries") if isinstance(data, dict) and data.get("version") == self.VERSION else None
        )
        return entries if isinstance(entries, dict) else {}

    def _from_cache(self, path: str, stamp: Stamp) -> Entry | None:
        row = self._cached.get(path)
        if not isinstance(row, list) or len(row) != 4 or row[0] != list(stamp.astuple()):
            return None
        try:
            return Entry(stamp, sys.intern(str(row[1])), note_from_meta(path, row[2], str(row[3])), None)
        except (InvalidNote, TypeError, ValueError, AttributeError):
            return None

    def _write_cache(self) -> None:
        rows = {
            p: [list(e.stamp.astuple()), e.sha256, e.note.to_meta(), e.note.content]
            for p, e in self._entries.items()
            if e.note is not None
        }
        try:
            self.vault.write_cache(self.CACHE, {"version": self.VERSION, "entries": rows})
        except OSError:
            pass  # a cache that cannot be written only costs time at the next start
        self._parsed = 0

    @property
    def loaded(self) -> bool:
        """True once the first refresh has read the vault."""
        return self._loaded

    def problem(self, path: str) -> Problem | None:
        with self._mutex:
            entry = self._entries.get(path)
        return entry.problem if entry else None

    def _load(self, path: str, stamp: Stamp) -> Entry:
        try:
            raw = self.vault.read_bytes(path)
        except OSError as exc:
            return Entry(stamp, "", None, Problem(path, f"cannot be read: {exc.strerror or exc}"))
        except InvalidNote as exc:
            return Entry(stamp, "", None, Problem(path, exc.reason))
        sha = sys.intern(hashlib.sha256(raw).hexdigest())  # the search caches hold the same string
        self._parsed += 1
        try:
            note = note_from_file(path, raw, stamp.mtime_ns)
        except InvalidNote as exc:
            return Entry(stamp, sha, None, Problem(path, exc.reason))
        return Entry(stamp, sha, _light(note), None)

    def _put(self, path: str, entry: Entry | None) -> None:
        """Set or drop one file's entry, keeping the lookups in step (no full rebuild per change)."""
        old = self._entries.pop(path, None)
        if old is not None and old.note is not None and self._by_id.get(old.note.id) == path:
            del self._by_id[old.note.id]
            self._hashes.pop(old.note.id, None)
            for alias in aliases_of(old.note):
                if self._by_alias.get(alias) == old.note.id:
                    del self._by_alias[alias]
            if isinstance(old.note, Chunk) and self._by_digest.get(old.note.sha256) == old.note.id:
                del self._by_digest[old.note.sha256]
        if entry is not None:
            self._entries[path] = entry
            note = entry.note
            if note is not None and self._by_id.setdefault(note.id, path) == path:
                self._hashes[note.id] = entry.sha256
                for alias in aliases_of(note):
                    self._by_alias.setdefault(alias, note.id)
                if isinstance(note, Chunk):
                    if note.sha256:
                        self._by_digest.setdefault(note.sha256, note.id)
                    self._count_seq(note.id, path.split("/")[1])
        self.version += 1

    def _count_seq(self, chunk_id: str, folder: str) -> None:
        # `<day>_<project>_<seq>...`: the highest seq per day and project, so a new id needs no listing.
        prefix = f"{chunk_id[:10]}_{folder}_"
        digits = re.match(r"\d+", chunk_id[len(prefix) :]) if chunk_id.startswith(prefix) else None
        if digits:
            self._max_seq[prefix] = max(self._max_seq.get(prefix, 0), int(digits.group(0)))

    def note(self, note_id: str) -> Insight | Chunk | None:
        """The note with this id, if any."""
        with self._mutex:
            path = self._by_id.get(note_id)
            entry = self._entries.get(path) if path else None
            return entry.note if entry else None

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
        if path is None:
            return None
        try:
            return body_of(self._raw(path))
        except (OSError, InvalidNote, UnicodeDecodeError):
            return None

    def _raw(self, path: str) -> bytes:
        # A path the catalog listed is inside the vault already; only a symlink put there since is
        # refused (O_NOFOLLOW). Vault.read_bytes resolves the whole path: 0.1-0.4 ms, too slow for
        # a grep that reads thousands of notes.
        fd = os.open(self.vault.root / path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def resolve(self, note_id: str) -> str | None:
        """The id of the note known by `note_id`: its own id, or an old id listed in its `aliases`."""
        with self._mutex:
            if note_id in self._by_id:
                return note_id
            return self._by_alias.get(note_id)

    def path_of(self, note_id: str) -> str | None:
        with self._mutex:
            return self._by_id.get(note_id)

    def insights(self) -> list[Insight]:
        with self._mutex:
            return [e.note for e in self._entries.values() if isinstance(e.note, Insight)]

    def chunks(self, full: bool = False) -> list[Chunk]:
        """Every chunk, without its body; with `full`, each file is read again for it (importers)."""
        with self._mutex:
            light = [e.note for e in self._entries.values() if isinstance(e.note, Chunk)]
        if not full:
            return light
        read = (self.read(c.id) for c in light)
        return [c for c in read if isinstance(c, Chunk)]

    def problems(self) -> list[Problem]:
        with self._mutex:
            found = [e.problem for e in self._entries.values() if e.problem]
        return sorted(found, key=lambda p: p.path)

    def hashes(self) -> dict[str, str]:
        """id -> sha256 of the file bytes, the key the search caches use."""
        with self._mutex:
            return dict(self._hashes)

    def sha_of(self, note_id: str) -> str:
        """sha256 of the file holding `note_id` ("" when unknown)."""
        with self._mutex:
            return self._hashes.get(note_id, "")

    def chunk_with_digest(self, digest: str) -> Chunk | None:
        """The chunk whose content hash (front matter `sha256`) is `digest`, if any."""
        with self._mutex:
            note = self.note(self._by_digest.get(digest, ""))
        return note if isinstance(note, Chunk) else None

    def max_seq(self, prefix: str) -> int:
        """The highest sequence number of chunk ids `<day>_<project>_<seq>` seen for that prefix."""
        with self._mutex:
            return self._max_seq.get(prefix, 0)

    def ids(self) -> set[str]:
        with self._mutex:
            return set(self._by_id)


def _light(note: Insight | Chunk) -> Insight | Chunk:
    """What the catalog keeps of a note: insights whole (short, and recall ranks their text), chunks
    without their body."""
    return replace(note, content="") if isinstance(note, Chunk) else note


def body_of(raw: bytes) -> str:
    """The body of a note file as `Chunk.content` holds it, without parsing the front matter (a note a
    person wrote without front matter is all body, as `note_from_file` reads it)."""
    text = raw.decode("utf-8").removeprefix("\ufeff")
    if not text.startswith("---"):
        return text.strip("\n")
    return markdown.body(text).strip("\n")
