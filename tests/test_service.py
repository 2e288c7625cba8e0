"""MemoryService end to end: real vault, real git, a hand-moved clock."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import commit_count, git, git_log, git_status

from rlm_vault import catalog as catalog_module
from rlm_vault import markdown
from rlm_vault.errors import InvalidInput, NotFound
from rlm_vault.models import content_hash
from rlm_vault.service import MemoryService, open_service

DEPLOY = "Always deploy LOCAL -> VPS, never direct."
DEPLOY_ID = "2026-11-24-always-deploy-local-vps-never-direct"


def root(service: MemoryService) -> Path:
    return service.vault.root


def note(service: MemoryService, relpath: str) -> tuple[dict[str, Any], str]:
    return markdown.parse((root(service) / relpath).read_text(encoding="utf-8"))


def files_under(folder: Path) -> set[str]:
    return (
        {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        if folder.exists()
        else set()
    )


def note_files(service: MemoryService) -> set[str]:
    r = root(service)
    return {
        f for top in ("insights", "chunks", "archive") for f in (f"{top}/{x}" for x in files_under(r / top))
    }


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["id"] for row in rows]


@pytest.fixture
def unchanged(service: MemoryService):  # type: ignore[no-untyped-def]
    """Asserts after the test body that no commit was made and no note file appeared or changed."""

    class Guard:
        def __enter__(self) -> None:
            self.head = service.vault.git.head()
            self.files = {f: (root(service) / f).read_bytes() for f in note_files(service)}

        def __exit__(self, *exc: object) -> None:
            assert service.vault.git.head() == self.head
            assert {f: (root(service) / f).read_bytes() for f in note_files(service)} == self.files

    return Guard()


# ======================================================================================== insights


def test_remember_writes_the_note_and_one_commit(service: MemoryService) -> None:
    result = service.remember(DEPLOY, "decision", "critical", "deploy, #workflow", "MyApp")

    assert result["id"] == DEPLOY_ID
    assert result["path"] == f"insights/{DEPLOY_ID}.md"
    meta, body = note(service, result["path"])
    assert meta == {
        "id": DEPLOY_ID,
        "type": "insight",
        "category": "decision",
        "importance": "critical",
        "tags": ["deploy", "workflow"],
        "project": "MyApp",
        "created": "2026-11-24T15:30:00Z",
        "updated": "2026-11-24T15:30:00Z",
    }
    assert body == DEPLOY + "\n"
    assert "created: '2026-11-24T15:30:00Z'" in (root(service) / result["path"]).read_text()
    assert git_log(root(service)) == [
        f"remember: {DEPLOY_ID} (decision/critical) {DEPLOY}",
        "init: new rlm-vault",
    ]
    assert result["commit"] == service.vault.git.head()
    assert git(root(service), "show", "--name-only", "--format=", "HEAD").split() == [result["path"]]
    assert git_status(root(service)) == []


def test_remember_defaults_and_global_project(service: MemoryService) -> None:
    result = service.remember("A plain fact about nothing.")
    meta, _ = note(service, result["path"])
    assert (meta["category"], meta["importance"], meta["tags"], meta["project"]) == (
        "general",
        "medium",
        [],
        None,
    )
    assert (
        git_log(root(service))[0] == f"remember: {result['id']} (general/medium) A plain fact about nothing."
    )


def test_remember_accepts_category_in_any_case(service: MemoryService) -> None:
    result = service.remember("Case test.", " Decision", "HIGH")
    meta, _ = note(service, result["path"])
    assert (meta["category"], meta["importance"]) == ("decision", "high")


def test_repeated_remember_gets_unique_ids(service: MemoryService) -> None:
    got = [service.remember(DEPLOY)["id"] for _ in range(3)]
    assert got == [DEPLOY_ID, f"{DEPLOY_ID}-2", f"{DEPLOY_ID}-3"]
    assert len({p for p in note_files(service) if p.startswith("insights/")}) == 3
    assert commit_count(root(service)) == 4


def test_ids_follow_the_date_of_the_clock(service: MemoryService, clock: Any) -> None:
    clock.advance(days=3)
    assert service.remember("Later note")["id"] == "2026-11-27-later-note"


def test_japanese_only_content_still_gets_a_readable_unique_id(service: MemoryService) -> None:
    first = service.remember("デプロイは金曜日にしない")["id"]
    second = service.remember("テストは必ず書く")["id"]
    assert first == "2026-11-24-デプロイは金曜日にしない" and second == "2026-11-24-テストは必ず書く"
    assert git_log(root(service))[1] == f"remember: {first} (general/medium) デプロイは金曜日にしない"
    assert service.recall("デプロイ")["insights"][0]["id"] == first


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"category": "opinion"}, ["decision", "fact", "preference", "finding", "todo", "general"]),
        ({"importance": "urgent"}, ["critical", "high", "medium", "low"]),
    ],
)
def test_remember_invalid_choice_lists_accepted_values(
    service: MemoryService, unchanged: Any, kwargs: dict[str, str], words: list[str]
) -> None:
    with unchanged, pytest.raises(InvalidInput) as info:
        service.remember("content", **kwargs)
    assert all(w in str(info.value) for w in words)


@pytest.mark.parametrize("content", ["", "   \n\t ", "a\x00b"])
def test_remember_refuses_empty_and_nul(service: MemoryService, unchanged: Any, content: str) -> None:
    with unchanged, pytest.raises(InvalidInput):
        service.remember(content)


def test_recall_by_word_best_first(service: MemoryService, clock: Any) -> None:
    a = service.remember("Use pytest for every test, pytest fixtures too", tags="testing")["id"]
    clock.advance(minutes=1)
    b = service.remember("Deploy with docker on the VPS")["id"]
    clock.advance(minutes=1)
    c = service.remember("Deploy tests run on docker")["id"]
    assert ids(service.recall("docker deploy")["insights"])[:2] == [c, b]
    # "tests" is a related term of pytest (rlm_vault/related.py): found too, after the exact match.
    assert ids(service.recall("pytest")["insights"]) == [a, c]
    assert ids(service.recall("fixtures")["insights"]) == [a]
    assert set(ids(service.recall("testing")["insights"])) == {a, c}  # stemmed: testing ~ test(s)
    assert service.recall("zebra")["insights"] == []
    assert ids(service.recall("kubernetes")["insights"]) == [c, b]  # related: docker
    assert ids(service.recall("")["insights"]) == [c, b, a]  # no query: all, newest first
    clock.advance(minutes=1)
    d = service.remember("Unrelated note", tags="kubectl")["id"]
    assert ids(service.recall("kubectl")["insights"]) == [d]  # tags count
    row = service.recall("pytest")["insights"][0]
    assert {"id", "content", "category", "importance", "tags", "project"} <= set(row)
    assert row["tags"] == ["testing"] and row["project"] is None


def test_recall_ignores_accents_both_ways(service: MemoryService) -> None:
    accented = service.remember("L'utilisateur préfère les tabulations")["id"]
    plain = service.remember("The user prefere spaces in YAML")["id"]
    assert set(ids(service.recall("prefere")["insights"])) == {accented, plain}
    assert set(ids(service.recall("préfère")["insights"])) == {accented, plain}
    assert ids(service.recall("PRÉFÈRE tabulations")["insights"])[0] == accented


def test_recall_filters(service: MemoryService) -> None:
    d = service.remember("deploy rule one", "decision", "critical", project="MyApp")["id"]
    f = service.remember("deploy fact two", "fact", "low")["id"]
    p = service.remember("deploy pref three", "preference", "critical", project="Other")["id"]
    assert ids(service.recall("deploy", category="decision")["insights"]) == [d]
    assert set(ids(service.recall("deploy", importance="critical")["insights"])) == {d, p}
    assert ids(service.recall("deploy", project="Other")["insights"]) == [p]
    assert ids(service.recall("", category="fact")["insights"]) == [f]
    with pytest.raises(InvalidInput, match="decision"):
        service.recall("deploy", category="nope")


def test_recall_limit(service: MemoryService) -> None:
    for n in range(4):
        service.remember(f"note number {n} about limits")
    assert len(service.recall("limits", limit=2)["insights"]) == 2
    for bad in (0, -1, 101):
        with pytest.raises(InvalidInput, match="limit"):
            service.recall("limits", limit=bad)


def test_forget_removes_the_file_with_one_commit(service: MemoryService) -> None:
    keep = service.remember("keep this deploy note")["id"]
    gone = service.remember("forget this deploy note")
    result = service.forget(gone["id"])
    assert result["removed"] is True and result["id"] == gone["id"]
    assert not (root(service) / gone["path"]).exists()
    assert git_log(root(service))[0].startswith(f"forget: {gone['id']}")
    assert commit_count(root(service)) == 4
    assert gone["path"] not in git(root(service), "ls-files").split()
    assert ids(service.recall("deploy")["insights"]) == [keep]
    assert git_status(root(service)) == []


def test_forget_unknown_id_is_not_found_and_commits_nothing(service: MemoryService, unchanged: Any) -> None:
    service.remember("something")
    with unchanged:
        for bad in ("no-such-id", "../../etc/passwd", ""):
            with pytest.raises(NotFound):
                service.forget(bad)


def test_forget_twice_is_not_found(service: MemoryService) -> None:
    note_id = service.remember("once")["id"]
    service.forget(note_id)
    with pytest.raises(NotFound):
        service.forget(note_id)


def test_update_changes_in_place_keeps_created_bumps_updated(service: MemoryService, clock: Any) -> None:
    first = service.remember("old text", "fact", "low", "a, b")
    clock.advance(hours=2)
    result = service.update(first["id"], content="new text", importance="high")
    assert result["id"] == first["id"] and result["path"] == first["path"]
    meta, body = note(service, first["path"])
    assert body == "new text\n"
    assert (meta["category"], meta["importance"], meta["tags"]) == ("fact", "high", ["a", "b"])
    assert meta["created"] == "2026-11-24T15:30:00Z"
    assert meta["updated"] == "2026-11-24T17:30:00Z"
    assert git_log(root(service))[0] == f"update: {first['id']} (fact/high) new text"
    assert commit_count(root(service)) == 3
    assert len([f for f in note_files(service) if f.startswith("insights/")]) == 1


def test_update_with_empty_arguments_changes_nothing_and_makes_no_commit(
    service: MemoryService, clock: Any, unchanged: Any
) -> None:
    note_id = service.remember("stable text", "fact", "low", "x")["id"]
    clock.advance(hours=1)
    with unchanged:
        result = service.update(note_id)
        assert result.get("changed") is False
        same = service.update(note_id, content="stable text", category="fact", importance="low", tags="x")
        assert same.get("changed") is False


def test_update_tags_only(service: MemoryService) -> None:
    note_id = service.remember("tag me", tags="old")["id"]
    service.update(note_id, tags="new, #other")
    meta, body = note(service, f"insights/{note_id}.md")
    assert meta["tags"] == ["new", "other"] and body == "tag me\n"


def test_update_refuses_bad_values_and_unknown_ids(service: MemoryService, unchanged: Any) -> None:
    note_id = service.remember("text")["id"]
    with unchanged:
        with pytest.raises(InvalidInput, match="critical"):
            service.update(note_id, importance="extreme")
        with pytest.raises(NotFound):
            service.update("2026-01-01-nothing", content="x")
        with pytest.raises(InvalidInput):
            service.update(note_id, content="a\x00b")


def test_update_keeps_keys_a_person_added(service: MemoryService) -> None:
    result = service.remember("hand edited")
    path = root(service) / result["path"]
    path.write_text(
        path.read_text().replace("---\nhand edited", "aliases: [Mine]\nreviewed: true\n---\nhand edited")
    )
    service.update(result["id"], importance="high")
    meta, _ = note(service, result["path"])
    assert meta["aliases"] == ["Mine"] and meta["reviewed"] is True and meta["importance"] == "high"
    # the person's edit is committed on its own, before the update
    assert git_log(root(service))[:2] == [
        f"update: {result['id']} (general/high) hand edited",
        f"external: {result['path']}",
    ]


# ======================================================================================== chunks


def test_chunk_writes_a_note_with_full_front_matter(service: MemoryService) -> None:
    content = "# API v2 architecture decisions\n\nRoutes move to api/routes.py for v2.0.0 (API-12); see handle() now."
    result = service.chunk(content, tags="api, architecture", project="MyApp", domain="feature")

    assert result["id"] == "2026-11-24_MyApp_001_feature"
    assert result["path"] == f"chunks/MyApp/{result['id']}.md"
    meta, body = note(service, result["path"])
    assert body == content + "\n"
    assert meta["type"] == "chunk" and meta["chunk_type"] == "session"
    assert meta["summary"] == "API v2 architecture decisions"
    assert meta["tags"] == ["api", "architecture"]
    assert (meta["project"], meta["domain"], meta["ticket"]) == ("MyApp", "feature", None)
    assert meta["session"] == "2026-11-24_MyApp_feature"
    assert meta["created"] == "2026-11-24T15:30:00Z"
    assert meta["sha256"] == content_hash(content)
    assert meta["tokens"] == len(content) // 4
    assert meta["entities"]["files"] == ["api/routes.py"]
    assert meta["entities"]["versions"] == ["v2.0.0"]
    assert meta["entities"]["tickets"] == ["API-12"]
    assert git_log(root(service)) == [
        f"chunk: {result['id']} API v2 architecture decisions",
        "init: new rlm-vault",
    ]
    assert result["commit"] == service.vault.git.head()
    assert git_status(root(service)) == []


def test_chunk_ids_count_per_day_and_project(service: MemoryService, clock: Any) -> None:
    assert service.chunk("one", project="MyApp")["id"] == "2026-11-24_MyApp_001"
    assert service.chunk("two", project="MyApp")["id"] == "2026-11-24_MyApp_002"
    assert (
        service.chunk("three", project="MyApp", ticket="API-12", domain="bugfix")["id"]
        == "2026-11-24_MyApp_003_API-12_bugfix"
    )
    assert service.chunk("four", project="MyApp", ticket="T-1")["id"] == "2026-11-24_MyApp_004_T-1"
    assert service.chunk("other project")["id"] == "2026-11-24_TestProj_001"  # config project
    clock.advance(days=1)
    assert service.chunk("next day", project="MyApp")["id"] == "2026-11-25_MyApp_001"


def test_chunk_seq_counts_archived_chunks(service: MemoryService) -> None:
    archive = root(service) / "archive" / "MyApp"
    archive.mkdir(parents=True)
    (archive / "2026-11-24_MyApp_007.md.gz").write_bytes(b"")
    assert service.chunk("after archive", project="MyApp")["id"] == "2026-11-24_MyApp_008"


def test_chunk_explicit_summary_and_type(service: MemoryService) -> None:
    result = service.chunk("body text\nmore", summary="Fix: a\n---\nb: c", chunk_type="Debug")
    meta, body = note(service, result["path"])
    assert meta["summary"] == "Fix: a\n---\nb: c"
    assert meta["chunk_type"] == "debug"
    assert body == "body text\nmore\n"
    assert git_log(root(service))[0] == f"chunk: {result['id']} Fix: a"


def test_duplicate_chunk_returns_the_existing_id_without_commit(
    service: MemoryService, unchanged: Any
) -> None:
    first = service.chunk("same   content\nhere", project="MyApp")
    with unchanged:
        again = service.chunk("  same content\n\nhere  ", project="MyApp")
    assert again["id"] == first["id"] and again["path"] == first["path"]
    assert again.get("duplicate") is True


@pytest.mark.parametrize("chunk_type", ["insight", "Insight"])
def test_chunk_type_insight_points_to_remember(
    service: MemoryService, unchanged: Any, chunk_type: str
) -> None:
    with unchanged, pytest.raises(InvalidInput) as info:
        service.chunk("a decision", chunk_type=chunk_type)
    assert "rlm_remember" in str(info.value)


def test_invalid_chunk_type_lists_accepted_values(service: MemoryService, unchanged: Any) -> None:
    with unchanged, pytest.raises(InvalidInput) as info:
        service.chunk("text", chunk_type="conversation")
    assert all(t in str(info.value) for t in ("snapshot", "session", "debug"))


@pytest.mark.parametrize(
    "content", ["", "  \n ", "nul \x00 inside", "é" * 1_100_000, "x" * (2 * 1024 * 1024 + 1)]
)
def test_chunk_refuses_bad_content(service: MemoryService, unchanged: Any, content: str) -> None:
    with unchanged, pytest.raises(InvalidInput):
        service.chunk(content)


def test_oversize_message_counts_bytes(service: MemoryService) -> None:
    content = "é" * 1_100_000  # 1.1 M characters but 2.2 MB: over the 2 MiB limit
    assert len(content) < 2 * 1024 * 1024 < len(content.encode())
    with pytest.raises(InvalidInput, match="2200000 bytes"):
        service.chunk(content)


@pytest.mark.parametrize("field", ["project", "domain", "ticket"])
@pytest.mark.parametrize("value", ["../evil", "a/b", "..", "x\\y", "/abs", "a\x00b", "../../../tmp/x"])
def test_path_tricks_in_names_are_refused(
    service: MemoryService, unchanged: Any, tmp_path: Path, field: str, value: str
) -> None:
    outside_before = files_under(tmp_path) - {f for f in files_under(tmp_path) if f.startswith("vault/")}
    dirs_before = sorted(os.listdir(root(service) / "chunks"))
    with unchanged, pytest.raises(InvalidInput):
        service.chunk("content", **{field: value})
    assert sorted(os.listdir(root(service) / "chunks")) == dirs_before
    assert (
        files_under(tmp_path) - {f for f in files_under(tmp_path) if f.startswith("vault/")} == outside_before
    )


def test_path_tricks_in_remember_project_are_refused(service: MemoryService, unchanged: Any) -> None:
    with unchanged, pytest.raises(InvalidInput):
        service.remember("x", project="../../x")


# ======================================================================================== peek


def test_peek_line_ranges(service: MemoryService) -> None:
    chunk_id = service.chunk("l0\nl1\nl2\nl3\nl4")["id"]
    whole = service.peek(chunk_id)
    assert (whole["content"], whole["start"], whole["end"], whole["total_lines"]) == (
        "l0\nl1\nl2\nl3\nl4",
        0,
        5,
        5,
    )
    part = service.peek(chunk_id, 1, 3)
    assert (part["content"], part["start"], part["end"]) == ("l1\nl2", 1, 3)
    assert service.peek(chunk_id, 2, -1)["content"] == "l2\nl3\nl4"
    assert service.peek(chunk_id, -2)["content"] == "l3\nl4"
    assert service.peek(chunk_id, 3, 100)["content"] == "l3\nl4"
    with pytest.raises(InvalidInput, match=r"has 5 line\(s\): use start from 0 to 4"):
        service.peek(chunk_id, 10)
    with pytest.raises(InvalidInput, match="outside"):
        service.peek(chunk_id, 3, 1)
    with pytest.raises(InvalidInput, match="outside"):
        service.peek(chunk_id, 5)
    assert whole["kind"] == "chunk"


def test_peek_of_an_insight(service: MemoryService) -> None:
    note_id = service.remember("first line\nsecond line")["id"]
    result = service.peek(note_id, 1)
    assert result["kind"] == "insight" and result["content"] == "second line" and result["total_lines"] == 2


def test_peek_counts_access_and_makes_no_commit(service: MemoryService, clock: Any) -> None:
    chunk_id = service.chunk("read me")["id"]
    head = service.vault.git.head()
    service.peek(chunk_id)
    clock.advance(minutes=5)
    service.peek(chunk_id)
    access = json.loads((root(service) / ".rlm" / "access.json").read_text())
    assert access[chunk_id]["count"] == 2
    assert access[chunk_id]["last"] == "2026-11-24T15:35:00Z"
    assert service.vault.git.head() == head
    assert git_status(root(service)) == []


def test_peek_unknown_id_is_not_found(service: MemoryService) -> None:
    with pytest.raises(NotFound, match="rlm_list_chunks"):
        service.peek("2026-11-24_Nope_001")


# ======================================================================================== grep


def test_grep_is_case_insensitive_with_line_numbers(service: MemoryService) -> None:
    chunk_id = service.chunk(
        "intro\nThe DATABASE migration failed\nother\nfix the database index", project="P"
    )["id"]
    matches = service.grep(r"data\w+ (migration|index)")["matches"]
    assert [(m["id"], m["line"]) for m in matches] == [(chunk_id, 1), (chunk_id, 3)]
    assert matches[0]["text"] == "The DATABASE migration failed"
    line = matches[0]["line"]
    assert service.peek(chunk_id, line, line + 1)["content"] == matches[0]["text"]
    assert service.grep("nothing-like-this")["matches"] == []
    assert len(service.grep("database", limit=1)["matches"]) == 1


@pytest.mark.parametrize("pattern", ["(unclosed", "[z-a]", "*start", ""])
def test_grep_invalid_pattern_is_invalid_input(service: MemoryService, pattern: str) -> None:
    service.chunk("some text")
    with pytest.raises(InvalidInput):
        service.grep(pattern)


def test_grep_pathological_pattern_stops_with_a_clear_error(service: MemoryService) -> None:
    service.config = dataclasses.replace(service.config, grep_timeout=0.2)
    service.chunk("x" * 20_000 + "\nshort line")
    with pytest.raises(InvalidInput) as info:
        service.grep("(x+x+)+y")
    message = str(info.value)
    assert "longer than" in message and "simpler pattern" in message


def test_fuzzy_grep_finds_a_typo(service: MemoryService) -> None:
    chunk_id = service.chunk("notes\nwe ran the database migration yesterday\nend")["id"]
    assert service.grep("databse migraton")["matches"] == []
    matches = service.grep("databse migraton", fuzzy=True)["matches"]
    assert matches[0]["id"] == chunk_id and matches[0]["line"] == 1
    assert 80 <= matches[0]["score"] < 100
    assert service.grep("databse migraton", fuzzy=True, fuzzy_threshold=99)["matches"] == []
    with pytest.raises(InvalidInput):
        service.grep("x", fuzzy=True, fuzzy_threshold=150)


def test_grep_filters(service: MemoryService, clock: Any) -> None:
    a = service.chunk("needle alpha in api/routes.py", project="A", domain="feature")["id"]
    clock.advance(days=2)
    b = service.chunk("needle beta for v1.2.3", project="B", domain="bugfix")["id"]
    clock.advance(days=2)
    c = service.chunk("needle gamma API-7", project="A", domain="bugfix")["id"]

    def found(**filters: str) -> list[str]:
        return ids(service.grep("needle", **filters)["matches"])  # type: ignore[arg-type]

    assert found() == [c, b, a]  # newest chunks first
    assert found(project="A") == [c, a]
    assert found(domain="bugfix") == [c, b]
    assert found(date_from="2026-11-26") == [c, b]
    assert found(date_to="2026-11-26") == [b, a]
    assert found(date_from="2026-11-25", date_to="2026-11-27") == [b]
    assert found(entity="routes.py") == [a]
    assert found(entity="API-7") == [c]
    with pytest.raises(InvalidInput, match="YYYY-MM-DD"):
        service.grep("needle", date_from="26/11/2026")


def test_grep_pages_through_many_notes_in_order(
    service: MemoryService, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "STREAM_FIRST_PAGE", 2)
    monkeypatch.setattr(catalog_module, "STREAM_PAGE", 3)
    monkeypatch.setattr(catalog_module, "PARSED_KEPT", 4)  # more chunks than a process keeps: paged
    oldest = service.chunk("the needle in the oldest one", project="A")["id"]
    made = []
    for n in range(9):
        clock.advance(days=1)
        made.append(
            service.chunk(f"plain note {n}" + (" with a needle" if n % 4 == 0 else ""), project="A")["id"]
        )
    insight = service.remember("an insight holds a needle too")["id"]
    expected = [made[8], made[4], made[0], oldest, insight]  # chunks newest first, then insights
    assert ids(service.grep("needle")["matches"]) == expected  # type: ignore[arg-type]
    assert ids(service.grep("needle", limit=2)["matches"]) == expected[:2]  # type: ignore[arg-type]


# ======================================================================================== search & lists


def test_search_finds_chunks_and_insights_with_kind(service: MemoryService) -> None:
    chunk_id = service.chunk("Kubernetes cluster upgrade notes", project="Ops")["id"]
    insight_id = service.remember("Kubernetes upgrades happen on Tuesdays")["id"]
    service.chunk("unrelated cooking recipe", project="Ops")
    results = service.search("kubernetes upgrade")["results"]
    assert {(r["id"], r["kind"]) for r in results} == {(chunk_id, "chunk"), (insight_id, "insight")}
    assert all(r["score"] > 0 for r in results)
    assert ids(service.search("kubernetes", include_insights=False)["results"]) == [chunk_id]
    assert ids(service.search("kubernetes", project="Nope")["results"]) == []
    assert service.search("zeppelin")["results"] == []
    with pytest.raises(InvalidInput):
        service.search("   ")


def test_list_chunks_newest_first(service: MemoryService, clock: Any) -> None:
    made = []
    for n, project in enumerate(["A", "B", "A"]):
        made.append(service.chunk(f"chunk {n}", project=project)["id"])
        clock.advance(hours=1)
    rows = service.list_chunks()["chunks"]
    assert ids(rows) == made[::-1]
    assert ids(service.list_chunks(limit=1)["chunks"]) == [made[2]]
    assert ids(service.list_chunks(project="A")["chunks"]) == [made[2], made[0]]
    assert {"id", "summary", "tags", "project", "created", "tokens"} <= set(rows[0])


def test_sessions_group_chunks(service: MemoryService, clock: Any) -> None:
    service.chunk("one", project="A", domain="feature")
    clock.advance(minutes=10)
    service.chunk("two", project="A", domain="feature")
    clock.advance(minutes=10)
    service.chunk("three", project="A", domain="bugfix")
    clock.advance(days=1)
    service.chunk("four", project="B")
    rows = service.sessions()["sessions"]
    assert [(r["id"], r["chunks"]) for r in rows] == [
        ("2026-11-25_B", 1),
        ("2026-11-24_A_bugfix", 1),
        ("2026-11-24_A_feature", 2),
    ]
    assert rows[2]["started"] == "2026-11-24T15:30:00Z"
    assert [r["id"] for r in service.sessions(project="A", domain="feature")["sessions"]] == [
        "2026-11-24_A_feature"
    ]


def test_domains_from_file_plus_used_ones(service: MemoryService) -> None:
    domains = service.domains()["domains"]
    assert domains[:3] == ["feature", "bugfix", "refactor"]
    service.chunk("x", domain="zz-custom")
    assert service.domains()["domains"][-1] == "zz-custom"
    (root(service) / "domains.yaml").write_text("domains: [alpha, beta]\n")
    assert service.domains()["domains"] == ["alpha", "beta", "zz-custom"]


def test_status_counts_head_and_problems(service: MemoryService) -> None:
    empty = service.status()
    assert (empty["insights"], empty["chunks"], empty["archived"], empty["problems"]) == (0, 0, 0, [])
    service.remember("i1")
    service.remember("i2", "fact")
    service.chunk("c1", project="A")
    status = service.status()
    assert (status["insights"], status["chunks"]) == (2, 1)
    assert status["head"] == service.vault.git.head() == git(root(service), "rev-parse", "HEAD").strip()
    assert status["vault"] == str(root(service))
    assert status["semantic"]["enabled"] is False and status["semantic"]["reason"]


def test_reads_never_commit(service: MemoryService) -> None:
    note_id = service.remember("deploy rule")["id"]
    chunk_id = service.chunk("deploy log line\nsecond", project="P")["id"]
    before = commit_count(root(service))
    service.recall("deploy")
    service.search("deploy")
    service.grep("deploy")
    service.grep("deplyo", fuzzy=True)
    service.peek(chunk_id)
    service.peek(note_id)
    service.list_chunks()
    service.sessions()
    service.domains()
    service.status()
    assert commit_count(root(service)) == before
    assert git_status(root(service)) == []


# ======================================================================================== edits made outside


def test_external_edit_is_seen_by_the_next_read(service: MemoryService) -> None:
    result = service.remember("The staging server is called apollo")
    assert ids(service.recall("apollo")["insights"]) == [result["id"]]
    path = root(service) / result["path"]
    path.write_text(path.read_text().replace("apollo", "hermes-renamed-by-hand"))
    assert service.recall("apollo")["insights"] == []
    assert ids(service.recall("hermes")["insights"]) == [result["id"]]
    assert ids(service.search("hermes")["results"]) == [result["id"]]
    # the next write commits the person's edit on its own first
    service.remember("another note")
    assert git_log(root(service))[1] == f"external: {result['path']}"
    assert git_status(root(service)) == []


def test_external_same_size_edit_with_preserved_mtime_is_seen(service: MemoryService) -> None:
    """Sync tools (rsync -t, cp -p, Syncthing) keep the size and the modification time of an edit."""
    result = service.remember("The staging server is called apollo")
    assert ids(service.recall("apollo")["insights"]) == [result["id"]]
    path = root(service) / result["path"]
    st = path.stat()
    path.write_text(path.read_text().replace("apollo", "hermes"))
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ids(service.recall("hermes")["insights"]) == [result["id"]]


def test_note_added_by_hand_is_read(service: MemoryService) -> None:
    (root(service) / "chunks" / "Hand").mkdir()
    (root(service) / "chunks" / "Hand" / "my-chunk.md").write_text(
        "---\nsummary: written by hand\n---\nObsidian graph notes about zebras\n"
    )
    assert ids(service.search("zebras")["results"]) == ["my-chunk"]
    assert service.peek("my-chunk")["content"] == "Obsidian graph notes about zebras"
    assert service.grep("zebra")["matches"][0]["id"] == "my-chunk"


def test_broken_note_is_reported_skipped_and_never_modified(service: MemoryService) -> None:
    good = service.remember("a readable zebra note")["id"]
    broken = {
        "insights/broken.md": b"---\nid: [unclosed zebra\n---\nzebra body\n",
        "insights/unclosed.md": b"---\ntitle: a zebra\n\nzebra body, the front matter never closed\n",
        "chunks/P/latin1.md": "---\nid: x\n---\nz\xe9bre\n".encode("latin-1"),
    }
    (root(service) / "chunks" / "P").mkdir()
    for rel, data in broken.items():
        (root(service) / rel).write_bytes(data)

    problems = {p["path"]: p["reason"] for p in service.status()["problems"]}
    assert set(problems) == set(broken)
    assert "YAML" in problems["insights/broken.md"]
    assert "front matter" in problems["insights/unclosed.md"]
    assert "UTF-8" in problems["chunks/P/latin1.md"]
    assert ids(service.recall("zebra")["insights"]) == [good]
    assert ids(service.search("zebra")["results"]) == [good]
    assert [m["id"] for m in service.grep("zebra")["matches"]] == [good]
    assert service.status()["insights"] == 1

    service.remember("a write after the problem appeared")
    service.chunk("a chunk in the same folder", project="P")
    for rel, data in broken.items():
        assert (root(service) / rel).read_bytes() == data
    tracked = git(root(service), "ls-files").split()
    assert not any(rel in tracked for rel in broken)
    assert {f"?? {rel}" for rel in broken} <= set(git_status(root(service)))


def test_external_deletion_is_committed_before_the_next_write(service: MemoryService) -> None:
    gone = service.remember("deleted by hand in the editor")
    (root(service) / gone["path"]).unlink()
    assert service.recall("editor")["insights"] == []
    service.remember("next note")
    assert git_log(root(service))[1] == f"external: {gone['path']}"
    assert gone["path"] not in git(root(service), "ls-files").split()
    assert git_status(root(service)) == []


# ======================================================================================== edge cases


@pytest.mark.parametrize(
    "content",
    [
        "---\nfoo: bar\n---\nreal body after a fake front matter",
        "  indented first line\n\ttabbed second line",
        "trailing spaces   \nnext",
        "Fix: a\n---\nb: c",
    ],
)
def test_tricky_content_round_trips_exactly(service: MemoryService, content: str) -> None:
    chunk_id = service.chunk(content, project="P")["id"]
    note_id = service.remember(content)["id"]
    assert service.peek(chunk_id)["content"] == content
    assert service.peek(note_id)["content"] == content
    assert service.status()["problems"] == []


def test_read_filters_accept_the_project_name_as_it_was_given_to_writes(service: MemoryService) -> None:
    """chunk(project='My App') is stored as 'My-App'; the same name must find it again."""
    chunk_id = service.chunk("spaced project", project="My App")["id"]
    assert chunk_id == "2026-11-24_My-App_001"
    assert ids(service.list_chunks(project="My App")["chunks"]) == [chunk_id]
    assert ids(service.grep("spaced", project="My App")["matches"]) == [chunk_id]


def test_two_services_on_one_vault_lose_nothing(config: Any, clock: Any) -> None:
    import threading

    first = open_service(config, clock=clock)
    second = open_service(config, clock=clock)
    made: list[str] = []
    errors: list[BaseException] = []

    def work(svc: MemoryService, name: str) -> None:
        try:
            for n in range(5):
                made.append(svc.chunk(f"{name} chunk {n}", project="Shared")["id"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, n)) for s, n in ((first, "a"), (second, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(set(made)) == 10
    assert sorted(made) == [f"2026-11-24_Shared_{n:03d}" for n in range(1, 11)]
    assert commit_count(config.vault) == 11
    assert not any(m.startswith("external:") for m in git_log(config.vault))
    assert git_status(config.vault) == []


@pytest.mark.parametrize("call", ["remember", "chunk", "chunk_summary"])
def test_lone_surrogate_is_invalid_input_not_a_crash(
    service: MemoryService, unchanged: Any, call: str
) -> None:
    """A transcript cut in the middle of an emoji's UTF-16 pair reaches us as a lone surrogate."""
    cut = "an emoji cut in half \ud83d"
    with unchanged, pytest.raises(InvalidInput):
        if call == "remember":
            service.remember(cut)
        elif call == "chunk":
            service.chunk(cut, project="P")
        else:
            service.chunk("fine body", summary=cut, project="P")
    assert git_status(root(service)) == []


