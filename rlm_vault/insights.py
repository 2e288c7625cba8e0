"""Insights: durable decisions, facts, preferences, findings and todos, one note each in `insights/`.

Owns `Insights`: remember, recall, update and forget, each change one commit through the store.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from . import markdown
from . import query as q
from .catalog import note_from_file
from .core import ContentRules, Store, valid_text
from .errors import NotFound
from .models import CATEGORIES, IMPORTANCES, Insight, insight_id, needs_alias, parse_tags, safe_name, title_of
from .results import Forgotten, InsightRow, Recall, Written

__all__ = ["Insights", "insight_row", "name_filter", "same_name"]


class Insights:
    """The insight notes of one vault."""

    def __init__(self, store: Store, rules: ContentRules) -> None:
        self.store = store
        self.rules = rules

    def remember(
        self,
        content: str,
        category: str = "general",
        importance: str = "medium",
        tags: str = "",
        project: str = "",
        source: str = "",
    ) -> Written:
        """Save an insight as `insights/<id>.md`, one commit; `source` links it to the chunk it came from."""
        content = self.rules.no_secrets(self.rules.checked(content), "content")
        tags = self.rules.no_secrets(valid_text(tags, "tags"), "tags")
        self.rules.no_secrets_in_fields(project=project, tags=parse_tags(tags))
        category = q.choice(category or "general", CATEGORIES, "category")
        importance = q.choice(importance or "medium", IMPORTANCES, "importance")
        project = safe_name(project, "project") if project else ""
        extra: dict[str, Any] = self._source(source.strip())
        now = self.store.now()
        with self.store.writing() as tx:
            note_id = insight_id(now[:10], content, lambda i: self.store.vault.exists(f"insights/{i}.md"))
            if needs_alias(title_of(content), note_id):  # Obsidian shows and finds the note by its words
                extra = {"aliases": [title_of(content)], **extra}
            insight = Insight(
                note_id, content, category, importance, parse_tags(tags), project, now, now, extra
            )
            tx.message = f"remember: {note_id} ({category}/{importance}) {q.short(content, 50)}"
            tx.write(insight.path, markdown.render(insight.to_meta(), insight.content))
        return {"id": note_id, "path": insight.path, "commit": tx.commit_id}

    def _source(self, source: str) -> dict[str, str]:
        """`source: "[[<chunk id>]]"` for a chunk or insight that exists; NotFound otherwise."""
        if not source:
            return {}
        if self.store.fresh().note(source) is None:
            raise NotFound(
                f"no chunk or insight with id {source!r} to link as the source: send an existing id"
            )
        return {"source": f"[[{source}]]"}

    def recall(
        self, query: str = "", category: str = "", importance: str = "", project: str = "", limit: int = 10
    ) -> Recall:
        """Insights matching words of the query or related terms (accents and case ignored), best first."""
        limit = q.limit(limit)
        project = name_filter(project)
        category = q.choice(category, CATEGORIES, "category") if category else ""
        importance = q.choice(importance, IMPORTANCES, "importance") if importance else ""
        rows = [
            i
            for i in self.store.fresh().insights()
            if (not category or i.category == category)
            and (not importance or i.importance == importance)
            and (not project or same_name(i.project, project))
        ]
        scored = q.rank_insights(rows, query)
        return {"insights": [insight_row(i, score) for i, score in scored[:limit]]}

    def get(self, insight_id: str) -> Insight:
        """The insight with this id; NotFound otherwise."""
        note = self.store.fresh().note(insight_id)
        if not isinstance(note, Insight):
            raise NotFound(f"no insight with id {insight_id!r}: use rlm_recall to list insight ids")
        return note

    def _current(self, insight_id: str) -> Insight:
        """The insight as its file is now; call under the write lock (another process may have just
        changed or deleted it, so the catalog is not enough)."""
        path = self.store.fresh().path_of(insight_id) or f"insights/{insight_id}.md"
        try:
            note = note_from_file(path, self.store.vault.read_bytes(path))
        except FileNotFoundError:
            note = None
        if not isinstance(note, Insight) or note.id != insight_id:
            raise NotFound(
                f"no insight with id {insight_id!r} (it may have just been forgotten): use rlm_recall"
            )
        return note

    def forget(self, insight_id: str) -> Forgotten:
        """Delete an insight file, one commit (git history keeps it)."""
        self.get(insight_id)  # a clear NotFound without taking the lock
        with self.store.writing() as tx:
            insight = self._current(insight_id)
            tx.message = f"forget: {insight.id} {q.short(insight.content)}"
            tx.delete(insight.path)
        return {"id": insight.id, "removed": True, "commit": tx.commit_id}

    def update(
        self, insight_id: str, content: str = "", category: str = "", importance: str = "", tags: str = ""
    ) -> Written:
        """Edit an insight in place; empty arguments keep what is there.

        The note is read and rewritten under the write lock, so two updates of different fields both
        land, and an insight forgotten meanwhile is NotFound rather than brought back.
        """
        self.get(insight_id)  # a clear NotFound before any other check
        content = self.rules.no_secrets(self.rules.checked(content), "content") if content else ""
        category = q.choice(category, CATEGORIES, "category") if category else ""
        importance = q.choice(importance, IMPORTANCES, "importance") if importance else ""
        new_tags = parse_tags(self.rules.no_secrets(valid_text(tags, "tags"), "tags")) if tags else None
        self.rules.no_secrets_in_fields(tags=new_tags or ())
        with self.store.writing() as tx:
            old = self._current(insight_id)
            extra = old.extra
            if content and extra.get("aliases") == [title_of(old.content)]:
                extra = {**extra, "aliases": [title_of(content)]}  # the title we wrote follows the text
            new = replace(
                old,
                content=content or old.content,
                category=category or old.category,
                importance=importance or old.importance,
                tags=old.tags if new_tags is None else new_tags,
                updated=self.store.now(),
                extra=extra,
            )
            if (new.content, new.category, new.importance, new.tags) == (
                old.content,
                old.category,
                old.importance,
                old.tags,
            ):
                return {"id": old.id, "path": old.path, "changed": False, "commit": None}
            tx.message = f"update: {old.id} ({new.category}/{new.importance}) {q.short(new.content, 50)}"
            tx.write(new.path, markdown.render(new.to_meta(), new.content))
        return {"id": new.id, "path": new.path, "changed": True, "commit": tx.commit_id}


def same_name(name: str, wanted: str) -> bool:
    """A project filter matches whatever the case (`foo` and `Foo` are one folder on most disks)."""
    return name.casefold() == wanted.casefold()


def name_filter(value: str) -> str:
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
