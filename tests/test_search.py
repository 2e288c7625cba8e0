"""The search engine end to end: sync by content hash, hybrid search, filters, repair of broken caches."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from test_index import make_doc
from tinymodel import build_tiny_model

from rlm_vault.embeddings import Model2VecEmbedder
from rlm_vault.index import Filters, SearchDoc
from rlm_vault.search import Hit, SearchEngine

WORDS = [
    "database",
    "databse",
    "migration",
    "migraton",
    "failed",
    "cat",
    "food",
    "kibble",
    "deploy",
    "pipeline",
    "vps",
    "local",
    "weather",
    "sunny",
    "notes",
    "timeout",
    "connection",
]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Model2VecEmbedder:
    embedder = Model2VecEmbedder(str(build_tiny_model(WORDS, tmp_path_factory.mktemp("m") / "tiny")))
    assert embedder.wait(30), embedder.status()
    return embedder


class Vault:
    """A stand-in for the vault: docs by id, and a loader that counts what it loads."""

    def __init__(self, docs: list[SearchDoc]) -> None:
        self.docs = {doc.id: doc for doc in docs}
        self.loaded: list[str] = []

    def current(self) -> dict[str, str]:
        return {doc_id: doc.sha256 for doc_id, doc in self.docs.items()}

    def load(self, ids: list[str]) -> list[SearchDoc]:
        self.loaded.extend(ids)
        return [self.docs[i] for i in ids if i in self.docs]

    def sync(self, engine: SearchEngine) -> int:
        return engine.sync(self.current(), self.load)


def base_docs() -> list[SearchDoc]:
    return [
        make_doc("mig", "database migration failed", summary="migration"),
        make_doc("cat", "cat food and kibble"),
        make_doc("ins", "always deploy local to vps", kind="insight", project="", category="decision"),
    ]


def test_sync_loads_only_new_or_changed_notes(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    vault = Vault(base_docs())
    engine = SearchEngine(tmp_path, embedder)
    assert vault.sync(engine) == 3
    vault.loaded.clear()
    assert vault.sync(engine) == 0 and vault.loaded == []
    vault.docs["cat"] = replace(vault.docs["cat"], body="sunny weather", sha256="v2")
    del vault.docs["mig"]
    assert vault.sync(engine) == 1 and vault.loaded == ["cat"]
    assert engine.search("migration") == []
    assert [h.id for h in engine.search("weather")] == ["cat"]
    assert engine.problems() == []


def test_hits_carry_kind_and_vectors_survive_typos(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    vault = Vault(base_docs())
    engine = SearchEngine(tmp_path, embedder)
    vault.sync(engine)
    assert engine.search("deploy vps")[0] == Hit("ins", "insight", engine.search("deploy vps")[0].score)
    # No term in common with any note: only the vectors (trigram-similar words) can find it.
    assert engine.search("databse migraton")[0].id == "mig"


def test_bm25_only_until_the_model_is_ready(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    vault = Vault(base_docs())
    waiting = Model2VecEmbedder(embedder.name)  # not started: search must not wait for it
    engine = SearchEngine(tmp_path, waiting)
    vault.sync(engine)
    assert engine.search("databse migraton") == []
    assert "configured, loads on first search" in engine.status()["semantic_reason"]
    assert waiting.wait(30)
    vault.loaded.clear()
    vault.sync(engine)  # now embeds what it skipped, loading those notes once
    assert sorted(vault.loaded) == ["cat", "ins", "mig"]
    assert engine.search("databse migraton")[0].id == "mig"


def test_filters_apply_inside_both_retrievals(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    strong = [make_doc(f"a{i}", "deploy pipeline deploy deploy", project="A") for i in range(50)]
    weak = make_doc("b", "notes about the weather and a deploy once", project="B")
    vault = Vault([*strong, weak])
    engine = SearchEngine(tmp_path, embedder)
    vault.sync(engine)
    assert "b" not in [h.id for h in engine.search("deploy pipeline", limit=10)]
    assert [h.id for h in engine.search("deploy pipeline", Filters(project="B"), limit=10)] == ["b"]
    assert engine.search("deploy pipeline", Filters(project="C")) == []


def test_new_and_deleted_notes_after_service_writes(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    vault = Vault(base_docs())
    engine = SearchEngine(tmp_path, embedder)
    vault.sync(engine)
    new = make_doc("new", "connection timeout")
    vault.docs["new"] = new
    vault.sync(engine)
    assert engine.search("timeout")[0].id == "new"
    engine.delete(["new", "mig"])
    del vault.docs["new"], vault.docs["mig"]
    assert engine.search("timeout") == []
    assert "mig" not in [h.id for h in engine.search("migration failed")]
    vault.loaded.clear()
    vault.sync(engine)
    assert vault.loaded == []


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_corrupted_index_is_rebuilt_from_the_vault(
    tmp_path: Path, embedder: Model2VecEmbedder, damage: str
) -> None:
    vault = Vault(base_docs())
    engine = SearchEngine(tmp_path, embedder)
    vault.sync(engine)
    engine.close()
    for path in (tmp_path / "index").iterdir():
        if damage == "delete":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    reopened = SearchEngine(tmp_path, embedder)
    vault.sync(reopened)
    assert [h.id for h in reopened.search("migration failed")][:1] == ["mig"]


def test_index_removed_under_a_running_engine_is_rebuilt(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    vault = Vault(base_docs())
    engine = SearchEngine(tmp_path, embedder)
    vault.sync(engine)
    shutil.rmtree(tmp_path / "index")
    vault.sync(engine)
    assert engine.search("kibble")[0].id == "cat"
    assert engine.status()["index_missing_or_stale"] == 0


def test_grep_fuzzy_follows_sync_and_filters(tmp_path: Path) -> None:
    vault = Vault([*base_docs(), make_doc("net", "line one\nthe connection timeout", project="B")])
    engine = SearchEngine(tmp_path, None)
    vault.sync(engine)
    hits = engine.grep_fuzzy("conection timout", threshold=80)
    assert hits[0].id == "net" and hits[0].line_no == 1
    assert engine.grep_fuzzy("conection timout", filters=Filters(project="A")) == []
    vault.docs["net"] = replace(vault.docs["net"], body="nothing", sha256="v2")
    vault.sync(engine)
    assert engine.grep_fuzzy("conection timout") == []


def test_rebuild_matches_incremental_sync(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    docs = [
        make_doc(f"d{i}", f"note {i} {WORDS[i % len(WORDS)]} {WORDS[i * 7 % len(WORDS)]}") for i in range(40)
    ]
    vault = Vault(docs)
    live = SearchEngine(tmp_path / "live", embedder)
    for i in range(0, 40, 8):
        Vault(docs[: i + 8]).sync(live)
    rebuilt = SearchEngine(tmp_path / "rebuilt", embedder)
    seen: list[tuple[int, int]] = []
    assert rebuilt.rebuild(lambda: list(vault.docs.values()), progress=lambda d, t: seen.append((d, t))) == 40
    assert seen[-1] == (80, 80)
    for query in ("database migration", "sunny weather notes", "kibble"):
        assert live.search(query, limit=20) == rebuilt.search(query, limit=20)


def test_empty_query_lists_filtered_notes_newest_first(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    vault = Vault(
        [
            make_doc("old", "x", created="2026-01-01T00:00:00Z"),
            make_doc("new", "y", created="2026-02-01T00:00:00Z"),
        ]
    )
    engine = SearchEngine(tmp_path, embedder)
    vault.sync(engine)
    assert [h.id for h in engine.search("", Filters(project="A"))] == ["new", "old"]
