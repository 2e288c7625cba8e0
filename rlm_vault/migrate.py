"""Import memories into the vault: an rlm-claude context folder, or past Claude Code transcripts.

Each import is one commit and loses nothing: every rlm-claude item becomes a note (two items with the
same text and metadata become one note answering to both ids), each note keeps the id it came from
(`rlm_claude_id`, and `aliases`, which peek, search and history accept), and a damaged file is named as
damaged and imported as far as it can be read. A re-import adds only what is new, replaces what an
earlier import took from a since-repaired file, and leaves alone what was forgotten or edited in the
vault since (git history of the import commits is the record). Secrets are redacted before anything
reaches git history.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import markdown
from . import query as q
from .archive import inflate
from .bulk import NewChunk, NewInsight, note_file, write_many
from .errors import InvalidInput, InvalidNote
from .models import (
    CATEGORIES,
    CHUNK_TYPES,
    IMPORTANCES,
    Chunk,
    Insight,
    content_hash,
    extract_entities,
    parse_tags,
    safe_name,
)  # fmt: skip
from .notes import aliases_of, note_from_file
from .service import MemoryService

__all__ = [
    "ImportReport",
    "Issue",
    "default_context_dir",
    "default_projects_dir",
    "import_rlm_claude",
    "import_transcripts",
    "parse_rlm_chunk",
]

MAX_GUNZIP = 64 * 1024 * 1024
_HEADER_KEY = re.compile(r"^([A-Za-z_][\w-]*):(?:[ \t](.*))?$")
_RLM_ID = re.compile(r"^(\d{4}-\d{2}-\d{2})_(.+?)_(\d{3,})(?:_.*)?$")
_KNOWN_HEADER = frozenset(
    {
        "id",
        "summary",
        "tags",
        "chunk_type",
        "entities",
        "project",
        "ticket",
        "domain",
        "created_at",
        "tokens_estimate",
        "content_hash",
        "format_version",
    }
)
_DEFAULT_DOMAINS = frozenset(
    {
        "dev",
        "research",
        "planning",
        "debug",
        "test",
        "docs",
        "review",
        "deploy",
        "feature",
        "bugfix",
        "refactor",
        "meeting",
        "decision",
    }
)


def default_context_dir() -> Path:
    return Path.home() / ".claude" / "rlm" / "context"


def default_projects_dir() -> Path:
    return Path.home() / ".claude" / "projects"


# ---------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class Issue:
    """Something the import could not take as it was, and what it did about it.

    `damaged`: part of the source could not be imported (the command then exits non-zero); a later
    import of the repaired file replaces what was taken from it.
    """

    path: str
    reason: str
    damaged: bool = False


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What one import added, what was already there, and what needs a person's eye."""

    source: str
    folder: str
    insights: int = 0
    chunks: int = 0
    archived: int = 0
    already: int = 0
    commit: str | None = None
    problems: tuple[Issue, ...] = ()
    notes: tuple[str, ...] = ()
    replaced: int = 0
    kept: int = 0
    merged: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing of the source was left out for being damaged."""
        return not any(p.damaged for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "folder": self.folder,
            "insights": self.insights,
            "chunks": self.chunks,
            "archived": self.archived,
            "already": self.already,
            "replaced": self.replaced,
            "kept": self.kept,
            "merged": self.merged,
            "commit": self.commit,
            "ok": self.ok,
            "problems": [{"path": p.path, "reason": p.reason, "damaged": p.damaged} for p in self.problems],
            "notes": list(self.notes),
        }

    def text(self) -> str:
        lines = [self._headline(), f"Already in the vault (skipped): {self.already}"]
        if self.merged:
            lines.append(
                f"Same text and metadata under another rlm-claude id (one note, both ids): {self.merged}"
            )
        if self.replaced:
            lines.append(f"Replaced (changed in the source since an earlier import): {self.replaced}")
        if self.kept:
            lines.append(
                f"Left as the vault has them (forgotten or edited since an earlier import): {self.kept}"
            )
        damaged = [p for p in self.problems if p.damaged]
        others = [p for p in self.problems if not p.damaged]
        if damaged:
            lines.append(f"Damaged, not imported whole ({len(damaged)}):")
            lines += [f"  {p.path}: {p.reason}" for p in damaged]
        if others:
            lines.append(f"Problems ({len(others)}):")
            lines += [f"  {p.path}: {p.reason}" for p in others]
        lines += [f"Note: {n}" for n in self.notes]
        if damaged:
            lines.append(
                "Repair or replace the damaged files and import again: what was taken from them is replaced."
            )
        return "\n".join(lines)

    def _headline(self) -> str:
        if not self.commit:
            return f"Nothing new to import from {self.folder} ({self.source})."
        archived = f" ({self.archived} archived)" if self.archived else ""
        return (
            f"Imported from {self.folder} ({self.source}): {self.insights} insights, {self.chunks} chunks"
            f"{archived} in commit {self.commit[:10]}."
        )


@dataclass
class _Batch:
    """What an import collects before its single write (mutable while collecting only)."""

    insights: list[NewInsight] = field(default_factory=list)
    chunks: list[NewChunk] = field(default_factory=list)
    rewrites: dict[str, bytes] = field(default_factory=dict)  # vault path -> new bytes
    access: dict[str, dict[str, Any]] = field(default_factory=dict)  # rlm-claude id -> access fields
    problems: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    already: int = 0
    replaced: int = 0
    kept: int = 0
    merged: int = 0
    crlf: int = 0
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)  # id(item) -> its problems' range

    def problem(self, path: str, reason: str, damaged: bool = False) -> None:
        self.problems.append(Issue(path, reason, damaged))

    def not_written(self, item: object, why: str) -> None:
        """An item left out after all: its problems must not say it was imported."""
        start, end = self.spans.get(id(item), (0, 0))
        for n in range(start, end):
            issue = self.problems[n]
            self.problems[n] = Issue(issue.path, f"{issue.reason.split(';')[0]}; {why}", issue.damaged)


# ---------------------------------------------------------------------- rlm-claude


def import_rlm_claude(service: MemoryService, folder: Path | None = None) -> ImportReport:
    """Import an rlm-claude context folder (session_memory.json, index.json, chunks/, archive/)."""
    folder = folder or default_context_dir()
    _check_context(folder)
    batch = _Batch()
    found: list[NewInsight | NewChunk] = [*_collect_insights(folder, batch, service)]
    found += _collect_chunks(folder, batch, service)
    _collect_notes(folder, batch)
    _Plan(service, batch).place(found)
    parts = [f"{len(batch.insights)} insights, {len(batch.chunks)} chunks from rlm-claude"]
    if batch.replaced:
        parts.append(f"{batch.replaced} replaced")
    return _write(service, batch, "rlm-claude", folder, "import: " + ", ".join(parts))


def _check_context(folder: Path) -> None:
    """Refuse, in one line, a folder that holds nothing rlm-claude writes (the vault, ~/.claude/rlm)."""
    if not folder.is_dir():
        raise InvalidInput(
            f"{folder} is not a folder: give the rlm-claude context folder (the one holding "
            "index.json and chunks/): rlm-vault import rlm-claude ~/.claude/rlm/context"
        )
    if _is_context(folder):
        return
    hint = f"; did you mean {folder / 'context'}?" if _is_context(folder / "context") else ""
    raise InvalidInput(
        f"{folder} is not an rlm-claude context folder: it has no session_memory.json, index.json, "
        f"chunks/*.md or archive/*.md.gz{hint}"
    )


def _is_context(folder: Path) -> bool:
    names = ("session_memory.json", "index.json", "archive_index.json")
    return folder.is_dir() and (
        any((folder / n).is_file() for n in names)
        or bool(_files(folder / "chunks", "*.md") or _files(folder / "archive", "*.md.gz"))
    )


def _read_json(path: Path, batch: _Batch, consequence: str) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        batch.problem(path.name, f"damaged: not readable JSON ({reason}); {consequence}", damaged=True)
        return None


def _collect_insights(folder: Path, batch: _Batch, service: MemoryService) -> list[NewInsight]:
    data = _read_json(folder / "session_memory.json", batch, "no insight could be imported from it")
    items = data.get("insights") if isinstance(data, dict) else None
    if data is not None and not isinstance(items, list):
        batch.problem("session_memory.json", 'damaged: has no "insights" list; no insight imported', True)
        return []
    found = []
    for n, item in enumerate(items or []):
        start = len(batch.problems)
        new = _insight(item, f"session_memory.json insights[{n}]", batch, service)
        if new is not None:
            found.append(new)
            batch.spans[id(new)] = (start, len(batch.problems))
    return found


def _insight(item: Any, where: str, batch: _Batch, service: MemoryService) -> NewInsight | None:
    if not isinstance(item, dict) or not str(item.get("content") or "").strip():
        batch.problem(where, "no content; skipped")
        return None
    content = _redact(_text(str(item["content"]), batch), where, batch, service)
    origin = str(item.get("id") or content_hash(content)[:8])
    extra: dict[str, Any] = {"rlm_claude_id": origin}
    category = _allowed(item.get("category"), CATEGORIES, "general", "rlm_claude_category", extra)
    importance = _allowed(item.get("importance"), IMPORTANCES, "medium", "rlm_claude_importance", extra)
    created = _utc(item.get("created_at")) or service.now()
    tags = parse_tags(item.get("tags"))
    return NewInsight(content, category, importance, tags, "", created, extra, aliases=(origin,))


def _text(raw: str, batch: _Batch) -> str:
    """A text as notes hold it: LF line ends, no blank lines around (README: "Coming from rlm-claude")."""
    if "\r\n" in raw:
        batch.crlf += 1
    return raw.replace("\r\n", "\n").strip("\n")


def _allowed(value: Any, allowed: tuple[str, ...], default: str, keep_as: str, extra: dict[str, Any]) -> str:
    """A value from `allowed`; anything else becomes `default`, the original kept under `keep_as`."""
    text = str(value or "").strip().lower()
    if text in allowed:
        return text
    if text:
        extra[keep_as] = str(value)
    return default


def _collect_chunks(folder: Path, batch: _Batch, service: MemoryService) -> list[NewChunk]:
    lost = "chunks are imported from their own headers (access counts and tag lists it held are lost)"
    index = _entries(_read_json(folder / "index.json", batch, lost), "chunks")
    archive_index = _entries(
        _read_json(folder / "archive_index.json", batch, "archived chunks are imported from their headers"),
        "archives",
    )
    found: list[NewChunk] = []
    sources = [(p, False) for p in _files(folder / "chunks", "*.md")]
    sources += [(p, True) for p in _files(folder / "archive", "*.md.gz")]
    for path, archived in sources:
        rel = path.relative_to(folder).as_posix()
        stem = path.name.removesuffix(".gz").removesuffix(".md")
        meta = (archive_index if archived else index).get(stem) or index.get(stem) or archive_index.get(stem)
        meta = meta or {}
        start = len(batch.problems)
        new = _chunk_from_file(path, rel, stem, meta, archived, batch, service)
        if new is not None:
            found.append(new)
            batch.spans[id(new)] = (start, len(batch.problems))
            _note_access(str(new.extra["rlm_claude_id"]), meta, batch)
    _missing_files(index, archive_index, {str(c.extra["rlm_claude_id"]) for c in found}, batch)
    return found


def _entries(data: Any, key: str) -> dict[str, dict[str, Any]]:
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        return {}
    return {str(e["id"]): e for e in items if isinstance(e, dict) and e.get("id")}


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []


def _chunk_from_file(
    path: Path,
    rel: str,
    stem: str,
    meta: dict[str, Any],
    archived: bool,
    batch: _Batch,
    service: MemoryService,
) -> NewChunk | None:
    text = _read_text(path, rel, batch)
    if text is None:
        return None
    damage = ""
    if text.startswith(_TRUNCATED):
        text = text[len(_TRUNCATED) :]
        damage = "truncated gzip"
    if "\r\n" in text:
        batch.crlf += 1
    parsed = parse_rlm_chunk(text)
    if parsed is None and (salvaged := _open_header(text)) is not None:
        parsed = salvaged
        damage = damage or "header without its closing '---' line"
        batch.problem(
            rel,
            "damaged: its header has no closing '---' line; read the header up to its last key and the "
            "rest as the text; imported, marked rlm_claude_damaged",
            damaged=True,
        )
    elif parsed is None and not damage:
        batch.problem(rel, "no rlm-claude header; imported the whole file as the chunk text")
    header, body = parsed or ({}, text)
    extra: dict[str, Any] = {"rlm_claude_damaged": damage} if damage else {}
    if parsed is None:
        extra["rlm_claude_raw"] = True
    return _chunk(header, body, meta, stem, archived, rel, batch, service, extra)


# A marker the reader puts before a text it could only read in part (never in a real file: NUL bytes).
_TRUNCATED = "\x00truncated\x00"


def _read_text(path: Path, rel: str, batch: _Batch) -> str | None:
    try:
        raw = path.read_bytes()
        truncated = False
        if path.name.endswith(".gz"):
            raw, truncated = _gunzip(raw)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        batch.problem(rel, f"damaged: cannot be read ({reason}); not imported", damaged=True)
        return None
    if truncated:
        batch.problem(
            rel,
            f"damaged: truncated gzip (the file ends before gzip's end); imported the {len(raw)} bytes it "
            "held, marked rlm_claude_damaged",
            damaged=True,
        )
        return _TRUNCATED + raw.decode("utf-8", errors="ignore")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        batch.problem(
            rel, f"damaged: not UTF-8 (byte {exc.start}); imported with bad bytes replaced by U+FFFD", True
        )
        return raw.decode("utf-8", errors="replace")


def _gunzip(data: bytes) -> tuple[bytes, bool]:
    """The inflated bytes, and whether the stream stopped before its end (a truncated file)."""
    try:
        return inflate(data, MAX_GUNZIP, "archive")
    except InvalidNote as exc:
        raise ValueError(exc.reason) from exc


def parse_rlm_chunk(text: str) -> tuple[dict[str, Any], str] | None:
    """rlm-claude's pseudo-YAML header, read line by line (its values are not valid YAML), and the body.

    rlm-claude writes a summary raw, so a summary may hold a '---' line or lines that look like keys:
    the header ends at the '---' after `format_version` (its last key), and a key's real line is its
    last one (`id`: its first). None when the text does not start with a closed `---` header.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        return None
    fences = [n for n in range(1, len(lines)) if lines[n].strip() == "---"]
    if not fences:
        return None
    close = next((n for n in fences if lines[n - 1].startswith("format_version:")), fences[0])
    return _header(lines[1:close]), _body(lines[close + 1 :])


