"""Finding memories: ranked search, regex and fuzzy grep, over caches that follow the vault.

Owns `Search`: the search caches (Whoosh index, model2vec vectors, fuzzy vocabulary) in `.rlm/`,
brought in step with the catalog before every query by content hash, so a note written by a tool or
by a person is found at once. They are imported lazily: hooks and plain writes never load them.
The embedder is given by the composition root (`service.open_service`); this module never picks one.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from . import query as q
from .allocator import release_freed_memory
from .archive import Archive
from .core import Store
from .errors import CacheError, InvalidInput, VaultError
from .insights import name_filter
from .models import Chunk, Insight
from .results import GrepMatch, GrepResult, Reindexed, SearchHit, SearchResult, SemanticStatus

if TYPE_CHECKING:
    from .catalog import Catalog
    from .embeddings import Matrix
    from .index import Filters, SearchDoc
    from .search import SearchEngine

__all__ = ["LazyEmbedder", "Search", "to_doc"]

log = logging.getLogger("rlm_vault")

# Notes the text index may lack (another process is indexing them) before a search answers from the
# catalog instead: a few are a moment's lag, thousands mean another window is building the index.
MISSING_FOR_PLAIN = 50
# Past this many notes, answering from the catalog means reading thousands of files: a search waits
# (up to WARM_WAIT seconds) for the caches to open, and uses them even while another process fills them.
PLAIN_LIMIT = 5000
WARM_WAIT = 60.0
BURST_QUIET = 0.3  # seconds without a write before the background indexer starts
BURST_MAX = 3.0  # ... but never later than this after the first write of a burst
RETRY_SECONDS = 0.25  # how soon the background indexer tries again when another process was building


class LazyEmbedder(Protocol):
    """What search needs of an embedder that loads in the background (`Model2VecEmbedder`)."""

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> Matrix: ...

    def status(self) -> tuple[bool, str]: ...

    def start_loading(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def to_doc(note: Insight | Chunk, sha256: str, body: str | None = None) -> SearchDoc:
    """What the search caches index of a note (`body` when the note holds no text: a catalog chunk)."""
    from .index import SearchDoc

    if isinstance(note, Insight):
        return SearchDoc(
            note.id,
            "insight",
            note.project,
            "",
            note.category,
            note.importance,
            "",
            note.tags,
            (),
            note.created,
            q.short(note.content, 100),
            note.content,
            sha256,
        )
    entities = tuple(v for values in note.entities.values() for v in values)
    return SearchDoc(
        note.id,
        "chunk",
        note.project,
        note.domain,
        "",
        "",
        note.chunk_type,
        note.tags,
        entities,
        note.created,
        note.summary,
        note.content if body is None else body,
        sha256,
    )


class Search:
    """rlm_search, rlm_grep, reindex and the caches' health, over one vault's store and archive.

    It owns the search engines (active notes, and the archive), the embedder it was given (None when
    semantic search is off), and the background indexer a long-running server uses.
    """

    def __init__(
        self, store: Store, archive: Archive, embedder: LazyEmbedder | None, *, background: bool = False
    ) -> None:
        self.store = store
        self.archive = archive
        self.embedder = embedder
        # A long-running server builds the caches in the background, started by the first search; until
        # they are ready its searches answer from the catalog instead of waiting.
        self.background = background
        self._engines: dict[str, SearchEngine] = {}
        self._engine_lock = threading.Lock()
        self._synced_state: tuple[int, bool] | None = None
        self._truth: dict[str, str] | None = None  # id -> content hash of every note, kept up to date
        self._truth_at = 0  # the catalog change it reflects
        self._sync_lock = threading.Lock()
        self._warming: threading.Thread | None = None
        self._warm_lock = threading.Lock()
        self._wake = threading.Event()

    # ------------------------------------------------------------------ caches

    def engine(self, which: str = "active") -> SearchEngine:
        """The search caches for active notes, or for the archive (`which="archive"`)."""
        with self._engine_lock:
            if which not in self._engines:
                from .search import SearchEngine

                vault = self.store.vault
                folder = vault.cache if which == "active" else vault.cache / "archive-cache"
                self._engines[which] = SearchEngine(folder, self.embedder)
                atexit.register(self._engines[which].close)  # vectors kept in memory are saved at exit
            return self._engines[which]

    def close(self) -> None:
        """Save vectors kept in memory and close the indexes."""
        with self._engine_lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()

    def warm(self) -> None:
        """Load the model and bring the caches up to date in a background thread (once)."""
        with self._warm_lock:
            if self._warming is None:
                self._warming = threading.Thread(target=self._warm, name="rlm-vault-warm", daemon=True)
                self._warming.start()

    def _warm(self) -> None:
        if self.embedder is not None:
            self.embedder.start_loading()
        self._index_quietly("warming the search caches failed; searches retry")
        release_freed_memory()
        self.store.on_commit(self._wake.set)
        if self.engine().behind:
            self._wake.set()
        threading.Thread(target=self._follow_writes, name="rlm-vault-index", daemon=True).start()

    def _follow_writes(self) -> None:
        """Index each write in the background, so the next search does not pay for it; while another
        process holds the build (or vectors are filled a batch at a time), try again shortly."""
        while True:
            self._wake.wait()
            self._wake.clear()
            # Writes in a burst (an import, a client saving several chunks) are indexed once after it:
            # indexing while the next write runs would only slow that write down.
            settle_until = time.monotonic() + BURST_MAX
            while self._wake.wait(BURST_QUIET) and time.monotonic() < settle_until:
                self._wake.clear()
            self._wake.clear()
            self._index_quietly("indexing a write in the background failed; the next search retries")
            release_freed_memory()
            if self.engine().behind:
                time.sleep(RETRY_SECONDS)
                self._wake.set()

    def _index_quietly(self, what: str) -> None:
        # A background thread has no caller to report to: a cache or vault problem is logged and the next
        # search meets it again (and reports it). A bug in our code is not caught here.
        try:
            self._synced()
        except VaultError:
            log.exception(what)

    def _ready(self) -> bool:
        if self.background and self._warming is None:
            self.warm()
        warming = self._warming
        if warming is None or not warming.is_alive():
            return True
        if self._big():
            warming.join(WARM_WAIT)
        return not warming.is_alive()

    def _big(self) -> bool:
        """True for a vault whose notes are too many to search file by file."""
        return sum(self.store.catalog.counts().values()) > PLAIN_LIMIT

    def _partial(self, engine: SearchEngine | None) -> bool:
        """True when a search should answer from the catalog: the caches lack many notes, and the
        vault is small enough to read (a big one answers from the caches as they are)."""
        return engine is None or (engine.missing > MISSING_FOR_PLAIN and not self._big())

    def _synced(self) -> SearchEngine:
        cat = self.store.fresh()
        engine = self.engine()
        with self._sync_lock:  # the background indexer and tool threads may both get here
            # The catalog's version moves with every change it sees: unchanged, the caches are already in
            # step (unless the model finished loading since, or vectors are still being filled in batches).
            state = (cat.version, self.semantic_status()["enabled"])
            if self._synced_state != state or engine.behind:
                engine.sync(self._hashes(), self._loader, self._bodies)
                self._synced_state = state
        return engine

    def _hashes(self) -> dict[str, str]:
        """id -> content hash of every note: read once, then only what changed since (the engine shares
        it: called under the sync lock, which every engine.sync holds too)."""
        cat = self.store.catalog
        now, changed = cat.hashes_since(self._truth_at) if self._truth is not None else (0, None)
        if self._truth is None or changed is None:
            self._truth_at = cat.head()  # before reading: a change made meanwhile is read again
            self._truth = cat.hashes()
        else:
            self._truth_at = now
            for note_id, sha in changed.items():
                if sha is None:
                    self._truth.pop(note_id, None)
                else:
                    self._truth[note_id] = sha
        return self._truth

    def _loader(self, ids: list[str]) -> list[SearchDoc]:
        # One listing query per 500 ids; chunk bodies read from their files (the catalog keeps none).
        catalog = self.store.catalog
        listed = catalog.listed(ids)
        docs = []
        for i in ids:
            if i not in listed:
                continue
            note, path, sha = listed[i]
            body = catalog.body_at(path) if isinstance(note, Chunk) else None
            if body is not None or isinstance(note, Insight):
                docs.append(to_doc(note, sha, body))
        return docs

    def _bodies(self, ids: list[str]) -> dict[str, str]:
        """The texts of a few notes (fuzzy grep's candidates), read from their files."""
        catalog = self.store.catalog
        return {i: body for i in ids if (body := catalog.body(i)) is not None}

    def _text(self, note: Insight | Chunk) -> str:
        """A note's text: an insight's is in memory, an active chunk's is read from its file."""
        if isinstance(note, Chunk) and not note.content:
            return self.store.catalog.body(note.id) or ""
        return note.content

    def _archive_engine(self) -> tuple[SearchEngine, dict[str, Chunk]]:
        archived = {c.id: c for c in self.archive.chunks()}
        stamps = {i: f"{c.sha256}-{c.created}" for i, c in archived.items()}
        engine = self.engine("archive")
        engine.sync(stamps, lambda ids: [to_doc(archived[i], stamps[i]) for i in ids if i in archived])
        return engine, archived

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: str,
        limit: int = 5,
        project: str = "",
        domain: str = "",
        date_from: str = "",
        date_to: str = "",
        entity: str = "",
        include_insights: bool = True,
        include_archived: bool = False,
    ) -> SearchResult:
        """Chunks and insights ranked by relevance (BM25 + meaning), filters applied inside the ranking."""
        if not query or not query.strip():
            raise InvalidInput("query is empty: send a few words describing what to find")
        limit = q.limit(limit)
        filters = self._filters(
            project, domain, date_from, date_to, entity, "" if include_insights else "chunk"
        )
        engine = self._synced() if self._ready() else None
        if engine is None or self._partial(engine):
            # Caches still building (here in the background, or in another process): answer from the catalog.
            plain = self._plain_search(query, filters, limit, include_archived)
            return _first(self._old_id_hit(query), plain, limit)
        hits = [
            self._hit(h.id, h.score, self.store.catalog.note(h.id))
            for h in engine.search(query, filters, limit)
        ]
        if include_archived:
            engine, archived = self._archive_engine()
            hits += [
                self._hit(h.id, h.score, archived.get(h.id)) for h in engine.search(query, filters, limit)
            ]
            hits.sort(key=lambda h: -h["score"])
        return _first(self._old_id_hit(query), [h for h in hits if h["summary"] is not None], limit)

    def _old_id_hit(self, query: str) -> SearchHit | None:
        """An old id (front matter `aliases`, e.g. rlm-claude's) asked for as such: the note it became.

        The catalog was brought up to date by this search already: no second look at the disk."""
        cat = self.store.catalog
        note_id = cat.resolve(query.strip())
        if note_id is None or note_id == query.strip():
            return None
        hit = self._hit(note_id, 1.0, cat.note(note_id))
        hit["old_id"] = query.strip()
        return hit

    def _filters(
        self, project: str, domain: str, date_from: str, date_to: str, entity: str, kind: str
    ) -> Filters:
        from .index import Filters

        return Filters(
            project=self.store.vault.project_folder(name_filter(project)),
            domain=name_filter(domain),
            kind=kind,
            date_from=q.date(date_from, "date_from"),
            date_to=q.date(date_to, "date_to"),
            entity=entity.strip(),
        )

    @staticmethod
    def _hit(note_id: str, score: float, note: Insight | Chunk | None) -> SearchHit:
        if note is None:  # indexed but gone from the vault since: dropped by the caller
            return {"id": note_id, "kind": "", "score": score, "summary": None, "project": None}  # type: ignore[typeddict-item]
        return q.search_hit(note, score)

    def _plain_search(
        self, query: str, filters: Filters, limit: int, include_archived: bool
    ) -> list[SearchHit]:
        chunks, insights = self._candidates(filters, include_archived)
        return q.keyword_search(chunks, insights, query, limit, self._text)

    def _candidates(self, f: Filters, include_archived: bool) -> tuple[list[Chunk], list[Insight]]:
        cat = self.store.fresh()
        listed = cat.chunks(project=f.project if f.project.isascii() else "")  # then casefolded below
        chunks = listed + (self.archive.chunks() if include_archived else [])
        chunks = q.filter_chunks(chunks, f.project, f.domain, f.date_from, f.date_to, f.entity)
        return chunks, self._insights(cat, f)

    @staticmethod
    def _insights(cat: Catalog, f: Filters) -> list[Insight]:
        """The insights the filters allow: none for a chunk-only filter (kind, domain, entity)."""
        if f.kind == "chunk" or f.domain or f.entity:
            return []
        return q.filter_insights(cat.insights(), f.project, f.date_from, f.date_to)

    # ------------------------------------------------------------------ grep

    def grep(
        self,
        pattern: str,
        limit: int = 10,
        project: str = "",
        domain: str = "",
        fuzzy: bool = False,
        fuzzy_threshold: int = 80,
        date_from: str = "",
        date_to: str = "",
        entity: str = "",
        include_archived: bool = False,
    ) -> GrepResult:
        """Lines of chunks and insights matching a regex (case-insensitive) or, with fuzzy, close to the words.

        Regex matches come newest note first; fuzzy ones best first. Insights are searched unless a
        chunk-only filter (domain, entity) is given.
        """
        if not pattern or not pattern.strip():
            raise InvalidInput("pattern is empty: send a regular expression or, with fuzzy=true, some words")
        limit = q.limit(limit)
        filters = self._filters(project, domain, date_from, date_to, entity, "")
        if fuzzy and not 0 <= fuzzy_threshold <= 100:
            raise InvalidInput(
                f"fuzzy_threshold {fuzzy_threshold!r} is not accepted: use 0 to 100 (80 is a good start)"
            )
        if fuzzy and not include_archived and self._ready() and not self._partial(self._synced()):
            return {"matches": self._fuzzy(pattern, fuzzy_threshold, limit, filters)}
        text = self._text_from(self._synced() if self._ready() else None)
        if not fuzzy:
            paged = not include_archived and not self.store.catalog.kept_whole("chunk")
            notes = self._newest_first(filters) if paged else self._listed(filters, include_archived)
            return {"matches": q.regex_lines(notes, pattern, limit, self.store.config.grep_timeout, text)}
        listed = list(self._listed(filters, include_archived))
        return {"matches": q.fuzzy_lines(listed, pattern, fuzzy_threshold, limit, text)}

    def _listed(self, f: Filters, include_archived: bool) -> Iterator[Chunk | Insight]:
        """Chunks then insights, each newest first, as the filters and `include_archived` ask."""
        chunks, insights = self._candidates(f, include_archived)
        yield from chunks
        yield from q.newest(insights)

    def _newest_first(self, f: Filters) -> Iterator[Chunk | Insight]:
        """What `_listed` gives without archived notes, read from the listing a page at a time: a regex
        grep that has its lines after a few hundred notes never parses the other 100,000."""
        keep = q.chunk_filter(f.project, f.domain, f.date_from, f.date_to, f.entity)
        cat = self.store.fresh()
        for note in cat.stream("chunk", f.project if f.project.isascii() else ""):
            if isinstance(note, Chunk) and keep(note):
                yield note
        yield from q.newest(self._insights(cat, f))

    def _text_from(self, engine: SearchEngine | None) -> Callable[[Insight | Chunk], str]:
        """A note's text: from the shared bodies file when the caches hold it, else from its file."""
        if engine is None:
            return self._text

        def text(note: Insight | Chunk) -> str:
            if isinstance(note, Chunk) and not note.content:
                stored = engine.body(note.id)
                return stored if stored is not None else self._text(note)
            return note.content

        return text

    def _fuzzy(self, pattern: str, threshold: int, limit: int, filters: Filters) -> list[GrepMatch]:
        engine = self._synced()
        matches: list[GrepMatch] = []
        for hit in engine.grep_fuzzy(pattern, threshold, limit, filters):
            note = self.store.catalog.note(hit.id)
            if note is not None:
                matches.append(
                    {
                        "id": hit.id,
                        "line": hit.line_no,
                        "text": hit.text.strip()[:200],
                        "score": round(float(hit.score), 1),
                        "kind": "chunk" if isinstance(note, Chunk) else "insight",
                        "project": note.project or None,
                    }
                )
        return matches

    # ------------------------------------------------------------------ caches as a whole

    def semantic_status(self) -> SemanticStatus:
        """Whether meaning-based ranking is on, with which model, and if not, why."""
        model = self.store.config.embedding_model
        if self.embedder is None:
            reason = "RLM_EMBEDDING_MODEL is 'none': keyword search only"
            return {"enabled": False, "model": model, "reason": reason}
        enabled, reason = self.embedder.status()
        return {"enabled": enabled, "model": model, "reason": reason}

    def wait_for_model(self, timeout: float = 120.0) -> bool:
        """Load the embedding model now (CLI commands); True when semantic search is on."""
        return self.embedder is not None and self.embedder.wait(timeout=timeout)

    def reindex(
        self, progress: Callable[[int, int], None] | None = None, wait_model: bool = True
    ) -> Reindexed:
        """Rebuild the search caches from the vault alone."""
        if wait_model:
            self.wait_for_model(timeout=600)
        hashes = self.store.fresh().hashes()
        engine = self.engine()
        count = engine.rebuild(lambda: self._loader(sorted(hashes)), progress)
        engine.sync(hashes, self._loader)
        return {"indexed": count, "semantic": self.semantic_status()}

    def cache_problems(self) -> list[str]:
        """What the caches lack compared to the vault (they catch up at the next search)."""
        try:
            return self.engine().problems(self.store.fresh().hashes())
        except CacheError as exc:
            return [str(exc)]


def _first(hit: SearchHit | None, hits: list[SearchHit], limit: int) -> SearchResult:
    """The results, led by the note an old id named (when the query was one)."""
    lead = [hit] if hit is not None else []
    return {"results": [*lead, *(h for h in hits if hit is None or h["id"] != hit["id"])][:limit]}
