"""`rlm-vault hook <event>`: real Claude Code stdin and transcripts in, vault effects and hook output out.

Each hook runs both as a function (stdin/stdout as StringIO) and as `python -m rlm_vault hook ...` in a
subprocess, the way Claude Code runs it. Fail-open: every failure exits 0 and leaves one log line.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import commit_count, git, git_log, git_status

from rlm_vault import hooks, markdown
from rlm_vault.models import Insight
from rlm_vault.vault import Vault

DATA = Path(__file__).parent / "data"
MANUAL = DATA / "transcripts" / "transcript_mcp_then_manual_compact.jsonl"
AUTO = DATA / "transcripts" / "transcript_auto_compact.jsonl"
EXAMPLES: dict[str, dict[str, Any]] = json.loads((DATA / "hook_stdin_examples.json").read_text())
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB = "ghp_" + "A1b2C3d4E5f6" * 3
HEAVY = ("mcp", "whoosh", "model2vec", "numpy", "rapidfuzz")


# ---------------------------------------------------------------------- helpers


def vault_dir() -> Path:
    return Path(os.environ["RLM_VAULT_DIR"])


def before_compaction(source: Path, dest: Path) -> Path:
    """The transcript as PreCompact sees it: every line before the compact boundary."""
    lines = source.read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if '"compact_boundary"' in line)
    dest.write_text("".join(lines[:cut]))
    return dest


def session_of(transcript: Path) -> str:
    return next(
        str(json.loads(line)["sessionId"])
        for line in transcript.read_text().splitlines()
        if '"sessionId"' in line
    )


def stdin_for(example: str, transcript: Path, cwd: Path, **changes: Any) -> dict[str, Any]:
    """A real hook stdin example, pointed at tmp paths and at the transcript's own session."""
    data = {**EXAMPLES[example], "transcript_path": str(transcript), "cwd": str(cwd)}
    if transcript.exists():
        data["session_id"] = session_of(transcript)
    return {**data, **changes}


def run(event: str, payload: dict[str, Any] | str) -> str:
    """The hook as a function; returns what it printed on stdout."""
    out = io.StringIO()
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    assert hooks.main(event, io.StringIO(raw), out) == 0
    return out.getvalue()


def run_process(event: str, payload: dict[str, Any] | str, **env: str) -> subprocess.CompletedProcess[str]:
    """The hook as Claude Code runs it: a process, JSON on stdin."""
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    return subprocess.run(
        [sys.executable, "-m", "rlm_vault", "hook", event],
        check=False,
        input=raw,
        text=True,
        capture_output=True,
        env={**os.environ, **env},
        timeout=60,
    )


def snapshots() -> list[tuple[dict[str, Any], str]]:
    """(front matter, body) of every chunk file in the vault."""
    return [markdown.parse(p.read_text(), str(p)) for p in sorted(vault_dir().glob("chunks/*/*.md"))]


def log_lines() -> list[str]:
    path = vault_dir() / ".rlm" / "hooks.log"
    return path.read_text().splitlines() if path.exists() else []


def context_of(output: str, event: str = "SessionStart") -> str:
    data = json.loads(output)
    assert list(data) == ["hookSpecificOutput"]
    assert data["hookSpecificOutput"]["hookEventName"] == event
    assert set(data["hookSpecificOutput"]) == {"hookEventName", "additionalContext"}
    return str(data["hookSpecificOutput"]["additionalContext"])


def add_insight(
    content: str,
    importance: str,
    project: str = "",
    updated: str = "2026-11-24T10:00:00Z",
    category: str = "decision",
) -> None:
    """An insight file written straight into the vault, with a chosen date."""
    note_id = f"i-{abs(hash((content, project))) % 10**8:08d}"
    insight = Insight(note_id, content, category, importance, (), project, updated, updated)
    path = vault_dir() / insight.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown.render(insight.to_meta(), insight.content))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "MyApp"
    folder.mkdir()
    return folder


@pytest.fixture
def manual(tmp_path: Path) -> Path:
    return before_compaction(MANUAL, tmp_path / "manual.jsonl")


@pytest.fixture
def vault() -> Path:
    Vault.init(vault_dir())
    return vault_dir()


# ---------------------------------------------------------------------- the event


