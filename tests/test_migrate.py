"""`rlm-vault import`: an rlm-claude context folder (tests/data/rlm_claude, written by the real rlm-claude 0.11.0)
and Claude Code transcripts become vault notes in one commit, losing nothing, idempotently."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import commit_count, git_log, git_status

from rlm_vault import markdown
from rlm_vault.cli import main
from rlm_vault.errors import InvalidInput
from rlm_vault.migrate import import_rlm_claude, import_transcripts, parse_rlm_chunk
from rlm_vault.service import MemoryService

DATA = Path(__file__).resolve().parent / "data"
SOURCE_IDS = [
    i["id"] for i in json.loads((DATA / "rlm_claude" / "session_memory.json").read_text())["insights"]
]
SOURCE_IDS += [
    e["id"]
    for name, key in (("index.json", "chunks"), ("archive_index.json", "archives"))
    for e in json.loads((DATA / "rlm_claude" / name).read_text())[key]
]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A copy of the generated rlm-claude folder, free to be spoiled by a test."""
    folder = tmp_path / "context"
    shutil.copytree(DATA / "rlm_claude", folder, ignore=shutil.ignore_patterns("NOTICE"))
    return folder


def _front(service: MemoryService, relpath: str) -> dict:
    return markdown.parse(service.vault.read_bytes(relpath).decode(), relpath)[0]


def _by_origin(service: MemoryService) -> dict[str, object]:
    cat = service.fresh()
    return {str(n.extra.get("rlm_claude_id")): n for n in [*cat.insights(), *cat.chunks(full=True)]}


def test_import_makes_one_commit_with_every_note(service: MemoryService, context: Path) -> None:
    before = commit_count(service.vault.root)
    report = import_rlm_claude(service, context)
    assert (report.insights, report.chunks, report.archived, report.already, report.merged) == (
        9,
        11,
        2,
        0,
        1,
    )
    assert report.problems == () and report.ok
    assert commit_count(service.vault.root) == before + 1
    assert git_log(service.vault.root)[0] == "import: 9 insights, 11 chunks from rlm-claude"
    assert git_status(service.vault.root) == []
    assert len(service.fresh().insights()) == 9 and len(service.fresh().chunks()) == 9


def test_insights_keep_category_importance_tags_and_dates(service: MemoryService, context: Path) -> None:
    import_rlm_claude(service, context)
    notes = _by_origin(service)
    deploy = notes["16a0af26"]
    assert (deploy.category, deploy.importance, deploy.tags) == (
        "decision",
        "critical",
        ("deploy", "workflow"),
    )
    assert deploy.content == "Always deploy LOCAL -> VPS, never direct."
    assert deploy.created.startswith("2026-11-27T") and deploy.created.endswith("Z")
    odd = notes["5e9b1778"]  # rlm-claude accepted any category: kept aside, not lost
    assert (odd.category, odd.importance) == ("general", "medium")
    assert odd.extra["rlm_claude_category"] == "banana" and odd.extra["rlm_claude_importance"] == "ultra"
    assert "préfère" in notes["1068dd8b"].content


def test_chunks_keep_their_header_fields(service: MemoryService, context: Path) -> None:
    import_rlm_claude(service, context)
    notes = _by_origin(service)
    api = notes["2026-11-27_MyApp_001_feature"]
    assert (api.id, api.project, api.domain, api.summary) == (
        "2026-11-27_MyApp_001_feature",
        "MyApp",
        "feature",
        "API v2 architecture decisions",
    )
    assert api.tags == ("api", "architecture") and api.entities["tickets"] == ["API-12"]
    assert api.entities["functions"] == ["build_router"] and api.content.startswith("# API v2\n")
    fix = notes["2026-11-27_MyApp_002_AUTH-7"]
    assert (fix.summary, fix.ticket, fix.chunk_type) == ("Fix: login loop", "AUTH-7", "debug")
    assert notes["2026-11-27_MyApp_003"].summary == "[WIP] review: notes 5"
    other = notes["2026-11-27_Other Proj_001"]  # a space in the project: a new, safe id
    assert (other.id, other.project, other.chunk_type) == (
        "2026-11-27_Other-Proj_001",
        "Other-Proj",
        "snapshot",
    )
    peek = service.peek("2026-11-27_MyApp_005_decision")
    assert "PostgreSQL 16.1.0" in peek["content"]
    assert service.search("PostgreSQL")["results"][0]["id"] == "2026-11-27_MyApp_005_decision"