def _open_header(text: str) -> tuple[dict[str, Any], str] | None:
    """A header that was never closed: up to `format_version` (else up to the last key-like line)."""
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        return None
    end = next((n for n in range(1, len(lines)) if lines[n].startswith("format_version:")), 0)
    if not end:
        while end + 1 < len(lines) and (_HEADER_KEY.match(lines[end + 1]) or lines[end + 1][:1] in " \t"):
            end += 1
    return _header(lines[1 : end + 1]), _body(lines[end + 1 :])


def _body(lines: list[str]) -> str:
    # rlm-claude writes one blank line between the header and the text.
    return "\n".join(lines[1:] if lines and not lines[0].strip() else lines)


def _header(lines: list[str]) -> dict[str, Any]:
    starts: dict[str, int] = {}
    for n, line in enumerate(lines):
        match = _HEADER_KEY.match(line)
        if match and match.group(1) in _KNOWN_HEADER and not (match.group(1) == "id" and "id" in starts):
            starts[match.group(1)] = n
    at = {n: key for key, n in starts.items()}
    header: dict[str, Any] = {}
    entities: dict[str, list[str]] = {}
    current = ""
    for n, line in enumerate(lines):
        match = _HEADER_KEY.match(line)
        if n in at:
            current = at[n]
            if current != "entities":
                header[current] = (match.group(2) or "").strip() if match else ""
        elif current == "entities" and line[:1] in (" ", "\t"):
            _entity_line(line, entities)
        elif match and current != "summary" and match.group(1) not in _KNOWN_HEADER:
            current = match.group(1)
            header[current] = (match.group(2) or "").strip()
        elif current and current != "entities" and line.strip():
            header[current] = f"{header[current]}\n{line.strip()}"  # a value written over several lines
    if entities:
        header["entities"] = entities
    return header


