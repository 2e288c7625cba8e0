"""The notes as they are on disk right now, parsed once and refreshed by file stamps.

A person may edit, add or delete notes at any time (an editor, Obsidian, `git pull`); every read
starts with `refresh()`, which lists the note folders and re-parses only the files whose size or
modification time changed. A file that cannot be parsed becomes a `Problem`, never an exception.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

from . import markdown
from .errors import InvalidNote
from .models import Chunk, Insight
from .vault import Stamp, Vault

__all__ = ["Catalog", "Entry", "Problem"]


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
    """In-memory view of every insight and chunk file, kept in step with the disk."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._entries: dict[str, Entry] = {}
        self._by_id: dict[str, str] = {}
        self._mutex = threading.Lock()
        self._loaded = False

    def refresh(self) -> set[str]:
        """Re-read whatever changed on disk; returns the paths added, changed or removed.

        The first refresh only takes stock: it reports nothing.
        """
        with self._mutex:
            listing = {**self.vault.scan("insights"), **self.vault.scan("chunks")}
            gone = [path for path in self._entries if path not in listing]
            changed = [path for path, stamp in listing.items()
                       if (entry := self._entries.get(path)) is None or entry.stamp != stamp]
            for path in gone:
                del self._entries[path]
            for path in changed:
                self._entries[path] = self._load(path, listing[path])
            if gone or changed:
                self._reindex()
            first, self._loaded = not self._loaded, True
            return set() if first else {*gone, *changed}

    def absorb(self, paths: list[str]) -> None:
        """Take in files this process just wrote or deleted, without reporting them as changes."""
        with self._mutex:
            if not self._loaded:
                return
            for path in paths:
                try:
                    st = os.stat(self.vault.root / path, follow_symlinks=False)
                except FileNotFoundError:
                    self._entries.pop(path, None)
                    continue
                if path.endswith(".md") and path.split("/")[0] in ("insights", "chunks"):
                    self._entries[path] = self._load(path, Stamp(st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino))
            self._reindex()

    @property
    def loaded(self) -> bool:
        """True once the first refresh has read the vault."""
        return self._loaded

    def problem(self, path: str) -> Problem | None:
        entry = self._entries.get(path)
        return entry.problem if entry else None

    def _load(self, path: str, stamp: Stamp) -> Entry:
        try:
            raw = self.vault.read_bytes(path)
        except OSError as exc:
            return Entry(stamp, "", None, Problem(path, f"cannot be read: {exc.strerror or exc}"))
        except InvalidNote as exc:
            return Entry(stamp, "", None, Problem(path, exc.reason))
        sha = hashlib.sha256(raw).hexdigest()
        try:
            note = note_from_file(path, raw)
        except InvalidNote as exc:
            return Entry(stamp, sha, None, Problem(path, exc.reason))
        return Entry(stamp, sha, note, None)

    def _reindex(self) -> None:
        self._by_id = {}
        for path, entry in self._entries.items():
            if entry.note is not None:
                self._by_id.setdefault(entry.note.id, path)

    def note(self, note_id: str) -> Insight | Chunk | None:
        """The note with this id, if any."""
        path = self._by_id.get(note_id)
        entry = self._entries.get(path) if path else None
        return entry.note if entry else None

    def path_of(self, note_id: str) -> str | None:
        return self._by_id.get(note_id)

    def insights(self) -> list[Insight]:
        return [e.note for e in self._entries.values() if isinstance(e.note, Insight)]

    def chunks(self) -> list[Chunk]:
        return [e.note for e in self._entries.values() if isinstance(e.note, Chunk)]

    def problems(self) -> list[Problem]:
        return sorted((e.problem for e in self._entries.values() if e.problem), key=lambda p: p.path)

    def hashes(self) -> dict[str, str]:
        """id -> sha256 of the file bytes, the key the search caches use."""
        return {e.note.id: e.sha256 for e in self._entries.values() if e.note is not None}

    def ids(self) -> set[str]:
        return set(self._by_id)


def note_from_file(path: str, raw: bytes) -> Insight | Chunk:
    """Parse file bytes into the record its folder calls for."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidNote(path, f"is not valid UTF-8 (byte {exc.start})") from exc
    meta, body = markdown.parse(text, path)
    parts = path.split("/")
    note_id = parts[-1].removesuffix(".md")
    if parts[0] == "insights":
        return Insight.from_meta(note_id, meta, body)
    return Chunk.from_meta(note_id, parts[1], meta, body)