def test_every_real_stdin_example_parses() -> None:
    for name, data in EXAMPLES.items():
        event = hooks.HookEvent.from_json(json.dumps(data))
        assert event.name == data["hook_event_name"] and event.session_id == data["session_id"], name
    assert (
        hooks.HookEvent.from_json(json.dumps(EXAMPLES["PreCompact:manual"])).custom_instructions
        == "keep the memory facts"
    )
    assert hooks.HookEvent.from_json(json.dumps(EXAMPLES["PreCompact:auto"])).custom_instructions == ""


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{}",
        '{"session_id": 3, "cwd": null, "tool_input": "x"}',
        '{"tool_input": {"file_path": ["a"]}, "trigger": {"a": 1}}',
    ],
)
def test_missing_or_mistyped_fields_are_empty(raw: str) -> None:
    assert hooks.HookEvent.from_json(raw) == hooks.HookEvent()


@pytest.mark.parametrize("raw", ["garbage", "[1, 2]", '"text"', "{"])
def test_garbage_is_refused_by_the_parser(raw: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        hooks.HookEvent.from_json(raw)


# ---------------------------------------------------------------------- PreCompact


def test_pre_compact_saves_the_session_as_a_snapshot_in_one_commit(
    vault: Path, manual: Path, project: Path
) -> None:
    before = commit_count(vault)
    assert run("pre-compact", stdin_for("PreCompact:manual", manual, project)) == ""
    assert commit_count(vault) == before + 1
    [(meta, body)] = snapshots()
    assert meta["chunk_type"] == "snapshot" and meta["project"] == "MyApp"
    assert meta["tags"] == ["snapshot", "compact-manual"]
    assert meta["claude_session"] == session_of(manual)
    assert meta["trigger"] == "manual" and meta["custom_instructions"] == "keep the memory facts"
    assert meta["transcript_last_uuid"].startswith("428aef06")  # the last line written before compaction
    assert meta["summary"].startswith("Snapshot before /compact (manual): CALL_TOOL mcp__demo__remember")
    assert "**User:** CALL_TOOL mcp__demo__remember" in body and "stored: cats are nice" in body
    assert git_log(vault)[0].startswith(f"chunk: {meta['id']} Snapshot before /compact")
    assert git_status(vault) == [] and log_lines() == []


def test_pre_compact_in_a_process_with_the_auto_example(vault: Path, tmp_path: Path, project: Path) -> None:
    transcript = before_compaction(AUTO, tmp_path / "auto.jsonl")
    done = run_process("pre-compact", stdin_for("PreCompact:auto", transcript, project))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    [(meta, body)] = snapshots()
    assert meta["trigger"] == "auto" and "custom_instructions" not in meta
    assert meta["tags"] == ["snapshot", "compact-auto"]
    assert "first turn" in body and "REPORT_INPUT_TOKENS=150000 fill the context" in body


def test_pre_compact_creates_the_default_vault_when_none_exists(
    manual: Path, project: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    monkeypatch.delenv("RLM_VAULT_DIR")
    default = isolated_home / ".claude" / "rlm" / "vault"
    assert not default.exists()
    run("pre-compact", stdin_for("PreCompact:manual", manual, project))
    assert commit_count(default) == 2  # init + the snapshot
    assert len(list(default.glob("chunks/*/*.md"))) == 1


def test_pre_compact_with_a_vault_path_that_is_not_a_vault_is_silent(manual: Path, project: Path) -> None:
    assert not vault_dir().exists()  # RLM_VAULT_DIR names a folder that does not exist (a typo)
    done = run_process("pre-compact", stdin_for("PreCompact:manual", manual, project))
    assert (done.returncode, done.stdout) == (0, "")
    assert not vault_dir().exists()
    vault_dir().mkdir()
    (vault_dir() / "src.py").write_text("print('a project, not a vault')\n")
    assert run("pre-compact", stdin_for("PreCompact:manual", manual, project)) == ""
    assert sorted(p.name for p in vault_dir().iterdir()) == ["src.py"]


def test_the_same_compaction_is_saved_once(vault: Path, manual: Path, project: Path) -> None:
    payload = stdin_for("PreCompact:manual", manual, project)
    run("pre-compact", payload)
    count = commit_count(vault)
    run("pre-compact", payload)
    assert run_process("pre-compact", payload).returncode == 0
    assert commit_count(vault) == count and len(snapshots()) == 1
    # The conversation went on (a PreCompact:auto may fire without compacting): the next one is new.
    with open(manual, "a") as f:
        f.write(
            json.dumps(
                {
                    "type": "user",
                    "uuid": "later-1",
                    "sessionId": session_of(manual),
                    "message": {"role": "user", "content": "one more thing"},
                }
            )
            + "\n"
        )
    run("pre-compact", payload)
    assert commit_count(vault) == count + 1 and len(snapshots()) == 2
    state = json.loads((vault / ".rlm" / "snapshots.json").read_text())
    assert state[session_of(manual)]["last_uuid"] == "later-1"


def test_parallel_duplicate_hooks_save_once(vault: Path, manual: Path, project: Path) -> None:
    """Installed at user and project scope, the same hook runs twice at once."""
    raw = json.dumps(stdin_for("PreCompact:manual", manual, project))
    command = [sys.executable, "-m", "rlm_vault", "hook", "pre-compact"]
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    for p in procs:
        out, _ = p.communicate(raw, timeout=60)
        assert (out, p.returncode) == ("", 0)
    assert len(snapshots()) == 1


def test_an_empty_conversation_writes_nothing(vault: Path, tmp_path: Path, project: Path) -> None:
    bookkeeping = [
        line
        for line in MANUAL.read_text().splitlines(keepends=True)
        if json.loads(line)["type"] not in ("user", "assistant")
    ]
    transcript = tmp_path / "empty.jsonl"
    transcript.write_text("".join(bookkeeping))
    before = commit_count(vault)
    run("pre-compact", stdin_for("PreCompact:manual", transcript, project))
    assert commit_count(vault) == before and snapshots() == [] and log_lines() == []


def test_secrets_in_the_transcript_are_redacted(vault: Path, manual: Path, project: Path) -> None:
    said = (f"my key is {AWS_KEY}", f"export GITHUB_TOKEN={GITHUB}")
    with open(manual, "a") as f:
        f.writelines(
            json.dumps({"type": "user", "uuid": f"s-{n}", "message": {"role": "user", "content": text}})
            + "\n"
            for n, text in enumerate(said)
        )
    run("pre-compact", stdin_for("PreCompact:manual", manual, project, custom_instructions=f"keep {GITHUB}"))
    [(meta, body)] = snapshots()
    assert AWS_KEY not in body and GITHUB not in body and "[REDACTED:aws_access_key]" in body
    assert GITHUB not in meta["custom_instructions"] and set(meta["redacted"]) >= {
        "aws_access_key",
        "github_token",
    }
    history = git(vault, "log", "-p", "--all")
    assert AWS_KEY not in history and GITHUB not in history


def test_a_5_mb_transcript_is_saved_and_committed(vault: Path, tmp_path: Path, project: Path) -> None:
    """DESIGN's target is 1.5 s (scripts/bench-style); this only guards against a gross regression."""
    transcript = tmp_path / "big.jsonl"
    big_transcript(transcript, 5_000_000)
    payload = stdin_for("PreCompact:auto", transcript, project)
    started = time.perf_counter()
    done = run_process("pre-compact", payload)
    elapsed = time.perf_counter() - started
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    [(meta, body)] = snapshots()
    assert meta["transcript_truncated"] is True and body.rstrip().endswith(
        "line"
    )  # the newest turns are kept
    assert git_status(vault) == [] and elapsed < 6.0, elapsed


def big_transcript(path: Path, size: int) -> None:
    """A transcript of about `size` bytes: prompts, answers, tool calls and results, bookkeeping lines."""
    rnd = random.Random(7)
    words = ["deploy", "vault", "compact", "snapshot", "index", "api/routes.py", "v2.0.0", "API-12", "commit"]
    lines: list[str] = []
    total, n = 0, 0
    while total < size:
        n += 1
        text = " ".join(rnd.choice(words) for _ in range(rnd.randint(20, 200)))
        for record in (
            {
                "type": "user",
                "uuid": f"u{n}",
                "sessionId": "big",
                "message": {"role": "user", "content": f"prompt {n}: {text}"},
            },
            {"type": "attachment", "uuid": f"a{n}", "attachment": {"content": "x" * rnd.randint(500, 3000)}},
            {
                "type": "assistant",
                "uuid": f"r{n}",
                "message": {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": f"answer {n}: {text}"},
                        {"type": "tool_use", "id": f"t{n}", "name": "Read", "input": {"file_path": "a.py"}},
                    ],
                },
            },
            {
                "type": "user",
                "uuid": f"t{n}",
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": f"t{n}",
                            "content": "line\n" * rnd.randint(50, 400),
                        }
                    ],
                },
            },
        ):
            lines.append(json.dumps(record, separators=(",", ":")) + "\n")
            total += len(lines[-1])
    path.write_text("".join(lines))


