"""`rlm-vault serve`'s stdio front door: a client's opening questions are answered while the SDK loads.

Importing the MCP SDK is most of a cold start (0.5-1.5 s), and a client waits for its opening questions
(`initialize` or `server/discover`, then `tools/list` and the other lists) before it goes on. Their
answers depend only on the question, this server's code and the vault's git config, so the SDK's own
answers are kept in the vault's cache folder (`opening.json`) and given again at the next start, from a
reader thread, while the main thread imports the SDK. Every other message waits for the SDK, in the
order it came.

The SDK still sees the whole conversation: a question answered early reaches it under a private id, and
if its answer differs from the one given, the kept answer is replaced and a changed list is announced
with its `list_changed` notification (on a connection opened by `initialize`; a 2026-07-28 client, whose
requests each stand alone, gets the new list when it next asks). Nothing read from the file runs: it
only ever goes back to the client as data. This module never imports `mcp`; `mcp_server.serve_lines`
does, once the door is open.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import __version__
from .allocator import tune_allocator
from .config import MARKER, Config, vault_cache_dir

__all__ = ["ANSWERS_FILE", "Answers", "FrontDoor", "identity", "serve"]

ANSWERS_FILE = "opening.json"
KEPT = 32  # answers kept per vault: a few clients, a few protocol versions each
PRIVATE = "rlm-vault:"  # id prefix of the questions asked again of the SDK
OPENING = frozenset(
    {"initialize", "server/discover", "tools/list", "prompts/list", "resources/templates/list", "ping"}
)
# Requests a client sends in its opening whose answers are not kept (a stream of notifications, the notes,
# a log level): they go to the SDK and the opening goes on.
PASSING = frozenset({"subscriptions/listen", "resources/list", "logging/setLevel"})
CHANGED = {
    "tools/list": "notifications/tools/list_changed",
    "prompts/list": "notifications/prompts/list_changed",
    "resources/templates/list": "notifications/resources/list_changed",
}


def identity(vault: Path) -> str:
    """What the opening answers depend on besides the question: this package's and the SDK's files, the
    Python, and the vault's git config (a remote adds rlm_sync). Stats only: no file is read."""
    files = sorted(Path(__file__).parent.glob("*.py"))
    for name in ("mcp", "mcp_types"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            files.append(Path(spec.origin))
    git = vault / ".git"
    files.append(git / "config" if git.is_dir() else git)
    parts = [__version__, sys.version, *(f"{p}:{_stamp(p)}" for p in files)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _stamp(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "-"
    return f"{st.st_mtime_ns}:{st.st_size}"


def question_key(context: str, method: str, params: Any) -> str:
    """The key of one question: its method and exact params, after the `initialize` that opened it."""
    text = json.dumps([context, method, params], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Answers:
    """The SDK's answers to opening questions, kept in one JSON file for one `identity`.

    A file of another identity, or one that is not what this class writes, is an empty set of answers."""

    def __init__(self, path: Path, ident: str, vault: Path | None = None) -> None:
        self.path, self._identity, self._vault = path, ident, vault
        self._lock = threading.Lock()
        self._results: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("identity") != self._identity:
            return {}
        results = data.get("answers")
        if not isinstance(results, dict):
            return {}
        return {k: v for k, v in results.items() if isinstance(k, str) and isinstance(v, dict)}

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._results.get(key)
        return found if isinstance(found, dict) else None

    def put(self, key: str, result: Any) -> None:
        """Keep `result` for `key` (None forgets it); the file is rewritten when something changed."""
        with self._lock:
            if self._results.get(key) == result:
                return
            self._results.pop(key, None)
            if result is not None:
                self._results[key] = result
            while len(self._results) > KEPT:
                del self._results[next(iter(self._results))]
            self._save({"identity": self._identity, "answers": dict(self._results)})

    def _save(self, data: dict[str, Any]) -> None:
        # A path that is no vault (a typo in RLM_VAULT_DIR) gets no cache folder.
        if self._vault is not None and not (self._vault / MARKER).is_file():
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)


class Wire:
    """The client's two pipes, moved off fds 0 and 1: a child process or a stray print reads the null
    device and writes to stderr instead of corrupting the protocol."""

    def __init__(self) -> None:
        self._in = os.fdopen(_moved(0, os.O_RDONLY), "rb")
        self._out = os.fdopen(_moved(1, os.O_WRONLY), "wb")
        self._lock = threading.Lock()

    def lines(self) -> Iterator[str]:
        for raw in self._in:
            yield raw.decode("utf-8", errors="replace")

    def send(self, line: str) -> None:
        with self._lock:
            try:
                self._out.write(line.rstrip("\n").encode("utf-8") + b"\n")
                self._out.flush()
            except BrokenPipeError:
                pass  # the client has gone; its end of stdin closes next


def _moved(fd: int, mode: int) -> int:
    """A private copy of `fd`; fd 0 then reads the null device, fd 1 writes to stderr."""
    private = os.dup(fd)
    os.set_inheritable(private, False)
    if fd == 0:
        stand_in = os.open(os.devnull, mode)
        os.dup2(stand_in, 0)
        os.close(stand_in)
    else:
        os.dup2(2, fd)
    return private


class FrontDoor:
    """Answers the opening questions it has answers for, and hands every other line to the SDK in order.

    The opening lasts until the client asks something outside `OPENING` and `PASSING` (a tool call)."""

    def __init__(self, answers: Answers, send: Callable[[str], None]) -> None:
        self._answers, self._send = answers, send
        self._to_sdk: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._opening, self._context = True, ""
        self._asked: dict[str, tuple[str, str, Any]] = {}  # private id -> key, method to announce, answer
        self._learning: dict[str, str] = {}  # a client's request id (as JSON) -> key of its question

    # -- from the client -------------------------------------------------------------------------------

    def take(self, line: str) -> None:
        """One line from the client."""
        message = _request(line) if self._opening else None
        if message is None:
            self._to_sdk.put(line)
            return
        method, params = message["method"], message.get("params")
        if method not in OPENING:
            self._opening = method in PASSING
            self._to_sdk.put(line)
            return
        key = question_key(self._context, method, params)
        if method == "initialize" and not self._context:
            self._context = key
        with self._lock:
            answer = self._answers.get(key)
            if answer is None:
                self._learning[json.dumps(message["id"])] = key
            else:
                private = f"{PRIVATE}{next(self._ids)}"
                announced = method if self._context else ""  # only a handshake connection has notifications
                self._asked[json.dumps(private)] = (key, announced, answer)
        if answer is None:
            self._to_sdk.put(line)
            return
        self._send(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": answer}))
        self._to_sdk.put(json.dumps({**message, "id": private}))

    def closed(self) -> None:
        """The client closed its end."""
        self._to_sdk.put("")

    def read_line(self) -> str:
        """The SDK's next line ("" at the end), waiting for one."""
        return self._to_sdk.get()

    # -- from the SDK ----------------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        """One message from the SDK: to the client, unless it answers a question asked again."""
        with self._lock:
            watching = bool(self._asked or self._learning)
        reply = _response(line) if watching else None
        if reply is not None:
            reply_id, result = reply
            with self._lock:
                asked = self._asked.pop(reply_id, None)
                learned = self._learning.pop(reply_id, None)
            if asked is not None:
                self._check(*asked, result)
                return
            if learned is not None:
                self._answers.put(learned, result)
        self._send(line)

    def _check(self, key: str, announced: str, given: Any, result: Any) -> None:
        if result == given:
            return
        self._answers.put(key, result)
        if announced in CHANGED:
            self._send(json.dumps({"jsonrpc": "2.0", "method": CHANGED[announced]}))


def _request(line: str) -> dict[str, Any] | None:
    """A client's request, or None for a notification, a response or a line that is no JSON."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return None
    return message if isinstance(message.get("id"), str | int) else None


def _response(line: str) -> tuple[str, Any] | None:
    """(id as JSON, result or None for an error) of a response line; None for anything else."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "method" in message or "id" not in message:
        return None
    return json.dumps(message["id"]), message.get("result")


def serve(config: Config) -> None:
    """Serve the vault of `config` over stdio (what Claude Code starts)."""
    tune_allocator()  # before any thread starts
    wire = Wire()
    answers = Answers(vault_cache_dir(config.vault) / ANSWERS_FILE, identity(config.vault), config.vault)
    door = FrontDoor(answers, wire.send)

    def read() -> None:
        for line in wire.lines():
            door.take(line)
        door.closed()

    threading.Thread(target=read, name="rlm-vault-stdin", daemon=True).start()
    from .mcp_server import serve_lines

    serve_lines(config, door.read_line, door.emit)
