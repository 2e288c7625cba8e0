"""The stdio front door: opening answers kept per vault and given again at the next start, the SDK asked
the same questions and trusted over the file, and every other message served by the SDK in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client as McpClient
from mcp import StdioServerParameters

from rlm_vault.config import vault_cache_dir
from rlm_vault.stdio import ANSWERS_FILE, PRIVATE, Answers, FrontDoor, identity, question_key
from rlm_vault.vault import Vault

INIT_PARAMS = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "front-door-test", "version": "1"},
}


class Client:
    """`rlm-vault serve` spoken to line by line, as Claude Code does."""

    def __init__(self, vault: Path) -> None:
        env = {**os.environ, "RLM_VAULT_DIR": str(vault)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlm_vault", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        self.notes: list[dict[str, Any]] = []  # notifications, as they came

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        self.proc.stdin.flush()

    def ask(self, rid: int | str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.send({"id": rid, "method": method, "params": params or {}})
        return self.answer(rid)

    def answer(self, rid: int | str) -> dict[str, Any]:
        while True:
            message = self._next()
            if message.get("id") == rid and "method" not in message:
                return message
            assert "id" not in message, f"an answer nobody asked for: {message}"
            self.notes.append(message)

    def notified(self, method: str) -> None:
        """Wait for a notification (at most until the server's end)."""
        while not any(n.get("method") == method for n in self.notes):
            message = self._next()
            assert "id" not in message, f"an answer nobody asked for: {message}"
            self.notes.append(message)

    def _next(self) -> dict[str, Any]:
        assert self.proc.stdout
        line = self.proc.stdout.readline()
        assert line, "the server closed its output"
        message: dict[str, Any] = json.loads(line)
        return message

    def open(self, first_id: int | str = 0) -> tuple[dict[str, Any], dict[str, Any]]:
        """initialize, initialized, tools/list: the two answers."""
        init = self.ask(first_id, "initialize", INIT_PARAMS)
        self.send({"method": "notifications/initialized"})
        return init, self.ask(f"{first_id}-tools", "tools/list")

    def close(self) -> list[dict[str, Any]]:
        """Close stdin; the messages still on stdout, and the exit code checked."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.close()
        rest = [json.loads(line) for line in self.proc.stdout if line.strip()]
        assert self.proc.wait(timeout=60) == 0
        return rest


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    Vault.init(root)
    return root


def answers_file(vault: Path) -> Path:
    return vault_cache_dir(vault) / ANSWERS_FILE


def serve_once(vault: Path, first_id: int | str = 0) -> tuple[dict[str, Any], dict[str, Any], Client]:
    client = Client(vault)
    init, tools = client.open(first_id)
    return init, tools, client


def test_the_next_start_gives_the_same_opening_and_serves_the_rest(vault: Path) -> None:
    init1, tools1, first = serve_once(vault)
    prompts1 = first.ask(1, "prompts/list")
    assert first.close() == []
    kept = json.loads(answers_file(vault).read_text(encoding="utf-8"))
    assert kept["identity"] == identity(vault) and len(kept["answers"]) == 3

    init2, tools2, second = serve_once(vault, first_id="a")
    assert init2["result"] == init1["result"] and tools2["result"] == tools1["result"]
    assert second.ask("b", "prompts/list")["result"] == prompts1["result"]
    # the SDK was given the same opening: its session is initialized and serves tools
    written = second.ask("c", "tools/call", {"name": "rlm_remember", "arguments": {"content": "kept"}})
    assert written["result"]["structuredContent"]["id"]
    assert second.ask("d", "tools/list")["result"] == tools1["result"]
    assert second.close() == [] and second.notes == []


def test_a_stale_kept_list_is_corrected_and_announced(vault: Path) -> None:
    _, tools, first = serve_once(vault)
    first.close()
    path = answers_file(vault)
    kept = json.loads(path.read_text(encoding="utf-8"))
    key = next(k for k, v in kept["answers"].items() if "tools" in v)
    stale = json.loads(json.dumps(kept["answers"][key]))
    stale["tools"] = stale["tools"][:3]
    kept["answers"][key] = stale
    path.write_text(json.dumps(kept), encoding="utf-8")

    _, given, second = serve_once(vault)
    assert given["result"] == stale  # what the file held went out first...
    second.notified("notifications/tools/list_changed")
    assert json.loads(path.read_text(encoding="utf-8"))["answers"][key] == tools["result"]
    assert second.ask(2, "tools/list")["result"] == tools["result"]  # ...and the SDK's answer after
    second.close()


def test_answers_kept_for_other_code_or_another_remote_are_not_given(vault: Path) -> None:
    _, tools, first = serve_once(vault)
    first.close()
    path = answers_file(vault)
    kept = json.loads(path.read_text(encoding="utf-8"))
    for answer in kept["answers"].values():
        answer["instructions"] = "stale"
        answer.pop("tools", None)
    kept["identity"] = "an older rlm-vault"
    path.write_text(json.dumps(kept), encoding="utf-8")
    init, given, second = serve_once(vault)
    assert given["result"] == tools["result"] and init["result"]["instructions"] != "stale"
    second.close()
    assert second.notes == []

    subprocess.run(["git", "remote", "add", "origin", str(vault)], cwd=vault, check=True)
    assert identity(vault) != json.loads(path.read_text(encoding="utf-8"))["identity"]
    _, with_remote, third = serve_once(vault)
    third.close()
    names = {t["name"] for t in with_remote["result"]["tools"]}
    assert "rlm_sync" in names and "rlm_sync" not in {t["name"] for t in tools["result"]["tools"]}


def test_a_2026_client_opening_with_server_discover_is_answered_too(vault: Path) -> None:
    """The SDK's own client in its default mode opens with `server/discover`, each request carrying its
    envelope: those answers are kept as well, and a stale one is replaced for the next time it asks."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "rlm_vault", "serve"],
        env={**os.environ, "RLM_VAULT_DIR": str(vault)},
    )

    async def names() -> list[str]:
        async with McpClient(params) as client:
            listed = [t.name for t in (await client.list_tools()).tools]
            assert not (await client.call_tool("rlm_recall", {"query": "x"})).is_error
            return listed

    everything = anyio.run(names)
    path = answers_file(vault)
    kept = json.loads(path.read_text(encoding="utf-8"))
    assert len(kept["answers"]) == 2  # server/discover, tools/list
    key = next(k for k, v in kept["answers"].items() if "tools" in v)
    kept["answers"][key]["tools"] = kept["answers"][key]["tools"][:2]
    path.write_text(json.dumps(kept), encoding="utf-8")

    assert anyio.run(names) == everything[:2]  # given from the file...
    assert anyio.run(names) == everything  # ...and the SDK's answer kept for the next start


