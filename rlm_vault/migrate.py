"""Import memories into the vault: an rlm-claude context folder, or past Claude Code transcripts.

Each import is one commit, adds nothing the vault already holds (imported notes carry the id they came
from: `rlm_claude_id`, `claude_session`), and loses nothing: a file it cannot parse is imported as raw
text or named in the report with the reason. Secrets are redacted before anything reaches git history.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import query as q
from .archive import gunzip
from .bulk import NewChunk, NewInsight, write_many
from .errors import InvalidInput, InvalidNote
from .models import (
    CATEGORIES,
    CHUNK_TYPES,
    IMPORTANCES,
    content_hash,
    extract_entities,
    parse_tags,
    safe_name,
)  # fmt: skip
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
    """Something the import could not take as it was, and what it did about it."""

    path: str
    reason: str


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

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "folder": self.folder,
            "insights": self.insights,
            "chunks": self.chunks,
            "archived": self.archived,
            "already": self.already,
            "commit": self.commit,
            "problems": [{"path": p.path, "reason": p.reason} for p in self.problems],
            "notes": list(self.notes),
        }

    def text(self) -> str:
        lines = [self._headline(), f"Already in the vault (skipped): {self.already}"]
        if self.problems:
            lines.append(f"Problems ({len(self.problems)}):")
            lines += [f"  {p.path}: {p.reason}" for p in self.problems]
        lines += [f"Note: {n}" for n in self.notes]
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
    access: dict[str, dict[str, Any]] = field(default_factory=dict)  # rlm-claude id -> access fields
    problems: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    already: int = 0

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(Issue(path, reason))


# ---------------------------------------------------------------------- rlm-claude


def import_rlm_claude(service: MemoryService, folder: Path | None = None) -> ImportReport:
    """Import an rlm-claude context folder (session_memory.json, index.json, chunks/, archive/)."""
    folder = folder or default_context_dir()
    if not folder.is_dir():
        raise InvalidInput(
            f"{folder} is not a folder: give the rlm-claude context folder (the one holding "
            "index.json and chunks/): rlm-vault import rlm-claude ~/.claude/rlm/context"
        )
    known = _Known.of(service)
    batch = _Batch()
    _collect_insights(folder, known, batch, service)
    _collect_chunks(folder, known, batch, service)
    _collect_notes(folder, batch)
    return _write(
        service,
        batch,
        "rlm-claude",
        folder,
        f"import: {len(batch.insights)} insights, {len(batch.chunks)} chunks from rlm-claude",
    )


@dataclass(frozen=True, slots=True)
class _Known:
    """What the vault already holds: origin ids and content hashes of insights and chunks."""

    ids: frozenset[str]
    hashes: frozenset[str]
    sessions: frozenset[str]

    @classmethod
    def of(cls, service: MemoryService) -> _Known:
        cat = service.store.fresh()
        notes: list[Any] = [*cat.insights(), *cat.chunks(), *service.archive.chunks()]
        ids = {str(n.extra["rlm_claude_id"]) for n in notes if n.extra.get("rlm_claude_id")}
        hashes = {content_hash(n.content) for n in notes}
        sessions = {str(n.extra["claude_session"]) for n in notes if n.extra.get("claude_session")}
        return cls(frozenset(ids), frozenset(hashes), frozenset(sessions))


def _read_json(path: Path, batch: _Batch) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        batch.problem(path.name, f"not readable JSON ({reason}); nothing taken from it")
        return None


def _collect_insights(folder: Path, known: _Known, batch: _Batch, service: MemoryService) -> None:
    data = _read_json(folder / "session_memory.json", batch)
    items = data.get("insights") if isinstance(data, dict) else None
    if data is not None and not isinstance(items, list):
        batch.problem("session_memory.json", 'has no "insights" list; no insight imported')
        return
    seen: set[str] = set()
    for n, item in enumerate(items or []):
        new = _insight(item, f"session_memory.json insights[{n}]", batch, service)
        if new is None:
            continue
        digest = content_hash(new.content)
        if new.extra["rlm_claude_id"] in known.ids or digest in known.hashes or digest in seen:
            batch.already += 1
            continue
        seen.add(digest)
        batch.insights.append(new)


def _insight(item: Any, where: str, batch: _Batch, service: MemoryService) -> NewInsight | None:
    if not isinstance(item, dict) or not str(item.get("content") or "").strip():
        batch.problem(where, "no content; skipped")
        return None
    content = _redact(str(item["content"]).strip("\n"), where, batch, service)
    extra: dict[str, Any] = {"rlm_claude_id": str(item.get("id") or content_hash(content)[:8])}
    category = _allowed(item.get("category"), CATEGORIES, "general", "rlm_claude_category", extra)
    importance = _allowed(item.get("importance"), IMPORTANCES, "medium", "rlm_claude_importance", extra)
    created = _utc(item.get("created_at")) or service.now()
    return NewInsight(content, category, importance, parse_tags(item.get("tags")), "", created, extra)


def _allowed(value: Any, allowed: tuple[str, ...], default: str, keep_as: str, extra: dict[str, Any]) -> str:
    """A value from `allowed`; anything else becomes `default`, the original kept under `keep_as`."""
    text = str(value or "").strip().lower()
    if text in allowed:
        return text
    if text:
        extra[keep_as] = str(value)
    return default


def _collect_chunks(folder: Path, known: _Known, batch: _Batch, service: MemoryService) -> None:
    index = _entries(_read_json(folder / "index.json", batch), "chunks")
    archive_index = _entries(_read_json(folder / "archive_index.json", batch), "archives")
    seen_ids: set[str] = set()
    seen_hashes: set[str] = set()
    sources = [(p, False) for p in _files(folder / "chunks", "*.md")]
    sources += [(p, True) for p in _files(folder / "archive", "*.md.gz")]
    for path, archived in sources:
        rel = path.relative_to(folder).as_posix()
        stem = path.name.removesuffix(".gz").removesuffix(".md")
        meta = (archive_index if archived else index).get(stem) or index.get(stem) or archive_index.get(stem)
        meta = meta or {}
        new = _chunk_from_file(path, rel, stem, meta, archived, batch, service)
        if new is None:
            continue
        origin = str(new.extra["rlm_claude_id"])
        digest = content_hash(new.content)
        if (
            origin in known.ids
            or origin in seen_ids
            or (new.content.strip() and (digest in known.hashes or digest in seen_hashes))
        ):
            batch.already += 1
            continue
        seen_ids.add(origin)
        seen_hashes.add(digest)
        batch.chunks.append(new)
        _note_access(origin, meta, batch)
    _missing_files(index, archive_index, seen_ids | known.ids, batch)


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
    parsed = parse_rlm_chunk(text)
    if parsed is None:
        batch.problem(rel, "no readable rlm-claude header; imported the whole file as the chunk text")
    header, body = parsed or ({}, text)
    return _chunk(header, body, meta, stem, archived, rel, batch, service, raw=parsed is None)


def _read_text(path: Path, rel: str, batch: _Batch) -> str | None:
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gunzip(raw, MAX_GUNZIP, rel)
    except (OSError, InvalidNote) as exc:
        batch.problem(rel, f"cannot be read ({' '.join(str(exc).split())[:200]}); not imported")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        batch.problem(rel, f"not UTF-8 (byte {exc.start}); imported with bad bytes replaced by U+FFFD")
        return raw.decode("utf-8", errors="replace")


def parse_rlm_chunk(text: str) -> tuple[dict[str, Any], str] | None:
    """rlm-claude's pseudo-YAML header, read line by line (its values are not valid YAML), and the body.

    None when the text does not start with a closed `---` header.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        return None
    header: dict[str, Any] = {}
    entities: dict[str, list[str]] = {}
    in_entities = False
    for n, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            if entities:
                header["entities"] = entities
            return header, "\n".join(lines[n + 1 :]).removeprefix("\n")
        if in_entities and line[:1] in (" ", "\t"):
            _entity_line(line, entities)
            continue
        match = _HEADER_KEY.match(line)
        in_entities = bool(match and match.group(1) == "entities" and not (match.group(2) or "").strip())
        if match and not in_entities:
            header[match.group(1)] = (match.group(2) or "").strip()
    return None


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
    raw: bool = False,
) -> NewChunk:
    def pick(key: str) -> str:
        value = meta.get(key)
        return str(value if value not in (None, "") else header.get(key) or "").strip()

    origin = pick("id") or stem
    content = _redact(body.strip("\n"), rel, batch, service)
    extra: dict[str, Any] = {"rlm_claude_id": origin}
    extra.update({f"rlm_claude_{k}": v for k, v in header.items() if k not in _KNOWN_HEADER and v})
    if raw:
        extra["rlm_claude_raw"] = True
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
    purged = _read_json(folder / "purge_log.json", batch)
    if isinstance(purged, dict) and isinstance(purged.get("purged"), list) and purged["purged"]:
        batch.notes.append(
            f"purge_log.json lists {len(purged['purged'])} chunks rlm-claude had already "
            "purged; their text was gone, so there is nothing to import"
        )
    domains = _custom_domains(_read_json(folder / "domains.json", batch))
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


# ---------------------------------------------------------------------- transcripts


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
    result = write_many(service, batch.insights, batch.chunks, message)
    origins = [str(c.extra.get("rlm_claude_id", "")) for c in batch.chunks]
    pairs = zip(origins, result.chunk_ids, strict=True)
    access = {new: batch.access[old] for old, new in pairs if old in batch.access}
    if access:
        service.store.access.update(access)
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
