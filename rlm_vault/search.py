"""The search caches as one object: text index (with fuzzy grep's words) and vectors, kept in step with the vault.

The service hands `sync()` the vault's truth (id -> content hash) and a loader; only notes whose hash
changed are loaded and re-indexed. Search fuses BM25 and cosine, with filters inside both retrievals.
A broken cache is wiped and rebuilt from the vault through the same loader.

Several processes (one server per window) share one cache folder: whoever holds `build.lock` brings
the caches up to date, the others do not wait for it (beyond a few ms): they answer from what is there,
see its work through the files (the index's manifest, the vectors' `.npz`), and try again at their next sync.
So a note is indexed and embedded once per vault, not once per window.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_vault import fuzzy
from rlm_vault.embeddings import Embedder, VectorStore, embedder_ready
from rlm_vault.errors import Busy, CacheError
from rlm_vault.filelock import file_lock
from rlm_vault.fuzzy import FuzzyHit
from rlm_vault.index import NO_FILTERS, Filters, SearchDoc, TextIndex, Weights
from rlm_vault.rerank import Neighbours, Rerank, rerank
from rlm_vault.texts import TextStore

__all__ = ["Fusion", "Hit", "SearchEngine"]

Loader = Callable[[list[str]], list[SearchDoc]]
Bodies = Callable[[list[str]], Mapping[str, str]]
LoadAll = Callable[[], list[SearchDoc]]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the note id, its kind ("chunk" | "insight") and a score (higher is better)."""

    id: str
    kind: str
    score: float


@dataclass(frozen=True, slots=True)
class Fusion:
    """How BM25 and cosine are combined (chosen on LoCoMo, see scripts/eval_locomo.py).

    "weighted": bm25_weight * BM25 / best BM25 + (1 - bm25_weight) * cosine; "rrf": reciprocal rank fusion.
    """

    method: str = "weighted"
    # 0.7 on the tune parts (LoCoMo turn R@5 0.653 -> 0.676, coding recall@10 0.916 -> 0.928, insight
    # hit@3 1.000 -> 0.966); a cosine z-score and RRF were measured too, neither did better.
    bm25_weight: float = 0.7
    candidates: int = 50
    rrf_k: int = 60
    min_cosine: float = 0.2  # a note no keyword matched must be at least this close to be shown


@dataclass(frozen=True, slots=True)
class Plan:
    """What one sync must do to each cache."""

    text_stale: list[str]
    text_gone: list[str]
    vector_stale: list[str]
    vector_gone: list[str]
    body_stale: list[str]
    body_gone: list[str]

    def load_ids(self) -> list[str]:
        return sorted(set(self.text_stale) | set(self.vector_stale) | set(self.body_stale))


