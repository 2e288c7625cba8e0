"""Archived chunks: `archive/<project>/<id>.md.gz`, the gzip of the exact chunk file.

Owns how an archive is found, read and bounded (a gzip bomb or a truncated file is refused, never
expanded or half-read). Retention writes archives; search, peek and the importers read them here.
"""

from __future__ import annotations

import zlib

from .errors import InvalidNote
from .models import Chunk
from .notes import note_from_file
from .vault import Vault

__all__ = ["Archive", "gunzip", "inflate"]


def inflate(data: bytes, limit: int, path: str) -> tuple[bytes, bool]:
    """At most `limit` bytes of a gzip file, and whether it stopped before its end (a truncated file).

    A bomb is refused, not expanded; a file that yields nothing at all is not gzip.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidNote(path, f"is not a valid gzip file ({exc})") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise InvalidNote(path, f"expands to more than {limit} bytes; refused")
    if not inflater.eof and not out:
        raise InvalidNote(path, "is not a valid gzip file: it ends before any text")
    return out, not inflater.eof


def gunzip(data: bytes, limit: int, path: str) -> bytes:
    """The whole content of a gzip file; a truncated one is refused, naming it as such."""
    out, truncated = inflate(data, limit, path)
    if truncated:
        raise InvalidNote(path, "is a truncated gzip file (it ends before its data does)")
    return out


class Archive:
    """The archive folder of one vault, read-only (writes go through a `Store` transaction)."""

    def __init__(self, vault: Vault, max_bytes: int) -> None:
        self.vault = vault
        self.limit = max_bytes * 2  # a chunk may be up to max_bytes of text, plus its front matter

    def paths(self) -> dict[str, str]:
        """id -> `archive/<project>/<id>.md.gz` for every archived chunk."""
        base = self.vault.root / "archive"
        if not base.is_dir():
            return {}
        return {
            p.name.removesuffix(".md.gz"): p.relative_to(self.vault.root).as_posix()
            for p in base.glob("*/*.md.gz")
            if not p.name.startswith(".")
        }

    def read(self, relpath: str) -> tuple[bytes, Chunk]:
        """The exact original bytes of an archived chunk, and the chunk they hold."""
        raw = gunzip(self.vault.read_bytes(relpath), self.limit, relpath)
        _, project, name = relpath.split("/")
        note = note_from_file(f"chunks/{project}/{name.removesuffix('.gz')}", raw)
        if not isinstance(note, Chunk):
            raise InvalidNote(relpath, "does not hold a chunk")
        return raw, note

    def chunks(self) -> list[Chunk]:
        """Every readable archived chunk (for searches that include the archive)."""
        found = []
        for relpath in self.paths().values():
            try:
                found.append(self.read(relpath)[1])
            except (InvalidNote, OSError):
                continue
        return found
