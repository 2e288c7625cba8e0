"""Many new notes in one commit: what the importers use (rlm-claude folders, Claude Code transcripts).

Ids are chosen under the vault's write lock, as for single writes, so an import running beside a live
server loses nothing. Archived chunks are written as `archive/<project>/<id>.md.gz`, like retention does.
A note keeps the other ids it was known by in front matter `aliases`, which peek, search and history
accept (and Obsidian links resolve). The same commit may also rewrite files already in the vault.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import markdown
from .models import Chunk, Insight, chunk_id, chunk_prefix, highest_seq, insight_id
from .service import MemoryService

__all__ = ["BulkResult", "NewChunk", "NewInsight", "note_file", "write_many"]

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True, slots=True)
class NewInsight:
    """An insight to add; its id is chosen at write time from `created` and the content."""

    content: str
    category: str = "general"
    importance: str = "medium"
    tags: tuple[str, ...] = ()
    project: str = ""
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NewChunk:
    """A chunk to add; `wanted_id` is kept when it is a safe, free id, else a new one is made."""

    content: str
    project: str
    created: str
    chunk_type: str = "session"
    summary: str = ""
    tags: tuple[str, ...] = ()
    domain: str = ""
    ticket: str = ""
    entities: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    wanted_id: str = ""
    archived: bool = False
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BulkResult:
    """Ids written, in the order given, and the one commit (None when nothing was written)."""

    insight_ids: tuple[str, ...]
    chunk_ids: tuple[str, ...]
    commit: str | None


def write_many(
    service: MemoryService,
    insights: Sequence[NewInsight],
    chunks: Sequence[NewChunk],
    message: str,
    rewrites: Sequence[tuple[str, bytes]] = (),
) -> BulkResult:
    """Write every note (and `rewrites`: vault path, new bytes), then make one commit with `message`."""
    if not insights and not chunks and not rewrites:
        return BulkResult((), (), None)
    with service.writing() as tx:
        tx.message = message
        ids = _Ids(service)
        files = [_insight_file(i, ids) for i in insights] + [_chunk_file(c, ids) for c in chunks]
        files += [(path, data, "") for path, data in rewrites]
        tx.expect([path for path, _, _ in files])
        for path, data, _ in files:
            tx.write(path, data, sync=False)
        tx.sync()
    note_ids = [note_id for _, _, note_id in files[: len(insights) + len(chunks)]]
    return BulkResult(tuple(note_ids[: len(insights)]), tuple(note_ids[len(insights) :]), tx.commit_id)


class _Ids:
    """Ids taken in the vault or earlier in this batch; call only under the write lock."""

    def __init__(self, service: MemoryService) -> None:
        self.root = service.vault.root
        self.taken: set[str] = set(service.store.fresh().ids()) | set(service.archive.paths())
        self.taken |= {p.name[:-3] for p in (self.root / "insights").glob("*.md")}
        self.seqs: dict[str, int] = {}

    def insight(self, created: str, content: str) -> str:
        return self._take(insight_id(created[:10], content, self.taken.__contains__))

    def chunk(self, chunk: NewChunk) -> str:
        if chunk.wanted_id and _SAFE_ID.fullmatch(chunk.wanted_id) and chunk.wanted_id not in self.taken:
            return self._take(chunk.wanted_id)
        prefix = chunk_prefix(chunk.created[:10], chunk.project)
        if prefix not in self.seqs:
            self.seqs[prefix] = self._max_seq(chunk.project, prefix)
        note_id = chunk_id(prefix, self.seqs[prefix], chunk.ticket, chunk.domain, self.taken.__contains__)
        self.seqs[prefix] = highest_seq([note_id], prefix)
        return self._take(note_id)

    def _max_seq(self, project: str, prefix: str) -> int:
        names = [
            name
            for top in ("chunks", "archive")
            if (folder := self.root / top / project).is_dir()
            for name in os.listdir(folder)
        ]
        return highest_seq([*names, *self.taken], prefix)

    def _take(self, note_id: str) -> str:
        self.taken.add(note_id)
        return note_id


def _insight_file(new: NewInsight, ids: _Ids) -> tuple[str, bytes, str]:
    note_id = ids.insight(new.created, new.content)
    return (*note_file(new, note_id), note_id)


def _chunk_file(new: NewChunk, ids: _Ids) -> tuple[str, bytes, str]:
    note_id = ids.chunk(new)
    return (*note_file(new, note_id), note_id)


def note_file(new: NewInsight | NewChunk, note_id: str, project: str = "") -> tuple[str, bytes]:
    """The vault path and bytes of a new note once it has its id (`project` overrides a chunk's folder)."""
    extra = dict(new.extra)
    aliases = [a for a in dict.fromkeys(new.aliases) if a and a != note_id]
    if aliases:
        extra["aliases"] = aliases
    if isinstance(new, NewInsight):
        insight = Insight(
            note_id,
            new.content,
            new.category,
            new.importance,
            new.tags,
            new.project,
            new.created,
            new.created,
            extra,
        )
        return insight.path, markdown.render(insight.to_meta(), insight.content).encode("utf-8")
    chunk = Chunk.create(
        note_id,
        new.content,
        project or new.project,
        new.created,
        chunk_type=new.chunk_type,
        summary=new.summary,
        tags=new.tags,
        domain=new.domain,
        ticket=new.ticket,
        entities=new.entities,
        extra=extra,
    )
    raw = markdown.render(chunk.to_meta(), chunk.content).encode("utf-8")
    if new.archived:
        return f"archive/{chunk.project}/{note_id}.md.gz", gzip.compress(raw, 6, mtime=0)
    return chunk.path, raw
