"""The installed hooks inside the real Claude Code CLI (offline, scripted fake model): what reaches the vault
and what reaches the model.

One user's story, in order: `rlm-vault install`; a `claude -p` session whose model calls rlm_remember;
`/compact` of that session; the session resumed. The fake model's request log shows what SessionStart
injected. Recipes: shared/notes/claude-code-e2e.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_model import FakeModel

from rlm_vault import markdown

RunClaude = Callable[..., dict[str, Any]]
pytestmark = pytest.mark.e2e

REMEMBER = "mcp__rlm-vault__rlm_remember"
SEEDED = "E2E-SEEDED-RULE: always deploy LOCAL -> VPS, never direct"
FACT = "E2E-MCP-FACT: the staging database is called heron"


def rlm_vault(env: dict[str, str], *args: str) -> str:
    """Run the installed `rlm-vault` script (the one the hooks run) with the CLI's environment."""
    script = Path(sys.executable).parent / "rlm-vault"
    done = subprocess.run(
        [str(script), *args], check=False, env=env, cwd=env["PWD"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def texts(value: Any) -> Iterator[str]:
    """Every string inside a request body (system prompt, messages, reminders)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)


def sent(body: dict[str, Any]) -> str:
    return "\n".join(texts(body.get("system"))) + "\n" + "\n".join(texts(body.get("messages")))


def git(vault: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(vault), *args], capture_output=True, text=True, check=True).stdout


def chunks(vault: Path) -> list[tuple[dict[str, Any], str]]:
    return [markdown.parse(p.read_text(), str(p)) for p in sorted(vault.glob("chunks/*/*.md"))]


@pytest.fixture
def installed(claude_env: dict[str, str]) -> dict[str, str]:
    """`rlm-vault install` in the throwaway HOME: MCP server, hooks, skills, vault."""
    rlm_vault(claude_env, "install")
    settings = json.loads((Path(claude_env["HOME"]) / ".claude" / "settings.json").read_text())
    assert {"PreCompact", "SessionStart", "PostToolUse"} <= set(settings["hooks"])
    return claude_env


def test_remember_compact_and_resume(
    installed: dict[str, str], run_claude: RunClaude, fake_model: FakeModel
) -> None:
    env, vault = installed, Path(installed["RLM_VAULT_DIR"])
    log = Path(vault) / ".rlm" / "hooks.log"
    rlm_vault(env, "remember", SEEDED, "--importance", "critical", "--category", "decision")

    # 1. A new session: SessionStart put the critical insight in the first request; the model's
    #    rlm_remember call wrote a note and a commit.
    args = {"content": FACT, "category": "fact", "importance": "critical"}
    result = run_claude(["-p", f"CALL_TOOL {REMEMBER} {json.dumps(args)}", "--allowedTools", REMEMBER], env)
    assert result["is_error"] is False and result["result"].startswith("TOOL_RESULT_SEEN: "), result
    session = result["session_id"]
    first = fake_model.message_requests()[0]
    assert SEEDED in sent(first)
    [note] = [p for p in vault.glob("insights/*.md") if FACT in p.read_text()]
    meta, body = markdown.parse(note.read_text(), str(note))
    assert (body.strip(), meta["importance"]) == (FACT, "critical")
    assert git(vault, "log", "-1", "--format=%s").startswith(f"remember: {note.stem} (fact/critical)")
    assert git(vault, "status", "--porcelain") == ""

    # 2. `/compact keep the facts`: PreCompact saved the session's text as a snapshot chunk, one commit.
    before = int(git(vault, "rev-list", "--count", "HEAD"))
    compacted = run_claude(["--resume", session, "-p", "/compact keep the facts"], env)
    assert compacted["is_error"] is False, compacted
    [(snap, text)] = chunks(vault)
    assert snap["chunk_type"] == "snapshot" and snap["claude_session"] == session
    assert snap["trigger"] == "manual" and snap["custom_instructions"] == "keep the facts"
    assert f"CALL_TOOL {REMEMBER}" in text and "TOOL_RESULT_SEEN" in text and FACT in text
    assert int(git(vault, "rev-list", "--count", "HEAD")) == before + 1
    assert git(vault, "log", "-1", "--format=%s").startswith(f"chunk: {snap['id']} Snapshot before /compact")
    compaction = [
        b for b in fake_model.message_requests() if "detailed summary of the conversation" in sent(b)
    ]
    assert len(compaction) == 1 and "keep the facts" in sent(compaction[0])  # it really compacted

    # 3. The compacted session resumed: its request points at the snapshot and carries both critical insights.
    run_claude(["--resume", session, "-p", "what now"], env)
    resumed = sent(fake_model.message_requests()[-1])
    assert snap["id"] in resumed and "rlm_peek(" in resumed
    assert SEEDED in resumed and FACT in resumed
    assert not log.exists() or log.read_text() == ""


def test_a_write_to_claude_code_memory_is_nudged(
    installed: dict[str, str], run_claude: RunClaude, fake_model: FakeModel
) -> None:
    # The project's CLAUDE.md: Claude Code asks before writing under ~/.claude/ even with --allowedTools
    # ("a sensitive file"), so the auto-memory folder itself is covered by tests/test_hooks.py.
    memory = Path(installed["PWD"]) / "CLAUDE.md"
    write = {"file_path": str(memory), "content": "- the staging database is called heron\n"}
    result = run_claude(["-p", f"CALL_TOOL Write {json.dumps(write)}", "--allowedTools", "Write"], installed)
    assert result["is_error"] is False, result
    assert memory.read_text().startswith("- the staging database")
    after_tool = sent(fake_model.message_requests()[-1])
    assert "Claude Code's built-in memory" in after_tool and "rlm_remember" in after_tool
    # A plain project file gets no nudge.
    other = Path(installed["PWD"]) / "notes.txt"
    write = {"file_path": str(other), "content": "plain\n"}
    run_claude(["-p", f"CALL_TOOL Write {json.dumps(write)}", "--allowedTools", "Write"], installed)
    assert other.exists() and "built-in memory" not in sent(fake_model.message_requests()[-1])


def test_auto_compaction_is_snapshotted(installed: dict[str, str], run_claude: RunClaude) -> None:
    """The auto-compact recipe of the note: a 98k threshold, a reply reporting 150k input tokens."""
    env, vault = {**installed, "CLAUDE_AUTOCOMPACT_PCT_OVERRIDE": "10"}, Path(installed["RLM_VAULT_DIR"])
    session = run_claude(["-p", "first turn about the heron database"], env)["session_id"]
    run_claude(["--resume", session, "-p", "REPORT_INPUT_TOKENS=150000 fill the context"], env)
    assert chunks(vault) == []
    run_claude(["--resume", session, "-p", "next prompt"], env)
    [(snap, text)] = chunks(vault)
    assert snap["trigger"] == "auto" and snap["tags"] == ["snapshot", "compact-auto"]
    assert snap["claude_session"] == session and "first turn about the heron database" in text
