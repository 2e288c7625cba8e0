"""A vault as Obsidian and the disks of every system see it: readable names, valid names, links that resolve."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import git, git_log

from rlm_vault import markdown
from rlm_vault.service import MemoryService

WIKILINK = re.compile(r"\[\[([^\]|#]+)(?:[|#][^\]]*)?\]\]")
WINDOWS_BAD = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}


def vault_files(root: Path) -> list[Path]:
    return [
        p for p in root.rglob("*") if ".git" not in p.relative_to(root).parts[:1] and ".rlm" not in p.parts
    ]


def notes(root: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """Every Markdown note by its file name without `.md` (what `[[name]]` resolves to)."""
    found = {}
    for path in vault_files(root):
        if path.suffix == ".md" and path.is_file():
            assert path.stem not in found, f"two notes named {path.stem}: links would be ambiguous"
            text = path.read_text(encoding="utf-8")
            found[path.stem] = markdown.parse(text, str(path)) if text.startswith("---") else ({}, text)
    return found


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def windows_problems(root: Path) -> list[str]:
    """Names Windows or a case-insensitive disk would refuse or merge."""
    problems = []
    for path in vault_files(root):
        name = path.name
        if WINDOWS_BAD.search(name) or name.endswith((".", " ")) or name.split(".")[0].upper() in RESERVED:
            problems.append(str(path.relative_to(root)))
    folders = {p.parent for p in vault_files(root)}
    for folder in folders:
        names = [p.name.casefold() for p in folder.iterdir()]
        if len(names) != len(set(names)):
            problems.append(f"{folder.relative_to(root)}: names that differ only by case")
    return problems


def write_a_little_of_everything(service: MemoryService) -> dict[str, str]:
    ids = {}
    ids["chunk1"] = service.chunk("We chose SQLite for the cache.", summary="Cache storage", project="MyApp")[
        "id"
    ]
    ids["chunk2"] = service.chunk("Then we wrote the migration.", summary="Migration", project="MyApp")["id"]
    ids["snap1"] = service.chunk("Before compact one", chunk_type="snapshot", project="MyApp")["id"]
    ids["snap2"] = service.chunk("Before compact two", chunk_type="snapshot", project="MyApp")["id"]
    ids["plain"] = service.remember("Always deploy LOCAL -> VPS", category="decision", source=ids["chunk1"])[
        "id"
    ]
    ids["ja"] = service.remember("デプロイは金曜日にしない", category="decision", importance="high")["id"]
    ids["fr"] = service.remember("L'équipe préfère les bouteilles de 500ml")["id"]
    ids["con"] = service.chunk("device names", project="CON")["id"]
    ids["odd"] = service.chunk("a project with signs", project="My:App?")["id"]
    ids["Foo"] = service.chunk("first pelican in Foo", project="Foo")["id"]
    ids["foo"] = service.chunk("then pelican in foo", project="foo")["id"]
    return ids


def test_a_fresh_vault_has_valid_names_and_every_wikilink_resolves(service: MemoryService) -> None:
    write_a_little_of_everything(service)
    root = service.vault.root
    found = notes(root)
    links = {
        target.strip()
        for meta, body in found.values()
        for text in [*strings(meta), body]
        for target in WIKILINK.findall(text)
    }
    assert links, "no wikilinks at all"
    assert sorted(t for t in links if t not in found) == []
    assert windows_problems(root) == []


def test_chunks_link_to_their_session_note_written_in_the_same_commit(service: MemoryService) -> None:
    ids = write_a_little_of_everything(service)
    root = service.vault.root
    meta, _ = markdown.parse((root / "chunks" / "MyApp" / f"{ids['chunk1']}.md").read_text(), "c")
    session = meta["session"]
    assert session == "2026-11-24_MyApp"  # the machine-readable key stays as it was
    assert meta["links"] == [f"[[{session}]]"]
    smeta, body = markdown.parse((root / "sessions" / f"{session}.md").read_text(), "s")
    assert (smeta["type"], smeta["project"]) == ("session", "MyApp")
    assert [f"[[{ids[k]}]]" in body for k in ("chunk1", "chunk2", "snap1", "snap2")] == [True] * 4
    assert f"[[{ids['chunk1']}]] Cache storage" in body
    [sid] = [s["id"] for s in service.sessions(project="MyApp")["sessions"]]
    assert sid == session
    # The chunk and its session note are one commit.
    subject = f"chunk: {ids['chunk2']} Migration"
    sha = git(root, "log", "--format=%H", f"--grep=^{subject}$").strip()
    changed = git(root, "show", "--name-only", "--format=", sha).split()
    assert sorted(changed) == sorted([f"chunks/MyApp/{ids['chunk2']}.md", f"sessions/{session}.md"])


def test_a_snapshot_links_to_the_previous_one_and_an_insight_to_its_source(service: MemoryService) -> None:
    ids = write_a_little_of_everything(service)
    root = service.vault.root
    first, _ = markdown.parse((root / "chunks" / "MyApp" / f"{ids['snap1']}.md").read_text(), "a")
    second, _ = markdown.parse((root / "chunks" / "MyApp" / f"{ids['snap2']}.md").read_text(), "b")
    assert first["links"] == ["[[2026-11-24_MyApp]]"]
    assert second["links"] == ["[[2026-11-24_MyApp]]", f"[[{ids['snap1']}]]"]
    meta, _ = markdown.parse((root / "insights" / f"{ids['plain']}.md").read_text(), "i")
    assert meta["source"] == f"[[{ids['chunk1']}]]"


def test_titles_are_readable_in_any_script(service: MemoryService) -> None:
    ids = write_a_little_of_everything(service)
    root = service.vault.root
    assert ids["ja"] == "2026-11-24-デプロイは金曜日にしない"
    assert (root / "insights" / f"{ids['ja']}.md").is_file()
    assert f"remember: {ids['ja']} (decision/high) デプロイは金曜日にしない" in git_log(root)
    fr, _ = markdown.parse((root / "insights" / f"{ids['fr']}.md").read_text(), "fr")
    assert fr["aliases"] == ["L'équipe préfère les bouteilles de 500ml"]  # the name lost the accents
    plain, _ = markdown.parse((root / "insights" / f"{ids['plain']}.md").read_text(), "p")
    assert "aliases" not in plain  # the file name says it all


def test_project_folders_are_valid_everywhere_and_keep_the_given_name(service: MemoryService) -> None:
    ids = write_a_little_of_everything(service)
    root = service.vault.root
    assert (root / "chunks" / "CON_" / f"{ids['con']}.md").is_file()
    odd = root / "chunks" / "My-App" / f"{ids['odd']}.md"
    meta, _ = markdown.parse(odd.read_text(), "odd")
    assert meta["project"] == "My:App?"
    for name in ("My:App?", "My-App", "my-app"):
        assert [c["id"] for c in service.list_chunks(project=name)["chunks"]] == [ids["odd"]], name
    assert service.peek(ids["odd"])["path"] == f"chunks/My-App/{ids['odd']}.md"
    # `foo` after `Foo`: one folder, as macOS and Windows disks would have it.
    assert sorted(p.name for p in (root / "chunks").iterdir() if p.name.casefold() == "foo") == ["Foo"]
    foo, _ = markdown.parse((root / "chunks" / "Foo" / f"{ids['foo']}.md").read_text(), "foo")
    assert foo["project"] == "foo"
    assert {c["id"] for c in service.list_chunks(project="foo")["chunks"]} == {ids["Foo"], ids["foo"]}
    assert {h["id"] for h in service.search("pelican", project="FOO")["results"]} == {ids["Foo"], ids["foo"]}


def test_editor_files_are_never_indexed_nor_committed(service: MemoryService) -> None:
    root = service.vault.root
    service.chunk("a first chunk", project="MyApp")
    strays = {
        ".obsidian/app.json": '{"theme": "dark"}',
        ".obsidian/workspace.json": "{}",
        ".trash/old.md": "---\nid: old\n---\nthrown away\n",
        ".stfolder/x.md": "sync tool state",
        "Untitled.md": "a note at the top",
        "insights/.obsidian/x.md": "hidden in insights",
        "insights/sub/deeper.md": "not a place for notes",
        "chunks/.trash/y.md": "hidden in chunks",
        "chunks/MyApp/.draft.md": "a hidden file",
    }
    for rel, text in strays.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    assert service.status()["problems"] == []
    assert service.status()["insights"] == 0 and service.status()["chunks"] == 1
    service.remember("a write commits pending edits first")
    service.chunk("and another write", project="MyApp")
    tracked = set(git(root, "ls-files").split())
    assert not set(strays) & tracked


def test_a_note_without_front_matter_is_a_memory_and_committed(service: MemoryService) -> None:
    root = service.vault.root
    service.chunk("a first chunk", project="MyApp")
    hand = root / "insights" / "Pelican care.md"
    hand.write_text("Pelicans need fresh fish every morning.\n")
    os.utime(hand, (1_700_000_000, 1_700_000_000))
    (root / "chunks" / "MyApp" / "meeting notes.md").write_text("# Meeting\n\nWe talked about pelicans.\n")
    assert service.status()["problems"] == []
    [row] = service.recall("pelicans")["insights"]
    assert (row["id"], row["category"], row["created"]) == ("Pelican care", "general", "2023-11-14T22:13:20Z")
    assert {h["id"] for h in service.search("pelicans")["results"]} == {"Pelican care", "meeting notes"}
    service.remember("the next write")
    assert git_log(root)[1] == "external: 2 files"
    assert {"insights/Pelican care.md", "chunks/MyApp/meeting notes.md"} <= set(
        git(root, "ls-files", "-z").split("\0")
    )
    assert hand.read_text() == "Pelicans need fresh fish every morning.\n"  # never rewritten


def test_a_long_session_note_stops_growing(service: MemoryService, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write must not rewrite an ever longer session note: past a cap, later chunks only link to it."""
    from rlm_vault import chunks as chunks_module

    monkeypatch.setattr(chunks_module, "SESSION_LISTED", 3)
    ids = [service.chunk(f"part {n} of a long session", project="Long")["id"] for n in range(6)]
    [session] = [s["id"] for s in service.sessions(project="Long")["sessions"]]
    body = (service.vault.root / "sessions" / f"{session}.md").read_text()
    assert [f"[[{i}]]" in body for i in ids] == [True, True, True, False, False, False]
    assert body.count("more chunks of this session") == 1
    last = git(service.vault.root, "show", "--name-only", "--format=", "HEAD").split()
    assert last == [f"chunks/Long/{ids[-1]}.md"]  # the note was not rewritten
    meta, _ = markdown.parse((service.vault.root / "chunks" / "Long" / f"{ids[-1]}.md").read_text(), "c")
    assert meta["links"] == [f"[[{session}]]"]


def test_a_session_note_a_person_edited_keeps_their_words(service: MemoryService) -> None:
    """The link line is appended to the note as it is: front matter and prose a person wrote stay verbatim."""
    first = service.chunk("the first part", project="Kept")["id"]
    [session] = [s["id"] for s in service.sessions(project="Kept")["sessions"]]
    path = service.vault.root / "sessions" / f"{session}.md"
    edited = (
        path.read_text().replace("type: session", "type: session  # mine\nmood: calm") + "\nMy own note.\n"
    )
    path.write_text(edited)
    second = service.chunk("the second part", project="Kept")["id"]
    text = path.read_text()
    assert text.startswith(edited.rstrip("\n"))  # not parsed and written again
    assert f"[[{first}]]" in text and text.rstrip("\n").endswith(f"[[{second}]] the second part")
    path.write_bytes(b"\xff\xfe not UTF-8")
    service.chunk("the third part", project="Kept")
    assert path.read_bytes() == b"\xff\xfe not UTF-8"  # left alone, and the chunk was still saved
