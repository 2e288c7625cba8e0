"""Hostile and malformed input: every call succeeds or raises a VaultError with a message, in bounded time,
writes nothing outside the vault, and leaves a valid git repository with a clean tree when it refuses.

Inputs: path tricks in ids and names, huge and invalid strings, hand-edited notes with YAML bombs and odd
YAML, gzip bombs in archive/, pathological regexes, and symlinks that point out of the vault.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relkit import deadline, dirty, fsck_clean, snapshot, tracked

from rlm_vault.config import Config
from rlm_vault.errors import VaultError
from rlm_vault.service import open_service

pytestmark = pytest.mark.reliability

BOUND = 10.0  # seconds any single call may take, whatever it is sent
MIB = 1024 * 1024

TRICKS = [
    "../x",
    "../../../../tmp/escaped",
    "/etc/passwd",
    "/tmp/escaped",
    "..\\..\\escaped",
    "a/../../b",
    "..",
    ".",
    "x\x00y",
    "\x00",
    "x\x1b[31mred",
    "line\nbreak",
    "tab\there",
    "\u2025escaped",
    "\uff0e\uff0e/\uff0e\uff0e/x",
    "\u2215etc\u2215passwd",
    "\u202eexe.md",
    "CON",
    "nul",
    ".git",
    ".git/config",
    ".rlm",
    "~",
    "~/x",
    "$HOME",
    "%2e%2e%2f",
    "chunks",
    "insights/../..",
    "x" * 5000,
    "é" * 300,
    "\ud800",
    "\udcff\udcfe",
    "🧠" * 70,
    " ",
    "",
    "-rf",
    "--output=/tmp/x",
    "HEAD",
    "HEAD~1",
    "@{-1}",
    "*",
    "?",
    "[a-z]",
    "a:b",
    ":(glob)**",
]
names = st.one_of(
    st.sampled_from(TRICKS),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Po", "Sm"]), max_size=20),
)
texts = st.one_of(
    st.sampled_from(TRICKS + ["ok text", "---\nid: ../../x\n---", "\ud83d lone half"]), st.text(max_size=200)
)
ints = st.one_of(st.sampled_from([0, -1, 1, 2**31, -(2**63), 10**18, 1000, 1001]), st.integers(-5, 50))
HYPO = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Guard:
    """One vault in a folder of its own; every call is checked against the promises above."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.root = root
        self.vault = root / "vault"
        self.config = Config(vault=self.vault, project="Hostile", embedding_model="none", **config)
        self.service = open_service(self.config)
        self.service.chunk(
            "a plain chunk to read and search\nsecond line", summary="plain", project="Hostile"
        )
        self.insight = self.service.remember("a plain insight to update and forget")["id"]
        self.planted()

    def planted(self) -> None:
        """Take the current state (files the test itself put in place) as the baseline."""
        self.outside = snapshot(self.root, self.vault)
        self.untracked = dirty(self.vault)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        before = tracked(self.vault)
        with deadline(BOUND, fn.__name__):
            try:
                result = fn(*args, **kwargs)
            except VaultError as exc:
                assert str(exc).strip(), f"{fn.__name__} raised {type(exc).__name__} without a message"
                assert dirty(self.vault) == self.untracked, f"refused {fn.__name__} left the tree dirty"
                assert tracked(self.vault) == before, f"refused {fn.__name__} changed git"
                result = exc
            else:
                self.untracked = dirty(self.vault)  # a write also commits readable hand edits on their own
        if isinstance(result, dict) and isinstance(result.get("path"), str):
            resolved = os.path.realpath(self.vault / result["path"])
            assert resolved.startswith(os.path.realpath(self.vault) + os.sep), result["path"]
        assert snapshot(self.root, self.vault) == self.outside, f"{fn.__name__} wrote outside the vault"
        return result

    def healthy(self) -> None:
        assert fsck_clean(self.vault) == ""
        assert dirty(self.vault) == []


@pytest.fixture
def guard(tmp_path: Path) -> Guard:
    return Guard(tmp_path)


@HYPO
@given(content=texts, category=names, importance=names, tags=texts, project=names)
def test_remember_and_update(
    guard: Guard, content: str, category: str, importance: str, tags: str, project: str
) -> None:
    s = guard.service
    guard.call(s.remember, content, category, importance, tags, project)
    guard.call(s.update, guard.insight, content, category, importance, tags)
    guard.call(s.update, project, content)
    guard.call(s.forget, project)
    guard.call(s.recall, content, category, importance, project)


@HYPO
@given(content=texts, summary=texts, tags=texts, project=names, ticket=names, domain=names, kind=names)
def test_chunk(
    guard: Guard, content: str, summary: str, tags: str, project: str, ticket: str, domain: str, kind: str
) -> None:
    s = guard.service
    guard.call(s.chunk, content, summary, tags, project, ticket, domain)
    guard.call(s.chunk, "fixed body " + content, summary, tags, project, ticket, domain, kind)


