"""A scripted fake of the Anthropic Messages API on loopback, so the real Claude Code CLI runs offline.

Stdlib only. Replies are streamed as server-sent events in the exact shape Claude Code 2.1.328 accepts
(shared/claude-code/sse_example.txt); every request is kept so tests can assert what the model was sent.
Reply policy (shared/notes/claude-code-e2e.md section 1), first match wins:
  1. a compaction request              -> "<summary>FAKE COMPACTION SUMMARY: ...</summary>"
  2. a tool_result in the last message -> "TOOL_RESULT_SEEN: <result text>"
  3. "CALL_TOOL <name> [<json>]"       -> a tool_use block for that tool with that input
  4. anything else                     -> "SCRIPTED_REPLY: <prompt>"
"REPORT_INPUT_TOKENS=<n>" in a prompt makes that reply report usage.input_tokens=n (to trigger auto-compact).
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

__all__ = ["FakeModel", "Reply", "last_user_text", "reply_for", "sse_body"]

_REMINDER_RE = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
_CALL_TOOL_RE = re.compile(r"CALL_TOOL\s+(\S+)(?:\s+(\{.*\}))?", re.DOTALL)
_TOKENS_RE = re.compile(r"REPORT_INPUT_TOKENS=(\d+)")
# Pinned to the wording of Claude Code 2.1.328's compaction prompt; a newer build may change it.
_COMPACT_MARKERS = ("CRITICAL: Respond with TEXT ONLY", "detailed summary of the conversation")
_INSTRUCTIONS_MARKER = "Additional Instructions:"


@dataclass(frozen=True, slots=True)
class Reply:
    """One assistant message: its content blocks, stop reason and reported input tokens."""

    content: tuple[dict[str, Any], ...]
    stop_reason: str = "end_turn"
    input_tokens: int = 100


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request the fake received; `body` is the parsed JSON (None when it was not JSON)."""

    method: str
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


# -- reply policy (pure) ------------------------------------------------------------------------------------


def reply_for(body: dict[str, Any]) -> Reply:
    """The scripted reply to a /v1/messages request body."""
    message = _last_user_message(body)
    text = _message_text(message)
    tokens = _reported_tokens(text)
    if any(marker in text for marker in _COMPACT_MARKERS):
        return _text_reply(f"<summary>FAKE COMPACTION SUMMARY: {_instructions(text)}</summary>", tokens)
    results = _tool_results(message)
    if results:
        return _text_reply("TOOL_RESULT_SEEN: " + "\n".join(results), tokens)
    call = _CALL_TOOL_RE.search(text)
    if call:
        return _tool_reply(call.group(1), call.group(2), tokens)
    return _text_reply(f"SCRIPTED_REPLY: {text}", tokens)


def last_user_text(body: dict[str, Any]) -> str:
    """The prompt text of the last user message, without <system-reminder> blocks."""
    return _message_text(_last_user_message(body))


def _last_user_message(body: dict[str, Any]) -> dict[str, Any]:
    # Claude Code 2.1.328 ends `messages` with a role:"system" environment message after the user turn.
    messages = body.get("messages") or []
    return next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _message_text(message: dict[str, Any]) -> str:
    texts = [b.get("text", "") for b in _blocks(message) if b.get("type") == "text"]
    return _REMINDER_RE.sub("", "\n".join(texts)).strip()


def _tool_results(message: dict[str, Any]) -> list[str]:
    return [_result_text(b.get("content")) for b in _blocks(message) if b.get("type") == "tool_result"]


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
    return content if isinstance(content, str) else json.dumps(content)


def _instructions(text: str) -> str:
    at = text.find(_INSTRUCTIONS_MARKER)
    custom = text[at + len(_INSTRUCTIONS_MARKER) :].strip() if at >= 0 else ""
    return f"instructions: {custom}" if custom else "no custom instructions"