class SearchEngine:
    """Text index at cache_dir/index (fuzzy grep's vocabulary too), vectors at cache_dir/embeddings.npz."""

    def __init__(
        self,
        cache_dir: Path,
        embedder: Embedder | None,
        weights: Weights | None = None,
        fusion: Fusion | None = None,
        embed_budget: int = 256,
        second: Rerank | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.embedder = embedder
        self.fusion = fusion or Fusion()
        self.second = second or Rerank()
        self._neighbours: tuple[int, int, Neighbours] | None = None
        self.embed_budget = embed_budget  # vectors embedded per sync, so a query never waits long
        self._weights = weights or Weights()
        self._lock = threading.RLock()
        self._index = self._open_index()
        self._vectors = VectorStore(self.cache_dir / "embeddings.npz", embedder) if embedder else None
        self._texts = TextStore(self.cache_dir / "texts.npz")  # bodies for grep, shared by every process
        self._load: Loader | None = None
        self._read_bodies: Bodies | None = None
        self._current: dict[str, str] = {}
        self._unloadable: dict[str, str] = {}
        self.repairs: list[str] = []  # why caches were rebuilt, for doctor
        self.behind = False  # caches still short of the vault after the last sync: sync again soon
        self.missing = 0  # notes the text index lacked at the last sync (another process is building it)
        self.lock_wait = 0.02  # seconds a sync waits for another process's build before answering as is
        self.built = 0  # notes this engine indexed or embedded itself (the others' work is only read)

    # -- cache lifecycle -----------------------------------------------------------------------
    def _open_index(self) -> TextIndex:
        path = self.cache_dir / "index"
        try:
            return TextIndex(path, self._weights)
        except CacheError:
            # A cache that cannot be opened is wiped; the next sync re-indexes every note.
            shutil.rmtree(path, ignore_errors=True)
            return TextIndex(path, self._weights)

    def _reset_index(self, reason: CacheError) -> None:
        self.repairs.append(str(reason))
        self._index.close()  # the old handles belong to a broken index
        shutil.rmtree(self.cache_dir / "index", ignore_errors=True)
        self._index = TextIndex(self.cache_dir / "index", self._weights)

    def _vectors_ready(self) -> VectorStore | None:
        return self._vectors if self._vectors is not None and embedder_ready(self.embedder) else None

    # -- keeping in step with the vault --------------------------------------------------------
    def sync(self, current: Mapping[str, str], load: Loader, bodies: Bodies | None = None) -> int:
        """Bring every cache to `current` (id -> sha256), loading only new or changed notes.

        Returns how many notes were loaded. Called before every query, so the no-change path is a
        dict comparison per cache. `bodies` reads the text of a few notes for fuzzy grep (default:
        through `load`).
        """
        with self._lock:
            self._load = load
            self._read_bodies = bodies or self._read_bodies
            self._current = current if isinstance(current, dict) else dict(current)
            try:
                return self._sync()
            except CacheError as exc:
                self._reset_index(exc)
                return self._sync()

    def _sync(self) -> int:
        plan = self._plan()
        if not self._todo(plan):
            self.missing = 0
            return 0
        try:
            with file_lock(self.cache_dir / "build.lock", timeout=self.lock_wait):
                return self._build(self._plan())  # planned again: the last holder may have done it all
        except Busy:
            # Another process is building: use what is there, catch up at the next sync.
            self.missing, self.behind = len(plan.text_stale), True
            return 0

    def _todo(self, plan: Plan) -> list[str]:
        ids = plan.load_ids() + plan.text_gone + plan.vector_gone + plan.body_gone
        return [i for i in ids if i not in self._current or self._unloadable.get(i) != self._current[i]]

    def _build(self, plan: Plan) -> int:
        ids = [i for i in plan.load_ids() if self._unloadable.get(i) != self._current.get(i)]
        docs = self._load_docs(ids) if ids else []
        self._apply_text(plan, docs)
        self._apply_vectors(plan, docs)
        wanted = set(plan.body_stale)
        self._texts.update([doc for doc in docs if doc.id in wanted], plan.body_gone)
        self.missing = 0
        self.built += len(docs)
        return len(docs)

    def _plan(self) -> Plan:
        text_stale, text_gone = _diff(self._current, self._index.stamps())
        vector_stale: list[str] = []
        vector_gone: list[str] = []
        vectors = self._vectors_ready()
        if vectors is not None:
            vectors.reload()
            vector_stale, vector_gone = _diff(self._current, vectors.stamps())
            self.behind = len(vector_stale) > self.embed_budget
            vector_stale = vector_stale[: self.embed_budget]
        self._texts.reload()
        body_stale, body_gone = _diff(self._current, self._texts.stamps())
        return Plan(text_stale, text_gone, vector_stale, vector_gone, body_stale, body_gone)

    def _load_docs(self, ids: list[str]) -> list[SearchDoc]:
        assert self._load is not None
        docs = [doc for doc in self._load(ids) if doc.id in self._current]
        returned = {doc.id for doc in docs}
        # A note the vault cannot parse is skipped until its hash changes, not reloaded every query.
        missing = (i for i in ids if i not in returned and i in self._current)
        self._unloadable.update((i, self._current[i]) for i in missing)
        return docs

    def _apply_text(self, plan: Plan, docs: list[SearchDoc]) -> None:
        wanted = set(plan.text_stale)
        upserts = [doc for doc in docs if doc.id in wanted]
        if not self._index.stamps() and len(upserts) > 100:
            self._index.rebuild(upserts)  # add_document on an empty index is much faster than update
        else:
            self._index.update(upserts, plan.text_gone)

    def _apply_vectors(self, plan: Plan, docs: list[SearchDoc]) -> None:
        vectors = self._vectors_ready()
        if vectors is None:
            return
        wanted = set(plan.vector_stale)
        vectors.update([doc for doc in docs if doc.id in wanted], plan.vector_gone)

    def delete(self, ids: Sequence[str]) -> None:
        """Drop notes the service has just removed."""
        with self._lock, file_lock(self.cache_dir / "build.lock"):
            for doc_id in ids:
                self._current.pop(doc_id, None)
            self._guarded(lambda: self._index.update((), ids))
            if self._vectors is not None:
                self._vectors.update((), ids)
            self._texts.update((), ids)

    def _guarded(self, action: Callable[[], Any]) -> Any:
        """Run an index action; a broken index is rebuilt from the vault, then the action retried."""
        try:
            return action()
        except CacheError as exc:
            if self._load is None:
                raise
            self._reset_index(exc)
            self._sync()
            return action()

    def rebuild(self, load_all: LoadAll, progress: Progress | None = None) -> int:
        """Recreate every cache from the vault alone; returns the number of notes indexed."""
        with self._lock, file_lock(self.cache_dir / "build.lock"):
            docs = load_all()
            vectors = self._vectors_ready()
            total = len(docs) * (2 if vectors is not None else 1)
            self._index.rebuild(docs, _offset(progress, 0, total))
            if vectors is not None:
                vectors.clear()
                vectors.sync(docs, _offset(progress, len(docs), total))
            self._texts.clear()
            self._texts.update(docs)
            self._current = {doc.id: doc.sha256 for doc in docs}
            self._unloadable.clear()
            return len(docs)

    # -- queries -------------------------------------------------------------------------------
    def search(self, query: str, filters: Filters = NO_FILTERS, limit: int = 10) -> list[Hit]:
        """Best `limit` notes for `query` among those `filters` allows, best first.

        Hybrid BM25 + cosine when the embedder is ready, BM25 alone otherwise. A query with no
        searchable word returns the allowed notes newest first.
        """
        with self._lock:
            n = max(limit, self.fusion.candidates)
            bm25 = self._guarded(lambda: self._index.search(query, filters, n))
            if not _has_terms(query):
                return [self._hit(doc_id, score) for doc_id, score in bm25[:limit]]
            allowed = self._guarded(lambda: self._index.allowed_ids(filters)) if filters else None
            vectors = self._vectors_ready()
            if vectors is not None and len(vectors):
                ranked = self._hybrid(query, allowed, bm25, vectors)
            else:
                ranked = bm25
            ranked = rerank(ranked, query, self._index.facts(), self._neighbours_now(), self.second, allowed)
            return [self._hit(doc_id, score) for doc_id, score in ranked[:limit]]

    def _neighbours_now(self) -> Neighbours | None:
        if not self.second.neighbour:
            return None
        key = (id(self._index), self._index.version)
        if self._neighbours is None or self._neighbours[0] != key[0]:
            self._neighbours = (*key, Neighbours(self._index.facts()))
        elif self._neighbours[1] != key[1]:
            self._neighbours = (*key, self._neighbours[2].updated(self._index.facts()))
        return self._neighbours[2]

    def _hybrid(
        self, query: str, allowed: set[str] | None, bm25: list[tuple[str, float]], vectors: VectorStore
    ) -> list[tuple[str, float]]:
        assert self.embedder is not None
        qvec = self.embedder.embed([query])[0]
        dense = [
            (i, c)
            for i, c in vectors.similar(qvec, self.fusion.candidates, allowed)
            if c >= self.fusion.min_cosine
        ]
        return self._fuse(bm25, dense, vectors.cosines(qvec, (i for i, _ in bm25)))

    def _fuse(
        self, bm25: list[tuple[str, float]], dense: list[tuple[str, float]], cosines: dict[str, float]
    ) -> list[tuple[str, float]]:
        if self.fusion.method == "rrf":
            return _rrf([bm25, dense], self.fusion.rrf_k)
        return _weighted(bm25, dense, cosines, self.fusion.bm25_weight)

    def _hit(self, doc_id: str, score: float) -> Hit:
        return Hit(doc_id, self._index.kind(doc_id), round(score, 6))

    def grep_fuzzy(
        self, pattern: str, threshold: float = 80, limit: int = 20, filters: Filters = NO_FILTERS
    ) -> list[FuzzyHit]:
        """Lines close to `pattern` despite typos, best first (call `sync` first: it gives the loader).

        Words come from the text index; only the candidates' bodies are read.
        """
        with self._lock:
            if self._load is None:
                raise CacheError("fuzzy grep needs sync() first, to know how to load the notes")
            allowed = self._guarded(lambda: self._index.allowed_ids(filters)) if filters else None
            bodies = self._stored_bodies
            hits: list[FuzzyHit] = self._guarded(
                lambda: fuzzy.search(self._index, bodies, pattern, threshold, limit, allowed)
            )
            return hits

    def _bodies(self, ids: list[str]) -> dict[str, str]:
        return {doc.id: doc.body for doc in self._load_docs(ids)} if ids else {}

    def _stored_bodies(self, ids: list[str]) -> dict[str, str]:
        found = {i: text for i in ids if (text := self.body(i)) is not None}
        missing = [i for i in ids if i not in found]
        if missing:
            found.update((self._read_bodies or self._bodies)(missing))
        return found

    def body(self, doc_id: str) -> str | None:
        """The text of a note as last synced (None when not stored, or stored for an older version)."""
        with self._lock:
            return (
                self._texts.body(doc_id, self._current.get(doc_id, "")) if doc_id in self._current else None
            )

    # -- health --------------------------------------------------------------------------------
    def status(self, current: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Counts for `rlm_status` / doctor: what each cache holds versus the vault."""
        with self._lock:
            truth = dict(current) if current is not None else self._current
            text_stale, text_extra = _diff(truth, self._index.stamps())
            enabled, reason = self._semantic_status()
            vector_stale, vector_extra = _diff(truth, self._vectors.stamps()) if self._vectors else ([], [])
            return {
                "notes": len(truth),
                "indexed": len(self._index.stamps()),
                "index_missing_or_stale": len(text_stale),
                "index_extra": len(text_extra),
                "vectors": len(self._vectors) if self._vectors else 0,
                "vectors_missing_or_stale": len(vector_stale) if enabled else 0,
                "vectors_extra": len(vector_extra) if enabled else 0,
                "semantic": enabled,
                "semantic_reason": reason,
                "repairs": list(self.repairs),
            }

    def _semantic_status(self) -> tuple[bool, str]:
        if self.embedder is None:
            return False, "no embedder configured; search is BM25-only"
        status = getattr(self.embedder, "status", None)
        return status() if callable(status) else (True, f"embedder {self.embedder.name!r} ready")

    def problems(self, current: Mapping[str, str] | None = None) -> list[str]:
        """Readable cache problems for doctor (the semantic state is reported apart)."""
        s = self.status(current)
        found = [
            (s["index_missing_or_stale"], "text index: {} notes missing or stale"),
            (s["index_extra"], "text index: {} entries for notes no longer in the vault"),
            (s["vectors_missing_or_stale"], "vectors: {} notes not embedded yet"),
        ]
        problems = [text.format(count) for count, text in found if count]
        return problems + [f"rebuilt a broken cache: {r}" for r in s["repairs"]]

    def close(self) -> None:
        """Save vectors kept in memory and release the index's file handles."""
        with self._lock:
            if self._vectors is not None:
                with contextlib.suppress(CacheError):
                    self._vectors.flush()
            self._index.close()


def _diff(truth: Mapping[str, str], stamps: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(ids new or changed in `truth`, ids in `stamps` that `truth` no longer has)."""
    if truth == stamps:
        return [], []
    stale = [doc_id for doc_id, sha in truth.items() if stamps.get(doc_id) != sha]
    return stale, [doc_id for doc_id in stamps if doc_id not in truth]


def _has_terms(query: str) -> bool:
    """False for a query without searchable words (BM25 then lists notes newest first)."""
    from rlm_vault import textproc

    return bool(textproc.tokens(query))


def _weighted(
    bm25: list[tuple[str, float]], dense: list[tuple[str, float]], cosines: dict[str, float], weight: float
) -> list[tuple[str, float]]:
    best = max((score for _, score in bm25), default=0.0) or 1.0
    scores = {
        doc_id: weight * score / best + (1 - weight) * cosines.get(doc_id, 0.0) for doc_id, score in bm25
    }
    for doc_id, cosine in dense:
        scores.setdefault(doc_id, (1 - weight) * cosine)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _rrf(rankings: list[list[tuple[str, float]]], k: int) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (doc_id, _) in enumerate(ranking):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _offset(progress: Progress | None, start: int, total: int) -> Progress | None:
    if progress is None:
        return None
    return lambda done, _: progress(start + done, total)
