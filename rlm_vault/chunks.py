"""Chunks: saved conversation segments, one note each in `chunks/<project>/`, and what derives from them.

Owns `Chunks`: chunk (save), peek (read back by lines, restoring an archived chunk on demand),
list_chunks, sessions and domains; and, since a chunk id or an insight id is read the same way, the
whole-note reads front ends offer as documents (`notes_page`, `read_note`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import replace

from . import markdown
from . import query as q
from .catalog import ChunkFacts
from .core import ContentRules, Store, iso, valid_text
from .errors import InvalidInput, InvalidNote, NotFound
from .insights import name_filter, same_name
from .lifecycle import Lifecycle
from .models import (
    CHUNK_TYPES,
    Chunk,
    Insight,
    chunk_id,
    chunk_prefix,
    content_hash,
    highest_seq,
    parse_tags,
    safe_name,
)
from .results import (
    ChunkList,
    ChunkRow,
    Domains,
    NotePage,
    NoteRef,
    NoteText,
    Peek,
    SessionRow,
    Sessions,
    Written,
)

SESSION_LISTED = 200  # chunks a session note lists by name; the rest link to it
_MORE = "- ... more chunks of this session link here (see the backlinks)"

__all__ = ["Chunks", "chunk_row", "note_title"]


class Chunks:
    """The chunk notes of one vault."""

    def __init__(self, store: Store, rules: ContentRules, lifecycle: Lifecycle) -> None:
        self.store = store
        self.rules = rules
        self.lifecycle = lifecycle  # peek of an archived chunk restores it first

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
        previous: str = "",
    ) -> Written:
        """Save a conversation segment as `chunks/<project>/<id>.md`, one commit.

        A secret in the text is refused (tool calls), or with `redact` replaced by [REDACTED:<kind>]
        and recorded in the front matter (automatic snapshots and imports). The chunk links to its
        session note (`sessions/<session>.md`, updated in the same commit) and a snapshot to the
        `previous` one (or the project's newest snapshot).
        """
        if chunk_type.strip().lower() == "insight":
            raise InvalidInput(
                "chunk_type 'insight' is not a chunk: call rlm_remember(content, category, "
                "importance) to save an insight"
            )
        chunk_type = q.choice(chunk_type or "session", CHUNK_TYPES, "chunk_type")
        content = self.rules.checked(content)
        extras = dict(extra or {})
        if redact:
            content, kinds = self.rules.redacted(content)
            summary, more = self.rules.redacted(summary)
            if kinds or more:
                extras["redacted"] = sorted({*kinds, *more})
        else:
            content = self.rules.no_secrets(content, "content")
            summary = self.rules.no_secrets(summary, "summary")
            tags = self.rules.no_secrets(tags, "tags")
        self.rules.no_secrets_in_fields(project=project, ticket=ticket, domain=domain, tags=parse_tags(tags))
        given = project.strip()
        project = safe_name(project, "project") if project else self.store.project
        ticket = safe_name(ticket, "ticket") if ticket else ""
        domain = safe_name(domain, "domain") if domain else ""
        summary = valid_text(summary, "summary").strip()[:500] if summary.strip() else q.auto_summary(content)
        tags = valid_text(tags, "tags")
        if dedup and (existing := self.store.fresh().chunk_with_digest(content_hash(content))) is not None:
            return {"id": existing.id, "path": existing.path, "duplicate": True, "commit": None}
        now = iso(self.store.clock())
        with self.store.writing() as tx:
            project = self.store.vault.project_folder(project)  # `foo` after `Foo`: one folder on any disk
            new_id = self._new_id(now[:10], project, ticket, domain)
            chunk = Chunk.create(
                new_id,
                content,
                project,
                now,
                chunk_type=chunk_type,
                summary=summary,
                tags=parse_tags(tags),
                domain=domain,
                ticket=ticket,
                extra=extras,
                project_name=given,
            )
            links = [chunk.session, *self._previous(chunk, previous)]
            chunk = replace(chunk, extra={**chunk.extra, "links": [f"[[{n}]]" for n in links]})
            tx.message = f"chunk: {new_id} {q.short(summary)}"
            tx.write(chunk.path, markdown.render(chunk.to_meta(), chunk.content))
            if (note := self._session_note(chunk)) is not None:
                # Derived from the chunks (its links): not worth a second fsync per write. The rename
                # still replaces it whole, and git has each version.
                tx.write(*note, sync=False)
        result: Written = {"id": new_id, "path": chunk.path, "commit": tx.commit_id}
        if extras.get("redacted"):
            result["redacted"] = list(extras["redacted"])  # type: ignore[call-overload]
        return result

    def _previous(self, chunk: Chunk, given: str) -> list[str]:
        """The snapshot a new snapshot follows: the one given, else the project's newest one."""
        if chunk.chunk_type != "snapshot":
            return []
        vault = self.store.vault
        if given:
            return [given] if vault.exists(f"chunks/{chunk.project}/{given}.md") else []
        if not self.store.catalog.loaded:
            return []  # a process that never read (a hook) passes `previous` itself
        snapshots = self.store.catalog.chunks(project=chunk.project, chunk_type="snapshot")
        earlier = [c for c in snapshots if c.project == chunk.project]
        return [q.newest(earlier)[0].id] if earlier else []

    def _session_note(self, chunk: Chunk) -> tuple[str, str] | None:
        """`sessions/<session>.md` with a link to the new chunk added (Obsidian's graph and backlinks), or
        None once it lists SESSION_LISTED chunks: a write must not rewrite (and git keep) an ever longer
        file; later chunks still link to the note, and Obsidian's backlinks show them all.

        The line is appended to the text as it is (front matter not parsed or written again), so a
        person's edits to the note stay as they made them; a note that is not UTF-8 is left alone."""
        path = f"sessions/{chunk.session}.md"
        try:
            text = self.store.vault.read_bytes(path).decode("utf-8")
        except FileNotFoundError:
            text = markdown.render(session_meta(chunk), f"# {chunk.session}\n")
        except (OSError, UnicodeDecodeError, InvalidNote):
            return None
        try:
            body = markdown.body(text, path)
        except InvalidNote:
            body = text  # no front matter (a person's rewrite): all of it is the body
        listed = body.count("\n- [[")
        if f"[[{chunk.id}]]" in body or _MORE in body:
            return None
        line = f"- [[{chunk.id}]] {q.short(chunk.summary, 100).replace('[[', '[ [')}"
        if listed >= SESSION_LISTED:
            line = _MORE
        return path, text.rstrip("\n") + ("\n\n" if not listed else "\n") + line + "\n"

    def _new_id(self, day: str, project: str, ticket: str, domain: str) -> str:
        prefix = chunk_prefix(day, project)
        catalog = self.store.catalog
        root = self.store.vault.root
        # Under the write lock the catalog has just been refreshed: it knows the highest sequence number
        # without listing a folder of thousands; a process that never read (a hook) lists the folder.
        active = [] if catalog.loaded else _names(root / "chunks" / project, prefix)
        after = max(
            highest_seq(active + _names(root / "archive" / project, prefix), prefix),
            catalog.max_seq(prefix) if catalog.loaded else 0,
        )
        # Never over an existing note, whatever the bookkeeping says.
        return chunk_id(
            prefix, after, ticket, domain, lambda i: self.store.vault.exists(f"chunks/{project}/{i}.md")
        )

    def note(self, note_id: str) -> Chunk | Insight:
        """The chunk or insight with this id, body read from its file; an archived chunk is restored first."""
        asked, note_id = note_id, self.lifecycle.resolve_id(note_id)  # an old id reads the note it became
        note = self.store.fresh().read(note_id)
        if note is None and note_id in self.lifecycle.archive.paths():
            self.lifecycle.restore(note_id)
            note = self.store.fresh().read(note_id)
        if note is None:
            raise NotFound(
                f"no chunk or insight with id {asked!r}: use rlm_list_chunks or rlm_search to find ids"
            )
        return note

    def peek(self, chunk_id: str, start: int = 0, end: int = -1) -> Peek:
        """Lines [start, end) of a chunk (or insight) body; end=-1 means to the last line."""
        note = self.note(chunk_id)
        lines = note.content.split("\n")
        total = len(lines)
        lo = max(0, start if start >= 0 else total + start)
        hi = total if end is None or end == -1 else (end if end >= 0 else total + end + 1)
        hi = min(hi, total)
        if lo >= total or hi <= lo:
            raise InvalidInput(
                f"lines start={start} end={end} are outside {note.id}, which has {total} line(s): "
                f"use start from 0 to {total - 1} (negative counts from the end) and an end after it, "
                "or end=-1 for the rest"
            )
        self.store.access.touch(note.id, self.store.now())
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

    def notes_page(self, cursor: str = "", limit: int = 100) -> NotePage:
        """One page of every insight and chunk, newest first; pass `next_cursor` back for the next page.

        The cursor names the last note of the page, so notes written meanwhile never shift a page.
        """
        limit = q.limit(limit, 1000)
        after = _cursor_key(cursor) if cursor else None
        notes = self.store.fresh().newest(limit + 1, after)
        page = notes[:limit]
        more = len(notes) > limit
        return {
            "notes": [_note_ref(n) for n in page],
            "next_cursor": _cursor_of(page[-1]) if more and page else None,
        }

    def read_note(self, note_id: str, kind: str = "") -> NoteText:
        """A note's file as it is (an archived chunk is read from the archive, not restored).

        `kind` ("insight" or "chunk") refuses a note of the other kind.
        """
        note: Chunk | Insight | None = self.store.fresh().note(note_id)
        archived = self.lifecycle.archive.paths().get(note_id) if note is None else None
        if archived is not None:
            raw, note = self.lifecycle.archive.read(archived)
            path = archived
        elif note is not None:
            raw, path = self.store.vault.read_bytes(note.path), note.path
        else:
            raise NotFound(f"no chunk or insight with id {note_id!r}: use rlm_list_chunks or rlm_recall")
        found = "chunk" if isinstance(note, Chunk) else "insight"
        if kind and kind != found:
            raise NotFound(f"{note_id} is a {found}, not a {kind}: read it as a {found}")
        text = raw.decode("utf-8", errors="replace")
        return {"id": note.id, "kind": found, "title": note_title(note), "path": path, "text": text}

    def list_chunks(self, limit: int = 20, project: str = "") -> ChunkList:
        """Chunks newest first."""
        limit = q.limit(limit, 1000)
        project = name_filter(project)
        cat = self.store.fresh()
        if project and not project.isascii():  # SQLite folds ASCII case only
            rows = q.newest(c for c in cat.chunks() if same_name(c.project, project))
        else:
            rows = [c for c in cat.newest(limit, kind="chunk", project=project) if isinstance(c, Chunk)]
        return {"chunks": [chunk_row(c) for c in rows[:limit]]}

    def sessions(self, project: str = "", domain: str = "", limit: int = 10) -> Sessions:
        """Sessions (day x project x domain) derived from the chunks, newest first."""
        limit = q.limit(limit, 1000)
        project, domain = name_filter(project), name_filter(domain)
        groups: dict[str, list[ChunkFacts]] = {}
        for c in self.store.fresh().chunk_facts():
            if (not project or same_name(c.project, project)) and (not domain or c.domain == domain):
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
        suggested = self.store.vault.read_domains()
        used = {c.domain for c in self.store.fresh().chunk_facts() if c.domain}
        return {"domains": suggested + sorted(used - set(suggested))}


def _names(folder: os.PathLike[str], prefix: str) -> list[str]:
    try:
        return [name for name in os.listdir(folder) if name.startswith(prefix)]
    except OSError:
        return []


def note_title(note: Chunk | Insight) -> str:
    """A title a person can read: a chunk's summary, an insight's first line."""
    text = note.summary if isinstance(note, Chunk) else note.content
    return q.short(text, 100) or note.id


def _note_ref(note: Chunk | Insight) -> NoteRef:
    kind = "chunk" if isinstance(note, Chunk) else "insight"
    return {
        "id": note.id,
        "kind": kind,
        "title": note_title(note),
        "path": note.path,
        "created": note.created,
    }


def _cursor_of(note: Chunk | Insight) -> str:
    raw = json.dumps([note.created, note.id], ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _cursor_key(cursor: str) -> tuple[str, str]:
    try:
        created, note_id = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        raise InvalidInput(
            f"cursor {cursor[:40]!r} is not accepted: send the next_cursor of the previous page, "
            "or no cursor for the first page"
        ) from None
    if not isinstance(created, str) or not isinstance(note_id, str):
        raise InvalidInput("cursor is not accepted: send the next_cursor of the previous page")
    return created, note_id


def session_meta(chunk: Chunk) -> dict[str, object]:
    """Front matter of a session note: what the session is, from its first chunk."""
    return {
        "id": chunk.session,
        "type": "session",
        "project": chunk.project_name or chunk.project,
        "domain": chunk.domain or None,
        "started": chunk.created,
    }


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
