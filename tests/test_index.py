"""The Whoosh text index on real index directories: filters, updates, deletes, corruption."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rlm_vault.errors import CacheError
from rlm_vault.index import Filters, SearchDoc, TextIndex


def make_doc(doc_id: str, body: str, **meta: object) -> SearchDoc:
    fields: dict[str, object] = {
        "id": doc_id,
        "kind": "chunk",
        "project": "A",
        "domain": "",
        "category": "",
        "importance": "",
        "chunk_type": "session",
        "tags": (),
        "entities": (),
        "created": "2026-01-01T00:00:00Z",
        "summary": "",
        "body": body,
        "sha256": f"sha-{doc_id}-{hash(body)}",
    }
    fields.update(meta)
    return SearchDoc(**fields)  # type: ignore[arg-type]


@pytest.fixture
def index(tmp_path: Path) -> TextIndex:
    return TextIndex(tmp_path / "index")


def ids(hits: list[tuple[str, float]]) -> list[str]:
    return [doc_id for doc_id, _ in hits]


def test_partial_matches_rank_below_full_matches(index: TextIndex) -> None:
    index.update(
        [
            make_doc("full", "database migration failed"),
            make_doc("half", "migration of birds"),
            make_doc("none", "cat food"),
        ]
    )
    assert ids(index.search("database migration")) == ["full", "half"]


def test_filter_never_starves_the_weaker_project(index: TextIndex) -> None:
    strong = [make_doc(f"a{i}", "deploy deploy deploy pipeline deploy") for i in range(50)]
    weak = make_doc("b0", "a long note where deploy appears once " + "filler " * 50, project="B")
    index.update([*strong, weak])
    assert ids(index.search("deploy pipeline", limit=5)) != ["b0"]
    assert ids(index.search("deploy pipeline", Filters(project="B"), limit=5)) == ["b0"]


def test_filters_by_kind_date_entity_and_category(index: TextIndex) -> None:
    index.update(
        [
            make_doc("c1", "deploy", created="2026-01-10T09:00:00Z", entities=("api/routes.py",)),
            make_doc(
                "i1",
                "deploy",
                kind="insight",
                project="",
                category="decision",
                created="2026-02-01T00:00:00Z",
            ),
        ]
    )
    assert ids(index.search("deploy", Filters(kind="insight"))) == ["i1"]
    assert ids(index.search("deploy", Filters(date_from="2026-01-10", date_to="2026-01-10"))) == ["c1"]
    assert ids(index.search("deploy", Filters(entity="ROUTES"))) == ["c1"]
    assert ids(index.search("deploy", Filters(category="decision"))) == ["i1"]
    assert index.allowed_ids(Filters(date_from="2026-01-11")) == {"i1"}
    assert index.allowed_ids(Filters()) is None


def test_stop_word_query_lists_filtered_notes_newest_first(index: TextIndex) -> None:
    index.update(
        [
            make_doc("old", "x", created="2026-01-01T00:00:00Z"),
            make_doc("new", "y", created="2026-03-01T00:00:00Z"),
            make_doc("other", "z", project="B", created="2026-04-01T00:00:00Z"),
        ]
    )
    assert ids(index.search("the of", Filters(project="A"))) == ["new", "old"]


def test_update_replaces_and_delete_removes(index: TextIndex) -> None:
    index.update([make_doc("n1", "database migration"), make_doc("n2", "migration again")])
    index.update([make_doc("n1", "nothing relevant")], deletes=["n2"])
    assert index.search("migration") == []
    assert set(index.stamps()) == {"n1"}


def test_incremental_updates_equal_a_rebuild(tmp_path: Path) -> None:
    topics = ("migration", "deploy")
    docs = [make_doc(f"d{i}", f"note {i} about {topics[i % 2]} step {i % 5}") for i in range(30)]
    changed = [replace(d, body=d.body + " hotfix", sha256=d.sha256 + "x") for d in docs[:10]]
    live = TextIndex(tmp_path / "live")
    for doc in docs:
        live.update([doc])
    live.update(changed, deletes=["d29", "d28"])
    final = changed + docs[10:28]
    rebuilt = TextIndex(tmp_path / "rebuilt")
    rebuilt.rebuild(final)
    for query in ("deploy hotfix", "migration step 3", "note 12"):
        assert live.search(query, limit=30) == rebuilt.search(query, limit=30)
    assert live.stamps() == rebuilt.stamps()


def test_stamps_survive_reopening_and_other_writers(tmp_path: Path) -> None:
    first = TextIndex(tmp_path / "ix")
    first.update([make_doc("n1", "hello")])
    second = TextIndex(tmp_path / "ix")
    second.update([make_doc("n2", "world")])
    assert set(first.stamps()) == {"n1", "n2"}  # sees the other writer's commit
    assert first.search("world") and first.kind("n2") == "chunk"


def test_rebuild_reports_progress(index: TextIndex) -> None:
    seen: list[tuple[int, int]] = []
    index.rebuild([make_doc(f"d{i}", "text") for i in range(3)], progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3, 3)


def test_corrupted_index_raises_cache_error(tmp_path: Path) -> None:
    index = TextIndex(tmp_path / "ix")
    index.update([make_doc("n1", "hello world")])
    index.close()
    for path in (tmp_path / "ix").glob("*.seg"):
        path.write_bytes(path.read_bytes()[:40])
    for path in (tmp_path / "ix").glob("_MAIN_*.toc"):
        path.write_bytes(b"garbage")
    with pytest.raises(CacheError):
        TextIndex(tmp_path / "ix").search("hello")


def test_held_writer_lock_is_busy_not_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from whoosh.index import LockError

    from rlm_vault.errors import Busy

    index = TextIndex(tmp_path / "ix")

    def locked(**_: object) -> None:
        raise LockError("held")

    monkeypatch.setattr(index._ix, "writer", locked)
    with pytest.raises(Busy):
        index.update([make_doc("n1", "hello")])