# ---------------------------------------------------------------------- failures: exit 0, one log line


def test_garbage_stdin_exits_0_and_logs(vault: Path) -> None:
    done = run_process("pre-compact", "this is not json")
    assert (done.returncode, done.stdout) == (0, "")
    assert any("pre-compact" in line and "unreadable stdin" in line for line in log_lines())
    assert snapshots() == []


def test_a_missing_transcript_exits_0_and_logs(vault: Path, tmp_path: Path, project: Path) -> None:
    done = run_process("pre-compact", stdin_for("PreCompact:manual", tmp_path / "gone.jsonl", project))
    assert (done.returncode, done.stdout) == (0, "")
    [line] = log_lines()
    assert "pre-compact" in line and "FileNotFoundError" in line and "gone.jsonl" in line


def test_an_unwritable_vault_exits_0_and_logs(vault: Path, manual: Path, project: Path) -> None:
    (vault / "chunks" / "MyApp").write_text("a file where the project folder should be")
    done = run_process("pre-compact", stdin_for("PreCompact:manual", manual, project))
    assert (done.returncode, done.stdout) == (0, "")
    [line] = log_lines()
    assert f"session={session_of(manual)}" in line and "Error" in line
    assert snapshots() == []


def test_with_no_place_for_the_log_the_line_goes_to_stderr(
    tmp_path: Path, manual: Path, project: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_process(
        "pre-compact", stdin_for("PreCompact:manual", manual, project), RLM_VAULT_DIR=str(blocker / "vault")
    )
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr.startswith("rlm-vault hook: ") and "pre-compact" in done.stderr
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("argv", [["hook", "no-such-event"], ["hook"], ["hook", "stop"]])
def test_unknown_events_exit_0_silently(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rlm_vault", *argv], check=False, input="{}", text=True, capture_output=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not vault_dir().exists()


# ---------------------------------------------------------------------- SessionStart


def test_session_start_injects_critical_and_project_insights(vault: Path, project: Path) -> None:
    add_insight("Always deploy LOCAL -> VPS, never direct.", "critical")
    add_insight("Never force-push main.", "critical", project="Other", updated="2026-11-25T10:00:00Z")
    add_insight("MyApp uses Postgres 16.", "high", project="MyApp")
    add_insight("Other uses MySQL.", "high", project="Other")
    add_insight("A medium note.", "medium", project="MyApp")
    payload = stdin_for("SessionStart:startup", Path("/nonexistent"), project)
    text = context_of(run("session-start", payload))
    lines = text.splitlines()
    assert lines[0].startswith("rlm-vault memory")
    critical = lines.index("Critical insights (always apply):")
    assert lines[critical + 1] == "- [decision, Other] Never force-push main."  # newest first, all projects
    assert lines[critical + 2] == "- [decision] Always deploy LOCAL -> VPS, never direct."
    assert lines[critical + 3 :] == [
        "Important insights for project MyApp:",
        "- [decision, MyApp] MyApp uses Postgres 16.",
    ]
    assert "MySQL" not in text and "medium" not in text and "snapshot" not in text
    done = run_process("session-start", payload)
    assert done.returncode == 0 and context_of(done.stdout) == text


def test_session_start_prints_nothing_when_there_is_nothing_to_say(project: Path) -> None:
    assert run("session-start", stdin_for("SessionStart:startup", Path("/nonexistent"), project)) == ""
    assert not vault_dir().exists()  # a session start never creates the vault
    add_insight("A low note.", "low")
    assert run("session-start", stdin_for("SessionStart:startup", Path("/nonexistent"), project)) == ""


def test_session_start_keeps_to_the_budget(
    vault: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_SESSION_BUDGET", "200")
    for n in range(60):
        add_insight(
            f"Rule number {n:02d}: " + "keep it short and clear " * 3,
            "critical",
            updated=f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
        )
    text = context_of(run("session-start", stdin_for("SessionStart:startup", Path("/nonexistent"), project)))
    assert len(text) <= 200 * 4
    shown = [line for line in text.splitlines() if line.startswith("- ")]
    assert 3 <= len(shown) < 60
    assert text.splitlines()[-1] == f"{60 - len(shown)} more: use rlm_recall."


def test_after_a_compaction_the_snapshot_is_pointed_to(vault: Path, manual: Path, project: Path) -> None:
    run("pre-compact", stdin_for("PreCompact:manual", manual, project))
    [(meta, _)] = snapshots()
    text = context_of(run("session-start", stdin_for("SessionStart:compact", manual, project)))
    assert meta["id"] in text and f'rlm_peek("{meta["id"]}")' in text and meta["summary"] in text
    # The same session resumed later: pointed to only once its transcript shows the compaction.
    resumed = stdin_for("SessionStart:resume", manual, project)
    assert run("session-start", resumed) == ""
    shutil.copy(MANUAL, manual)
    assert meta["id"] in context_of(run("session-start", resumed))
    # Another session (or a fresh start) gets no pointer.
    assert run("session-start", stdin_for("SessionStart:compact", manual, project, session_id="other")) == ""
    assert run("session-start", stdin_for("SessionStart:startup", manual, project)) == ""


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("fr", ["Insights critiques", "instantané", "de plus"]),
        ("ja", ["重要度 critical", "スナップショット", "ほかに"]),
    ],
)
def test_messages_follow_rlm_lang(
    lang: str, words: list[str], vault: Path, manual: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_LANG", lang)
    monkeypatch.setenv("RLM_SESSION_BUDGET", "200")
    for n in range(30):
        add_insight(f"Règle {n} " + "x" * 40, "critical")
    run("pre-compact", stdin_for("PreCompact:manual", manual, project))
    text = context_of(run("session-start", stdin_for("SessionStart:compact", manual, project)))
    assert all(word in text for word in words), text
    [(meta, _)] = snapshots()
    assert meta["summary"].startswith(hooks.MESSAGES[lang]["summary"].split("{")[0])
    nudge = run("post-tool-use", {"tool_name": "Write", "tool_input": {"file_path": "/p/CLAUDE.md"}})
    assert context_of(nudge, "PostToolUse") == hooks.MESSAGES[lang]["nudge"].format(file="/p/CLAUDE.md")


def test_an_unknown_language_falls_back_to_english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_LANG", "de")
    out = run("post-tool-use", {"tool_name": "Edit", "tool_input": {"file_path": "/p/MEMORY.md"}})
    assert "Claude Code's built-in memory" in context_of(out, "PostToolUse")


# ---------------------------------------------------------------------- PostToolUse


@pytest.mark.parametrize(
    "path",
    [
        "~/.claude/projects/-home-dev-proj/memory/MEMORY.md",
        "/home/dev/.claude/projects/-home-dev-proj/memory/deploy_notes.md",
        "/home/dev/proj/CLAUDE.md",
        "CLAUDE.md",
        "/home/dev/proj/CLAUDE.local.md",
        "/home/dev/.claude/CLAUDE.md",
    ],
)
@pytest.mark.parametrize("tool", ["Write", "Edit", "MultiEdit"])
def test_writes_to_claude_code_memory_get_a_nudge(path: str, tool: str) -> None:
    payload = {
        **EXAMPLES["PostToolUse"],
        "tool_name": tool,
        "tool_input": {"file_path": path, "content": "x"},
    }
    text = context_of(run("post-tool-use", payload), "PostToolUse")
    assert "rlm_remember" in text and "rlm_chunk" in text and path in text


@pytest.mark.parametrize(
    ("tool", "path"),
    [
        ("Write", "/home/dev/proj/src/app.py"),
        ("Write", "/home/dev/.claude/projects/-home-dev-proj/abc.jsonl"),
        ("Edit", "/home/dev/proj/memory/notes.md"),
        ("Read", "/home/dev/.claude/projects/-home-dev-proj/memory/MEMORY.md"),
        ("mcp__demo__remember", ""),
        ("Write", ""),
    ],
)
def test_other_tools_and_files_get_no_output(tool: str, path: str) -> None:
    payload = {**EXAMPLES["PostToolUse"], "tool_name": tool, "tool_input": {"file_path": path}}
    assert run("post-tool-use", payload) == ""


def test_claude_config_dir_memory_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cc"))
    assert hooks.is_memory_file(str(tmp_path / "cc" / "projects" / "p" / "memory" / "topic.md"))
    assert not hooks.is_memory_file(str(tmp_path / "cc" / "projects" / "p" / "topic.md"))


def test_post_tool_use_in_a_process_with_the_real_example() -> None:
    done = run_process("post-tool-use", EXAMPLES["PostToolUse"])
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# ---------------------------------------------------------------------- start-up cost


def test_no_heavy_import_on_any_hook_path(vault: Path, manual: Path, project: Path) -> None:
    add_insight("Always deploy LOCAL -> VPS, never direct.", "critical")
    script = f"""
import io, json, sys
from rlm_vault.cli import main
payloads = {{
    "pre-compact": {json.dumps(stdin_for("PreCompact:manual", manual, project))!r},
    "session-start": {json.dumps(stdin_for("SessionStart:compact", manual, project))!r},
    "post-tool-use": {json.dumps({"tool_name": "Write", "tool_input": {"file_path": "/p/CLAUDE.md"}})!r},
}}
for event, raw in payloads.items():
    sys.stdin = io.StringIO(raw)
    main(["hook", event])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("HEAVY=" + json.dumps(heavy), file=sys.stderr)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "HEAVY=[]"
    assert len(snapshots()) == 1 and log_lines() == []
    assert '"SessionStart"' in done.stdout and '"PostToolUse"' in done.stdout