def _reported_tokens(text: str) -> int:
    found = _TOKENS_RE.search(text)
    return int(found.group(1)) if found else 100


def _text_reply(text: str, tokens: int) -> Reply:
    return Reply(({"type": "text", "text": text},), "end_turn", tokens)


def _tool_reply(name: str, raw_input: str | None, tokens: int) -> Reply:
    try:
        tool_input = json.loads(raw_input) if raw_input else {}
    except ValueError:
        tool_input = {"raw": raw_input}
    block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "input": tool_input}
    return Reply((block,), "tool_use", tokens)


# -- wire formats -------------------------------------------------------------------------------------------


def sse_body(reply: Reply, model: str) -> bytes:
    """The reply as the SSE event stream of sse_example.txt."""
    start = {"type": "message_start", "message": _message(reply, model, [])}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", start), ("ping", {"type": "ping"})]
    for index, block in enumerate(reply.content):
        events += _block_events(index, block)
    delta = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    events.append(
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 20}})
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def _block_events(index: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if block["type"] == "tool_use":
        start = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
    else:
        start = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
    return [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
        ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def _message(reply: Reply, model: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None if not content else reply.stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": 1 if not content else 20,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


# -- HTTP server --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the CLI keeps connections alive; every response sets Content-Length
    server: _Server

    def do_POST(self) -> None:
        body = self._record("POST")
        path = self.path.split("?", 1)[0]
        if path == "/v1/messages/count_tokens":
            self._send(200, "application/json", b'{"input_tokens": 100}')
        elif path == "/v1/messages" and isinstance(body, dict):
            self._messages(body)
        else:
            self._send(
                404,
                "application/json",
                b'{"type":"error","error":{"type":"not_found_error","message":"fake"}}',
            )

    def do_GET(self) -> None:
        self._record("GET")
        if self.path.split("?", 1)[0] == "/v1/models":
            self._send(200, "application/json", b'{"data": [], "has_more": false}')
        else:
            self._send(200, "application/json", b"{}")

    def do_HEAD(self) -> None:
        self._record("HEAD")
        self._send(200, "application/json", b"")

    def _messages(self, body: dict[str, Any]) -> None:
        reply = reply_for(body)
        model = str(body.get("model") or "fake-model")
        if body.get("stream"):
            self._send(200, "text/event-stream", sse_body(reply, model))
        else:
            self._send(
                200, "application/json", json.dumps(_message(reply, model, list(reply.content))).encode()
            )

    def _record(self, method: str) -> Any:
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.server.owner.record(Request(method, self.path, body, dict(self.headers.items())))
        return body

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", f"req_fake_{uuid.uuid4().hex[:12]}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean; the request log is the record


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeModel


class FakeModel:
    """The fake API server: start() binds 127.0.0.1 on a free port and serves from a daemon thread."""

    def __init__(self, log_path: Path | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._log_path = log_path
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to give the CLI as ANTHROPIC_BASE_URL."""
        if self._server is None:
            raise RuntimeError("the fake model is not started")
        return f"http://{self._address[0]}:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[Request]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def message_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the POST /v1/messages requests, oldest first."""
        return [
            r.body for r in self.requests if r.method == "POST" and r.path.split("?", 1)[0] == "/v1/messages"
        ]

    def record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)
            if self._log_path is not None:
                line = {"method": request.method, "path": request.path, "body": request.body}
                with open(self._log_path, "a", encoding="utf-8") as log:
                    log.write(json.dumps(line) + "\n")

    def start(self) -> Self:
        self._server = _Server(self._address, _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Run the fake by hand: python tests/e2e/fake_model.py [--port N] [--log FILE] [--lifetime S]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--lifetime", type=float, default=600.0, help="seconds before exiting")
    args = parser.parse_args()
    with FakeModel(args.log, port=args.port) as fake:
        print(fake.url, flush=True)
        time.sleep(args.lifetime)


if __name__ == "__main__":
    main()