@HYPO
@given(note_id=names, start=ints, end=ints, limit=ints, other=names, commit=names)
def test_reads_by_id_and_history(
    guard: Guard, note_id: str, start: int, end: int, limit: int, other: str, commit: str
) -> None:
    s = guard.service
    guard.call(s.peek, note_id, start, end)
    guard.call(s.restore, note_id)
    guard.call(s.forget, note_id)
    guard.call(s.history, note_id, limit)
    guard.call(s.revert, note_id, commit)
    guard.call(s.revert, guard.insight, commit)
    guard.call(s.list_chunks, limit, other)
    guard.call(s.sessions, note_id, other, limit)


@HYPO
@given(
    query=texts,
    limit=ints,
    project=names,
    domain=names,
    date_from=names,
    date_to=names,
    entity=texts,
    fuzzy=st.booleans(),
    threshold=ints,
)
def test_search_and_grep(
    guard: Guard,
    query: str,
    limit: int,
    project: str,
    domain: str,
    date_from: str,
    date_to: str,
    entity: str,
    fuzzy: bool,
    threshold: int,
) -> None:
    s = guard.service
    guard.call(s.search, query, limit, project, domain, date_from, date_to, entity)
    guard.call(s.grep, query, limit, project, domain, fuzzy, threshold, date_from, date_to, entity)
    guard.call(s.grep, query, 5, fuzzy=fuzzy, include_archived=True)


def test_retention_and_the_end_state(guard: Guard) -> None:
    s = guard.service
    guard.call(s.retention_preview)
    guard.call(s.retention_run, True, True)
    guard.healthy()


def test_over_the_byte_limit_is_refused_even_when_few_characters(guard: Guard) -> None:
    s = guard.service
    wide = "é" * (MIB + 10)  # 1 Mi characters, 2 MiB + 20 bytes of UTF-8
    for call in (lambda: s.remember(wide), lambda: s.chunk(wide), lambda: s.update(guard.insight, wide)):
        error = guard.call(call)
        assert isinstance(error, VaultError) and "bytes" in str(error)
    assert isinstance(guard.call(s.chunk, "x" * (3 * MIB)), VaultError)
    guard.healthy()


@pytest.mark.parametrize(
    "text",
    ["\ud800", "half an emoji \ud83d", "\udcff\udcfe surrogate-escaped bytes", "nul \x00 inside", "\x00"],
)
def test_invalid_unicode_is_refused_with_a_reason(guard: Guard, text: str) -> None:
    s = guard.service
    for fn, args in ((s.remember, (text,)), (s.chunk, (text,)), (s.update, (guard.insight, text))):
        assert isinstance(guard.call(fn, *args), VaultError), (fn.__name__, args)
    # in a summary or tags a NUL may be kept (YAML escapes it); a lone surrogate may not
    for fn, args in (
        (s.chunk, ("body " + repr(text), text)),
        (s.remember, ("fine " + repr(text), "general", "medium", text)),
    ):
        result = guard.call(fn, *args)
        assert isinstance(result, VaultError) or "\x00" in text, (fn.__name__, args)
    assert s.status()["problems"] == []
    guard.healthy()


# ---------------------------------------------------------------------------------- hand-edited notes

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, n in zip("abcdefgh", "bcdefghi")
)
FRONT = {
    "alias_bomb": BILLION_LAUGHS,
    "anchor_alias": "base: &b {category: fact}\nother: *b\ncategory: fact",
    "python_object": "category: !!python/object/apply:os.system ['touch /tmp/rlm-pwned']",
    "python_name": "category: !!python/name:os.system",
    "binary_tag": "category: !!binary aGVsbG8=",
    "custom_tag": "category: !Ref fact",
    "duplicate_keys": "category: fact\ncategory: decision\nimportance: high\nimportance: low",
    "deep_flow": "tags: " + "[" * 3000 + "]" * 3000,
    "deep_block": "tags:\n" + "- " * 5000 + "x",
    "list": "- a\n- b",
    "scalar": "just a string",
    "number": "42",
    "null": "null",
    "huge": "summary: " + "y" * (70 * 1024),
    "many_keys": "\n".join(f"k{i}: v" for i in range(5000)),
    "odd_types": "category: [fact]\nimportance: 5\ntags: {a: 1}\ncreated: [2026]\nproject: {x: y}\nid: ../../../etc",
    "dates": "created: 2026-13-45T99:99:99Z\nupdated: 1970-01-01\nproject: null\ntags: null",
    "unclosed": "category: fact\nno closing fence follows",
}


def _note(front: str, body: str = "body text of a hand-edited note\n") -> bytes:
    return f"---\n{front}\n---\n{body}".encode()


