"""Claude Code hook logic: stdin JSON -> frozen `HookEvent` -> one vault action -> the documented output.

`main()` is the fail-open boundary: it swallows every exception, logs one line to `<vault>/.rlm/hooks.log`
and returns 0, so a hook can never break the user's session. Only the standard library and light
modules are imported here (no mcp, whoosh, model2vec, numpy or rapidfuzz): hooks run serially in the
user's session, and each one's start-up time is felt. Event formats: shared/notes/claude-code-e2e.md.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .config import Config
from .filelock import file_lock

if TYPE_CHECKING:
    from .models import Insight
    from .service import MemoryService
    from .transcript import Conversation

__all__ = ["EVENTS", "MESSAGES", "HookEvent", "is_memory_file", "main", "session_context"]

LOG_NAME = "hooks.log"
STATE_NAME = "snapshots.json"
LOCK_NAME = "hooks.lock"
MAX_LOG_BYTES = 256 * 1024
MAX_SESSIONS = 500  # sessions remembered in snapshots.json; older pointers are dropped
INSIGHT_CHARS = 400  # one insight line in the session context; the rest is one rlm_recall away
MEMORY_TOOLS = frozenset({"Write", "Edit", "MultiEdit"})
MEMORY_FILES = frozenset({"MEMORY.md", "CLAUDE.md", "CLAUDE.local.md"})

# One table, so a translation is one edit. Placeholders are filled with str.format.
MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "header": "rlm-vault memory (persistent; search it with rlm_search, list insights with rlm_recall):",
        "snapshot": "Before the last compaction, rlm-vault saved this session's conversation as snapshot {id} "
        '({summary}). Read it with rlm_peek("{id}") when you need details the summary lost.',
        "critical": "Critical insights (always apply):",
        "high": "Important insights for project {project}:",
        "more": "{count} more: use rlm_recall.",
        "nudge": "rlm-vault: {file} is Claude Code's built-in memory, local to this machine and not searchable. "
        "Also save what is worth keeping with rlm_remember (one fact, decision or preference, with "
        "category and importance), or longer context with rlm_chunk: it is versioned in git and comes "
        "back after /compact and in new sessions.",
        "summary": "Snapshot before /compact ({trigger}): {prompt}",
    },
    "fr": {
        "header": "Mémoire rlm-vault (persistante ; cherchez avec rlm_search, listez les insights avec rlm_recall) :",
        "snapshot": "Avant la dernière compaction, rlm-vault a enregistré la conversation de cette session dans "
        "l'instantané {id} ({summary}). Lisez-le avec rlm_peek(\"{id}\") s'il vous manque un détail "
        "que le résumé a perdu.",
        "critical": "Insights critiques (toujours applicables) :",
        "high": "Insights importants du projet {project} :",
        "more": "{count} de plus : utilisez rlm_recall.",
        "nudge": "rlm-vault : {file} est la mémoire intégrée de Claude Code, locale à cette machine et sans "
        "recherche. Enregistrez aussi ce qui mérite d'être gardé avec rlm_remember (un fait, une "
        "décision ou une préférence, avec catégorie et importance), ou un contexte plus long avec "
        "rlm_chunk : c'est versionné dans git et cela revient après /compact et dans les nouvelles "
        "sessions.",
        "summary": "Instantané avant /compact ({trigger}) : {prompt}",
    },
    "ja": {
        "header": "rlm-vault のメモリ（永続。rlm_search で検索、rlm_recall で insight を一覧）:",
        "snapshot": "直前のコンパクション前に、rlm-vault はこのセッションの会話をスナップショット {id}（{summary}）"
        'として保存しました。要約で失われた詳細が必要なときは rlm_peek("{id}") で読めます。',
        "critical": "重要度 critical の insight（常に適用）:",
        "high": "プロジェクト {project} の重要な insight:",
        "more": "ほかに {count} 件: rlm_recall を使ってください。",
        "nudge": "rlm-vault: {file} は Claude Code 組み込みのメモリで、このマシンだけにあり検索できません。"
        "残すべき内容は rlm_remember（事実・決定・好みを1件ずつ、category と importance 付き）、"
        "長い文脈は rlm_chunk でも保存してください。git でバージョン管理され、/compact 後や新しい"
        "セッションでも戻ってきます。",
        "summary": "/compact 前のスナップショット ({trigger}): {prompt}",
    },
}


def messages(lang: str) -> dict[str, str]:
    """The message table for RLM_LANG; English for anything else."""
    return MESSAGES.get(lang, MESSAGES["en"])


# ---------------------------------------------------------------------- the event


@dataclass(frozen=True, slots=True)
class HookEvent:
    """What Claude Code sent on stdin; a missing or mistyped field is an empty string."""

    name: str = ""
    session_id: str = ""
    transcript_path: str = ""
    cwd: str = ""
    trigger: str = ""  # PreCompact: manual | auto
    custom_instructions: str = ""  # PreCompact: the text after /compact (null when bare)
    source: str = ""  # SessionStart: startup | resume | clear | compact
    tool_name: str = ""  # PostToolUse
    file_path: str = ""  # PostToolUse: tool_input.file_path

    @classmethod
    def from_json(cls, raw: str) -> HookEvent:
        """Parse stdin; raises ValueError (bad JSON) or TypeError (not an object); the caller logs it."""
        data = json.loads(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise TypeError(f"hook stdin is a JSON {type(data).__name__}, not an object")
        tool_input = data.get("tool_input")
        return cls(
            name=_field(data, "hook_event_name"),
            session_id=_field(data, "session_id"),
            transcript_path=_field(data, "transcript_path"),
            cwd=_field(data, "cwd"),
            trigger=_field(data, "trigger"),
            custom_instructions=_field(data, "custom_instructions"),
            source=_field(data, "source"),
            tool_name=_field(data, "tool_name"),
            file_path=_field(tool_input, "file_path") if isinstance(tool_input, dict) else "",
        )


def _field(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------- the fail-open boundary


Handler = Callable[[HookEvent, Config], "dict[str, Any] | None"]


def main(
    event: str,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run the hook `event` (pre-compact, session-start, post-tool-use); always returns 0."""
    handler = EVENTS.get(event)
    if handler is None:
        return 0  # an event this version does not know: a newer settings.json, say
    config: Config | None = None
    hook = HookEvent()
    try:
        config = Config.from_env(dict(env) if env is not None else None)
        hook = _read_event(stdin or sys.stdin, event, config)
        output = handler(hook, config)
        if output is not None:
            (stdout or sys.stdout).write(json.dumps(output) + "\n")
    except BaseException as exc:  # noqa: BLE001 - the one place allowed to swallow everything (STYLE 13)
        log(config, event, hook.session_id, _describe(exc))
    return 0


