"""Claude Code transcript JSONL -> the conversation since the last compaction, as Markdown.

Pure and stdlib-only on purpose: the PreCompact hook calls it, and a hook must start and finish fast
(no mcp, yaml, whoosh or numpy import here). Format notes: shared/notes/claude-code-e2e.md section 3.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

__all__ = ["MAX_TEXT_BYTES", "Conversation", "open_regular", "parse_transcript", "read_transcript"]

# A chunk's content is capped at 2 MiB; keep the snapshot text well under it, front matter included.
MAX_TEXT_BYTES = 1_500_000
# Transcripts are append-only and can grow to hundreds of MB over many resumes; the last compaction is
# near the end, so reading the tail bounds the hook's time and memory.
MAX_READ_BYTES = 64 * 1024 * 1024
# One record over this is skipped (with a note): json.loads of a 60 MB line peaked near 1 GB. A tool result
# of a 20 MB log is still read (its first line is what the snapshot keeps).
MAX_RECORD_BYTES = 24 * 1024 * 1024
SUMMARY_CHARS = 1_500
TOOL_ARGS_CHARS = 120
TOOL_RESULT_CHARS = 160
SUMMARY_LINE_CHARS = 100

_CONVERSATION_TYPES = frozenset({"user", "assistant", "system"})
# Cheap byte prefilter: most of a transcript's bytes are attachment / api-request lines, which are never
# conversation; skipping them before json.loads keeps a 5 MB parse in tens of milliseconds.
_CANDIDATE_MARKERS = (b'"type":"user"', b'"type":"assistant"', b'"type":"system"', b'"type": "')
_REMINDER_RE = re.compile(r"<system-reminder>.*?(?:</system-reminder>|\Z)", re.DOTALL)
# Local slash-command echo lines (/compact, /clear ...) are bookkeeping, not things the user said.
_COMMAND_TAGS = (
    "local-command-caveat",
    "local-command-stdout",
    "local-command-stderr",
    "command-name",
    "command-message",
    "command-args",
)
_COMMAND_RE = re.compile(r"<(" + "|".join(_COMMAND_TAGS) + r")>.*?(?:</\1>|\Z)", re.DOTALL)
_SUMMARY_START = "Summary:\n"
_SUMMARY_END = "\n\nIf you need specific details from before compaction"


@dataclass(frozen=True, slots=True)
class Conversation:
    """The conversation since the last compact boundary, rendered as Markdown."""

    session_id: str = ""
    cwd: str = ""
    text: str = ""
    turns: int = 0
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    last_uuid: str | None = None
    first_prompt: str = ""
    truncated: bool = False
    skipped: int = 0  # records left out: larger than MAX_RECORD_BYTES or nested too deep to parse

    def summary_line(self, limit: int = SUMMARY_LINE_CHARS) -> str:
        """The first user prompt on one line, cut to about `limit` characters."""
        return _cut(" ".join(self.first_prompt.split()), limit)


@dataclass(slots=True)
class _Turn:
    """One speaker's consecutive pieces of text (mutable while rendering only)."""

    speaker: str
    pieces: list[str] = field(default_factory=list)

    def render(self) -> str:
        return f"**{self.speaker}:** " + "\n".join(self.pieces)


def read_transcript(path: str | os.PathLike[str], *, max_bytes: int = MAX_TEXT_BYTES) -> Conversation:
    """Parse the transcript file at `path`; a missing or unreadable file gives an empty Conversation."""
    try:
        data = _read_tail(path, MAX_READ_BYTES)
    except OSError:
        return Conversation()
    return parse_transcript(data, max_bytes=max_bytes)


