"""Retention policy, pure: which chunks go to the archive, which archives are purged, and why."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .models import Chunk

__all__ = ["IMMUNE_TAGS", "MARKERS", "Policy", "immune_reason", "parse_time"]

IMMUNE_TAGS = frozenset({"critical", "decision", "keep", "important"})
MARKERS = ("DECISION:", "IMPORTANT:", "A RETENIR:", "À RETENIR:", "CRITICAL:")
IMMUNE_ACCESSES = 3


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 timestamp (as notes and access.json hold them), or None."""
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text[:10])
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def immune_reason(chunk: Chunk, accesses: int, body: Callable[[Chunk], str] | None = None) -> str | None:
    """Why a chunk must never be archived or purged, or None.

    `body` gives the chunk's text when `chunk.content` does not hold it (the catalog keeps no bodies);
    it is asked only when neither a tag nor the accesses decided.
    """
    tags = {t.lower() for t in chunk.tags} & IMMUNE_TAGS
    if tags:
        return f"tag {min(tags)}"
    if accesses >= IMMUNE_ACCESSES:
        return f"read {accesses} times"
    upper = (body(chunk) if body is not None else chunk.content).upper()
    marker = next((m for m in MARKERS if m in upper), None)
    return f"marker {marker}" if marker else None


@dataclass(frozen=True, slots=True)
class Policy:
    """Archive after `archive_days` without use; purge `purge_days` after archiving."""

    archive_days: int = 30
    purge_days: int = 180

    def last_created_day(self, now: datetime) -> str:
        """The latest creation day (YYYY-MM-DD, as a note writes it) a chunk due now can have: the archive
        limit's day in UTC, plus one for a creation time written with an offset. Newer chunks are never
        due, whatever their reads."""
        return (
            ((now - timedelta(days=self.archive_days)).astimezone(UTC) + timedelta(days=1)).date().isoformat()
        )

    def to_archive(
        self,
        chunks: Iterable[Chunk],
        access: Mapping[str, Mapping[str, Any]],
        now: datetime,
        body: Callable[[Chunk], str] | None = None,
    ) -> list[Chunk]:
        """Active chunks unused for longer than the archive delay and not immune, oldest first.

        `body` reads a chunk's text for the marker check (only chunks already due by date are read).
        """
        limit = now - timedelta(days=self.archive_days)
        due = []
        for chunk in chunks:
            seen = access.get(chunk.id, {})
            last = max(filter(None, [parse_time(chunk.created), parse_time(seen.get("last"))]), default=None)
            if (
                last is not None
                and last < limit
                and not immune_reason(chunk, int(seen.get("count", 0)), body)
            ):
                due.append(chunk)
        return sorted(due, key=lambda c: (c.created, c.id))

    def to_purge(
        self,
        archived: Iterable[tuple[Chunk, datetime | None]],
        access: Mapping[str, Mapping[str, Any]],
        now: datetime,
    ) -> list[Chunk]:
        """Archived chunks archived longer ago than the purge delay and not immune."""
        limit = now - timedelta(days=self.purge_days)
        return [
            chunk
            for chunk, since in archived
            if since is not None
            and since < limit
            and not immune_reason(chunk, int(access.get(chunk.id, {}).get("count", 0)))
        ]