def _entity_line(line: str, entities: dict[str, list[str]]) -> None:
    kind, sep, values = line.strip().partition(":")
    if sep and kind.strip():
        entities[kind.strip()] = [v.strip() for v in values.split(",") if v.strip()]


def _chunk(
    header: dict[str, Any],
    body: str,
    meta: dict[str, Any],
    stem: str,
    archived: bool,
    rel: str,
    batch: _Batch,
    service: MemoryService,
    extra: dict[str, Any],
) -> NewChunk:
    def pick(key: str) -> str:
        value = meta.get(key)
        return str(value if value not in (None, "") else header.get(key) or "").strip()

    origin = pick("id") or stem
    content = _redact(_text(body, batch), rel, batch, service)
    extra = {"rlm_claude_id": origin, **extra}
    extra.update({f"rlm_claude_{k}": v for k, v in header.items() if k not in _KNOWN_HEADER and v})
    chunk_type = _allowed(pick("chunk_type"), CHUNK_TYPES, "session", "rlm_claude_chunk_type", extra)
    if archived and meta.get("archived_at"):
        extra["rlm_claude_archived_at"] = str(meta["archived_at"])
    return NewChunk(
        content=content,
        project=_project(pick("project"), origin),
        created=_utc(pick("created_at")) or _utc_id_day(origin) or service.now(),
        chunk_type=chunk_type,
        summary=(pick("summary") or q.auto_summary(content) or f"rlm-claude {origin}")[:500],
        tags=parse_tags(meta.get("tags") if isinstance(meta.get("tags"), list) else pick("tags")),
        domain=safe_name(pick("domain"), "domain", strict=False),
        ticket=safe_name(pick("ticket"), "ticket", strict=False),
        entities=_entities(meta.get("entities") or header.get("entities"), content),
        extra=extra,
        wanted_id=origin,
        archived=archived,
        aliases=(origin,),
    )


