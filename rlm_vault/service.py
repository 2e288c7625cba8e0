"""MemoryService: every memory operation, behind every front end (MCP, CLI, hooks).

Writes go to the vault first (one commit each), then the in-memory catalog; reads come from the
catalog, refreshed from disk, so edits a person makes are seen at once. Nothing here imports mcp.
"""

from __future__ import annotations

import os
from collections import Counter

from . import markdown
from . import query as q
from .config import Config
from .core import Clock, ServiceCore, detect_project, iso, utc_now, valid_text
from .errors import InvalidInput, NotFound
from .lifecycle import LifecycleMixin
from .models import (
    CATEGORIES,
    CHUNK_TYPES,
    IMPORTANCES,
    Chunk,
    Insight,
    chunk_id,
    chunk_prefix,
    content_hash,
    extract_entities,
    highest_seq,
    insight_id,
    parse_tags,
    safe_name,
)  # fmt: skip
from .results import (
    ChunkList,
    ChunkRow,
    Domains,
    Forgotten,
    InsightRow,
    Peek,
    Recall,
    SessionRow,
    Sessions,
    Status,
    Written,
)  # fmt: skip
from .retrieval import SearchMixin
from .sync import SyncMixin
from .vault import Vault

__all__ = ["MemoryService", "detect_project", "open_service"]


