"""The real Claude Code CLI registers and connects to the project's MCP server, as a user would set it up."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rlm_vault.vault import Vault

ClaudeCli = Callable[..., "subprocess.CompletedProcess[str]"]
RunClaude = Callable[..., dict[str, Any]]
pytestmark = pytest.mark.e2e

SERVER = [sys.executable, "-m", "rlm_vault", "serve"]
TINY_SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("tiny")


@server.tool()
def ping() -> str:
    """Answer pong."""
    return "pong"


server.run()
'''


def _add_user_server(claude_cli: ClaudeCli, env: dict[str, str], name: str, command: list[str]) -> None:
    args = ["mcp", "add", name, "-s", "user", "-e", f"RLM_VAULT_DIR={env['RLM_VAULT_DIR']}", "--", *command]
    done = claude_cli(args, env)
    assert done.returncode == 0, done.stdout + done.stderr


def _list_line(claude_cli: ClaudeCli, env: dict[str, str], name: str) -> str:
    done = claude_cli(["mcp", "list"], env, timeout=90)
    lines = [line for line in done.stdout.splitlines() if line.startswith(f"{name}:")]
    assert len(lines) == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return lines[0]


def test_claude_lists_rlm_vault_as_connected(claude_cli: ClaudeCli, claude_env: dict[str, str]) -> None:
    _add_user_server(claude_cli, claude_env, "rlm-vault", SERVER)
    config = json.loads((Path(claude_env["HOME"]) / ".claude.json").read_text())
    entry = config["mcpServers"]["rlm-vault"]
    assert [entry["command"], *entry["args"]] == SERVER
    assert entry["env"] == {"RLM_VAULT_DIR": claude_env["RLM_VAULT_DIR"]}
    line = _list_line(claude_cli, claude_env, "rlm-vault")
    assert "Connected" in line, line


def test_claudes_opening_is_kept_for_the_next_start(
    claude_cli: ClaudeCli, claude_env: dict[str, str]
) -> None:
    """Claude Code opens with server/discover, subscriptions/listen, server/discover and tools/list: the
    front door keeps the SDK's answers to all but the stream, so the next start gives them at once."""
    Vault.init(Path(claude_env["RLM_VAULT_DIR"]))
    _add_user_server(claude_cli, claude_env, "rlm-vault", SERVER)
    assert "Connected" in _list_line(claude_cli, claude_env, "rlm-vault")
    kept = list((Path(claude_env["HOME"]) / ".cache" / "rlm-vault" / "vaults").glob("*/opening.json"))
    assert len(kept) == 1
    answers = json.loads(kept[0].read_text(encoding="utf-8"))["answers"]
    names = {t["name"] for answer in answers.values() for t in answer.get("tools", [])}
    assert "rlm_search" in names and any("capabilities" in answer for answer in answers.values())
    assert "Connected" in _list_line(claude_cli, claude_env, "rlm-vault")
    assert json.loads(kept[0].read_text(encoding="utf-8"))["answers"] == answers  # given, not changed


def test_harness_connects_a_minimal_stdio_server(
    claude_cli: ClaudeCli, claude_env: dict[str, str], tmp_path: Path
) -> None:
    """Tells a harness problem from a server problem when the test above fails."""
    script = tmp_path / "tiny_server.py"
    script.write_text(TINY_SERVER)
    _add_user_server(claude_cli, claude_env, "tiny", [sys.executable, str(script)])
    assert "Connected" in _list_line(claude_cli, claude_env, "tiny")


def test_the_model_calls_an_rlm_vault_tool(
    claude_cli: ClaudeCli, run_claude: RunClaude, claude_env: dict[str, str]
) -> None:
    _add_user_server(claude_cli, claude_env, "rlm-vault", SERVER)
    tool = "mcp__rlm-vault__rlm_status"
    result = run_claude(["-p", f"CALL_TOOL {tool} {{}}", "--allowedTools", tool], claude_env)
    assert result["is_error"] is False, result
    assert result["result"].startswith("TOOL_RESULT_SEEN: "), result["result"]
    assert claude_env["RLM_VAULT_DIR"] in result["result"]  # the server reports the vault it was given