def _project(value: str, origin: str) -> str:
    if not value and (match := _RLM_ID.match(origin)):
        value = match.group(2)
    return safe_name(value, "project", strict=False) or "imported"


def _entities(value: Any, content: str) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return extract_entities(content)
    out: dict[str, list[str]] = {}
    for kind, items in value.items():
        items = items if isinstance(items, list) else []
        names = [str(i).removesuffix("()") for i in items if str(i).strip()]
        if names:
            out[str(kind)] = names
    return out


def _note_access(origin: str, meta: dict[str, Any], batch: _Batch) -> None:
    count = meta.get("access_count")
    if isinstance(count, int) and count > 0:
        batch.access[origin] = {"count": count, "last": _utc(meta.get("last_accessed")) or None}
    if meta.get("archived_at"):
        batch.access.setdefault(origin, {})["archived"] = _utc(meta["archived_at"])


def _missing_files(
    index: dict[str, Any], archive_index: dict[str, Any], found: set[str], batch: _Batch
) -> None:
    for name, entries in (("index.json", index), ("archive_index.json", archive_index)):
        for chunk_id, entry in entries.items():
            if chunk_id not in found:
                summary = str(entry.get("summary") or "")[:60]
                batch.problem(
                    name,
                    f"entry {chunk_id} ({summary!r}) has no chunk file; only its metadata "
                    "existed, nothing to import",
                )


