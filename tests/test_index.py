"""The text index on real index folders: BM25F scores, filters, updates, merges, other processes, damage."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from rlm_vault import index as index_module
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


@pytest.mark.parametrize("few", [64, 0])  # changed notes found one by one, or in one pass
def test_incremental_updates_equal_a_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    monkeypatch.setattr(index_module, "FEW_LOOKUPS", few)
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


def test_a_rebuild_in_batches_answers_like_one_built_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlm_vault import index as index_module

    words = ["plum", "jazz", "river", "stone", "cedar", "lamp", "quartz", "wren"]
    docs = [
        make_doc(f"d{i:02}", " ".join(words[(i * k) % len(words)] for k in range(1, 6)), project=f"P{i % 3}")
        for i in range(23)
    ]
    whole = TextIndex(tmp_path / "whole")
    whole.rebuild(docs)
    monkeypatch.setattr(index_module, "BUILD_BATCH", 5)
    seen: list[tuple[int, int]] = []
    batched = TextIndex(tmp_path / "batched")
    batched.rebuild(docs, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (23, 23) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    for query in ["plum river", "quartz", "wren cedar lamp", "nothing here"]:
        assert batched.search(query, limit=30) == whole.search(query, limit=30)
    assert batched.stamps() == whole.stamps() and batched.matches("quarts") == whole.matches("quarts")
    assert len(json.loads((tmp_path / "batched" / "manifest.json").read_text())["segments"]) == 1


def test_scores_are_bm25f_with_field_boosts(index: TextIndex) -> None:
    index.update([make_doc("a", "jazz jazz plum"), make_doc("b", "plum", summary="jazz")])
    k1, b = 1.2, 0.2
    idf = math.log(2 / (1 + 1)) + 1  # Whoosh's idf: "jazz" is in the body of one of the two documents

    def bm25(tf: float, length: float, average: float) -> float:
        return idf * tf * (k1 + 1) / (tf + k1 * ((1 - b) + b * length / average))

    scores = dict(index.search("jazz"))
    assert scores["a"] == pytest.approx(bm25(2, 3, (3 + 1) / 2) * 1.0)  # body, boost 1
    assert scores["b"] == pytest.approx(bm25(1, 1, (0 + 1) / 2) * 2.0)  # summary, boost 2


def test_ties_are_ordered_by_id_even_at_the_cut(index: TextIndex) -> None:
    index.update([make_doc(doc_id, "same words here") for doc_id in ("c", "a", "d", "b")])
    assert ids(index.search("same words", limit=2)) == ["a", "b"]
    assert ids(index.search("same words")) == ["a", "b", "c", "d"]


def test_no_term_query_lists_newest_first_then_greater_id(index: TextIndex) -> None:
    index.update(
        [
            make_doc("n1", "x", created="2026-01-01T00:00:00Z"),
            make_doc("n2", "y", created="2026-01-01T00:00:00Z"),
            make_doc("n0", "z", created="2026-02-01T00:00:00Z"),
        ]
    )
    assert index.search("", limit=2) == [("n0", 0.0), ("n2", 0.0)]
    assert index.search("", Filters(project="none")) == []


def test_entity_filter_is_a_substring_of_one_entity(index: TextIndex) -> None:
    index.update(
        [
            make_doc("e1", "deploy", entities=("Api/Routes.py, models.py",)),
            make_doc("e2", "deploy", entities=("docs/index.md",), domain="web"),
        ]
    )
    assert index.allowed_ids(Filters(entity="models")) == {"e1"}
    assert index.allowed_ids(Filters(entity="routes.py, models")) == set()  # entities split at commas
    assert index.allowed_ids(Filters(entity="*.p?y")) == {"e1"}
    assert index.allowed_ids(Filters(domain="web")) == {"e2"}


def test_fuzzy_vocabulary_follows_updates(index: TextIndex) -> None:
    index.update([make_doc("f1", "The Kubernetes rollout"), make_doc("f2", "kubernetes and the cluster")])
    assert "kubernetes" in index.matches("kubernets")
    assert index.holders(["kubernetes"]) == {"f1", "f2"}
    assert index.holders(["the"]) == {"f1", "f2"}  # stop words are kept for grep
    index.update([make_doc("f3", "rollout again")], deletes=["f2"])
    assert index.holders(["kubernetes", "again"]) == {"f1", "f3"}
    assert index.holders([]) == set()


def test_many_small_writes_are_merged_and_answer_like_a_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "GRACE", 0.0)  # retired files go at the next write
    topics = ("migration", "deploy", "cache")
    docs = {f"d{i}": make_doc(f"d{i}", f"note {i} about {topics[i % 3]}") for i in range(40)}
    live = TextIndex(tmp_path / "live")
    live.rebuild(list(docs.values()))
    folder = tmp_path / "live"
    for i in range(260):  # one note per write, past the fold into the main segment (5% of it + 200)
        doc = make_doc(f"d{i % 90}", f"note {i} about {topics[i % 3]} step {i % 7}", sha256=f"s{i}")
        gone = [f"d{i + 1}"] if i % 25 == 0 else []
        live.update([doc], deletes=gone)
        docs[doc.id] = doc
        for doc_id in gone:
            docs.pop(doc_id, None)
        assert (
            len(json.loads((folder / "manifest.json").read_text())["segments"]) <= index_module.MAX_TAIL + 1
        )
    rebuilt = TextIndex(tmp_path / "rebuilt")
    rebuilt.rebuild(list(docs.values()))
    assert live.stamps() == rebuilt.stamps()
    for query in ("deploy step 3", "migration note", "cache 12"):
        assert live.search(query, limit=50) == rebuilt.search(query, limit=50)
    manifest = json.loads((folder / "manifest.json").read_text())
    named = {"manifest.json"} | {e["deleted"] for e in manifest["segments"]}
    segments = {e["name"] for e in manifest["segments"]}
    assert [
        p.name for p in folder.iterdir() if p.name not in named and p.name.split(".")[0] not in segments
    ] == []


WRITER = """
import sys
from rlm_vault.index import SearchDoc, TextIndex
doc = SearchDoc("n2", "insight", "", "", "", "", "", (), (), "2026-01-02T00:00:00Z", "", "written elsewhere", "s2")
TextIndex(sys.argv[1]).update([doc], deletes=["n1"])
"""


def test_another_process_write_is_seen_at_the_next_call(tmp_path: Path) -> None:
    index = TextIndex(tmp_path / "ix")
    index.update([make_doc("n1", "hello"), make_doc("n0", "stays")])
    facts = index.facts()
    version = index.version
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path / "ix")], check=True)
    assert ids(index.search("written elsewhere")) == ["n2"]
    assert index.search("hello") == []
    assert set(index.stamps()) == {"n0", "n2"} and index.kind("n2") == "insight"
    assert index.facts() is facts and set(facts) == {"n0", "n2"}  # brought up to date in place
    assert index.version > version


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete", "manifest", "deleted"])
def test_damaged_files_raise_cache_error(tmp_path: Path, damage: str) -> None:
    index = TextIndex(tmp_path / "ix")
    index.update([make_doc("n1", "hello world"), make_doc("n2", "hello there")])
    index.update([], deletes=["n2"])
    index.close()
    folder = tmp_path / "ix"
    arrays = sorted(folder.glob("seg-*.arrays"))
    if damage == "truncate":
        arrays[0].write_bytes(arrays[0].read_bytes()[:-100])
    elif damage == "garbage":
        arrays[0].write_bytes(b"\x93NUMPY garbage" * 20)
    elif damage == "delete":
        arrays[0].unlink()
    elif damage == "manifest":
        (folder / "manifest.json").write_text("{not json")
    else:
        next(folder.glob("deleted-*.npy")).write_bytes(b"")
    with pytest.raises(CacheError):
        TextIndex(folder).search("hello")


def test_an_index_of_an_older_version_raises_cache_error(tmp_path: Path) -> None:
    (tmp_path / "ix").mkdir()
    (tmp_path / "ix" / "_MAIN_3.toc").write_bytes(b"an index of an older version")
    with pytest.raises(CacheError):
        TextIndex(tmp_path / "ix")


def test_a_bug_in_our_code_is_raised_not_called_damage(
    index: TextIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.update([make_doc("n1", "hello")])

    def bug(*args: object) -> object:
        raise TypeError("a bug in our own code")

    monkeypatch.setattr(index_module.Segment, "postings", bug)
    with pytest.raises(TypeError, match="our own code"):
        index.search("hello")
