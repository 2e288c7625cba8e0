"""Note files as records: bytes -> Insight or Chunk by the folder they are in, and the other ids a note
answers to. Pure: no disk, no git (the catalog, the archive and the importers all read notes this way)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from . import markdown
from .errors import InvalidNote
from .models import Chunk, Insight

__all__ = ["aliases_of", "note_from_file", "note_from_meta"]


def aliases_of(note: Insight | Chunk) -> list[str]:
    """The other ids a note is known by: front matter `aliases` (a list, or one string), as Obsidian reads it."""
    value = note.extra.get("aliases")
    items = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    return [str(a) for a in items if isinstance(a, (str, int)) and str(a) and str(a) != note.id]


def note_from_file(path: str, raw: bytes, mtime_ns: int = 0) -> Insight | Chunk:
    """Parse file bytes into the record its folder calls for.

    A note a person wrote without front matter is a memory too: its id is the file name, its
    category `general`, and it was created when the file was last written (`mtime_ns`).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidNote(path, f"is not valid UTF-8 (byte {exc.start})") from exc
    if not text.removeprefix("\ufeff").startswith("---"):
        if not text.strip():
            raise InvalidNote(path, "is empty")  # an editor's new file, not written yet
        return note_from_meta(
            path, {"created": _iso(mtime_ns)} if mtime_ns else {}, text.removeprefix("\ufeff")
        )
    meta, body = markdown.parse(text, path)
    return note_from_meta(path, meta, body)


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def note_from_meta(path: str, meta: dict[str, Any], body: str) -> Insight | Chunk:
    """The record a note's front matter and body make, by the folder it is in."""
    if not isinstance(meta, dict):
        raise InvalidNote(path, "front matter is not a mapping")
    parts = path.split("/")
    note_id = parts[-1].removesuffix(".md")
    if parts[0] == "insights":
        return Insight.from_meta(note_id, meta, body)
    return Chunk.from_meta(note_id, parts[1], meta, body)