def _collect_notes(folder: Path, batch: _Batch) -> None:
    purged = _read_json(folder / "purge_log.json", batch, "it only lists purged chunks")
    if isinstance(purged, dict) and isinstance(purged.get("purged"), list) and purged["purged"]:
        batch.notes.append(
            f"purge_log.json lists {len(purged['purged'])} chunks rlm-claude had already "
            "purged; their text was gone, so there is nothing to import"
        )
    domains = _custom_domains(_read_json(folder / "domains.json", batch, "no domain taken from it"))
    if domains:
        batch.notes.append(
            "domains.json has domains rlm-vault does not suggest: "
            + ", ".join(domains)
            + "; add them to domains.yaml in the vault if you want them suggested"
        )
    if (folder / "embeddings.npz").exists():
        batch.notes.append("embeddings.npz was not imported: it is a cache, and rlm-vault builds its own")


def _custom_domains(data: Any) -> list[str]:
    groups = data.get("domains") if isinstance(data, dict) else None
    found: dict[str, None] = {}
    for group in groups.values() if isinstance(groups, dict) else []:
        for name in group.get("list", []) if isinstance(group, dict) else []:
            if isinstance(name, str) and name not in _DEFAULT_DOMAINS:
                found[name] = None
    return list(found)


# ---------------------------------------------------------------------- what becomes of each item


