"""Embedders and the vector store, with a real (tiny) model2vec model built in tmp_path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_index import make_doc
from tinymodel import build_tiny_model

from rlm_vault.embeddings import Model2VecEmbedder, VectorStore, embed_text
from rlm_vault.errors import CacheError

WORDS = [
    "database",
    "databases",
    "migration",
    "migrations",
    "failed",
    "failing",
    "cat",
    "food",
    "deploy",
    "pipeline",
    "kibble",
    "dog",
    "schema",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(WORDS, tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def embedder(model_dir: Path) -> Model2VecEmbedder:
    embedder = Model2VecEmbedder(str(model_dir))
    assert embedder.wait(30), embedder.status()
    return embedder


class CountingEmbedder:
    """Wraps a real embedder and counts the texts it embeds."""

    def __init__(self, inner: Model2VecEmbedder) -> None:
        self.inner, self.name, self.calls = inner, inner.name, 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        return self.inner.embed(texts)


def test_loads_in_background_and_embeds_unit_vectors(embedder: Model2VecEmbedder) -> None:
    vectors = embedder.embed(["database migration failed", "databases migrations failing", "cat food"])
    assert vectors.dtype == np.float32 and vectors.shape == (3, embedder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embedder.status()[0]


def test_status_before_loading_and_when_disabled() -> None:
    waiting = Model2VecEmbedder("/nowhere")
    assert waiting.status() == (
        False,
        "model '/nowhere' configured, loads on first search; keyword search until then",
    )
    off = Model2VecEmbedder("none")
    off.start_loading()
    assert not off.wait(1) and "off" in off.status()[1]


def test_failed_load_gives_a_clear_reason(tmp_path: Path) -> None:
    embedder = Model2VecEmbedder(str(tmp_path / "missing-model"))
    assert not embedder.wait(30)
    enabled, reason = embedder.status()
    assert not enabled
    assert reason.startswith(f"model '{tmp_path / 'missing-model'}' could not be loaded: ")
    assert reason.endswith("; keyword search only; set RLM_EMBEDDING_MODEL=none or a local path")
    assert "\n" not in reason
    with pytest.raises(CacheError):
        embedder.embed(["x"])


def test_second_sync_embeds_nothing(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    counting = CountingEmbedder(embedder)
    docs = [make_doc("a", "database migration"), make_doc("b", "cat food"), make_doc("c", "deploy pipeline")]
    store = VectorStore(tmp_path / "e.npz", counting)
    assert store.sync(docs) == 3
    assert store.sync(docs) == 0 and counting.calls == 3
    reopened = VectorStore(tmp_path / "e.npz", counting)
    changed = [replace(docs[0], body="dog kibble", sha256="new"), docs[1]]
    assert reopened.sync(changed) == 1 and counting.calls == 4
    assert set(reopened.stamps()) == {"a", "b"}


def test_npz_has_no_object_arrays(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    store = VectorStore(tmp_path / "e.npz", embedder)
    store.sync([make_doc("a", "database"), make_doc("bb", "cat")])
    with np.load(tmp_path / "e.npz", allow_pickle=False) as data:
        kinds = {name: data[name].dtype.kind for name in data.files}
        assert kinds == {
            "ids": "S",
            "shas": "S",
            "rows": "i",
            "count": "i",
            "dim": "i",
            "rows_file": "U",
            "scales": "f",
            "model": "U",
        }
        assert str(data["model"]) == embedder.name and int(data["count"]) == 2
        assert (tmp_path / str(data["rows_file"])).stat().st_size == 2 * embedder.dim  # int8 rows


def test_rows_are_memory_mapped_and_appended(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    store = VectorStore(tmp_path / "e.npz", embedder)
    store.sync([make_doc("a", "database"), make_doc("b", "cat")])
    reader = VectorStore(tmp_path / "e.npz", embedder)
    assert isinstance(reader._matrix, np.memmap) and not reader._matrix.flags.writeable
    store.update([make_doc("c", "dog")], ["b"])
    assert [p.name for p in tmp_path.glob("e-rows-*")] == [store._rows_file.name]  # appended, not rewritten
    assert isinstance(store._matrix, np.memmap)  # the writer maps what it saved, too
    reader.reload()
    assert set(reader.stamps()) == {"a", "c"}
    assert reader.similar(embedder.embed(["dog"])[0], 1)[0][0] == "c"
    store.update([make_doc("c", "dog food", sha256="v2"), make_doc("d", "bird")], ["a"])
    reader.reload()  # half the rows are dead now: a new rows file, the old one removed
    assert len(list(tmp_path.glob("e-rows-*"))) == 1 and reader._count() == 2
    for doc_id, text in (("c", "dog food"), ("d", "bird")):
        assert np.allclose(reader._vector(doc_id), embedder.embed([text])[0], atol=0.01)  # int8 rows


def test_similar_ranks_by_cosine_within_allowed_ids(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    store = VectorStore(tmp_path / "e.npz", embedder)
    store.sync(
        [
            make_doc("mig", "database migration failed"),
            make_doc("cat", "cat food kibble"),
            make_doc("dog", "dog kibble"),
        ]
    )
    query = embedder.embed(["databases migrations failing"])[0]
    assert store.similar(query, 1)[0][0] == "mig"
    assert [i for i, _ in store.similar(query, 5, allowed_ids={"dog", "gone"})] == ["dog"]
    assert store.similar(query, 5, allowed_ids=set()) == []


def test_other_model_file_is_discarded(tmp_path: Path, embedder: Model2VecEmbedder, model_dir: Path) -> None:
    VectorStore(tmp_path / "e.npz", embedder).sync([make_doc("a", "database")])
    other = Model2VecEmbedder(str(model_dir) + "/")  # same weights, another name: must re-embed
    assert other.wait(30)
    store = VectorStore(tmp_path / "e.npz", other)
    assert len(store) == 0 and store.sync([make_doc("a", "database")]) == 1


def test_truncated_file_is_discarded(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    (tmp_path / "e.npz").write_bytes(b"PK\x03\x04 truncated")
    store = VectorStore(tmp_path / "e.npz", embedder)
    assert len(store) == 0 and store.sync([make_doc("a", "database")]) == 1


def test_a_hub_model_that_cannot_be_fetched_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what a machine without network meets, without waiting
    embedder = Model2VecEmbedder("no-such-org/no-such-model")
    assert not embedder.wait(60)
    reason = embedder.status()[1]
    assert reason.startswith("model 'no-such-org/no-such-model' could not be downloaded: ")
    assert reason.endswith("; keyword search only; set RLM_EMBEDDING_MODEL=none or a local path")
    assert "\n" not in reason


def test_download_progress_counts_what_the_hub_cache_received(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from rlm_vault.embeddings import download_progress

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    since = time.time() - 1
    assert download_progress("org/model", since) is None
    blobs = tmp_path / "models--org--model" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "aaa.incomplete").write_bytes(b"x" * 3_000_000)
    (blobs / "bbb").write_bytes(b"y" * 1_000_000)
    assert download_progress("org/model", since) == 4_000_000

    loading = Model2VecEmbedder("org/model")
    loading._since, loading._thread = since, object()  # type: ignore[assignment]  # as while loading
    assert loading.status()[1].startswith("model 'org/model' downloading (4 MB so far, ")


def test_vectors_are_stored_as_int8_with_cosines_close_to_float32(
    tmp_path: Path, embedder: Model2VecEmbedder
) -> None:
    texts = ["database migration", "cat food", "deploy pipeline", "timeout of the socket", "jazz records"]
    docs = [make_doc(f"d{n}", text) for n, text in enumerate(texts)]
    store = VectorStore(tmp_path / "e.npz", embedder)
    store.sync(docs)
    [rows_file] = list(tmp_path.glob("e-rows-*"))
    assert rows_file.stat().st_size == len(docs) * embedder.dim  # one byte per dimension
    query = embedder.embed(["migrating the database schema"])[0]
    exact = embedder.embed([embed_text(doc) for doc in docs]) @ query
    stored = VectorStore(tmp_path / "e.npz", embedder).cosines(query, [doc.id for doc in docs])
    assert max(abs(stored[doc.id] - float(exact[n])) for n, doc in enumerate(docs)) < 0.005
    assert [i for i, _ in store.similar(query, 2)] == [docs[int(n)].id for n in np.argsort(-exact)[:2]]


def test_an_older_float32_layout_is_embedded_again(tmp_path: Path, embedder: Model2VecEmbedder) -> None:
    store = VectorStore(tmp_path / "e.npz", embedder)
    store.sync([make_doc("a", "database")])
    with np.load(tmp_path / "e.npz", allow_pickle=False) as data:
        older = {name: data[name] for name in data.files if name != "scales"}
    np.savez(tmp_path / "e.npz", **older)
    counting = CountingEmbedder(embedder)
    assert VectorStore(tmp_path / "e.npz", counting).sync([make_doc("a", "database")]) == 1