def test_archives_become_vault_archives_and_access_counts_are_kept(
    service: MemoryService, context: Path
) -> None:
    import_rlm_claude(service, context)
    relpath = "archive/MyApp/2026-11-27_MyApp_004.md.gz"
    meta, body = markdown.parse(gzip.decompress(service.vault.read_bytes(relpath)).decode())
    assert meta["summary"] == "'caching exploration" and meta["created"] == "2026-09-01T10:00:00Z"
    assert meta["rlm_claude_id"] == "2026-11-27_MyApp_004" and body.startswith("Old exploration")
    access = service.store.access.all()
    assert access["2026-11-27_MyApp_001_feature"]["count"] == 2
    assert access["2026-11-27_MyApp_004"]["archived"].startswith("2026-11-27T")
    service.restore("2026-11-27_MyApp_004")
    assert service.peek("2026-11-27_MyApp_004")["content"].startswith("Old exploration")


def test_importing_twice_adds_nothing(service: MemoryService, context: Path) -> None:
    import_rlm_claude(service, context)
    commits = commit_count(service.vault.root)
    again = import_rlm_claude(service, context)
    assert (again.insights, again.chunks, again.already, again.commit) == (0, 0, 21, None)
    assert commit_count(service.vault.root) == commits
    assert "Nothing new to import" in again.text()


def test_same_content_already_in_the_vault_is_not_duplicated(service: MemoryService, context: Path) -> None:
    service.remember("Always deploy LOCAL -> VPS, never direct.", "decision", "critical", "deploy,workflow")
    service.remember("Fix: the API times out after 30 s on cold start", "finding", "high")
    report = import_rlm_claude(service, context)
    assert (report.insights, report.already) == (8, 1)  # same text and metadata: one note, the old id added
    assert service.peek("16a0af26")["content"] == "Always deploy LOCAL -> VPS, never direct."
    assert len(service.recall("cold start")["insights"]) == 2  # same text, other importance: both kept


def test_unreadable_files_are_imported_raw_or_reported(service: MemoryService, context: Path) -> None:
    (context / "chunks" / "2026-11-28_MyApp_001.md").write_text(
        "no header here\njust notes about Redis 7.2.1\n"
    )
    (context / "chunks" / "2026-11-28_MyApp_002.md").write_bytes(
        b"---\nid: 2026-11-28_MyApp_002\nsummary: latin-1\n---\n\ncaf\xe9 au lait\n"
    )
    (context / "archive" / "broken.md.gz").write_bytes(b"not gzip at all")
    index = json.loads((context / "index.json").read_text())
    index["chunks"].append({"id": "2026-11-28_Gone_001", "summary": "lost file"})
    (context / "index.json").write_text(json.dumps(index))
    report = import_rlm_claude(service, context)
    reasons = {p.path: p.reason for p in report.problems}
    assert "imported the whole file" in reasons["chunks/2026-11-28_MyApp_001.md"]
    assert "not UTF-8" in reasons["chunks/2026-11-28_MyApp_002.md"]
    assert "not a valid gzip" in reasons["archive/broken.md.gz"]
    assert "2026-11-28_Gone_001" in reasons["index.json"]
    notes = _by_origin(service)
    raw = notes["2026-11-28_MyApp_001"]
    assert (
        raw.content == "no header here\njust notes about Redis 7.2.1" and raw.extra["rlm_claude_raw"] is True
    )
    assert (raw.project, raw.created) == ("MyApp", "2026-11-28T00:00:00Z")
    assert notes["2026-11-28_MyApp_002"].content == "caf\ufffd au lait"
    assert report.chunks == 13 and not report.ok


def test_broken_session_memory_is_reported_and_chunks_still_come(
    service: MemoryService, context: Path
) -> None:
    (context / "session_memory.json").write_text('{"insights": [')
    report = import_rlm_claude(service, context)
    assert report.insights == 0 and report.chunks == 11 and not report.ok
    assert report.problems[0].path == "session_memory.json" and "damaged" in report.problems[0].reason