def _same(note: NewInsight | NewChunk | Insight | Chunk) -> tuple[Any, ...]:
    """What makes two memories the same one: the text and every piece of metadata a person sees."""
    if isinstance(note, (NewInsight, Insight)):
        return ("insight", note.content, note.category, note.importance, tuple(sorted(note.tags)))
    return ("chunk", note.content, note.project, note.summary, note.chunk_type, tuple(sorted(note.tags)))


@dataclass(frozen=True, slots=True)
class _Imported:
    """A file an earlier import wrote, as that import wrote it (found in git history)."""

    path: str
    blob: str
    note: Insight | Chunk


class _Plan:
    """Decides, for each item found in the source, whether to add, merge, replace or leave it.

    Git history is the ledger: every import commit ("import: ... from rlm-claude") names the files it
    wrote, and their front matter names the rlm-claude ids (`rlm_claude_id`, `aliases`). An item
    imported before is never added again; it replaces its note only when the source changed (a repaired
    file) and the note is still byte for byte what the import wrote; a note forgotten or edited since is
    left as the vault has it.
    """

    def __init__(self, service: MemoryService, batch: _Batch) -> None:
        self.service = service
        self.batch = batch
        self.history = _imported(service)
        cat = service.fresh()
        self.vault: dict[tuple[Any, ...], tuple[str, Insight | Chunk]] = {}
        self.known: set[str] = set()
        archived = service.archive.paths()
        notes: list[Insight | Chunk] = [*cat.insights(), *cat.chunks(full=True), *service.archive.chunks()]
        for note in notes:
            path = cat.path_of(note.id) or archived.get(note.id, "")
            self.vault.setdefault(_same(note), (path, note))
            self.known |= {str(note.extra.get("rlm_claude_id") or ""), *aliases_of(note)}
        self.added: dict[tuple[Any, ...], int] = {}  # same-key -> place in batch.insights / batch.chunks

    def place(self, found: list[NewInsight | NewChunk]) -> None:
        for new in found:
            origin = str(new.extra["rlm_claude_id"])
            if origin in self.history:
                self._again(new, self.history[origin])
            elif origin in self.known:
                self.batch.already += 1
                self.batch.not_written(new, "not imported again: the vault has it from an earlier import")
            elif _same(new) in self.added:
                self._merge(new, origin)
            elif _same(new) in self.vault:
                self._alias(*self.vault[_same(new)], origin)
            else:
                target = self.batch.insights if isinstance(new, NewInsight) else self.batch.chunks
                self.added[_same(new)] = len(target)
                target.append(new)  # type: ignore[arg-type]
                self.known.add(origin)

    def _merge(self, new: NewInsight | NewChunk, origin: str) -> None:
        """Same text, same metadata, two rlm-claude ids: one note answering to both."""
        at = self.added[_same(new)]
        target: list[Any] = self.batch.insights if isinstance(new, NewInsight) else self.batch.chunks
        target[at] = replace(target[at], aliases=(*target[at].aliases, origin))
        self.batch.merged += 1
        self.known.add(origin)

    def _alias(self, path: str, note: Insight | Chunk, origin: str) -> None:
        """The vault already holds this memory as it is: that note now answers to the old id too."""
        self.batch.already += 1
        self.known.add(origin)
        if not path or origin == note.id or origin in aliases_of(note):
            return
        meta = note.to_meta()
        meta["aliases"] = [*aliases_of(note), origin]
        meta.setdefault("rlm_claude_id", origin)
        raw = markdown.render(meta, note.content).encode("utf-8")
        self.batch.rewrites[path] = gzip.compress(raw, 6, mtime=0) if path.endswith(".gz") else raw

    def _again(self, new: NewInsight | NewChunk, before: _Imported) -> None:
        origin = str(new.extra["rlm_claude_id"])
        state = self._state(before)
        damage = (
            bool(new.extra.get("rlm_claude_damaged")),
            bool(before.note.extra.get("rlm_claude_damaged")),
        )
        if _same(new) == _same(before.note) and damage[0] == damage[1]:
            if state == "gone":
                self.batch.kept += 1  # forgotten since: not brought back
            else:
                self.batch.already += 1
            self.batch.not_written(new, "not imported again: the vault has it from an earlier import")
            return
        if state != "as imported":
            self.batch.kept += 1
            self.batch.not_written(new, f"not imported: its note was {state} in the vault since")
            self.batch.problem(
                before.path,
                f"{origin} changed in rlm-claude since it was imported, but the vault's note was "
                f"{state} since: left as the vault has it",
            )
            return
        if before.path in self.batch.rewrites:
            return  # one rlm-claude item already replaced this note (two ids merged into one)
        if isinstance(new, NewChunk):
            new = replace(new, archived=before.path.startswith("archive/"))
        new = replace(new, aliases=(*new.aliases, *aliases_of(before.note)))
        project = before.path.split("/")[1] if isinstance(new, NewChunk) else ""
        _, data = note_file(new, before.note.id, project)
        self.batch.rewrites[before.path] = data
        self.batch.replaced += 1

    def _state(self, before: _Imported) -> str:
        path = self.service.vault.root / before.path
        if path.is_file():
            return "as imported" if _blob_sha(path.read_bytes()) == before.blob else "edited"
        moved = self.service.fresh().note(before.note.id) or before.note.id in self.service.archive.paths()
        return "moved" if moved else "gone"