SECRET = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.remember(f"token is {SECRET}"),
        lambda s: s.remember("fine", tags=SECRET),
        lambda s: s.chunk(f"line one\nexport GITHUB_TOKEN={SECRET}"),
        lambda s: s.chunk("fine text", summary=f"with {SECRET}"),
    ],
)
def test_a_secret_is_refused_naming_its_kind_and_line(service: MemoryService, call: Any) -> None:
    from rlm_vault.errors import SecretFound

    before = commit_count(service.vault.root)
    with pytest.raises(SecretFound, match="GitHub token on line"):
        call(service)
    assert commit_count(service.vault.root) == before and git_status(service.vault.root) == []


def test_update_refuses_a_secret(service: MemoryService) -> None:
    from rlm_vault.errors import SecretFound

    note = service.remember("a harmless fact")
    with pytest.raises(SecretFound):
        service.update(note["id"], content=f"now with {SECRET}")
    assert SECRET not in (service.vault.root / note["path"]).read_text()


def test_automatic_saves_redact_and_say_so(service: MemoryService) -> None:
    result = service.chunk(
        f"pasted config:\npassword = 'hunter2-Very-Long'\n{SECRET}", redact=True, chunk_type="snapshot"
    )
    text = (service.vault.root / result["path"]).read_text()
    assert SECRET not in text and "hunter2-Very-Long" not in text
    assert "[REDACTED:" in text
    assert result["redacted"] and "redacted:" in text


def test_allow_list_lets_a_known_value_through(config: Any, clock: Any) -> None:
    from dataclasses import replace

    svc = open_service(replace(config, secret_allowlist=(SECRET,)), clock=clock)
    assert svc.remember(f"the public demo token is {SECRET}")["id"]