@pytest.fixture
def edited(tmp_path: Path) -> Guard:
    guard = Guard(tmp_path)
    insights, chunks = guard.vault / "insights", guard.vault / "chunks" / "Hand"
    chunks.mkdir(parents=True)
    for name, front in FRONT.items():
        raw = _note(front) if name != "unclosed" else f"---\n{front}\n".encode()
        (insights / f"hand-{name}.md").write_bytes(raw)
        (chunks / f"2026-01-01_Hand_{name}.md").write_bytes(raw)
    extra = {
        "invalid-utf8": _note("category: fact", "caf\xe9 ".encode("latin-1").decode("latin-1")).replace(
            b"caf", b"\xff\xfe"
        ),
        "empty": b"",
        "garbage": os.urandom(2048),
        "bom-crlf": b"\xef\xbb\xbf---\r\ncategory: fact\r\n---\r\nwindows\r\n",
        "no-front-matter": b"# just markdown\n",
    }
    for name, raw in extra.items():
        (insights / f"hand-{name}.md").write_bytes(raw)
    guard.planted()
    return guard


def test_hand_edited_notes_never_break_a_call(edited: Guard) -> None:
    s = edited.service
    before = {p: p.read_bytes() for p in (edited.vault / "insights").glob("hand-*")}
    with deadline(60, "reads over hostile notes"):
        status = s.status()
        s.recall("fact"), s.list_chunks(), s.sessions(), s.domains(), s.search("hand edited body")
        s.grep("body|windows"), s.grep("hand", fuzzy=True), s.retention_preview()
    reported = {p["path"] for p in status["problems"]}
    for name in (
        "alias_bomb",
        "python_object",
        "python_name",
        "list",
        "scalar",
        "huge",
        "unclosed",
        "deep_flow",
    ):
        assert f"insights/hand-{name}.md" in reported, name
    for name in ("invalid-utf8", "empty", "garbage"):
        assert f"insights/hand-{name}.md" in reported, name
    assert "insights/hand-no-front-matter.md" not in reported  # a note written by hand: a memory
    assert not Path("/tmp/rlm-pwned").exists()
    for note_id in [p.stem for p in (edited.vault / "insights").glob("hand-*")] + ["2026-01-01_Hand_huge"]:
        edited.call(s.peek, note_id)
        edited.call(s.update, note_id, "replaced by a tool")
        edited.call(s.history, note_id)
    # a tool write commits readable hand edits on their own; unreadable ones stay as the person left them
    edited.call(s.remember, "a write after the hand edits")
    for path, raw in before.items():
        if f"insights/{path.name}" in reported:
            assert path.read_bytes() == raw, f"{path.name} was rewritten"
            assert f"insights/{path.name}" not in tracked(edited.vault)
    assert fsck_clean(edited.vault) == ""


# ---------------------------------------------------------------------------------- gzip bombs