def _imported(service: MemoryService) -> dict[str, _Imported]:
    """rlm-claude id -> the file the newest import that wrote it wrote, as it wrote it."""
    git = service.vault.git
    if git.head() is None:
        return {}
    out = git.run(
        "log", "--format=%x01", "--raw", "--no-abbrev", "--no-renames", "-F", "--grep=from rlm-claude",
        "--", "insights", "chunks", "archive",
    )  # fmt: skip
    blobs: dict[str, str] = {}
    for line in out.splitlines():
        fields, _, path = line.partition("\t")
        parts = fields.split()
        if line.startswith(":") and len(parts) >= 5 and parts[4][:1] in "AM":
            blobs.setdefault(path, parts[3])
    contents = git.cat_blobs(sorted(set(blobs.values())))
    found: dict[str, _Imported] = {}
    for path, blob in blobs.items():
        note = _note_of(path, contents.get(blob))
        if note is not None:
            for origin in [str(note.extra.get("rlm_claude_id") or ""), *aliases_of(note)]:
                if origin:
                    found.setdefault(origin, _Imported(path, blob, note))
    return found


def _note_of(path: str, raw: bytes | None) -> Insight | Chunk | None:
    if raw is None:
        return None
    try:
        if path.endswith(".md.gz"):
            raw, _ = _gunzip(raw)
            path = "chunks/" + path.split("/")[1] + "/" + path.rsplit("/", 1)[1].removesuffix(".gz")
        return note_from_file(path, raw)
    except (InvalidNote, ValueError):
        return None


