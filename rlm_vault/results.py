"""Shapes of the structured results every front end returns (the tool contract)."""

from __future__ import annotations

from typing import NotRequired

# pydantic (through the MCP SDK) needs typing_extensions' TypedDict on Python < 3.12.
from typing_extensions import TypedDict

__all__ = [
    "ChunkList",
    "ChunkRow",
    "CommitRow",
    "Doctor",
    "Domains",
    "Forgotten",
    "GrepMatch",
    "GrepResult",
    "History",
    "Initialised",
    "InsightRow",
    "NotePage",
    "NoteRef",
    "NoteText",
    "Peek",
    "Problem",
    "Recall",
    "Reindexed",
    "RemoteSet",
    "RetentionPreview",
    "RetentionRun",
    "Reverted",
    "SearchHit",
    "SearchResult",
    "SemanticStatus",
    "SessionRow",
    "Sessions",
    "Status",
    "Synced",
    "Written",
]


class Written(TypedDict):
    """A memory written (or found already there) at a vault-relative path."""

    id: str
    path: str
    commit: NotRequired[str | None]
    duplicate: NotRequired[bool]
    changed: NotRequired[bool]
    redacted: NotRequired[list[str]]


class Forgotten(TypedDict):
    id: str
    removed: bool
    commit: NotRequired[str | None]


class InsightRow(TypedDict):
    id: str
    content: str
    category: str
    importance: str
    tags: list[str]
    project: str | None
    created: NotRequired[str]
    score: NotRequired[float]


class Recall(TypedDict):
    insights: list[InsightRow]


class Problem(TypedDict):
    path: str
    reason: str


class SemanticStatus(TypedDict):
    enabled: bool
    model: str
    reason: str


class Status(TypedDict):
    insights: int
    chunks: int
    archived: int
    vault: str
    head: str | None
    semantic: SemanticStatus
    problems: list[Problem]
    by_category: NotRequired[dict[str, int]]
    by_importance: NotRequired[dict[str, int]]
    projects: NotRequired[dict[str, int]]
    remote: NotRequired[str | None]
    conflicts: NotRequired[list[str]]
    untracked: NotRequired[list[str]]
    refused: NotRequired[list[Problem]]


class Peek(TypedDict):
    id: str
    content: str
    start: int
    end: int
    total_lines: int
    kind: NotRequired[str]
    summary: NotRequired[str]
    path: NotRequired[str]
    old_id: NotRequired[str]


class GrepMatch(TypedDict):
    id: str
    line: int
    text: str
    score: float
    kind: NotRequired[str]
    project: NotRequired[str | None]


class GrepResult(TypedDict):
    matches: list[GrepMatch]


class SearchHit(TypedDict):
    id: str
    kind: str
    score: float
    summary: str
    project: str | None
    created: NotRequired[str]
    old_id: NotRequired[str]


class SearchResult(TypedDict):
    results: list[SearchHit]


class ChunkRow(TypedDict):
    id: str
    summary: str
    tags: list[str]
    project: str
    created: str
    tokens: int
    chunk_type: NotRequired[str]
    domain: NotRequired[str | None]


class ChunkList(TypedDict):
    chunks: list[ChunkRow]


class SessionRow(TypedDict):
    id: str
    project: str
    domain: str | None
    chunks: int
    started: str


class Sessions(TypedDict):
    sessions: list[SessionRow]


class Domains(TypedDict):
    domains: list[str]


class RetentionPreview(TypedDict):
    archive: list[str]
    purge: list[str]
    archive_after_days: NotRequired[int]
    purge_after_days: NotRequired[int]


class RetentionRun(TypedDict):
    archived: list[str]
    purged: list[str]
    commit: str | None


class CommitRow(TypedDict):
    commit: str
    date: str
    message: str
    author: str


class History(TypedDict):
    commits: list[CommitRow]
    id: NotRequired[str]
    old_id: NotRequired[str]


# `from` is a Python keyword, hence the functional form.
Reverted = TypedDict(
    "Reverted",
    {"id": str, "path": str, "commit": str | None, "kind": NotRequired[str], "from": NotRequired[str]},
)


class Synced(TypedDict):
    remote: str
    head: str | None
    pulled: int
    pushed: int
    conflicts: list[str]
    external: NotRequired[str | None]
    untracked: NotRequired[list[str]]  # files sync leaves out: not notes, not the template's files
    refused: NotRequired[list[Problem]]  # edits kept out of git (a secret in them)
    warnings: NotRequired[list[str]]  # what arrived from the remote and was not merged; a busy remote
    unpushed: NotRequired[int]  # commits kept here because the remote stayed busy: the next sync pushes them


class RemoteSet(TypedDict):
    remote: str


class Reindexed(TypedDict):
    indexed: int
    semantic: SemanticStatus


class Doctor(TypedDict):
    notes: list[str]
    caches: list[str]
    semantic: SemanticStatus
    git: str
    conflicts: list[str]
    untracked: NotRequired[list[str]]
    refused: NotRequired[list[Problem]]
    ok: bool
    warnings: NotRequired[list[str]]


class NoteRef(TypedDict):
    """One note in a listing of the whole vault: enough to name it and fetch it."""

    id: str
    kind: str
    title: str
    path: str
    created: str


class NotePage(TypedDict):
    """One page of every note, newest first; `next_cursor` fetches the next page (None: the last)."""

    notes: list[NoteRef]
    next_cursor: str | None


class NoteText(TypedDict):
    """A note's file as it is in the vault (front matter and body), with a readable title."""

    id: str
    kind: str
    title: str
    path: str
    text: str


class Initialised(TypedDict):
    vault: str
    head: str | None
    how: str
    remote: NotRequired[str]
    sync: NotRequired[Synced]
