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
    "field_text",
    "highest_seq",
    "insight_id",
    "needs_alias",
    "parse_tags",
    "safe_name",
    "slugify",
    "title_of",
    "windows_safe",
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


def field_text(value: Any) -> str:
    """A front matter value as a note's text field holds it (None is "")."""
    return "" if value is None else str(value)


def _extra(meta: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    # Keys a person added by hand are kept on rewrite, after ours.
    return {k: v for k, v in meta.items() if k not in known}


def parse_tags(value: Any) -> tuple[str, ...]:
    """Tags from a comma list or a YAML list, trimmed, deduplicated, order kept."""
    items = value if isinstance(value, (list, tuple)) else field_text(value).split(",")
    tags: dict[str, None] = {}
    for item in items:
        tag = field_text(item).strip().lstrip("#").strip()
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


def _slug_text(text: str) -> str:
    """Lower-case letters and digits of any script, Latin accents off ('Déployé' -> 'deploye'),
    everything else a space: the words a file name can carry on every system."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        folded = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        if not folded:  # a mark on its own: part of a word of its script (Devanagari virama), else dropped
            out.append(ch if out and not out[-1].isascii() else "")
        elif folded.isascii():
            out.append(folded.lower() if folded.isalnum() else " ")
        else:  # another script keeps its letters, and the marks inside its words (Devanagari...)
            out.append(ch.lower() if unicodedata.category(ch)[0] in "LMN" else " ")
    return "".join(out)


def slugify(text: str, max_len: int = 48) -> str:
    """A lower-case slug of the first words in any script, for file names a person can read."""
    words = _slug_text(text).split()
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > max_len:
            break
        slug = candidate
    return slug or (words[0][:max_len] if words else "")


def title_of(text: str, width: int = 80) -> str:
    """The first line of a text without Markdown heading marks, cut to `width` characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.lstrip("#").strip() if line.startswith("#") else line
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def needs_alias(title: str, note_id: str) -> bool:
    """True when the file name cannot show the title's words (cut, accents lost, a hash instead)."""
    # The words as the text writes them, case aside: an accent folded away is a word changed.
    words = re.findall(r"[^\W_]+", unicodedata.normalize("NFC", title).lower())
    return "-".join(words) not in note_id


def insight_id(day: str, content: str, taken: Callable[[str], bool]) -> str:
    """`<day>-<slug of the first words>` (a content hash when no word is left), `-2`, `-3`... if taken."""
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


# Names Windows reserves for devices, in any case and with any extension ("con.md" too).
_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}


def windows_safe(name: str) -> str:
    """`name` with `_` after a device name Windows reserves (`CON` -> `CON_`, `nul.x` -> `nul_.x`)."""
    base, dot, rest = name.partition(".")
    return f"{base}_{dot}{rest}" if base.upper() in _RESERVED else name


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
    name = windows_safe(_NAME_BAD.sub("-", fold_ascii(value)).strip("-.")[:64].strip("-."))
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
            category=field_text(meta.get("category")) or "general",
            importance=field_text(meta.get("importance")) or "medium",
            tags=parse_tags(meta.get("tags")),
            project=field_text(meta.get("project")),
            created=field_text(meta.get("created")),
            updated=field_text(meta.get("updated") or meta.get("created")),
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
    project_name: str = ""  # the name as given, when the folder name had to differ ("My:App?")

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
        project_name: str = "",
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
            project_name if project_name != project else "",
        )

    @classmethod
    def from_meta(cls, id: str, project: str, meta: dict[str, Any], body: str) -> Chunk:
        """Read what a file holds; `project` is its folder, the key keeps the name as it was given."""
        entities = meta.get("entities")
        name = field_text(meta.get("project"))
        return cls(
            id=id,
            content=body.strip("\n"),
            project=project or name,
            project_name=name if name and project and name != project else "",
            chunk_type=field_text(meta.get("chunk_type")) or "session",
            summary=field_text(meta.get("summary")),
            tags=parse_tags(meta.get("tags")),
            domain=field_text(meta.get("domain")),
            ticket=field_text(meta.get("ticket")),
            session=field_text(meta.get("session")),
            created=field_text(meta.get("created")),
            sha256=field_text(meta.get("sha256")),
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
            "project": self.project_name or self.project,
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
