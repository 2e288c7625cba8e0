"""The catalog: folder stamps, the listing interval, and the note listing every process shares."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlm_vault import catalog as catalog_module
from rlm_vault import markdown
from rlm_vault.catalog import Catalog
from rlm_vault.vault import Vault


def note(vault: Vault, rel: str, body: str, **meta: object) -> Path:
    path = vault.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown.render({"id": path.stem, "category": "fact", **meta}, body), encoding="utf-8")
    return path


def rewrite_in_place(path: Path, old: str, new: str) -> None:
    with open(path, "r+", encoding="utf-8") as handle:  # the folder does not change
        text = handle.read().replace(old, new)
        handle.seek(0)
        handle.write(text)
        handle.truncate()


def test_a_replaced_or_added_file_is_seen_at_once(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    catalog = Catalog(vault, scan_interval=3600)
    path = note(vault, "insights/a.md", "first")
    catalog.refresh()
    tmp = path.with_name(".a.md.editor-tmp")
    tmp.write_text(path.read_text().replace("first", "second"))
    os.replace(tmp, path)  # how most editors save: the folder changes
    note(vault, "insights/b.md", "new file")
    assert catalog.refresh() == {"insights/a.md", "insights/b.md"}
    assert catalog.note("a").content == "second"


def test_an_in_place_edit_is_seen_once_the_interval_has_passed(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    catalog = Catalog(vault, scan_interval=0.3)
    path = note(vault, "insights/a.md", "first")
    catalog.refresh()
    rewrite_in_place(path, "first", "third")
    time.sleep(0.35)
    assert catalog.refresh() == {"insights/a.md"}
    assert catalog.note("a").content == "third"


def test_a_new_process_reads_the_listing_instead_of_parsing(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    for n in range(3):
        note(vault, f"chunks/P/c{n}.md", f"chunk {n}")
    first = Catalog(vault)
    first.refresh()
    assert first._parsed == 3
    second = Catalog(vault)
    second.refresh()
    assert second._parsed == 0  # nothing parsed again: all three came from the shared listing
    assert sorted(c.id for c in second.chunks()) == ["c0", "c1", "c2"]
    assert [second.body(f"c{n}") for n in range(3)] == ["chunk 0", "chunk 1", "chunk 2"]


def test_chunk_bodies_are_read_from_their_files_not_kept(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    path = note(vault, "chunks/P/c1.md", "the first words\nof a long session")
    note(vault, "insights/i.md", "an insight stays whole")
    catalog = Catalog(vault)
    catalog.refresh()
    with sqlite3.connect(vault.cache / Catalog.FILE) as db:
        stored = dict(db.execute("SELECT path, content || meta FROM notes").fetchall())
    assert "first words" not in stored["chunks/P/c1.md"]  # the listing holds no chunk body
    assert "an insight stays whole" in stored["insights/i.md"]
    assert catalog.note("c1").content == "" and catalog.chunks()[0].content == ""
    assert catalog.note("i").content == "an insight stays whole"
    path.write_text(path.read_text().replace("first words", "edited words"), encoding="utf-8")
    assert catalog.body("c1") == "the edited words\nof a long session"  # the file as it is now
    assert catalog.read("c1").content == "the edited words\nof a long session"
    assert [c.content for c in catalog.chunks(full=True)] == ["the edited words\nof a long session"]
    path.unlink()
    assert catalog.body("c1") is None and catalog.read("c1") is None


def test_a_file_changed_since_the_listing_is_parsed_again(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    note(vault, "insights/a.md", "old text")
    Catalog(vault).refresh()
    note(vault, "insights/a.md", "new text, longer")
    later = Catalog(vault)
    later.refresh()
    assert later.note("a").content == "new text, longer"


@pytest.mark.parametrize("damage", [b"not a database at all" * 100, b""])
def test_a_damaged_listing_is_rebuilt_from_the_notes(tmp_path: Path, damage: bytes) -> None:
    vault = Vault.open(tmp_path / "v")
    note(vault, "insights/a.md", "text")
    first = Catalog(vault)
    first.refresh()
    first.close()
    for suffix in ("-wal", "-shm"):
        (vault.cache / f"{Catalog.FILE}{suffix}").unlink(missing_ok=True)
    (vault.cache / Catalog.FILE).write_bytes(damage)
    catalog = Catalog(vault)
    catalog.refresh()
    assert catalog.note("a").content == "text"


def test_a_listing_damaged_while_open_is_rebuilt(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    note(vault, "insights/a.md", "text")
    catalog = Catalog(vault)
    catalog.refresh()
    with sqlite3.connect(vault.cache / Catalog.FILE) as db:
        db.execute("DROP TABLE aliases")  # what a damaged page looks like to a query: the table is unreadable
        db.execute("CREATE TABLE aliases (x)")
    assert catalog.resolve("old-name") is None  # the query fails, the file is rebuilt, the answer is exact
    assert catalog.note("a").content == "text"


def test_what_one_process_noticed_is_reported_to_every_other(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    note(vault, "insights/a.md", "first")
    window, cli = Catalog(vault, scan_interval=3600), Catalog(vault, scan_interval=3600)
    window.refresh()
    cli.refresh()
    note(vault, "insights/b.md", "written by a person")
    assert cli.refresh() == {"insights/b.md"}  # the first to look updates the shared listing
    assert window.refresh() == {"insights/b.md"}  # the other still learns of it: a pending edit for it too
    assert window.refresh() == set()


def test_own_writes_are_not_a_persons_edits_but_reach_the_search_caches(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    note(vault, "insights/a.md", "first")
    writer, reader = Catalog(vault, scan_interval=3600), Catalog(vault, scan_interval=3600)
    writer.refresh()
    reader.refresh()
    start = reader.head()
    note(vault, "insights/b.md", "written by rlm-vault")
    (vault.root / "insights/a.md").unlink()
    writer.absorb(["insights/b.md", "insights/a.md"])
    assert reader.refresh() == set()  # not a person's change: nothing to commit for them
    assert reader.version > start
    head, changed = reader.hashes_since(start)
    assert head == reader.version
    assert changed == {"b": reader.sha_of("b"), "a": None}
    assert reader.hashes() == {"b": reader.sha_of("b")}


def test_a_server_leaves_big_folders_to_its_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "QUICK_SCAN", -1.0)  # every folder counts as big
    monkeypatch.setattr(catalog_module, "SWEEP_FACTOR", 0)
    vault = Vault.open(tmp_path / "v")
    path = note(vault, "chunks/P/c1.md", "first words")
    server = Catalog(vault, scan_interval=0.0, defer_scans=True)
    server.refresh()
    rewrite_in_place(path, "first", "other")
    assert server.refresh() == set()  # a tool call does not list the big folder again
    note(vault, "chunks/P/c2.md", "a new file")
    assert server.refresh() == {"chunks/P/c1.md", "chunks/P/c2.md"}  # a changed folder: listed at once
    rewrite_in_place(path, "other", "third")
    server.sweep()
    assert server.refresh() == {"chunks/P/c1.md"}
    assert server.body("c1") == "third words"


def test_lookups_answer_from_the_listing(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    note(vault, "chunks/P/2026-01-02_P_003.md", "x", type="chunk", chunk_type="snapshot")
    note(vault, "chunks/P/2026-01-02_P_011_auth.md", "y", type="chunk", sha256="abc")
    note(vault, "chunks/Q/2026-01-02_P_040.md", "z", type="chunk")  # another folder: another prefix
    note(vault, "insights/new-name.md", "renamed", aliases=["old-name", "older"])
    (vault.root / "insights" / "broken.md").write_bytes(b"\xff\xfe")
    catalog = Catalog(vault)
    catalog.refresh()
    assert catalog.max_seq("2026-01-02_P_") == 11
    assert catalog.chunk_with_digest("abc").id == "2026-01-02_P_011_auth"
    assert [c.id for c in catalog.chunks(project="p", chunk_type="snapshot")] == ["2026-01-02_P_003"]
    assert catalog.resolve("older") == "new-name" and catalog.resolve("new-name") == "new-name"
    assert catalog.counts() == {"insight": 1, "chunk": 3} and catalog.projects() == {"P": 2, "Q": 1}
    assert [p.path for p in catalog.problems()] == ["insights/broken.md"]
    assert (
        catalog.problem("insights/broken.md") is not None and catalog.problem("insights/new-name.md") is None
    )


def test_a_stream_pages_through_every_note_newest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "STREAM_FIRST_PAGE", 3)
    monkeypatch.setattr(catalog_module, "STREAM_PAGE", 7)
    vault = Vault.open(tmp_path / "v")
    for n in range(40):  # creation times repeat: (created, id) orders them
        project = "P" if n % 3 else "Q"
        created = f"2026-01-{1 + n % 5:02d}T10:00:00Z"
        note(vault, f"chunks/{project}/c{n:02d}.md", f"{n}", type="chunk", created=created)
    for n in range(5):
        note(vault, f"insights/i{n}.md", "i", created=f"2026-01-0{n + 1}T09:00:00Z")
    catalog = Catalog(vault)
    catalog.refresh()
    everything = [n.id for n in catalog.newest(1000)]
    assert len(everything) == 45 and [n.id for n in catalog.stream()] == everything
    chunks = [n.id for n in catalog.newest(1000, kind="chunk", project="p")]
    assert len(chunks) == 26 and [n.id for n in catalog.stream("chunk", "p")] == chunks


def test_chunk_facts_say_what_the_chunks_say(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    note(
        vault,
        "chunks/P/a.md",
        "x",
        type="chunk",
        domain="bugfix",
        session="s-1",
        created="2026-01-02T10:00:00Z",
    )
    note(vault, "chunks/P/b.md", "y", type="chunk", created="2026-01-03T10:00:00Z")  # no domain, no session
    note(vault, "chunks/My App/c.md", "z", type="chunk", project="My:App?", domain=7, session=None)
    (vault.root / "chunks" / "P" / "plain.md").write_text("no front matter at all\n", encoding="utf-8")
    note(vault, "insights/i.md", "an insight", domain="feature")
    catalog = Catalog(vault)
    catalog.refresh()
    chunks = catalog.chunks()
    assert len(chunks) == 4
    assert [(f.project, f.domain, f.session, f.created) for f in catalog.chunk_facts()] == [
        (c.project, c.domain, c.session, c.created) for c in chunks
    ]


PARSE = """
import sys
from pathlib import Path
from rlm_vault.catalog import Catalog
from rlm_vault.vault import Vault
catalog = Catalog(Vault(Path(sys.argv[1])))
catalog.refresh()
print(catalog._parsed, len(catalog.ids()))
"""


def test_processes_starting_together_parse_each_note_once(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    for n in range(300):
        note(vault, f"chunks/P/c{n:03}.md", f"chunk {n}")
    runs = [
        subprocess.Popen([sys.executable, "-c", PARSE, str(vault.root)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    counts = [tuple(map(int, run.communicate(timeout=120)[0].split())) for run in runs]
    assert all(listed == 300 for _, listed in counts)
    assert sum(parsed for parsed, _ in counts) == 300  # one process parsed; the others read its listing


def test_listing_an_unchanged_folder_again_changes_nothing(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    note(vault, "chunks/P/c1.md", "words")
    catalog = Catalog(vault, scan_interval=0.0)
    catalog.refresh()
    head = catalog.head()
    for _ in range(3):
        assert catalog.refresh() == set()
    assert catalog.head() == head == catalog.version  # the search caches have nothing to catch up on


def test_a_big_folder_listed_recently_by_any_process_is_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "QUICK_SCAN", -1.0)  # every folder counts as big
    monkeypatch.setattr(catalog_module, "SWEEP_FACTOR", 10**6)
    vault = Vault.open(tmp_path / "v")
    path = note(vault, "chunks/P/c1.md", "first words")
    Catalog(vault, scan_interval=0.0).refresh()
    rewrite_in_place(path, "first", "other")
    command = Catalog(vault, scan_interval=0.0)  # a CLI command on a vault a server keeps listed
    command.refresh()
    assert command.body("c1") == "other words" and command.note("c1") is not None
    assert command._parsed == 0  # not listed again: a stat per note is what the sweep is for
    monkeypatch.setattr(catalog_module, "SWEEP_FACTOR", 0)
    assert command.refresh() == {"chunks/P/c1.md"}  # once its interval has passed, any process lists it


def test_a_process_that_fell_far_behind_reads_everything_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "TRIM_EVERY", 1)
    monkeypatch.setattr(catalog_module, "KEEP_GONE", 1)  # deletions are forgotten at once
    vault = Vault.open(tmp_path / "v")
    for name in "abc":
        note(vault, f"insights/{name}.md", name)
    writer, sleeper = Catalog(vault, scan_interval=3600), Catalog(vault, scan_interval=3600)
    writer.refresh()
    sleeper.refresh()
    start = sleeper.version
    for name in "ab":
        (vault.root / f"insights/{name}.md").unlink()
        writer.absorb([f"insights/{name}.md"])
    assert sleeper.hashes_since(start)[1] is None  # the search caches read every hash again
    sleeper.refresh()
    assert sleeper.lapsed  # and the pending edits are asked of git
    assert set(sleeper.hashes()) == {"c"}