def parse_transcript(data: bytes | str, *, max_bytes: int = MAX_TEXT_BYTES) -> Conversation:
    """Parse transcript JSONL content; malformed lines are skipped, never raised."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    skipped: list[int] = []
    records = list(_records(data.splitlines(), skipped))
    window, summary = _window(records)
    turns = _turns(window)
    body, truncated = _cap("\n\n".join(t.render() for t in turns), max_bytes)
    return Conversation(
        session_id=_last_str(records, "sessionId"),
        cwd=_last_str(records, "cwd"),
        text=_summary_section(summary) + _skipped_note(len(skipped)) + body,
        turns=len(turns),
        first_timestamp=_first_str(window, "timestamp") or None,
        last_timestamp=_last_str(window, "timestamp") or None,
        last_uuid=_last_str(window, "uuid") or None,
        first_prompt=_first_prompt(turns),
        truncated=truncated,
        skipped=len(skipped),
    )


def _skipped_note(count: int) -> str:
    if not count:
        return ""
    return (
        f"_[{count} transcript record(s) left out: larger than {MAX_RECORD_BYTES // (1024 * 1024)} MB "
        "or nested too deeply to read.]_\n\n"
    )


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for reading when it is a regular file; OSError for a FIFO, device, folder or socket.

    Opened non-blocking first: a plain open() of a FIFO waits for a writer forever (a hook must not hang).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_tail(path: str | os.PathLike[str], limit: int) -> bytes:
    with open_regular(path) as f:
        size = f.seek(0, os.SEEK_END)
        if size <= limit:
            f.seek(0)
            return f.read()
        f.seek(size - limit)
        data = f.read()
    # Drop the partial first line: it starts mid-record.
    return data[data.find(b"\n") + 1 :]


def _records(lines: Iterable[bytes], skipped: list[int]) -> Iterator[dict[str, Any]]:
    """Conversation records (user / assistant / system), skipping bookkeeping and malformed lines.

    A record too large or too deeply nested to parse is counted in `skipped`; the others still make the
    snapshot (one hostile line used to drop all of it).
    """
    for n, line in enumerate(lines):
        if not any(marker in line for marker in _CANDIDATE_MARKERS):
            continue
        if len(line) > MAX_RECORD_BYTES:
            skipped.append(n)
            continue
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both subclass it
            continue
        except RecursionError:  # nested deeper than the interpreter's stack allows
            skipped.append(n)
            continue
        if isinstance(record, dict) and record.get("type") in _CONVERSATION_TYPES:
            yield record


def _is_boundary(record: dict[str, Any]) -> bool:
    return record.get("type") == "system" and record.get("subtype") == "compact_boundary"


def _window(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Records since the last compact boundary (with its preserved messages) and the earlier summary."""
    start = next((i for i in range(len(records) - 1, -1, -1) if _is_boundary(records[i])), None)
    if start is None:
        return records, ""
    after = records[start + 1 :]
    summary = next((_summary_text(r) for r in after if r.get("isCompactSummary")), "")
    return _preserved(records[:start], records[start]) + after, summary


