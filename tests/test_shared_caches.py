"""Several processes on one vault: the search caches are built once, by one of them, and followed by all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tinymodel import build_tiny_model

from rlm_vault.bulk import NewChunk, write_many
from rlm_vault.config import Config
from rlm_vault.service import MemoryService, open_service

WORDS = ["database", "migration", "kibble", "pelican", "deploy", "timeout", "socket", "walrus", "lantern"]
NOTES = 40

CHILD = r"""
import json, sys, time
from rlm_vault.config import Config
from rlm_vault.embeddings import Model2VecEmbedder
from rlm_vault.service import open_service

vault, model = sys.argv[1], sys.argv[2]
embedder = Model2VecEmbedder(model)
service = open_service(Config(vault=vault, embedding_model=model, scan_interval=0.0), embedder=embedder)
assert embedder.wait(60)
print("ready", flush=True)
sys.stdin.readline()  # every process starts its sync at the same moment
deadline = time.monotonic() + 120
while True:
    engine = service.searcher._synced()
    if not engine.behind and engine.missing == 0:
        break
    assert time.monotonic() < deadline, "caches never caught up"
    time.sleep(0.05)
hits = service.search("pelican")["results"]
print(json.dumps({"built": engine.built, "embedded": engine._vectors.embedded,
                  "indexed": len(engine._index.stamps()), "vectors": len(engine._vectors), "hit": hits[0]["id"]}))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(WORDS, tmp_path_factory.mktemp("model") / "tiny")


def filled(vault: Path) -> MemoryService:
    service = open_service(Config(vault=vault, project="P", embedding_model="none", scan_interval=0.0))
    words = [w for w in WORDS if w != "pelican"]
    chunks = [
        NewChunk(f"note {n} about {words[n % len(words)]}\nsecond line {n}", "P", "2026-01-01T10:00:00Z")
        for n in range(NOTES - 1)
    ]
    chunks.append(NewChunk("the pelican one", "P", "2026-01-02T10:00:00Z"))
    write_many(service, [], chunks, "notes")
    return service


def test_three_processes_build_each_note_once(tmp_path: Path, model_dir: Path) -> None:
    vault = tmp_path / "vault"
    filled(vault)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(vault), str(model_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, _ = child.communicate(timeout=180)
        assert child.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["indexed"] == NOTES and r["vectors"] == NOTES for r in results)  # each sees all the work
    assert sum(r["built"] for r in results) == NOTES  # but each note was indexed by one process only
    assert sum(r["embedded"] for r in results) == NOTES  # and embedded once
    assert len({r["hit"] for r in results}) == 1


def test_a_hand_edit_is_built_once_and_seen_by_every_service(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    first = filled(vault)
    second = open_service(Config(vault=vault, project="P", embedding_model="none", scan_interval=0.0))
    assert first.search("pelican")["results"][0]["id"] == second.search("pelican")["results"][0]["id"]
    assert second.searcher.engine().built == 0  # the first service built the index; the second reads it
    chunk_id = first.search("pelican")["results"][0]["id"]
    path = vault / first.peek(chunk_id)["path"]
    path.write_text(path.read_text().replace("the pelican one", "the lantern keeper"), encoding="utf-8")
    assert second.search("keeper")["results"][0]["id"] == chunk_id
    assert first.search("keeper")["results"][0]["id"] == chunk_id
    assert first.searcher.engine().built == NOTES  # the edit was indexed by the second service alone
    assert first.peek(chunk_id)["content"] == "the lantern keeper"
    assert first.grep("lantern keep")["matches"][0]["id"] == chunk_id
    assert second.grep("lanter keeper", fuzzy=True)["matches"][0]["id"] == chunk_id
