"""The fake Messages API on its own (reply policy, SSE over HTTP), then driven by the real Claude Code CLI."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_model import FakeModel, last_user_text, reply_for

RunClaude = Callable[..., dict[str, Any]]


def _body(*messages: dict[str, Any], stream: bool = True) -> dict[str, Any]:
    env_block = {"role": "system", "content": "environment"}  # what 2.1.328 appends after the user turn
    return {"model": "m", "stream": stream, "messages": [*messages, env_block]}


def _user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


# -- reply policy ------------------------------------------------------------------------------------------


def test_plain_prompt_is_echoed_without_reminders() -> None:
    body = _body(_user(_text("<system-reminder>\nctx\n</system-reminder>"), _text("hello")))
    assert last_user_text(body) == "hello"
    assert reply_for(body).content == ({"type": "text", "text": "SCRIPTED_REPLY: hello"},)


def test_call_tool_gives_a_tool_use_block() -> None:
    reply = reply_for(_body(_user(_text('CALL_TOOL mcp__x__remember {"text": "cats"}'))))
    assert reply.stop_reason == "tool_use"
    (block,) = reply.content
    assert (block["type"], block["name"], block["input"]) == (
        "tool_use",
        "mcp__x__remember",
        {"text": "cats"},
    )
    assert reply_for(_body(_user(_text("CALL_TOOL Bash")))).content[0]["input"] == {}


def test_tool_result_is_reported_back() -> None:
    result = {"type": "tool_result", "tool_use_id": "t", "content": '{"result":"ok"}'}
    listed = {"type": "tool_result", "tool_use_id": "u", "content": [_text("a"), _text("b")]}
    assert reply_for(_body(_user(result))).content[0]["text"] == 'TOOL_RESULT_SEEN: {"result":"ok"}'
    assert reply_for(_body(_user(listed))).content[0]["text"] == "TOOL_RESULT_SEEN: a\nb"


def test_compaction_request_gets_a_summary_with_the_instructions() -> None:
    prompt = "CRITICAL: Respond with TEXT ONLY. ... a detailed summary of the conversation.\n\nAdditional Instructions:\nkeep facts"
    text = reply_for(_body(_user(_text("CALL_TOOL x"), _text(prompt)))).content[0]["text"]
    assert text == "<summary>FAKE COMPACTION SUMMARY: instructions: keep facts</summary>"


def test_reported_input_tokens() -> None:
    assert reply_for(_body(_user(_text("REPORT_INPUT_TOKENS=150000 go")))).input_tokens == 150000


# -- over HTTP ---------------------------------------------------------------------------------------------


def _post(url: str, body: dict[str, Any]) -> tuple[str, bytes]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read()


def _sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        events.append((name[7:], json.loads(data[6:])))
    return events


def test_streamed_reply_has_the_shape_claude_code_accepts(tmp_path: Path) -> None:
    with FakeModel(tmp_path / "log.jsonl") as fake:
        kind, raw = _post(fake.url + "/v1/messages?beta=true", _body(_user(_text('CALL_TOOL t {"a": 1}'))))
    assert kind == "text/event-stream"
    names = [name for name, _ in _sse_events(raw)]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    events = dict(_sse_events(raw))
    assert events["content_block_start"]["content_block"]["input"] == {}
    assert events["content_block_delta"]["delta"] == {"type": "input_json_delta", "partial_json": '{"a": 1}'}
    assert events["message_delta"]["delta"]["stop_reason"] == "tool_use"
    assert fake.message_requests()[0]["messages"][0]["content"][0]["text"] == 'CALL_TOOL t {"a": 1}'
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["method"], r["path"]) for r in logged] == [("POST", "/v1/messages?beta=true")]


def test_non_streamed_reply_and_side_endpoints() -> None:
    with FakeModel() as fake:
        kind, raw = _post(fake.url + "/v1/messages", _body(_user(_text("hi")), stream=False))
        _, tokens = _post(fake.url + "/v1/messages/count_tokens", _body(_user(_text("hi"))))
    assert kind == "application/json"
    assert json.loads(raw)["content"] == [{"type": "text", "text": "SCRIPTED_REPLY: hi"}]
    assert json.loads(tokens) == {"input_tokens": 100}


# -- with the real CLI -------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_claude_print_mode_talks_to_the_fake(
    run_claude: RunClaude, claude_env: dict[str, str], fake_model: FakeModel
) -> None:
    result = run_claude(["-p", "hello"], claude_env)
    assert (result["is_error"], result["result"]) == (False, "SCRIPTED_REPLY: hello")
    (request,) = fake_model.requests
    assert (request.method, request.path) == ("POST", "/v1/messages?beta=true")
    assert request.body["stream"] is True
    assert last_user_text(request.body) == "hello"


@pytest.mark.e2e
def test_session_start_context_reaches_the_model(
    run_claude: RunClaude, claude_env: dict[str, str], fake_model: FakeModel, tmp_path: Path
) -> None:
    hook = tmp_path / "session_start.py"
    hook.write_text(
        "import json, sys\n"
        "event = json.load(sys.stdin)\n"
        "text = 'REMEMBERED-FACT-42 from ' + event['hook_event_name'] + ':' + event['source']\n"
        "print(json.dumps({'hookSpecificOutput': {'hookEventName': 'SessionStart', 'additionalContext': text}}))\n"
    )
    settings = tmp_path / "settings.json"
    command = f"{sys.executable} {hook}"
    settings.write_text(
        json.dumps({"hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": command}]}]}})
    )
    result = run_claude(["-p", "hello", "--settings", str(settings)], claude_env)
    assert result["result"] == "SCRIPTED_REPLY: hello"
    first = json.dumps(fake_model.message_requests()[0])
    assert "REMEMBERED-FACT-42 from SessionStart:startup" in first