@pytest.mark.parametrize("damage", ["not json", "[1, 2]", '{"identity": 3}', "{}"])
def test_a_damaged_answers_file_is_ignored_then_replaced(vault: Path, damage: str) -> None:
    _, tools, first = serve_once(vault)
    first.close()
    path = answers_file(vault)
    path.write_text(damage, encoding="utf-8")
    _, given, second = serve_once(vault)
    second.close()
    assert given["result"] == tools["result"]
    assert json.loads(path.read_text(encoding="utf-8"))["identity"] == identity(vault)


def test_a_vault_that_does_not_exist_gets_no_cache_folder(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    init, _, client = serve_once(missing)
    client.close()
    assert init["result"]["serverInfo"]["name"] == "rlm-vault"
    assert not missing.exists() and not vault_cache_dir(missing).exists()


def test_the_wire_is_not_the_process_fds(vault: Path) -> None:
    """Children and stray prints see the null device and stderr, not the client's pipes."""
    client = Client(vault)
    client.open()
    pid = client.proc.pid
    stdin, stdout, stderr = (os.readlink(f"/proc/{pid}/fd/{n}") for n in (0, 1, 2))
    client.close()
    assert stdin == os.devnull and stdout == stderr


# -- the door alone, without processes ---------------------------------------------------------------


class Door:
    def __init__(self, answers: Answers) -> None:
        self.sent: list[dict[str, Any]] = []
        self.door = FrontDoor(answers, lambda line: self.sent.append(json.loads(line)))

    def take(self, message: dict[str, Any]) -> None:
        self.door.take(json.dumps({"jsonrpc": "2.0", **message}))

    def to_sdk(self) -> list[dict[str, Any]]:
        lines = []
        while not self.door._to_sdk.empty():
            lines.append(json.loads(self.door.read_line()))
        return lines

    def from_sdk(self, message: dict[str, Any]) -> None:
        self.door.emit(json.dumps({"jsonrpc": "2.0", **message}))


@pytest.fixture
def answers(tmp_path: Path) -> Answers:
    return Answers(tmp_path / ANSWERS_FILE, "one")


def test_the_door_learns_the_sdks_answers_then_gives_them(answers: Answers) -> None:
    first = Door(answers)
    first.take({"id": 1, "method": "initialize", "params": INIT_PARAMS})
    assert first.sent == [] and first.to_sdk()[0]["id"] == 1
    first.from_sdk({"id": 1, "result": {"protocolVersion": "x"}})
    assert first.sent == [{"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "x"}}]

    again = Door(Answers(answers.path, "one"))
    again.take({"id": 7, "method": "initialize", "params": INIT_PARAMS})
    assert again.sent == [{"jsonrpc": "2.0", "id": 7, "result": {"protocolVersion": "x"}}]
    private = again.to_sdk()[0]
    assert private["id"].startswith(PRIVATE) and private["params"] == INIT_PARAMS
    again.from_sdk({"id": private["id"], "result": {"protocolVersion": "x"}})
    assert len(again.sent) == 1  # the SDK's copy of the answer is not sent twice


def test_the_opening_ends_at_the_first_other_request(answers: Answers) -> None:
    key = question_key("", "ping", {})
    answers.put(key, {})
    door = Door(answers)
    door.take({"id": 1, "method": "ping", "params": {}})
    door.take({"id": 2, "method": "subscriptions/listen", "params": {}})  # (Claude Code's opening)
    door.take({"id": 3, "method": "ping", "params": {}})
    door.take({"id": 4, "method": "tools/call", "params": {"name": "rlm_status"}})
    door.take({"id": 5, "method": "ping", "params": {}})
    assert [m["id"] for m in door.sent] == [1, 3]
    assert [m["id"] for m in door.to_sdk()] == [f"{PRIVATE}1", 2, f"{PRIVATE}2", 4, 5]


def test_an_error_from_the_sdk_forgets_the_answer(answers: Answers) -> None:
    key = question_key(question_key("", "initialize", INIT_PARAMS), "prompts/list", {})
    answers.put(key, {"prompts": []})
    door = Door(answers)
    door.take({"id": 1, "method": "initialize", "params": INIT_PARAMS})
    door.take({"id": 2, "method": "prompts/list", "params": {}})
    assert door.sent == [{"jsonrpc": "2.0", "id": 2, "result": {"prompts": []}}]
    private = door.to_sdk()[1]["id"]
    door.from_sdk({"id": private, "error": {"code": -32601, "message": "no"}})
    assert door.sent[-1] == {"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"}
    assert answers.get(key) is None and Answers(answers.path, "one").get(key) is None
