"""The catalog: folder stamps, the listing interval, and the parsed-notes cache in .rlm/."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rlm_vault import markdown
from rlm_vault.catalog import Catalog
from rlm_vault.vault import Vault


def note(vault: Vault, rel: str, body: str) -> Path:
    path = vault.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown.render({"id": path.stem, "category": "fact"}, body), encoding="utf-8")
    return path


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
    with open(path, "r+", encoding="utf-8") as handle:  # rewritten in place: the folder does not change
        text = handle.read().replace("first", "third")
        handle.seek(0)
        handle.write(text)
        handle.truncate()
    time.sleep(0.35)
    assert catalog.refresh() == {"insights/a.md"}
    assert catalog.note("a").content == "third"


def test_a_new_process_reads_parsed_notes_from_the_cache(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    for n in range(3):
        note(vault, f"chunks/P/c{n}.md", f"chunk {n}")
    first = Catalog(vault)
    first.refresh()
    cache = json.loads((vault.cache / "catalog.json").read_text())
    assert set(cache["entries"]) == {f"chunks/P/c{n}.md" for n in range(3)}
    second = Catalog(vault)
    second.refresh()
    assert second._parsed == 0  # nothing parsed again: all three came from the cache
    assert sorted(c.id for c in second.chunks()) == ["c0", "c1", "c2"]
    assert [second.body(f"c{n}") for n in range(3)] == ["chunk 0", "chunk 1", "chunk 2"]


def test_chunk_bodies_are_read_from_their_files_not_kept(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    path = note(vault, "chunks/P/c1.md", "the first words\nof a long session")
    note(vault, "insights/i.md", "an insight stays whole")
    catalog = Catalog(vault)
    catalog.refresh()
    cached = json.loads((vault.cache / "catalog.json").read_text())["entries"]
    assert cached["chunks/P/c1.md"][3] == ""  # the cache file holds no chunk body either
    assert catalog.note("c1").content == "" and catalog.chunks()[0].content == ""
    assert catalog.note("i").content == "an insight stays whole"
    path.write_text(path.read_text().replace("first words", "edited words"), encoding="utf-8")
    assert catalog.body("c1") == "the edited words\nof a long session"  # the file as it is now
    assert catalog.read("c1").content == "the edited words\nof a long session"
    assert [c.content for c in catalog.chunks(full=True)] == ["the edited words\nof a long session"]
    path.unlink()
    assert catalog.body("c1") is None and catalog.read("c1") is None


def test_a_file_changed_since_the_cache_is_parsed_again(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    _path = note(vault, "insights/a.md", "old text")
    Catalog(vault).refresh()
    note(vault, "insights/a.md", "new text, longer")
    later = Catalog(vault)
    later.refresh()
    assert later.note("a").content == "new text, longer"


def test_a_broken_cache_is_ignored(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    note(vault, "insights/a.md", "text")
    Catalog(vault).refresh()
    (vault.cache / "catalog.json").write_text("{not json")
    catalog = Catalog(vault)
    catalog.refresh()
    assert catalog.note("a").content == "text"
    data = json.loads((vault.cache / "catalog.json").read_text())
    data["entries"]["insights/a.md"][2] = "not a mapping"
    (vault.cache / "catalog.json").write_text(json.dumps(data))
    again = Catalog(vault)
    again.refresh()
    assert again.note("a").content == "text"