def _blob_sha(data: bytes) -> str:
    """The id git gives these bytes as a file (no filters: notes are written with LF already)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---------------------------------------------------------------------- transcripts


@dataclass(frozen=True, slots=True)
class _Known:
    """What the vault already holds: content hashes and Claude Code session ids of its notes."""

    hashes: frozenset[str]
    sessions: frozenset[str]

    @classmethod
    def of(cls, service: MemoryService) -> _Known:
        cat = service.fresh()
        notes: list[Any] = [*cat.insights(), *cat.chunks(full=True), *service.archive.chunks()]
        hashes = {content_hash(n.content) for n in notes}
        sessions = {str(n.extra["claude_session"]) for n in notes if n.extra.get("claude_session")}
        return cls(frozenset(hashes), frozenset(sessions))


def import_transcripts(service: MemoryService, projects_dir: Path | None = None) -> ImportReport:
    """Save each past Claude Code session (`<projects>/*/*.jsonl`) as one `session` chunk."""
    from .transcript import parse_transcript

    folder = projects_dir or default_projects_dir()
    if not folder.is_dir():
        raise InvalidInput(
            f"{folder} is not a folder: give Claude Code's projects folder with "
            "--projects-dir (default ~/.claude/projects)"
        )
    known = _Known.of(service)
    batch = _Batch()
    for path in sorted(folder.glob("*/*.jsonl")):
        new = _session_chunk(path, folder, parse_transcript, batch, service)
        if new is None:
            continue
        if new.extra["claude_session"] in known.sessions or content_hash(new.content) in known.hashes:
            batch.already += 1
            continue
        batch.chunks.append(new)
    return _write(
        service,
        batch,
        "Claude Code transcripts",
        folder,
        f"import: {len(batch.chunks)} sessions from Claude Code transcripts",
    )


def _session_chunk(
    path: Path, folder: Path, parse: Any, batch: _Batch, service: MemoryService
) -> NewChunk | None:
    rel = path.relative_to(folder).as_posix()
    try:
        data = path.read_bytes()
    except OSError as exc:
        batch.problem(rel, f"cannot be read ({exc.strerror}); not imported")
        return None
    parts = [c for c in (parse(seg) for seg in _segments(data)) if c.text.strip()]
    if not parts:
        batch.problem(rel, "no conversation in it (only bookkeeping lines); nothing to import")
        return None
    last = parts[-1]
    content = _redact(_join_parts(parts, rel, batch, service.config.max_content_bytes), rel, batch, service)
    project = safe_name(Path(last.cwd).name, "project", strict=False) if last.cwd else ""
    created = _utc(parts[0].first_timestamp) or service.now()
    return NewChunk(
        content=content,
        project=project or _project_from_folder(path.parent.name),
        created=created,
        chunk_type="session",
        summary=parts[0].summary_line() or f"Claude Code session {path.stem}",
        tags=("claude-code", "transcript"),
        entities=extract_entities(content),
        extra={
            "claude_session": last.session_id or path.stem,
            "transcript_turns": sum(p.turns for p in parts),
        },
    )


def _join_parts(parts: list[Any], rel: str, batch: _Batch, limit: int) -> str:
    """The stretches of talk, oldest first, dropping the oldest ones past the chunk size limit."""
    texts = [p.text.strip() for p in parts]
    while len(texts) > 1 and len("\n\n---\n\n".join(texts).encode("utf-8")) > limit * 3 // 4:
        texts.pop(0)
    if len(texts) < len(parts):
        batch.problem(
            rel,
            f"too long for one chunk: kept the last {len(texts)} of {len(parts)} parts "
            "(between compactions); the file itself is untouched",
        )
    return "\n\n---\n\n".join(texts)


def _segments(data: bytes) -> Iterator[bytes]:
    """The transcript cut before each compact boundary, then whole: each parse gives one stretch of talk."""
    lines = data.splitlines(keepends=True)
    for n, line in enumerate(lines):
        if b"compact_boundary" in line and _is_boundary(line):
            yield b"".join(lines[:n])
    yield data


def _is_boundary(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("subtype") == "compact_boundary"


def _project_from_folder(name: str) -> str:
    # Claude Code names the folder after the cwd with '/' turned into '-': the last part is the folder name.
    return safe_name(name.rstrip("-").rsplit("-", 1)[-1], "project", strict=False) or "imported"


# ---------------------------------------------------------------------- shared


def _write(service: MemoryService, batch: _Batch, source: str, folder: Path, message: str) -> ImportReport:
    result = write_many(service, batch.insights, batch.chunks, message, list(batch.rewrites.items()))
    origins = [str(c.extra.get("rlm_claude_id", "")) for c in batch.chunks]
    pairs = zip(origins, result.chunk_ids, strict=True)
    access = {new: batch.access[old] for old, new in pairs if old in batch.access}
    if access:
        service.store.access.update(access)
    if batch.crlf:
        batch.notes.append(
            f"{batch.crlf} texts had Windows line ends (CRLF): notes keep them as LF, like every note"
        )
    return ImportReport(
        source,
        str(folder),
        len(result.insight_ids),
        len(result.chunk_ids),
        sum(1 for c in batch.chunks if c.archived),
        batch.already,
        result.commit,
        tuple(batch.problems),
        tuple(batch.notes),
        batch.replaced,
        batch.kept,
        batch.merged,
    )


def _redact(text: str, where: str, batch: _Batch, service: MemoryService) -> str:
    from .secrets import describe, redact

    clean, findings = redact(text, service.config.secret_allowlist)
    if findings:
        batch.problem(where, f"{describe(findings)} replaced by [REDACTED:...] so it never reaches git")
    return clean


def _utc(value: Any) -> str:
    """An ISO-8601 time as notes store it (UTC, to the second); naive times are local, as rlm-claude wrote."""
    if not isinstance(value, str) or not value.strip():
        return ""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_id_day(origin: str) -> str:
    match = _RLM_ID.match(origin)
    return f"{match.group(1)}T00:00:00Z" if match else ""