def _read_event(stdin: IO[str], event: str, config: Config) -> HookEvent:
    """The event on stdin; garbage is logged and read as an empty event, so the hook still runs."""
    raw = "" if stdin.isatty() else stdin.read()  # run by hand at a terminal: do not wait for input
    try:
        return HookEvent.from_json(raw)
    except (ValueError, TypeError) as exc:
        log(config, event, "", f"unreadable stdin ({exc}): {raw[:80]!r}")
        return HookEvent()


def _describe(exc: BaseException) -> str:
    """`Type: message (at file:line)`, on one line."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def log(config: Config | None, event: str, session: str, message: str) -> None:
    """Append one line to `<vault>/.rlm/hooks.log`; stderr when that cannot be written."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp} {event} session={session or '-'} {' '.join(message.split())}\n"
    try:
        if config is None:
            raise OSError("no configuration")
        if not config.is_vault:
            # Never create a folder, nor write into one that is not a vault (a mistyped RLM_VAULT_DIR).
            raise OSError("no vault here")
        path = config.state_dir / LOG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
            os.replace(path, path.with_name(LOG_NAME + ".1"))  # keep one old log, never grow without bound
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError:
        # Claude Code shows a hook's stderr in verbose mode only; stdout must stay valid hook output.
        print(f"rlm-vault hook: {line}", end="", file=sys.stderr)


# ---------------------------------------------------------------------- PreCompact