class MemoryService(SearchMixin, LifecycleMixin, SyncMixin, ServiceCore):
    """Insights, chunks, search, retention, history and sync over one vault."""

    def __init__(self, vault: Vault, config: Config, clock: Clock = utc_now) -> None:
        super().__init__(vault, config, clock)

    # ------------------------------------------------------------------ insights

    def remember(
        self,
        content: str,
        category: str = "general",
        importance: str = "medium",
        tags: str = "",
        project: str = "",
    ) -> Written:
        """Save an insight as `insights/<id>.md`, one commit."""
        content = self.no_secrets(self.checked_content(content), "content")
        tags = self.no_secrets(valid_text(tags, "tags"), "tags")
        category = q.choice(category or "general", CATEGORIES, "category")
        importance = q.choice(importance or "medium", IMPORTANCES, "importance")
        project = safe_name(project, "project") if project else ""
        now = self.now()
        with self.writing() as tx:
            note_id = insight_id(now[:10], content, lambda i: self.vault.exists(f"insights/{i}.md"))
            insight = Insight(note_id, content, category, importance, parse_tags(tags), project, now, now)
            tx.message = f"remember: {note_id} ({category}/{importance})"
            tx.write(insight.path, markdown.render(insight.to_meta(), insight.content))
        return {"id": note_id, "path": insight.path, "commit": tx.commit_id}

    def recall(
        self, query: str = "", category: str = "", importance: str = "", project: str = "", limit: int = 10
    ) -> Recall:
        """Insights matching words of the query (accents and case ignored), best first."""
        limit = q.limit(limit)
        project = _name(project)
        category = q.choice(category, CATEGORIES, "category") if category else ""
        importance = q.choice(importance, IMPORTANCES, "importance") if importance else ""
        rows = [
            i
            for i in self.fresh().insights()
            if (not category or i.category == category)
            and (not importance or i.importance == importance)
            and (not project or i.project == project)
        ]
        scored = q.rank_insights(rows, query)
        return {"insights": [insight_row(i, score) for i, score in scored[:limit]]}

    def insight(self, insight_id: str) -> Insight:
        note = self.fresh().note(insight_id)
        if not isinstance(note, Insight):
            raise NotFound(f"no insight with id {insight_id!r}: use rlm_recall to list insight ids")
        return note

    def forget(self, insight_id: str) -> Forgotten:
        """Delete an insight file, one commit (git history keeps it)."""
        insight = self.insight(insight_id)
        with self.writing() as tx:
            tx.message = f"forget: {insight.id} {q.short(insight.content)}"
            tx.delete(insight.path)
        return {"id": insight.id, "removed": True, "commit": tx.commit_id}

    def update(
        self, insight_id: str, content: str = "", category: str = "", importance: str = "", tags: str = ""
    ) -> Written:
        """Edit an insight in place; empty arguments keep what is there."""
        old = self.insight(insight_id)
        new = Insight(
            old.id,
            self.no_secrets(self.checked_content(content), "content") if content else old.content,
            q.choice(category, CATEGORIES, "category") if category else old.category,
            q.choice(importance, IMPORTANCES, "importance") if importance else old.importance,
            parse_tags(self.no_secrets(valid_text(tags, "tags"), "tags")) if tags else old.tags,
            old.project,
            old.created,
            self.now(),
            old.extra,
        )
        if (new.content, new.category, new.importance, new.tags) == (
            old.content,
            old.category,
            old.importance,
            old.tags,
        ):
            return {"id": old.id, "path": old.path, "changed": False, "commit": None}
        with self.writing() as tx:
            tx.message = f"update: {old.id} ({new.category}/{new.importance})"
            tx.write(new.path, markdown.render(new.to_meta(), new.content))
        return {"id": new.id, "path": new.path, "changed": True, "commit": tx.commit_id}

    # ------------------------------------------------------------------ chunks

    def chunk(
        self,
        content: str,
        summary: str = "",
        tags: str = "",
        project: str = "",
        ticket: str = "",
        domain: str = "",
        chunk_type: str = "session",
        extra: dict[str, object] | None = None,
        dedup: bool = True,
        redact: bool = False,
    ) -> Written:
        """Save a conversation segment as `chunks/<project>/<id>.md`, one commit.

        A secret in the text is refused (tool calls), or with `redact` replaced by [REDACTED:<kind>]
        and recorded in the front matter (automatic snapshots and imports).
        """
        if chunk_type.strip().lower() == "insight":
            raise InvalidInput(
                "chunk_type 'insight' is not a chunk: call rlm_remember(content, category, "
                "importance) to save an insight"
            )
        chunk_type = q.choice(chunk_type or "session", CHUNK_TYPES, "chunk_type")
        content = self.checked_content(content)
        extra = dict(extra or {})
        if redact:
            content, kinds = self.redacted(content)
            summary, more = self.redacted(summary)
            if kinds or more:
                extra["redacted"] = sorted({*kinds, *more})
        else:
            content = self.no_secrets(content, "content")
            summary = self.no_secrets(summary, "summary")
            tags = self.no_secrets(tags, "tags")
        project = safe_name(project, "project") if project else self.project
        ticket = safe_name(ticket, "ticket") if ticket else ""
        domain = safe_name(domain, "domain") if domain else ""
        summary = valid_text(summary, "summary").strip()[:500] if summary.strip() else q.auto_summary(content)
        tags = valid_text(tags, "tags")
        digest = content_hash(content)
        if dedup and (existing := self._duplicate(digest)) is not None:
            return {"id": existing.id, "path": existing.path, "duplicate": True, "commit": None}
        now = self.clock()
        with self.writing() as tx:
            chunk_id = self._new_chunk_id(iso(now)[:10], project, ticket, domain)
            chunk = Chunk(
                chunk_id,
                content,
                project,
                chunk_type,
                summary,
                parse_tags(tags),
                domain,
                ticket,
                f"{iso(now)[:10]}_{project}" + (f"_{domain}" if domain else ""),
                iso(now),
                digest,
                len(content) // 4,
                extract_entities(content),
                extra,
            )
            tx.message = f"chunk: {chunk_id} {q.short(summary)}"
            tx.write(chunk.path, markdown.render(chunk.to_meta(), chunk.content))
        result: Written = {"id": chunk_id, "path": chunk.path, "commit": tx.commit_id}
        if extra.get("redacted"):
            result["redacted"] = list(extra["redacted"])  # type: ignore[arg-type]
        return result

    def _duplicate(self, digest: str) -> Chunk | None:
        return self.fresh().chunk_with_digest(digest)

    def _new_chunk_id(self, day: str, project: str, ticket: str, domain: str) -> str:
        prefix = chunk_prefix(day, project)
        # Under the write lock the catalog has just been refreshed: it knows the highest sequence number
        # without listing a folder of thousands; a process that never read (a hook) lists the folder.
        active = [] if self.catalog.loaded else _names(self.vault.root / "chunks" / project, prefix)
        after = max(
            highest_seq(active + _names(self.vault.root / "archive" / project, prefix), prefix),
            self.catalog.max_seq(prefix) if self.catalog.loaded else 0,
        )
        # Never over an existing note, whatever the bookkeeping says.
        return chunk_id(
            prefix, after, ticket, domain, lambda i: self.vault.exists(f"chunks/{project}/{i}.md")
        )

    def chunk_note(self, chunk_id: str) -> Chunk | Insight:
        """The chunk or insight with this id; an archived chunk is restored first."""
        note_id = self.resolve_id(chunk_id)  # an old id (front matter `aliases`) reads the note it became
        note = self.fresh().note(note_id)
        if note is None and note_id in self.archived():
            self.restore(note_id)
            note = self.fresh().note(note_id)
        if note is None:
            raise NotFound(
                f"no chunk or insight with id {chunk_id!r}: use rlm_list_chunks or rlm_search to find ids"
            )
        return note

    def peek(self, chunk_id: str, start: int = 0, end: int = -1) -> Peek:
        """Lines [start, end) of a chunk (or insight) body; end=-1 means to the last line."""
        note = self.chunk_note(chunk_id)
        lines = note.content.split("\n")
        total = len(lines)
        lo = max(0, start if start >= 0 else total + start)
        hi = total if end is None or end == -1 else (end if end >= 0 else total + end + 1)
        hi = min(max(hi, lo), total)
        self.access.touch(note.id, self.now())
        kind = "chunk" if isinstance(note, Chunk) else "insight"
        summary = note.summary if isinstance(note, Chunk) else q.short(note.content)
        result: Peek = {
            "id": note.id,
            "content": "\n".join(lines[lo:hi]),
            "start": lo,
            "end": hi,
            "total_lines": total,
            "kind": kind,
            "summary": summary,
            "path": note.path,
        }
        if note.id != chunk_id:
            result["old_id"] = chunk_id
        return result

    def list_chunks(self, limit: int = 20, project: str = "") -> ChunkList:
        """Chunks newest first."""
        limit = q.limit(limit, 1000)
        project = _name(project)
        rows = q.newest(c for c in self.fresh().chunks() if not project or c.project == project)
        return {"chunks": [chunk_row(c) for c in rows[:limit]]}

    def sessions(self, project: str = "", domain: str = "", limit: int = 10) -> Sessions:
        """Sessions (day x project x domain) derived from the chunks, newest first."""
        limit = q.limit(limit, 1000)
        project, domain = _name(project), _name(domain)
        groups: dict[str, list[Chunk]] = {}
        for c in self.fresh().chunks():
            if (not project or c.project == project) and (not domain or c.domain == domain):
                groups.setdefault(c.session or f"{c.created[:10]}_{c.project}", []).append(c)
        rows: list[SessionRow] = [
            {
                "id": sid,
                "project": cs[0].project,
                "domain": cs[0].domain or None,
                "chunks": len(cs),
                "started": min(c.created for c in cs),
            }
            for sid, cs in groups.items()
        ]
        rows.sort(key=lambda r: (r["started"], r["id"]), reverse=True)
        return {"sessions": rows[:limit]}

    def domains(self) -> Domains:
        """Suggested domains (domains.yaml) and those already used."""
        suggested = self.vault.read_domains()
        used = sorted({c.domain for c in self.fresh().chunks() if c.domain} - set(suggested))
        return {"domains": suggested + used}

    # ------------------------------------------------------------------ status

    def status(self) -> Status:
        """Counts, the vault's place and HEAD, search state, and unreadable files."""
        cat = self.fresh()
        insights, chunks = cat.insights(), cat.chunks()
        archived = len(self.archived())
        return {
            "insights": len(insights),
            "chunks": len(chunks),
            "archived": archived,
            "vault": str(self.vault.root),
            "head": self.vault.git.head(),
            "semantic": self.semantic_status(),
            "problems": [{"path": p.path, "reason": p.reason} for p in cat.problems()],
            "by_category": dict(Counter(i.category for i in insights)),
            "by_importance": dict(Counter(i.importance for i in insights)),
            "projects": dict(Counter(c.project for c in chunks)),
            "remote": self.remote(),
            "conflicts": self.vault.conflict_files(),
        }


def _names(folder: os.PathLike[str], prefix: str) -> list[str]:
    try:
        return [name for name in os.listdir(folder) if name.startswith(prefix)]
    except OSError:
        return []


def _name(value: str) -> str:
    """A project or domain filter, cleaned the way names are cleaned when notes are written."""
    return safe_name(value, "name", strict=False) if value.strip() else ""


def insight_row(i: Insight, score: float | None = None) -> InsightRow:
    row: InsightRow = {
        "id": i.id,
        "content": i.content,
        "category": i.category,
        "importance": i.importance,
        "tags": list(i.tags),
        "project": i.project or None,
        "created": i.created,
    }
    if score is not None:
        row["score"] = round(score, 4)
    return row


def chunk_row(c: Chunk) -> ChunkRow:
    return {
        "id": c.id,
        "summary": c.summary,
        "tags": list(c.tags),
        "project": c.project,
        "created": c.created,
        "tokens": c.tokens,
        "chunk_type": c.chunk_type,
        "domain": c.domain or None,
    }


def open_service(config: Config | None = None) -> MemoryService:
    """The composition root: the real vault at the configured place."""
    config = config or Config.from_env()
    return MemoryService(Vault.open(config.vault, config.lock_timeout), config)
