"""Finding memories: ranked search, regex and fuzzy grep, over caches that follow the vault.

The search caches (Whoosh index, model2vec vectors, fuzzy vocabulary) live in `.rlm/` and are
brought in step with the catalog before every query by content hash, so a note written by a tool or
by a person is found at once. They are imported lazily: hooks and plain writes never load them.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import query as q
from .core import ServiceCore
from .errors import CacheError, InvalidInput
from .models import Chunk, Insight, safe_name
from .results import GrepMatch, GrepResult, SearchHit, SearchResult

if TYPE_CHECKING:
    from .index import Filters, SearchDoc
    from .search import SearchEngine

__all__ = ["SearchMixin", "to_doc"]

log = logging.getLogger("rlm_vault")


def _name(value: str) -> str:
    """A project or domain filter, cleaned the way names are cleaned when notes are written."""
    return safe_name(value, "name", strict=False) if value.strip() else ""


def to_doc(note: Insight | Chunk, sha256: str) -> SearchDoc:
    """What the search caches index of a note."""
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
        note.content,
        sha256,
    )


class SearchMixin(ServiceCore):
    """rlm_search, rlm_grep, reindex and doctor."""

    _engines: dict[str, SearchEngine]
    _embedder: Any = None
    _warming: threading.Thread | None = None
    # A long-running server sets this: the caches then build in the background, started by the
    # first search, and until they are ready searches answer from the catalog instead of waiting.
    background: bool = False

    # ------------------------------------------------------------------ caches

    def embedder(self) -> Any:
        """The model2vec embedder (not loaded until `start_loading`), or None when disabled."""
        if self._embedder is None:
            from .embeddings import Model2VecEmbedder

            self._embedder = Model2VecEmbedder(self.config.embedding_model)
        return None if self._embedder.disabled else self._embedder

    def engine(self, which: str = "active") -> SearchEngine:
        """The search caches for active notes, or for the archive (`which="archive"`)."""
        engines = self.__dict__.setdefault("_engines", {})
        with self.__dict__.setdefault("_engine_lock", threading.Lock()):
            if which not in engines:
                from .search import SearchEngine

                folder = self.vault.state if which == "active" else self.vault.state / "archive-cache"
                engines[which] = SearchEngine(folder, self.embedder())
                atexit.register(engines[which].close)  # vectors kept in memory are saved at exit
            return engines[which]

    def warm(self) -> None:
        """Load the model and bring the caches up to date in a background thread."""
        if self._warming is None:
            self._warming = threading.Thread(target=self._warm, name="rlm-vault-warm", daemon=True)
            self._warming.start()

    def _warm(self) -> None:
        try:
            if (embedder := self.embedder()) is not None:
                embedder.start_loading()
            self._synced()
        except Exception:  # a cache problem must never take the server down; searches retry
            log.exception("warming the search caches failed")
        self._follow_writes()

    def _follow_writes(self) -> None:
        """Index each write in the background, so the next search does not pay for it."""
        wake = threading.Event()

        def follow() -> None:
            while True:
                wake.wait()
                wake.clear()
                try:
                    self._synced()
                except Exception:
                    log.exception("indexing a write in the background failed; the next search retries")

        threading.Thread(target=follow, name="rlm-vault-index", daemon=True).start()
        self.after_commit.append(wake.set)

    def _ready(self) -> bool:
        if self.background and self._warming is None:
            self.warm()
        return self._warming is None or not self._warming.is_alive()

    def _synced(self) -> SearchEngine:
        cat = self.fresh()
        engine = self.engine()
        # The catalog's version moves with every change it sees: unchanged, the caches are already in step
        # (unless the model finished loading since, or vectors are still being filled in batches).
        state = (cat.version, self.semantic_status()["enabled"])
        if self.__dict__.get("_synced_state") != state or engine.behind:
            engine.sync(cat.hashes(), self._loader)
            self.__dict__["_synced_state"] = state
        return engine

    def _loader(self, ids: list[str]) -> list[SearchDoc]:
        # Per-id lookups: fuzzy grep loads a few hundred candidates per query, not a copy of every hash.
        return [
            to_doc(note, self.catalog.sha_of(i)) for i in ids if (note := self.catalog.note(i)) is not None
        ]

    def _archive_engine(self) -> tuple[SearchEngine, dict[str, Chunk]]:
        archived = {c.id: c for c in self.archived_chunks()}
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
        if not self._ready():  # caches still building in the background: answer from the catalog
            plain = self._plain_search(query, filters, limit, include_archived)
            return _first(self._old_id_hit(query), plain, limit)
        hits = [
            self._hit(h.id, h.score, self.catalog.note(h.id))
            for h in self._synced().search(query, filters, limit)
        ]
        if include_archived:
            engine, archived = self._archive_engine()
            hits += [
                self._hit(h.id, h.score, archived.get(h.id)) for h in engine.search(query, filters, limit)
            ]
            hits.sort(key=lambda h: -h["score"])
        return _first(self._old_id_hit(query), [h for h in hits if h["summary"] is not None], limit)

    def _old_id_hit(self, query: str) -> SearchHit | None:
        """An old id (front matter `aliases`, e.g. rlm-claude's) asked for as such: the note it became."""
        cat = self.fresh()
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
            project=_name(project),
            domain=_name(domain),
            kind=kind,
            date_from=q.date(date_from, "date_from"),
            date_to=q.date(date_to, "date_to"),
            entity=entity.strip(),
        )

    @staticmethod
    def _hit(note_id: str, score: float, note: Insight | Chunk | None) -> SearchHit:
        if note is None:  # indexed but gone from the vault since: dropped by the caller
            return {"id": note_id, "kind": "", "score": score, "summary": None, "project": None}  # type: ignore[typeddict-item]
        if isinstance(note, Chunk):
            return {
                "id": note.id,
                "kind": "chunk",
                "score": round(score, 4),
                "summary": note.summary,
                "project": note.project,
                "created": note.created,
            }
        return {
            "id": note.id,
            "kind": "insight",
            "score": round(score, 4),
            "summary": q.short(note.content, 100),
            "project": note.project or None,
            "created": note.created,
        }

    def _plain_search(
        self, query: str, filters: Filters, limit: int, include_archived: bool
    ) -> list[SearchHit]:
        chunks, insights = self._candidates(filters, include_archived)
        return q.keyword_search(chunks, insights, query, limit)

    def _candidates(self, f: Filters, include_archived: bool) -> tuple[list[Chunk], list[Insight]]:
        cat = self.fresh()
        chunks = cat.chunks() + (self.archived_chunks() if include_archived else [])
        chunks = q.filter_chunks(chunks, f.project, f.domain, f.date_from, f.date_to, f.entity)
        with_insights = f.kind != "chunk" and not (f.domain or f.entity)
        insights = (
            q.filter_insights(cat.insights(), f.project, f.date_from, f.date_to) if with_insights else []
        )
        return chunks, insights

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
        if fuzzy and not include_archived and self._ready():
            return {"matches": self._fuzzy(pattern, fuzzy_threshold, limit, filters)}
        chunks, insights = self._candidates(filters, include_archived)
        notes: list[Chunk | Insight] = [*chunks, *q.newest(insights)]
        if fuzzy:
            return {"matches": q.fuzzy_lines(notes, pattern, fuzzy_threshold, limit)}
        return {"matches": q.regex_lines(notes, pattern, limit, self.config.grep_timeout)}

    def _fuzzy(self, pattern: str, threshold: int, limit: int, filters: Filters) -> list[GrepMatch]:
        engine = self._synced()
        matches: list[GrepMatch] = []
        for hit in engine.grep_fuzzy(pattern, threshold, limit, filters):
            note = self.catalog.note(hit.id)
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

    def semantic_status(self) -> dict[str, Any]:
        """Whether meaning-based ranking is on, with which model, and if not, why."""
        model = self.config.embedding_model
        embedder = self.embedder()
        if embedder is None:
            return {
                "enabled": False,
                "model": model,
                "reason": "RLM_EMBEDDING_MODEL is 'none': search is BM25-only",
            }
        enabled, reason = embedder.status()
        return {"enabled": enabled, "model": model, "reason": reason}

    def wait_for_model(self, timeout: float = 120.0) -> bool:
        """Load the embedding model now (CLI commands); True when semantic search is on."""
        embedder = self.embedder()
        return embedder is not None and embedder.wait(timeout=timeout)

    def reindex(
        self, progress: Callable[[int, int], None] | None = None, wait_model: bool = True
    ) -> dict[str, Any]:
        """Rebuild the search caches from the vault alone."""
        if wait_model:
            self.wait_for_model(timeout=600)
        cat = self.fresh()
        hashes = cat.hashes()
        engine = self.engine()
        count = engine.rebuild(lambda: self._loader(sorted(hashes)), progress)
        engine.sync(hashes, self._loader)
        return {"indexed": count, "semantic": self.semantic_status()}

    def doctor(self) -> dict[str, Any]:
        """What is wrong, if anything: unreadable notes, caches out of step, conflicts, git health."""
        self.wait_for_model()
        cat = self.fresh()
        problems = [f"{p.path}: {p.reason}" for p in cat.problems()]
        try:
            cache = _cache_problems(self.engine().status(cat.hashes()))
        except CacheError as exc:
            cache = [str(exc)]
        fsck = self.vault.git.run("fsck", "--no-progress", "--no-dangling", check=False)
        git_ok = self.vault.git.run_status("fsck", "--no-progress") == 0
        semantic = self.semantic_status()
        broken_model = "could not be loaded" in semantic["reason"]
        # Caches that lag behind catch up at the next search; only what needs a person fails doctor.
        return {
            "notes": problems,
            "caches": cache,
            "semantic": semantic,
            "git": "ok" if git_ok else fsck.strip()[:500],
            "conflicts": self.conflict_files(),
            "ok": not problems and git_ok and not broken_model,
        }

    def conflict_files(self) -> list[str]:
        return self.vault.conflict_files()


def _first(hit: SearchHit | None, hits: list[SearchHit], limit: int) -> SearchResult:
    """The results, led by the note an old id named (when the query was one)."""
    lead = [hit] if hit is not None else []
    return {"results": [*lead, *(h for h in hits if hit is None or h["id"] != hit["id"])][:limit]}


def _cache_problems(status: dict[str, Any]) -> list[str]:
    """Readable cache problems from the engine's counts (semantic state is reported apart)."""
    found = [
        (status["index_missing_or_stale"], "text index: {} notes missing or stale"),
        (status["index_extra"], "text index: {} entries for notes no longer in the vault"),
        (status["vectors_missing_or_stale"], "vectors: {} notes not embedded yet"),
    ]
    return [text.format(n) for n, text in found if n] + [
        f"rebuilt a broken cache: {r}" for r in status["repairs"]
    ]