def pre_compact(event: HookEvent, config: Config) -> None:
    """Save the conversation since the last compaction as a snapshot chunk (one commit), once."""
    if not event.transcript_path or not os.path.isfile(event.transcript_path):
        raise FileNotFoundError(f"transcript not found: {event.transcript_path or '(no transcript_path)'}")
    from .transcript import read_transcript

    convo = read_transcript(event.transcript_path)
    if not convo.turns:
        return  # only bookkeeping lines since the last compaction: nothing to save
    session = event.session_id or convo.session_id or event.transcript_path
    from .service import open_service

    svc = open_service(config)
    with _hooks_lock(config):  # two installs (user + project scope) run the same hook in parallel
        snapshots = svc.vault.read_state(STATE_NAME, {})
        snapshots = snapshots if isinstance(snapshots, dict) else {}
        seen = snapshots.get(session)
        if isinstance(seen, dict) and seen.get("last_uuid") == convo.last_uuid:
            return  # this very compaction was saved already (a PreCompact:auto may fire twice)
        before = str(seen.get("chunk_id") or "") if isinstance(seen, dict) else ""
        written = _save_snapshot(svc, event, config, convo, session, before)
        snapshots[session] = written
        svc.vault.write_state(STATE_NAME, _newest(snapshots))


def _save_snapshot(
    svc: MemoryService, event: HookEvent, config: Config, convo: Conversation, session: str, previous: str
) -> dict[str, Any]:
    """Write the chunk (linked to the session's `previous` snapshot); returns the pointer SessionStart
    shows after the compaction."""
    from .core import detect_project

    trigger = event.trigger if event.trigger.isalpha() else "unknown"
    summary = messages(config.lang)["summary"].format(trigger=trigger, prompt=convo.summary_line())
    extra: dict[str, object] = {"claude_session": session, "trigger": trigger}
    if event.custom_instructions:
        extra["custom_instructions"] = svc.redacted(event.custom_instructions)[0]
    extra["transcript_last_uuid"] = convo.last_uuid or ""
    if convo.truncated:
        extra["transcript_truncated"] = True
    if convo.skipped:
        extra["transcript_skipped_records"] = convo.skipped
    result = svc.chunk(
        convo.text,
        summary=summary,
        project=config.project or detect_project(event.cwd or convo.cwd or None),
        chunk_type="snapshot",
        tags=f"snapshot,compact-{trigger}",
        redact=True,
        dedup=False,
        extra=extra,
        previous=previous,
    )
    return {
        "last_uuid": convo.last_uuid,
        "chunk_id": result["id"],
        "path": result["path"],
        "summary": svc.redacted(summary)[0],
        "trigger": trigger,
        "saved": svc.now(),
    }


def _newest(snapshots: dict[str, Any]) -> dict[str, Any]:
    """The state file bounded to the MAX_SESSIONS most recent sessions."""
    if len(snapshots) <= MAX_SESSIONS:
        return snapshots

    def saved(item: tuple[str, Any]) -> str:
        return str(item[1].get("saved", "")) if isinstance(item[1], dict) else ""

    return dict(sorted(snapshots.items(), key=saved)[-MAX_SESSIONS:])


@contextmanager
def _hooks_lock(config: Config) -> Iterator[None]:
    """A lock of the hooks' own (the vault's write lock is taken inside `chunk` by the same process)."""
    with file_lock(
        config.state_dir / LOCK_NAME
    ):  # held about a second at most; Claude Code's timeout bounds it
        yield


# ---------------------------------------------------------------------- SessionStart


def session_start(event: HookEvent, config: Config) -> dict[str, Any] | None:
    """Critical insights, this project's important ones, and after a compaction the snapshot's pointer."""
    from .core import detect_project

    project = config.project or detect_project(event.cwd or None)
    pointer = _snapshot_pointer(event, config)
    text = session_context(config, project, _insights(config), pointer)
    return _output("SessionStart", text) if text else None


def session_context(
    config: Config, project: str, insights: list[Insight], pointer: dict[str, Any] | None
) -> str:
    """The additionalContext text within `config.session_budget_tokens` (1 token ~ 4 chars); "" if empty."""
    t = messages(config.lang)
    critical = _newest_first(i for i in insights if i.importance == "critical")
    high = _newest_first(i for i in insights if i.importance == "high" and i.project == project)
    if not (critical or high or pointer):
        return ""
    lines = [t["header"]]
    if pointer:
        lines.append(t["snapshot"].format(id=pointer.get("chunk_id", ""), summary=pointer.get("summary", "")))
    sections = [(t["critical"], critical), (t["high"].format(project=project), high)]
    left = _fill(lines, sections, config.session_budget_tokens * 4, t["more"])
    if left:
        lines.append(t["more"].format(count=left))
    return "\n".join(lines)