def test_secrets_are_redacted_before_git(service: MemoryService, context: Path) -> None:
    (context / "chunks" / "2026-11-28_MyApp_003.md").write_text(
        "---\nid: 2026-11-28_MyApp_003\nsummary: aws\n---\n\naws key AKIAIOSFODNN7EXAMPLE in the .env\n"
    )
    report = import_rlm_claude(service, context)
    note = _by_origin(service)["2026-11-28_MyApp_003"]
    assert "AKIAIOSFODNN7EXAMPLE" not in note.content and "[REDACTED:" in note.content
    assert any("REDACTED" in p.reason for p in report.problems)


def test_missing_folder_says_what_to_give(service: MemoryService, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="rlm-claude context folder"):
        import_rlm_claude(service, tmp_path / "nope")


@pytest.mark.parametrize(("text", "expected"), [
    ("---\nid: a\nsummary: Fix: x: y\ntags: a, b\nentities:\n  (none)\nproject: P\n---\n\nbody\n",
     ({"id": "a", "summary": "Fix: x: y", "tags": "a, b", "project": "P"}, "body\n")),
    ("---\nsummary: # not a comment\nentities:\n  files: a.py, b.py\n  versions: v1.0.0\nticket: \n---\nx",
     ({"summary": "# not a comment", "entities": {"files": ["a.py", "b.py"], "versions": ["v1.0.0"]}, "ticket": ""},
      "x")),
    ("---\r\nid: crlf\r\n---\r\n\r\nbody", ({"id": "crlf"}, "body")),
    # rlm-claude writes summaries raw: a '---' line or a key-like line inside one stays in the summary
    ('---\nid: a\nsummary: Plan\n---\nproject: fake\ntags: \nproject: P\nformat_version: "2.0"\n---\n\nbody',
     ({"id": "a", "summary": "Plan\n---\nproject: fake", "tags": "", "project": "P", "format_version": '"2.0"'},
      "body")),
    ("---\nid: b\nsummary: one\ntwo\ntags: x\n---\n\nbody", ({"id": "b", "summary": "one\ntwo", "tags": "x"}, "body")),
])  # fmt: skip
def test_pseudo_yaml_headers_are_read_line_by_line(text: str, expected: tuple[dict, str]) -> None:
    assert parse_rlm_chunk(text) == expected


@pytest.mark.parametrize("text", ["no header", "---\nid: open header, never closed\n", ""])
def test_text_without_a_closed_header_is_not_a_header(text: str) -> None:
    assert parse_rlm_chunk(text) is None