def _bomb(size: int) -> bytes:
    """A gzip member that inflates to `size` bytes of a valid-looking chunk, in a few hundred KB."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = b"---\nid: 2026-01-01_Arch_001\ntype: chunk\nsummary: bomb\n---\n"
    out = [z.compress(head)]
    block = b"a" * MIB
    for _ in range(size // MIB):
        out.append(z.compress(block))
    return b"".join(out) + z.flush()


def test_gzip_bombs_in_the_archive_are_refused_not_expanded(guard: Guard) -> None:
    archive = guard.vault / "archive" / "Arch"
    archive.mkdir(parents=True)
    (archive / "2026-01-01_Arch_001.md.gz").write_bytes(_bomb(256 * MIB))
    (archive / "2026-01-01_Arch_002.md.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    (archive / "2026-01-01_Arch_003.md.gz").write_bytes(gzip.compress(b"---\n- not a mapping\n---\nx"))
    guard.planted()
    s = guard.service
    for note_id in ("2026-01-01_Arch_001", "2026-01-01_Arch_002", "2026-01-01_Arch_003"):
        assert isinstance(guard.call(s.restore, note_id), VaultError)
        assert isinstance(guard.call(s.peek, note_id), VaultError)
    guard.call(s.retention_preview)
    guard.call(s.retention_run, True, True)
    guard.call(s.grep, "a+", 5, include_archived=True)
    guard.call(s.search, "bomb", 5, include_archived=True)
    guard.call(s.status)
    assert (archive / "2026-01-01_Arch_001.md.gz").stat().st_size < MIB  # left as it was


# ---------------------------------------------------------------------------------- regexes


@pytest.mark.parametrize(
    "pattern",
    [
        "(a+)+$",
        "(a|aa)+$",
        "(x+x+)+y",
        "(?:a*)*b",
        "((a*)*)*c",
        "(.*a){25}",
        "(?e)(aaaaaaaaaaaaaaaaaaaa){e<=9}",
        "(?r)(a+)+$",
        "a" * 100_000,
        "(" * 2000 + ")" * 2000,
        "(",
        "[",
        "(?P<",
        "\\",
        "*",
        "(?<=a+)b",
        "\\p{Bogus}",
        "(?(1)a|b)",
        "[" + "a-" * 3000 + "]",
        "x{99999999999}",
        "(?i)" * 50,
    ],
)
def test_pathological_regexes_are_time_bounded(tmp_path: Path, pattern: str) -> None:
    guard = Guard(tmp_path, grep_timeout=0.5)
    guard.service.chunk(("a" * 40 + "!\n") * 200 + "x" * 60 + "\n", project="Hostile")
    guard.service.remember("a" * 3000 + "!")
    import time

    started = time.monotonic()
    guard.call(guard.service.grep, pattern, 10)
    assert time.monotonic() - started < 0.5 * 4 + 1.5, "grep ran far past config.grep_timeout"


# ---------------------------------------------------------------------------------- symlinks


def test_symlinks_out_of_the_vault_are_neither_read_nor_written(tmp_path: Path) -> None:
    guard = Guard(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    decoy = tmp_path / "passwd"  # stands for /etc/passwd: a test must never be able to damage the real one
    decoy.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (outside / "2026-01-01_evil_001.md").write_bytes(
        _note("summary: planted outside", "secret outside text\n")
    )
    v = guard.vault
    (v / "insights" / "x.md").symlink_to(decoy)
    (v / "insights" / "etc.md").symlink_to("/etc/passwd")
    (v / "chunks" / "evil").symlink_to(outside, target_is_directory=True)
    (v / "archive").mkdir(exist_ok=True)
    (v / "archive" / "evil").symlink_to(outside, target_is_directory=True)
    guard.planted()
    s = guard.service
    assert not any("root:" in m["text"] for m in guard.call(s.grep, "root", 50)["matches"])
    assert guard.call(s.grep, "secret outside", 50)["matches"] == []
    assert all(h["id"] not in ("x", "etc") for h in guard.call(s.search, "root bash", 10)["results"])
    for note_id in ("x", "etc", "2026-01-01_evil_001"):
        for fn, args in (
            (s.peek, ()),
            (s.update, ("overwrite through the link",)),
            (s.forget, ()),
            (s.restore, ()),
            (s.history, ()),
        ):
            guard.call(fn, note_id, *args)
    result = guard.call(s.chunk, "a chunk aimed at the linked folder", project="evil")
    assert isinstance(result, VaultError)
    guard.call(s.remember, "a normal write beside the links")
    guard.call(s.retention_run, True, True)
    guard.call(s.status)
    assert decoy.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert sorted(os.listdir(outside)) == ["2026-01-01_evil_001.md"]
    assert fsck_clean(v) == ""


# ---------------------------------------------------------------------------------- through MCP


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_hostile_arguments_through_the_mcp_client(guard: Guard) -> None:
    from mcp import Client

    from rlm_vault.mcp_server import build_server

    server = build_server(lambda: guard.service)
    calls = [("rlm_chunk", {"content": "x", "project": t}) for t in TRICKS[:20]]
    calls += [("rlm_chunk", {"content": "y", "domain": t, "ticket": t}) for t in TRICKS[20:30]]
    calls += [("rlm_peek", {"chunk_id": t}) for t in TRICKS] + [
        ("rlm_forget", {"insight_id": t}) for t in TRICKS[:15]
    ]
    calls += [("rlm_remember", {"content": t}) for t in ("\ud800", "\x00", "é" * (MIB + 1), "")]
    calls += [("rlm_grep", {"pattern": p}) for p in ("(a+)+$", "(", "a" * 100_000)]
    calls += [("rlm_recall", {"limit": n}) for n in (0, -1, 10**12)] + [("rlm_history", {"id": "../../x"})]
    calls += [("rlm_revert", {"id": guard.insight, "commit": c}) for c in ("--all", "HEAD", "../x", "0" * 40)]
    calls += [
        ("rlm_chunk", {"content": 5}),
        ("rlm_peek", {}),
        ("rlm_grep", {"pattern": "x", "limit": "many"}),
    ]
    async with Client(server, mode="legacy") as client:
        for name, args in calls:
            with deadline(BOUND, name):
                result = await client.call_tool(name, args)
            text = result.content[0].text if result.content else ""
            if result.is_error:
                assert text.startswith(f"Error executing tool {name}:") or "validation" in text.lower(), (
                    name,
                    text,
                )
                assert len(text) > len(f"Error executing tool {name}:") + 5, (
                    name,
                    text,
                )  # a reason, not a bare error
    assert snapshot(guard.root, guard.vault) == guard.outside
    guard.healthy()