def _fill(lines: list[str], sections: list[tuple[str, list[Insight]]], budget: int, more: str) -> int:
    """Append section titles and insight lines while they fit; returns how many insights did not."""
    reserve = len(more.format(count=99999)) + 1  # room for the "N more" line
    used = sum(len(line) + 1 for line in lines)
    left = 0
    for title, insights in sections:
        for n, insight in enumerate(insights):
            new = ([title] if n == 0 else []) + [_insight_line(insight)]
            cost = sum(len(line) + 1 for line in new)
            if left or used + cost + reserve > budget:
                left += 1  # most important first: once one does not fit, the rest are left out too
                continue
            lines.extend(new)
            used += cost
    return left


def _newest_first(insights: Iterable[Insight]) -> list[Insight]:
    return sorted(insights, key=lambda i: (i.updated or i.created, i.id), reverse=True)


def _insight_line(insight: Insight) -> str:
    text = " ".join(insight.content.split())
    if len(text) > INSIGHT_CHARS:
        text = text[: INSIGHT_CHARS - 1].rstrip() + "…"
    where = f", {insight.project}" if insight.project else ""
    return f"- [{insight.category}{where}] {text}"


def _insights(config: Config) -> list[Insight]:
    """Every readable insight, read straight from `insights/`.

    Not service.recall: its catalog parses every chunk too, and a vault of thousands of chunks would
    make each session start slow. Unreadable files are skipped (rlm_status reports them).
    """
    from .service import read_insights

    return read_insights(config)


def _snapshot_pointer(event: HookEvent, config: Config) -> dict[str, Any] | None:
    """The snapshot saved for this session, when its conversation was compacted."""
    if event.source not in ("compact", "resume") or not event.session_id:
        return None
    if event.source == "resume" and not _was_compacted(event.transcript_path):
        return None
    from .service import read_state

    snapshots = read_state(config, STATE_NAME)
    pointer = snapshots.get(event.session_id) if isinstance(snapshots, dict) else None
    return pointer if isinstance(pointer, dict) and pointer.get("chunk_id") else None


def _was_compacted(transcript_path: str) -> bool:
    """True when the transcript holds a compact boundary (a resumed session that was compacted)."""
    if not transcript_path:
        return False
    import mmap

    from .transcript import open_regular

    try:  # a FIFO, device or folder is refused, never waited on
        with open_regular(transcript_path) as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.rfind(b'"compact_boundary"') >= 0
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return False


# ---------------------------------------------------------------------- PostToolUse


def post_tool_use(event: HookEvent, config: Config) -> dict[str, Any] | None:
    """A nudge toward rlm_remember / rlm_chunk after a write to Claude Code's own memory files."""
    if event.tool_name not in MEMORY_TOOLS or not is_memory_file(event.file_path, event.cwd):
        return None
    return _output("PostToolUse", messages(config.lang)["nudge"].format(file=event.file_path))


def is_memory_file(file_path: str, cwd: str = "") -> bool:
    """Claude Code's auto-memory: `<claude dir>/projects/<project>/memory/...`, or a CLAUDE.md / MEMORY.md.

    rlm-claude matched `/.claude/projects/` + `memory/` in the path (shared/notes/rlm-claude.md section 6);
    CLAUDE_CONFIG_DIR moves the `.claude` folder, so its `projects/` counts too.
    """
    if not file_path:
        return False
    path = Path(cwd or os.getcwd(), os.path.expanduser(file_path))
    if path.name in MEMORY_FILES:
        return True
    parts = path.parts
    if any(
        parts[i : i + 2] == (".claude", "projects") and parts[i + 3] == "memory"
        for i in range(len(parts) - 4)
    ):
        return True
    config_dir = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if not config_dir:
        return False
    inside = (
        path.relative_to(base).parts if path.is_relative_to(base := Path(config_dir).expanduser()) else ()
    )
    return len(inside) > 3 and inside[0] == "projects" and inside[2] == "memory"


def _output(event_name: str, text: str) -> dict[str, Any]:
    """The hook output Claude Code reads from stdout: context the model sees."""
    return {"hookSpecificOutput": {"hookEventName": event_name, "additionalContext": text}}


EVENTS: dict[str, Handler] = {
    "pre-compact": pre_compact,
    "session-start": session_start,
    "post-tool-use": post_tool_use,
}