def test_cli_import_prints_counts(
    service: MemoryService, context: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RLM_VAULT_DIR", str(service.vault.root))
    assert main(["import", "rlm-claude", str(context)]) == 0
    out = capsys.readouterr().out
    assert "9 insights, 11 chunks (2 archived)" in out and "Already in the vault (skipped): 0" in out
    assert main(["import", "rlm-claude", str(context), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["already"] == 21


# ---------------------------------------------------------------------- transcripts


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    folder = tmp_path / "projects" / "-tmp-cce2e-run-proj"
    folder.mkdir(parents=True)
    for path in (DATA / "transcripts").glob("*.jsonl"):
        shutil.copy(path, folder)
    (folder / "bookkeeping-only.jsonl").write_text('{"type":"queue-operation"}\n')
    return folder.parent


def test_transcripts_become_session_chunks_once(service: MemoryService, projects: Path) -> None:
    report = import_transcripts(service, projects)
    assert report.chunks == 2 and [p.path for p in report.problems] == [
        "-tmp-cce2e-run-proj/bookkeeping-only.jsonl"
    ]
    chunks = service.fresh().chunks(full=True)
    assert {c.chunk_type for c in chunks} == {"session"} and {c.project for c in chunks} == {"proj"}
    assert (
        all(c.extra["claude_session"] for c in chunks)
        and len({c.extra["claude_session"] for c in chunks}) == 2
    )
    auto = next(c for c in chunks if "fill the context" in c.content)
    assert "Earlier summary" in auto.content and "**User:** first turn" in auto.content
    assert git_log(service.vault.root)[0] == "import: 2 sessions from Claude Code transcripts"
    again = import_transcripts(service, projects)
    assert (again.chunks, again.already, again.commit) == (0, 2, None)


# ---------------------------------------------------------------------- a move loses nothing


def _damage(context: Path) -> None:
    shutil.copytree(
        DATA / "rlm_claude_damaged", context, dirs_exist_ok=True, ignore=shutil.ignore_patterns("NOTICE")
    )


def _repair(context: Path) -> None:
    shutil.copytree(DATA / "rlm_claude", context, dirs_exist_ok=True, ignore=shutil.ignore_patterns("NOTICE"))


def test_same_text_with_other_metadata_stays_two_notes(service: MemoryService, context: Path) -> None:
    report = import_rlm_claude(service, context)
    small = sorted(
        (i.category, i.importance, i.tags)
        for i in service.fresh().insights()
        if i.content.startswith("Prefer small")
    )
    assert small == [("decision", "high", ("review", "process")), ("preference", "medium", ("review",))]
    twice = [i for i in service.fresh().insights() if i.content == "Run the tests before every push."]
    assert len(twice) == 1 and twice[0].extra["aliases"] == ["659b8056", "736af752"]
    assert "Already in the vault (skipped): 0" in report.text() and "both ids): 1" in report.text()


@pytest.mark.parametrize("old_id", SOURCE_IDS)
def test_every_rlm_claude_id_still_reads_its_note(service: MemoryService, context: Path, old_id: str) -> None:
    import_rlm_claude(service, context)
    peek = service.peek(old_id)
    assert peek["content"].strip()
    assert peek.get("old_id", old_id) == old_id and (peek["id"] == old_id) == ("old_id" not in peek)
    history = service.history(old_id)
    assert history["id"] == peek["id"] and history["commits"][-1]["message"].startswith("import: ")


def test_old_ids_are_kept_in_front_matter_and_found_by_search(service: MemoryService, context: Path) -> None:
    import_rlm_claude(service, context)
    note = _by_origin(service)["2026-12-01_Mon Projet Été_001_meeting"]
    assert note.id == "2026-12-01_Mon-Projet-Ete_001_meeting"
    assert note.extra["aliases"] == ["2026-12-01_Mon Projet Été_001_meeting"]
    first = service.search("2026-12-01_Mon Projet Été_001_meeting")["results"][0]
    assert (first["id"], first["old_id"]) == (note.id, "2026-12-01_Mon Projet Été_001_meeting")
    kept = _by_origin(service)["2026-11-27_MyApp_003"]  # an id the vault can keep needs no alias
    assert kept.id == "2026-11-27_MyApp_003" and "aliases" not in kept.extra


def test_headers_never_leak_into_text_and_summaries_stay_whole(service: MemoryService, context: Path) -> None:
    _damage(context)  # index.json unreadable: summaries come from the headers rlm-claude wrote
    import_rlm_claude(service, context)
    notes = _by_origin(service)
    deploy = notes["2026-12-01_webapp_002_deploy"]
    assert deploy.content == "Step 1: tag. Step 2: build. Step 3: ship."
    assert (deploy.summary, deploy.project) == ("Release checklist\n---\nproject: fake", "webapp")
    assert notes["2026-12-01_webapp_003"].summary == "Queue choice\nsecond line of the summary"
    opened = notes["2026-11-27_MyApp_003"]
    assert opened.content == "Notes 5: [WIP] review of PR.\nimport requests"
    assert opened.extra["rlm_claude_damaged"] and opened.summary == "[WIP] review: notes 5"
    for note in notes.values():
        assert "format_version" not in note.content and "content_hash:" not in note.content
    assert notes["2026-12-01_webapp_004"].content == "Windows notes\nsecond line"  # LF, as README says


def test_damage_is_named_and_a_repaired_file_replaces_its_note(service: MemoryService, context: Path) -> None:
    _damage(context)
    report = import_rlm_claude(service, context)
    damaged = {p.path for p in report.problems if p.damaged}
    assert damaged == {
        "session_memory.json",
        "index.json",
        "chunks/2026-11-27_MyApp_003.md",
        "archive/2026-12-01_webapp_001_GH-456_r&d.md.gz",
    }
    assert "truncated gzip" in next(p.reason for p in report.problems if p.path.endswith(".gz"))
    relpath = service.archive.paths()[service.lifecycle.resolve_id("2026-12-01_webapp_001_GH-456_r&d")]
    half = gzip.decompress(service.vault.read_bytes(relpath)).decode()
    assert "idempotenc" in half and "idempotency keys" not in half
    _repair(context)
    again = import_rlm_claude(service, context)
    assert again.ok and (again.insights, again.replaced) == (9, 2)
    assert git_log(service.vault.root)[0] == "import: 9 insights, 0 chunks from rlm-claude, 2 replaced"
    whole = gzip.decompress(service.vault.read_bytes(relpath)).decode()
    assert "idempotency keys" in whole and "rlm_claude_damaged" not in whole
    history = service.history("2026-12-01_webapp_001_GH-456_r&d")["commits"]
    assert len(history) == 2  # the damaged import, then its repair
    assert "rlm_claude_damaged" not in _by_origin(service)["2026-11-27_MyApp_003"].extra
    assert import_rlm_claude(service, context).commit is None


def test_reimport_respects_what_was_forgotten_or_edited(service: MemoryService, context: Path) -> None:
    _damage(context)
    import_rlm_claude(service, context)
    service.vault.root.joinpath(
        _by_origin(service)["2026-11-27_MyApp_003"].path
    ).unlink()  # a person deletes it
    _repair(context)
    first = import_rlm_claude(service, context)  # the repaired chunk's note is gone: not brought back
    assert first.kept == 1 and "2026-11-27_MyApp_003" not in _by_origin(service)
    assert any("note was gone since: left as the vault has it" in p.reason for p in first.problems)
    deploy = _by_origin(service)["16a0af26"]
    service.forget(deploy.id)
    edited = service.vault.root / _by_origin(service)["2026-12-01_webapp_003"].path
    edited.write_text(edited.read_text().replace("three queue", "four queue"))
    (context / "chunks" / "2026-12-01_webapp_003.md").write_text(
        (context / "chunks" / "2026-12-01_webapp_003.md").read_text().replace("three", "five")
    )
    again = import_rlm_claude(service, context)
    assert (again.insights, again.chunks, again.replaced, again.commit) == (0, 0, 0, None)
    assert again.kept == 3 and "16a0af26" not in _by_origin(service)
    assert "four queue" in edited.read_text()
    assert any("left as the vault has it" in p.reason for p in again.problems)


@pytest.mark.parametrize("where", ["vault", "rlm_home", "empty"])
def test_a_folder_that_is_not_a_context_is_refused(
    service: MemoryService, tmp_path: Path, where: str
) -> None:
    folder = {"vault": service.vault.root, "rlm_home": tmp_path / "rlm", "empty": tmp_path / "empty"}[where]
    folder.mkdir(exist_ok=True)
    if where == "rlm_home":
        shutil.copytree(DATA / "rlm_claude", folder / "context")
        (folder / "hooks").mkdir()
    with pytest.raises(InvalidInput, match="not an rlm-claude context folder") as info:
        import_rlm_claude(service, folder)
    assert "\n" not in str(info.value)
    assert ("did you mean" in str(info.value)) == (where == "rlm_home")


def test_cli_exit_codes_through_a_real_process(service: MemoryService, context: Path) -> None:
    env = {**os.environ, "RLM_VAULT_DIR": str(service.vault.root)}
    env.pop("RLM_VAULT_RAISE_ERRORS", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "rlm_vault", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)

    refused = run("import", "rlm-claude", str(service.vault.root))
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    _damage(context)
    damaged = run("import", "rlm-claude", str(context))
    assert damaged.returncode == 1 and "Damaged, not imported whole (4)" in damaged.stdout
    _repair(context)
    assert run("import", "rlm-claude", str(context)).returncode == 0
    doctor = run("doctor")
    assert doctor.returncode == 0 and "All good." in doctor.stdout
    assert "missing or stale" not in doctor.stdout or "caught up at the next search" in doctor.stdout


@pytest.mark.anyio
async def test_peek_by_old_id_through_the_mcp_protocol(service: MemoryService, context: Path) -> None:
    from mcp import Client

    from rlm_vault.mcp_server import build_server

    import_rlm_claude(service, context)
    async with Client(build_server(lambda: service), mode="legacy") as client:
        result = await client.call_tool("rlm_peek", {"chunk_id": "2026-12-01_webapp_001_GH-456_r&d"})
        hit = await client.call_tool("rlm_search", {"query": "caecced7"})
    assert not result.is_error and "idempotency keys" in result.structured_content["content"]
    assert result.structured_content["old_id"] == "2026-12-01_webapp_001_GH-456_r&d"
    assert "(was 2026-12-01_webapp_001_GH-456_r&d)" in result.content[0].text
    assert hit.structured_content["results"][0]["old_id"] == "caecced7"
