"""Search and grep through the service: caches that follow the vault, filters inside the ranking,
FR/EN/JA analysis, and a real (tiny) model2vec model for ranking by meaning."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import FakeClock
from tinymodel import build_tiny_model

from rlm_vault.config import Config
from rlm_vault.service import MemoryService, open_service

WORDS = [
    "database",
    "migration",
    "migrations",
    "failed",
    "failing",
    "schema",
    "upgrade",
    "cat",
    "food",
    "dog",
    "kibble",
    "deploy",
    "server",
    "rollback",
    "postgres",
]


def ids(result: dict) -> list[str]:
    return [r["id"] for r in result["results"]]


@pytest.fixture
def semantic(tmp_path: Path, config: Config, clock: FakeClock) -> MemoryService:
    model = build_tiny_model(WORDS, tmp_path / "tiny-model")
    svc = open_service(replace(config, embedding_model=str(model)), clock=clock)
    assert svc.wait_for_model(timeout=60)
    return svc


def test_search_ranks_chunks_and_insights_together(service: MemoryService) -> None:
    chunk = service.chunk("We moved the billing service to postgres 16 last week.", summary="billing db")[
        "id"
    ]
    insight = service.remember("Billing runs on postgres, never on mysql.", category="decision")["id"]
    service.chunk("Lunch menu: soup and bread.")
    result = service.search("billing postgres")
    assert set(ids(result)[:2]) == {chunk, insight}
    kinds = {r["id"]: r["kind"] for r in result["results"]}
    assert kinds[chunk] == "chunk" and kinds[insight] == "insight"
    assert ids(service.search("billing postgres", include_insights=False)) == [chunk]


def test_a_filtered_search_is_not_starved_by_other_projects(service: MemoryService) -> None:
    for n in range(40):
        service.chunk(f"kafka consumer lag kafka partitions kafka offsets {n}", project="Alpha")
    weak = service.chunk("one mention of kafka in a long text about gardening and tomatoes", project="Beta")[
        "id"
    ]
    assert weak not in ids(service.search("kafka", limit=10))
    assert ids(service.search("kafka", project="Beta")) == [weak]


def test_french_accents_and_plurals(service: MemoryService) -> None:
    note = service.chunk("L'équipe a décidé de déployer les mises à jour le vendredi.")["id"]
    service.chunk("Unrelated English text about deployments of the api.")
    assert ids(service.search("equipe decide deployer"))[0] == note
    assert ids(service.search("décisions déploiement"))[0] == note
    fr = service.remember("Je préfère les préférences explicites.")["id"]
    assert fr in [i["id"] for i in service.recall("preference")["insights"]]


def test_japanese_query_finds_japanese_text(service: MemoryService) -> None:
    note = service.chunk("データベースの移行が失敗したので、ロールバックした。")["id"]
    service.chunk("English only text about databases.")
    assert ids(service.search("データベース移行"))[0] == note


def test_a_note_edited_by_hand_is_found_without_restart(service: MemoryService) -> None:
    note = service.chunk("Notes on the build pipeline.")
    assert service.search("pipeline")["results"]
    path = service.vault.root / note["path"]
    path.write_text(
        path.read_text(encoding="utf-8").replace("pipeline", "zanzibarquux pipeline"), encoding="utf-8"
    )
    assert ids(service.search("zanzibarquux")) == [note["id"]]
    path.unlink()
    assert service.search("zanzibarquux")["results"] == []


def test_deleted_caches_are_rebuilt(service: MemoryService, config: Config) -> None:
    note = service.chunk("Saguaro cactus facts.")["id"]
    assert ids(service.search("saguaro")) == [note]
    service.searcher.engine().close()
    shutil.rmtree(service.vault.cache / "index")
    fresh = open_service(config)
    assert ids(fresh.search("saguaro")) == [note]


def test_corrupted_index_is_rebuilt(service: MemoryService, config: Config) -> None:
    note = service.chunk("Ocotillo plant facts.")["id"]
    service.search("ocotillo")
    service.searcher.engine().close()
    for segment in (service.vault.cache / "index").iterdir():
        segment.write_bytes(b"garbage")
    fresh = open_service(config)
    assert ids(fresh.search("ocotillo")) == [note]


def test_semantic_ranking_finds_related_words(semantic: MemoryService) -> None:
    target = semantic.chunk("the database migrations failing again")["id"]
    semantic.chunk("the dog kibble and cat food order")
    assert semantic.semantic_status()["enabled"] is True
    assert ids(semantic.search("database migration failed"))[0] == target
    status = semantic.status()["semantic"]
    assert status["enabled"] and "loaded" in status["reason"]


def test_semantic_status_explains_a_model_that_cannot_load(config: Config) -> None:
    svc = open_service(replace(config, embedding_model="/nonexistent/model"))
    svc.chunk("postgres notes")
    assert ids(svc.search("postgres"))  # BM25 keeps working
    svc.wait_for_model(timeout=30)
    status = svc.status()["semantic"]
    assert status["enabled"] is False and "could not be loaded" in status["reason"]


def test_fuzzy_grep_tolerates_typos(service: MemoryService) -> None:
    note = service.chunk("header\nthe connection timeout was raised to 30 s\nfooter")["id"]
    matches = service.grep("conection timout", fuzzy=True)["matches"]
    assert matches and matches[0]["id"] == note and matches[0]["line"] == 1
    assert matches[0]["score"] >= 80


def test_reindex_rebuilds_from_the_vault(service: MemoryService) -> None:
    a = service.chunk("Mesquite wood smoke.")["id"]
    b = service.remember("Mesquite grows in deserts.")["id"]
    result = service.reindex(wait_model=False)
    assert result["indexed"] == 2
    assert set(ids(service.search("mesquite"))) == {a, b}
    assert service.doctor()["caches"] == []


def test_in_a_server_the_first_search_answers_while_the_caches_build(config: Config) -> None:
    service = open_service(config, serving=True)
    note = service.chunk("Joshua tree facts.")["id"]
    assert ids(service.search("joshua")) == [note]  # answered from the catalog, caches building meanwhile
    warming = service.searcher._warming
    assert warming is not None
    warming.join(timeout=60)
    assert ids(service.search("joshua")) == [note]  # now from the index
    assert service.searcher.engine().status(service.store.catalog.hashes())["index_missing_or_stale"] == 0


def test_in_a_big_vault_a_search_waits_for_the_caches_instead_of_reading_every_note(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlm_vault import retrieval

    monkeypatch.setattr(retrieval, "PLAIN_LIMIT", 0)  # every vault counts as big
    service = open_service(config, serving=True)
    note = service.chunk("Saguaro cactus facts.")["id"]
    read: list[str] = []
    monkeypatch.setattr(service.searcher, "_plain_search", lambda *a: read.append("plain") or [])
    assert ids(service.search("saguaro")) == [note]
    assert read == []  # answered from the caches, not by reading each note's file
    warming = service.searcher._warming
    assert warming is not None and not warming.is_alive()
    service.close()


def test_a_server_opens_its_caches_soon_after_it_starts(config: Config) -> None:
    service = open_service(config, serving=True)
    service.start()
    deadline = time.monotonic() + 30
    while service.searcher._warming is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.searcher._warming is not None  # no search asked for it: the start did
    assert service.store.pending.known  # edits made outside rlm-vault were listed in the background too
    service.close()


def test_a_burst_of_writes_is_indexed_once_after_it(config: Config) -> None:
    service = open_service(config, serving=True)
    service.searcher.warm()
    warming = service.searcher._warming
    assert warming is not None
    warming.join(timeout=60)
    runs: list[float] = []
    real = service.searcher._index_quietly
    service.searcher._index_quietly = lambda what: (runs.append(time.monotonic()), real(what))  # type: ignore[method-assign]
    written = [service.chunk(f"Ocotillo note {n}: a burst of saves.")["id"] for n in range(5)]
    deadline = time.monotonic() + 10
    while not runs and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert len(runs) == 1  # once, after the burst, not once per write
    engine = service.searcher.engine()
    assert set(written) <= set(engine._index.stamps())  # indexed in the background, before any search
    service.close()