def _preserved(before: list[dict[str, Any]], boundary: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages the compaction kept verbatim: in the model's context after the boundary, but written before it.

    Without them an auto-compacted turn shows the assistant's answer with no prompt (the prompt line is
    written before the boundary; see transcript_auto_compact.jsonl).
    """
    meta = boundary.get("compactMetadata")
    kept = meta.get("preservedMessages") if isinstance(meta, dict) else None
    uuids = kept.get("uuids") if isinstance(kept, dict) else None
    if not isinstance(uuids, list) or not uuids:
        return []
    wanted = {u for u in uuids if isinstance(u, str)}
    return [r for r in before if r.get("uuid") in wanted]


def _summary_text(record: dict[str, Any]) -> str:
    text = _REMINDER_RE.sub("", _plain_content(record))
    start = text.find(_SUMMARY_START)
    if start >= 0:
        text = text[start + len(_SUMMARY_START) :]
    end = text.find(_SUMMARY_END)
    return (text[:end] if end >= 0 else text).strip()


def _summary_section(summary: str) -> str:
    if not summary:
        return ""
    return f"## Earlier summary\n\n{_cut(summary, SUMMARY_CHARS)}\n\n## Conversation\n\n"


def _turns(window: list[dict[str, Any]]) -> list[_Turn]:
    """Merge the pieces of consecutive records into one turn per change of speaker."""
    turns: list[_Turn] = []
    for speaker, piece in _pieces(window):
        if not turns or turns[-1].speaker != speaker:
            turns.append(_Turn(speaker))
        turns[-1].pieces.append(piece)
    return turns


def _pieces(window: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for record in window:
        if _skipped(record):
            continue
        content = _content(record)
        if record["type"] == "assistant":
            yield from _assistant_pieces(content)
        else:
            yield from _user_pieces(content)


def _skipped(record: dict[str, Any]) -> bool:
    # isVisibleInTranscriptOnly marks lines the model never saw (the compact summary itself, echoes).
    flags = ("isMeta", "isSidechain", "isCompactSummary", "isVisibleInTranscriptOnly")
    return record["type"] == "system" or any(record.get(flag) for flag in flags)


def _content(record: dict[str, Any]) -> Any:
    message = record.get("message")
    return message.get("content") if isinstance(message, dict) else None


def _plain_content(record: dict[str, Any]) -> str:
    content = _content(record)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_block_text(b) for b in content if isinstance(b, dict))
    return ""


def _block_text(block: dict[str, Any]) -> str:
    text = block.get("text")
    return text if isinstance(text, str) else ""


def _blocks(content: Any) -> Iterator[dict[str, Any]]:
    """A message's content blocks: a plain string is one text block; anything malformed is skipped."""
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if isinstance(content, list):
        yield from (block for block in content if isinstance(block, dict))


def _user_pieces(content: Any) -> Iterator[tuple[str, str]]:
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "tool_result":
            # Tool results come back on user lines, but they belong to the assistant's tool call.
            yield "Assistant", "  ← " + _tool_result_line(block)
        elif kind == "text":
            text = _clean_user_text(_block_text(block))
            if text:
                yield "User", text
        elif kind in ("image", "document"):
            yield "User", f"[{kind}]"


def _clean_user_text(text: str) -> str:
    return _COMMAND_RE.sub("", _REMINDER_RE.sub("", text)).strip()


def _assistant_pieces(content: Any) -> Iterator[tuple[str, str]]:
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "text":
            text = _block_text(block).strip()
            if text:
                yield "Assistant", text
        elif kind in ("tool_use", "server_tool_use"):
            yield "Assistant", f"→ {block.get('name') or '?'}({_brief_args(block.get('input'))})"
        # thinking / redacted_thinking and unknown blocks are dropped on purpose


def _brief_args(args: Any) -> str:
    if isinstance(args, dict):
        text = ", ".join(f"{k}={_json(v)}" for k, v in args.items())
    else:
        text = _json(args) if args is not None else ""
    return _cut(_one_line(text), TOOL_ARGS_CHARS)


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return "…"


def _tool_result_line(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        content = "\n".join(_block_text(b) or f"[{b.get('type')}]" for b in content if isinstance(b, dict))
    text = content if isinstance(content, str) else _json(content)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    prefix = "error: " if block.get("is_error") else ""
    return prefix + _cut(first, TOOL_RESULT_CHARS)


def _first_prompt(turns: list[_Turn]) -> str:
    return next((t.pieces[0] for t in turns if t.speaker == "User"), "")


def _cap(text: str, max_bytes: int) -> tuple[str, bool]:
    """Keep the last `max_bytes` of text (the newest turns matter most), starting at a turn boundary."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text, False
    tail = data[len(data) - max_bytes :].decode("utf-8", "ignore")
    boundary = tail.find("\n\n**")
    if 0 <= boundary < len(tail) // 2:
        tail = tail[boundary + 2 :]
    cut = len(data) - len(tail.encode("utf-8", "surrogatepass"))
    return f"_[Earlier text cut: {cut:,} bytes of this conversation were omitted.]_\n\n{tail}", True


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _last_str(records: list[dict[str, Any]], key: str) -> str:
    for record in reversed(records):
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _first_str(records: list[dict[str, Any]], key: str) -> str:
    for record in records:
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    return ""
