"""Memory records (`Insight`, `Chunk`) and the rules for their ids and names; no I/O."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput

__all__ = [
    "CATEGORIES",
    "CHUNK_TYPES",
    "IMPORTANCES",
    "Chunk",
    "Insight",
    "chunk_id",
    "chunk_prefix",
    "content_hash",
    "extract_entities",
    "highest_seq",
    "insight_id",
    "parse_tags",
    "safe_name",
    "slugify",
]

CATEGORIES = ("decision", "fact", "preference", "finding", "todo", "general")
IMPORTANCES = ("critical", "high", "medium", "low")
CHUNK_TYPES = ("snapshot", "session", "debug")
ENTITY_KINDS = ("files", "versions", "modules", "tickets", "functions")

_INSIGHT_KEYS = ("id", "type", "category", "importance", "tags", "project", "created", "updated")
_CHUNK_KEYS = (
    "id", "type", "chunk_type", "summary", "tags", "project", "domain", "ticket",
    "session", "created", "sha256", "tokens", "entities",
)  # fmt: skip
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _extra(meta: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    # Keys a person added by hand are kept on rewrite, after ours.
    return {k: v for k, v in meta.items() if k not in known}


def parse_tags(value: Any) -> tuple[str, ...]:
    """Tags from a comma list or a YAML list, trimmed, deduplicated, order kept."""
    items = value if isinstance(value, (list, tuple)) else _text(value).split(",")
    tags: dict[str, None] = {}
    for item in items:
        tag = _text(item).strip().lstrip("#").strip()
        if tag:
            tags[tag] = None
    return tuple(tags)


def content_hash(text: str) -> str:
    """sha256 of the text with whitespace runs collapsed, to spot duplicates."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def fold_ascii(text: str) -> str:
    """Accents off, other non-ASCII dropped: 'Déployé' -> 'Deploye'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return decomposed.encode("ascii", "ignore").decode()


def slugify(text: str, max_len: int = 48) -> str:
    """A lower-case ASCII slug of the first words, for readable file names."""
    words = re.findall(r"[a-z0-9]+", fold_ascii(text).lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > max_len:
            break
        slug = candidate
    return slug or (words[0][:max_len] if words else "")


def insight_id(day: str, content: str, taken: Callable[[str], bool]) -> str:
    """`<day>-<slug of the first words>` (a content hash when no word is ASCII), `-2`, `-3`... if taken."""
    base = f"{day}-{slugify(content) or content_hash(content)[:8]}"
    note_id, n = base, 1
    while taken(note_id):
        n += 1
        note_id = f"{base}-{n}"
    return note_id


def chunk_prefix(day: str, project: str) -> str:
    """What every chunk id of that day and project starts with: `<day>_<project>_`."""
    return f"{day}_{project}_"


def highest_seq(names: Iterable[str], prefix: str) -> int:
    """The highest `<seq>` among ids or file names `<prefix><seq>...`, 0 when none."""
    found = (re.match(r"\d+", name[len(prefix) :]) for name in names if name.startswith(prefix))
    return max((int(m.group(0)) for m in found if m), default=0)


def chunk_id(prefix: str, after: int, ticket: str, domain: str, taken: Callable[[str], bool]) -> str:
    """`<prefix><seq>[_<ticket>][_<domain>]` with the first sequence number above `after` not taken."""
    suffix = "".join(f"_{part}" for part in (ticket, domain) if part)
    seq = after + 1
    while taken(f"{prefix}{seq:03d}{suffix}"):
        seq += 1
    return f"{prefix}{seq:03d}{suffix}"


def safe_name(value: str, what: str, *, strict: bool = True) -> str:
    """A project/domain/ticket name usable in a path: only [A-Za-z0-9._-].

    With `strict`, anything that tries to leave its folder ('/', '\\', '..', control characters)
    is refused instead of cleaned, so a caller learns that the name was not taken as given.
    """
    value = value.strip()
    if strict and (re.search(r"[/\\\x00-\x1f\x7f]", value) or ".." in value):
        raise InvalidInput(
            f"{what} {value[:80]!r} is not accepted: use letters, digits, '.', '_' or '-' "
            "(no '/', '\\', '..' or control characters)"
        )
    name = _NAME_BAD.sub("-", fold_ascii(value)).strip("-.")[:64].strip("-.")
    if not name and value and strict:
        raise InvalidInput(
            f"{what} {value[:80]!r} has no usable characters: use letters, digits, '.', '_' or '-'"
        )
    return name


@dataclass(frozen=True, slots=True)
class Insight:
    """A decision, fact, preference, finding or todo: `insights/<id>.md`."""

    id: str
    content: str
    category: str = "general"
    importance: str = "medium"
    tags: tuple[str, ...] = ()
    project: str = ""
    created: str = ""
    updated: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, id: str, meta: dict[str, Any], body: str) -> Insight:
        """Read what a file holds, tolerating hand edits (missing keys keep defaults)."""
        return cls(
            id=id,
            content=body.strip("\n"),
            category=_text(meta.get("category")) or "general",
            importance=_text(meta.get("importance")) or "medium",
            tags=parse_tags(meta.get("tags")),
            project=_text(meta.get("project")),
            created=_text(meta.get("created")),
            updated=_text(meta.get("updated") or meta.get("created")),
            extra=_extra(meta, _INSIGHT_KEYS),
        )

    def to_meta(self) -> dict[str, Any]:
        """Front matter in its stable key order."""
        return {
            "id": self.id,
            "type": "insight",
            "category": self.category,
            "importance": self.importance,
            "tags": list(self.tags),
            "project": self.project or None,
            "created": self.created,
            "updated": self.updated,
            **self.extra,
        }

    @property
    def path(self) -> str:
        return f"insights/{self.id}.md"


@dataclass(frozen=True, slots=True)
class Chunk:
    """A saved conversation segment: `chunks/<project>/<id>.md`."""

    id: str
    content: str
    project: str
    chunk_type: str = "session"
    summary: str = ""
    tags: tuple[str, ...] = ()
    domain: str = ""
    ticket: str = ""
    session: str = ""
    created: str = ""
    sha256: str = ""
    tokens: int = 0
    entities: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        id: str,
        content: str,
        project: str,
        created: str,
        *,
        chunk_type: str = "session",
        summary: str = "",
        tags: tuple[str, ...] = (),
        domain: str = "",
        ticket: str = "",
        entities: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Chunk:
        """A new chunk: its session, content hash, size and (unless given) entities follow from the rest."""
        return cls(
            id,
            content,
            project,
            chunk_type,
            summary,
            tags,
            domain,
            ticket,
            f"{created[:10]}_{project}" + (f"_{domain}" if domain else ""),
            created,
            content_hash(content),
            len(content) // 4,
            extract_entities(content) if entities is None else entities,
            dict(extra or {}),
        )

    @classmethod
    def from_meta(cls, id: str, project: str, meta: dict[str, Any], body: str) -> Chunk:
        """Read what a file holds; the folder names the project when the key is missing."""
        entities = meta.get("entities")
        return cls(
            id=id,
            content=body.strip("\n"),
            project=_text(meta.get("project")) or project,
            chunk_type=_text(meta.get("chunk_type")) or "session",
            summary=_text(meta.get("summary")),
            tags=parse_tags(meta.get("tags")),
            domain=_text(meta.get("domain")),
            ticket=_text(meta.get("ticket")),
            session=_text(meta.get("session")),
            created=_text(meta.get("created")),
            sha256=_text(meta.get("sha256")),
            tokens=_int(meta.get("tokens")),
            entities=_entities(entities),
            extra=_extra(meta, _CHUNK_KEYS),
        )

    def to_meta(self) -> dict[str, Any]:
        """Front matter in its stable key order."""
        return {
            "id": self.id,
            "type": "chunk",
            "chunk_type": self.chunk_type,
            "summary": self.summary,
            "tags": list(self.tags),
            "project": self.project,
            "domain": self.domain or None,
            "ticket": self.ticket or None,
            "session": self.session,
            "created": self.created,
            "sha256": self.sha256,
            "tokens": self.tokens,
            "entities": {k: list(v) for k, v in self.entities.items() if v},
            **self.extra,
        }

    @property
    def path(self) -> str:
        return f"chunks/{self.project}/{self.id}.md"

    @property
    def archive_path(self) -> str:
        """Where retention keeps it: the gzip of the exact chunk file."""
        return f"archive/{self.project}/{self.id}.md.gz"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _entities(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    out: dict[str, list[str]] = {}
    for kind, items in value.items():
        if isinstance(items, (list, tuple)):
            out[str(kind)] = [str(i) for i in items if isinstance(i, (str, int, float))]
    return out


_ENTITY_PATTERNS = {
    "files": re.compile(  # a lazy run, not nested repeats: linear on long texts, finds a/b/c.test.ts too
        r"(?<![\w/.-])([\w-][\w./-]*?\.(?:py|js|ts|tsx|jsx|md|json|ya?ml|toml|go|rs|java|rb|php|sh|"
        r"sql|html|css|c|h|cpp|hpp|cs|swift|kt|txt|cfg|ini|lock))(?![\w-])"
    ),
    "versions": re.compile(r"(?<![\w.])(v?\d+\.\d+\.\d+(?:\.\d+)?)(?![\w.]*\w)"),
    "modules": re.compile(r"\b(?:import|from|pip install|npm install|module|package)\s+([A-Za-z_][\w.-]*)"),
    "tickets": re.compile(r"\b([A-Z][A-Z0-9]+-\d+)\b"),
    "functions": re.compile(r"\b([A-Za-z_]\w*)\(\)"),
}


def extract_entities(text: str, limit: int = 50) -> dict[str, list[str]]:
    """Files, versions, modules, tickets and functions named in a text (at most `limit` each)."""
    found: dict[str, list[str]] = {}
    for kind, pattern in _ENTITY_PATTERNS.items():
        seen: dict[str, None] = {}
        for match in pattern.finditer(text):
            seen.setdefault(match.group(1), None)
            if len(seen) >= limit:
                break
        if seen:
            found[kind] = list(seen)
    return found
