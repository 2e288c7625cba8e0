"""Tests for rlm_vault.transcript: real Claude Code 2.1.328 transcripts plus generated edge cases."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from rlm_vault.transcript import MAX_TEXT_BYTES, Conversation, parse_transcript, read_transcript

DATA = Path(__file__).parent / "data" / "transcripts"
MANUAL = DATA / "transcript_mcp_then_manual_compact.jsonl"
AUTO = DATA / "transcript_auto_compact.jsonl"


def _lines_until_boundary(path: Path) -> str:
    """The file as the PreCompact hook sees it: everything before the compaction is written."""
    lines = path.read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if '"compact_boundary"' in line)
    return "".join(lines[:cut])


def _user(text: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "user", "message": {"role": "user", "content": text}, **extra}


def _assistant(*blocks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "assistant", "message": {"role": "assistant", "content": list(blocks)}, **extra}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _jsonl(*records: Any) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _boundary(uuid: str = "b", preserved: list[str] | None = None) -> dict[str, Any]:
    meta = {"trigger": "manual", "preservedMessages": {"uuids": preserved or []}}
    return {"type": "system", "subtype": "compact_boundary", "uuid": uuid, "compactMetadata": meta}


def _compact_summary(summary: str) -> dict[str, Any]:
    body = (
        "This session is being continued from a previous conversation.\n\n<system-reminder>\nx\n"
        f"</system-reminder>\nSummary:\n{summary}\n\nIf you need specific details from before compaction, read it."
    )
    return _user(body, isCompactSummary=True, isVisibleInTranscriptOnly=True)


# -- real transcripts ---------------------------------------------------------------------------------------


def test_pre_compact_view_of_a_tool_session() -> None:
    conv = parse_transcript(_lines_until_boundary(MANUAL))
    assert conv.session_id == "463911af-d12a-4e34-8092-1272b9adcdb3"
    assert conv.cwd == "/home/dev/proj"
    assert conv.text == (
        '**User:** CALL_TOOL mcp__demo__remember {"text": "cats are nice"}\n\n'
        '**Assistant:** → mcp__demo__remember(text="cats are nice")\n'
        '  ← {"result":"stored: cats are nice"}\n'
        'TOOL_RESULT_SEEN: {"result":"stored: cats are nice"}'
    )
    assert conv.turns == 2
    assert conv.summary_line() == 'CALL_TOOL mcp__demo__remember {"text": "cats are nice"}'
    assert conv.first_timestamp == "2026-11-24T15:38:37.515Z"
    assert conv.last_uuid is not None


def test_after_manual_compact_only_the_summary_and_preserved_messages_remain() -> None:
    conv = read_transcript(MANUAL)
    assert conv.text.startswith("## Earlier summary\n\nFAKE COMPACTION SUMMARY: the user said hello")
    assert "TOOL_RESULT_SEEN" in conv.text  # preserved verbatim by the compaction
    for noise in ("/compact", "local-command", "Environment", "system-reminder", "If you need specific"):
        assert noise not in conv.text
    assert conv.last_timestamp == "2026-11-24T15:38:42.421Z"


def test_after_auto_compact_the_prompt_written_before_the_boundary_is_kept() -> None:
    conv = read_transcript(AUTO)
    assert "**User:** next prompt\n\n**Assistant:** SCRIPTED_REPLY: next prompt" in conv.text
    assert "first turn" not in conv.text  # summarised away
    assert conv.summary_line() == "next prompt"
    assert conv.session_id == "1f28d277-ed1f-41ff-a062-3e70014911a4"


def test_whole_auto_session_before_its_compaction() -> None:
    conv = parse_transcript(_lines_until_boundary(AUTO))
    speakers = [line.split(":**")[0] for line in conv.text.split("\n\n")]
    assert speakers == ["**User", "**Assistant", "**User", "**Assistant", "**User"]
    assert conv.turns == 5
    assert conv.summary_line() == "first turn"


# -- robustness ---------------------------------------------------------------------------------------------


def test_missing_file_is_an_empty_conversation(tmp_path: Path) -> None:
    conv = read_transcript(tmp_path / "nope.jsonl")
    assert conv == Conversation()
    assert conv.summary_line() == ""


def test_a_directory_is_an_empty_conversation(tmp_path: Path) -> None:
    assert read_transcript(tmp_path) == Conversation()


def test_malformed_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    good = _jsonl(_user("first"), _assistant(_text("answer")))
    junk = [
        b"",
        b"not json",
        b'{"type":"user", "message": ',
        b"[1,2,3]",
        b'"type":"user"',
        b"\xff\xfe\x00garbage",
    ]
    junk += [b'{"type":"user","message":"a string"}', b'{"type":"assistant","message":{"content":7}}']
    path.write_bytes(b"\n".join(junk) + b"\n" + good.encode() + b'{"type":"user","message":{"content":"trunc')
    conv = read_transcript(path)
    assert conv.text == "**User:** first\n\n**Assistant:** answer"


def test_bookkeeping_meta_thinking_and_reminders_are_dropped() -> None:
    data = _jsonl(
        {"type": "queue-operation", "operation": "enqueue", "content": "QUEUED"},
        {"type": "attachment", "attachment": {"type": "environment"}, "content": "ATTACHED"},
        {"type": "api-request", "body": {"type": "user"}},
        {"type": "last-prompt", "lastPrompt": "LASTPROMPT"},
        _user("<local-command-caveat>CAVEAT</local-command-caveat>", isMeta=True),
        _user("<system-reminder>REMINDER</system-reminder>real question"),
        _assistant({"type": "thinking", "thinking": "THOUGHT"}, {"type": "redacted_thinking", "data": "X"}),
        _assistant(_text("real answer")),
        {"type": "system", "subtype": "stop_hook_summary", "content": "STOPHOOK"},
        _assistant(_text("SIDECHAIN"), isSidechain=True),
        _user("<command-name>/model</command-name><command-args>opus</command-args>"),
        _user("<local-command-stdout>STDOUT</local-command-stdout>"),
    )
    conv = parse_transcript(data)
    assert conv.text == "**User:** real question\n\n**Assistant:** real answer"
    assert conv.turns == 2


def test_tool_calls_are_brief() -> None:
    long_command = "echo " + "x" * 500
    result = [{"type": "tool_result", "tool_use_id": "t1", "content": "\n\nfirst line\nsecond line"}]
    failed = [
        {
            "type": "tool_result",
            "tool_use_id": "t2",
            "is_error": True,
            "content": [{"type": "text", "text": "boom: " + "y" * 400}],
        }
    ]
    data = _jsonl(
        _user("run it"),
        _assistant(
            _text("Running."),
            {
                "type": "tool_use",
                "id": "t1",
                "name": "Bash",
                "input": {"command": long_command, "description": "say\nx"},
            },
        ),
        _user(result),
        _assistant({"type": "tool_use", "id": "t2", "name": "Read", "input": {"file_path": "/a/b.py"}}),
        _user(failed),
        _assistant(_text("Done.")),
    )
    lines = parse_transcript(data).text.split("\n")
    assert lines[0] == "**User:** run it"
    assert lines[2] == "**Assistant:** Running."
    assert lines[3].startswith('→ Bash(command="echo xxx') and lines[3].endswith("…)")
    assert len(lines[3]) < 140 and "\n" not in lines[3]
    assert lines[4] == "  ← first line"
    assert lines[5] == '→ Read(file_path="/a/b.py")'
    assert lines[6].startswith("  ← error: boom: yyy") and len(lines[6]) < 180
    assert lines[7] == "Done."


def test_only_the_last_boundary_counts_and_its_summary_leads() -> None:
    data = _jsonl(
        _user("old one", uuid="u1"),
        _boundary("b1"),
        _compact_summary("first summary"),
        _user("middle", uuid="u2"),
        _assistant(_text("kept reply"), uuid="a2"),
        _boundary("b2", preserved=["a2"]),
        _compact_summary("second summary"),
        _user("newest", uuid="u3", timestamp="2026-01-01T00:00:00Z"),
    )
    conv = parse_transcript(data)
    assert conv.text == (
        "## Earlier summary\n\nsecond summary\n\n## Conversation\n\n"
        "**Assistant:** kept reply\n\n**User:** newest"
    )
    assert conv.last_uuid == "u3"
    assert conv.last_timestamp == "2026-01-01T00:00:00Z"


def test_long_summary_is_cut() -> None:
    conv = parse_transcript(_jsonl(_boundary(), _compact_summary("s" * 10_000), _user("hi")))
    section = conv.text.split("## Conversation")[0]
    assert len(section) < 1_600 and "…" in section


def test_summary_line_is_one_short_line() -> None:
    conv = parse_transcript(_jsonl(_user("  fix   the\nlogin " + "bug " * 60)))
    line = conv.summary_line()
    assert line.startswith("fix the login bug bug") and line.endswith("…")
    assert len(line) <= 100 and "\n" not in line


def test_huge_line_is_parsed_and_its_result_cut(tmp_path: Path) -> None:
    big = [{"type": "tool_result", "tool_use_id": "t", "content": "z" * 20_000_000}]
    path = tmp_path / "big.jsonl"
    path.write_text(_jsonl(_user("read the log"), _user(big), _assistant(_text("it is long"))))
    started = time.perf_counter()
    conv = read_transcript(path)
    assert time.perf_counter() - started < 20.0  # a guard against quadratic work, not a benchmark
    assert "  ← zzz" in conv.text and len(conv.text) < 400


def test_text_is_capped_keeping_the_newest_turns() -> None:
    records = [_user(f"prompt {i} " + "p" * 2_000) for i in range(200)] + [_user("the very last")]
    conv = parse_transcript(_jsonl(*records), max_bytes=50_000)
    assert conv.truncated
    assert conv.text.startswith("_[Earlier text cut: ")
    assert conv.text.endswith("the very last")
    assert len(conv.text.encode()) < 50_200
    assert conv.summary_line().startswith("prompt 0 ")  # the first prompt survives the cut


def test_default_cap_keeps_a_snapshot_under_two_mib() -> None:
    records = [_user("x" * 100_000) for _ in range(40)]  # 4 MB of prompts
    conv = parse_transcript(_jsonl(*records))
    assert conv.truncated
    assert len(conv.text.encode()) <= MAX_TEXT_BYTES + 200 < 2 * 1024 * 1024


def test_unicode_survives() -> None:
    conv = parse_transcript(_jsonl(_user("héllo 日本語 🎉"), _assistant(_text("réponse"))))
    assert conv.text == "**User:** héllo 日本語 🎉\n\n**Assistant:** réponse"


# -- speed ----------------------------------------------------------------------------------------------------


def _realistic_transcript(size: int, seed: int = 7) -> bytes:
    """A transcript shaped like a real one: big attachment/api-request lines, prompts, tools, thinking."""
    rng = random.Random(seed)
    words = [
        "the",
        "a",
        "vault",
        "note",
        "commit",
        "index",
        "search",
        "chunk",
        "hook",
        "session",
        "token",
        "file",
        "test",
        "error",
        "fix",
    ]
    out: list[bytes] = []
    total = 0
    n = 0
    while total < size:
        n += 1
        prose = " ".join(rng.choice(words) for _ in range(rng.randint(10, 200)))
        records: list[Any] = [
            {"type": "queue-operation", "operation": "enqueue", "content": prose[:80]},
            _user(prose, uuid=f"u{n}", sessionId="s", cwd="/p", timestamp=f"t{n}"),
            {"type": "attachment", "attachment": {"type": "deferred_tools_delta", "blob": prose * 20}},
            {"type": "api-request", "body": {"messages": [{"role": "user", "content": prose * 5}]}},
            _assistant({"type": "thinking", "thinking": prose * 2}, _text(prose), uuid=f"a{n}"),
            _assistant(
                {"type": "tool_use", "id": f"t{n}", "name": "Bash", "input": {"command": prose[:300]}}
            ),
            _user([{"type": "tool_result", "tool_use_id": f"t{n}", "content": prose * 8}]),
            {"type": "system", "subtype": "stop_hook_summary", "hookInfos": []},
        ]
        chunk = _jsonl(*records).encode()
        out.append(chunk)
        total += len(chunk)
    return b"".join(out)


def test_five_megabytes_parse_without_a_blowup(tmp_path: Path) -> None:
    """A guard against quadratic parsing, not a benchmark (bench.py times the hook on 5 MB)."""
    path = tmp_path / "five.jsonl"
    path.write_bytes(_realistic_transcript(5 * 1024 * 1024))
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        conv = read_transcript(path)
        timings.append(time.perf_counter() - started)
    assert conv.turns > 100
    assert min(timings) < 5.0, timings
