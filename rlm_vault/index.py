"""The BM25 text index (Whoosh): a deletable cache of the vault, keyed by note id and content hash.

Filters are Whoosh queries passed as `filter=`, so they restrict the candidates before the top k is
taken. One searcher stays open and is replaced after each commit, so a query never pays for opening the index.
The `words` field holds each note's folded words for fuzzy grep: the index is the `fuzzy.Vocabulary`
every process on the vault shares (its files are memory-mapped), so no process builds its own.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whoosh.index import IndexError as WhooshIndexError

from rlm_vault import related, textproc
from rlm_vault.errors import Busy, CacheError

if TYPE_CHECKING:
    from rlm_vault.fuzzy import Lexicon

__all__ = [
    "BROKEN",
    "NO_FILTERS",
    "DocFacts",
    "Filters",
    "SearchDoc",
    "TextIndex",
    "Weights",
    "broken",
    "cache_error",
    "role_of",
]

Progress = Callable[[int, int], None]

# Whoosh raises its own errors, but a truncated or half-deleted segment surfaces as whatever the codec
# trips on (an empty file gives a TypeError deep in its varint reader). An error of these kinds, or any
# error raised inside Whoosh's own code, means "rebuild me"; any other exception is our bug and propagates.
BROKEN = (
    WhooshIndexError,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    struct.error,
    zlib.error,
    pickle.UnpicklingError,
)


def broken(exc: BaseException) -> bool:
    """True when `exc` says the index files are damaged: raised by the file system or inside Whoosh."""
    if isinstance(exc, BROKEN):
        return True
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}whoosh{os.sep}" in tb.tb_frame.f_code.co_filename


def cache_error(exc: Exception, what: str) -> CacheError:
    """`exc` translated to a CacheError when the index is damaged; a bug of ours is raised as it is."""
    if not broken(exc):
        raise exc
    return CacheError(f"{what}: {exc!r}")


@dataclass(frozen=True, slots=True)
class SearchDoc:
    """What the caches know about one note: its filterable metadata and its text."""

    id: str
    kind: str  # "chunk" | "insight"
    project: str  # "" = global
    domain: str
    category: str
    importance: str
    chunk_type: str
    tags: tuple[str, ...]
    entities: tuple[str, ...]
    created: str  # 'YYYY-MM-DDTHH:MM:SSZ'
    summary: str
    body: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Filters:
    """Restrictions applied inside every retrieval; an empty string means "any"."""

    project: str = ""
    domain: str = ""
    kind: str = ""
    date_from: str = ""  # YYYY-MM-DD, inclusive
    date_to: str = ""  # YYYY-MM-DD, inclusive
    entity: str = ""  # substring of one entity, case-insensitive
    category: str = ""
    importance: str = ""

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__slots__)


@dataclass(frozen=True, slots=True)
class Weights:
    """Query-time field boosts and BM25F parameters (tuned on LoCoMo, see scripts/eval_locomo.py)."""

    summary: float = 2.0
    body: float = 1.0
    meta: float = 1.5
    k1: float = 1.2
    b: float = 0.2  # weak length normalisation: LoCoMo turn R@5 0.609 at 0.75, 0.658 at 0.2
    related: float = 0.5  # weight of a related term (rlm_vault/related.py) against a word of the query


@dataclass(frozen=True, slots=True)
class DocFacts:
    """What re-ranking needs of an indexed note besides its text: where and when it was said, by whom."""

    kind: str
    project: str
    created: str
    role: str  # "user" | "assistant" | "" (a message of a conversation, when the note says so)
    size: int  # characters of the body: short notes lean on their neighbours


# A conversation message names its speaker first: "user: ...", "[assistant]", "**User**:", "Human:".
_ROLE = re.compile(r"^\W{0,4}(user|human|assistant|ai|claude|model)\b", re.IGNORECASE)
_ROLES = {"user": "user", "human": "user"}


def role_of(doc: SearchDoc) -> str:
    """ "user" or "assistant" when the note is one side of a conversation, else ""."""
    for tag in doc.tags:
        if tag.lower() in ("user", "human", "assistant"):
            return _ROLES.get(tag.lower(), "assistant")
    for text in (doc.body[:40], doc.summary[:40]):
        if match := _ROLE.match(text):
            return _ROLES.get(match.group(1).lower(), "assistant")
    return ""


NO_FILTERS = Filters()
_EXACT = ("project", "domain", "kind", "category", "importance")


def schema() -> Any:
    """The Whoosh schema: exact-match ID fields for filters, analysed TEXT for ranking."""
    from whoosh import fields

    text = textproc.analyzer()
    return fields.Schema(
        id=fields.ID(unique=True, stored=True, sortable=True),
        kind=fields.ID(stored=True),
        project=fields.ID(stored=True),
        domain=fields.ID,
        category=fields.ID,
        importance=fields.ID,
        chunk_type=fields.ID,
        tags=fields.KEYWORD(lowercase=True, commas=True),
        entities=fields.KEYWORD(lowercase=True, commas=True),
        created=fields.ID(stored=True, sortable=True),
        role=fields.ID(stored=True),
        size=fields.STORED,
        summary=fields.TEXT(analyzer=text, phrase=False),
        body=fields.TEXT(analyzer=text, phrase=False),
        meta=fields.TEXT(analyzer=text, phrase=False),
        sha=fields.STORED,
        words=fields.KEYWORD,  # folded words of the body, stop words kept: fuzzy grep's vocabulary
    )


def _fields(doc: SearchDoc) -> dict[str, str | int]:
    return {
        "id": doc.id,
        "kind": doc.kind,
        "project": doc.project,
        "domain": doc.domain,
        "category": doc.category,
        "importance": doc.importance,
        "chunk_type": doc.chunk_type,
        "tags": ",".join(doc.tags),
        "entities": ",".join(doc.entities),
        "created": doc.created,
        "role": role_of(doc),
        "size": len(doc.body),
        "summary": doc.summary,
        "body": doc.body,
        "meta": " ".join(doc.tags + doc.entities),
        "sha": doc.sha256,
        "words": " ".join(textproc.vocabulary(doc.body)),
    }


def _facts(doc: SearchDoc) -> DocFacts:
    return DocFacts(doc.kind, doc.project, doc.created, role_of(doc), len(doc.body))


def filter_query(filters: Filters) -> Any:
    """The Whoosh query matching exactly the documents `filters` allows (None when it allows all)."""
    from whoosh import query

    parts: list[Any] = [query.Term(name, getattr(filters, name)) for name in _EXACT if getattr(filters, name)]
    if filters.date_from or filters.date_to:
        # Timestamps are ISO strings, so a term range on the string is a date range.
        end = f"{filters.date_to}\uffff" if filters.date_to else None
        parts.append(query.TermRange("created", filters.date_from or None, end))
    if filters.entity:
        needle = filters.entity.lower().replace("*", "").replace("?", "")
        parts.append(query.Wildcard("entities", f"*{needle}*"))
    return query.And(parts) if parts else None


def text_query(text: str, weights: Weights) -> Any:
    """An OR over every term of `text` in summary, body and tags/entities (None if no term)."""
    from whoosh import query

    unique = dict.fromkeys(textproc.tokens(text))
    boosts = (("summary", weights.summary), ("body", weights.body), ("meta", weights.meta))
    clauses = [query.Term(field, term, boost=boost) for term in unique for field, boost in boosts]
    if clauses and weights.related:
        for target in related.expand(text).targets():
            clauses.extend(_related_clause(target, field, boost * weights.related) for field, boost in boosts)
    return query.Or(clauses) if clauses else None


def _related_clause(target: related.Target, field: str, boost: float) -> Any:
    """A related entry as a query: every word of it (in any of its stems) in `field`."""
    from whoosh import query

    words = [query.Or([query.Term(field, stem) for stem in sorted(word)]) for word in target]
    clause = words[0] if len(words) == 1 else query.And(words)
    clause.boost = boost
    return clause


class TextIndex:
    """A Whoosh index in `path`; a missing directory is created empty, a broken one raises CacheError."""

    def __init__(self, path: Path, weights: Weights | None = None) -> None:
        self.path = Path(path)
        self.weights = weights or Weights()
        self._lock = threading.RLock()
        self._closed = False
        self._ix = self._open()
        self._searcher = self._new_searcher()
        self._stamps, self._facts = self._read_stamps()
        self.version = 0  # moves with every change of the indexed set, for caches derived from facts()
        self._lexicons: dict[str, Lexicon] = {}  # segment id -> its fuzzy words (segments never change)

    def _open(self) -> Any:
        from whoosh import index

        try:
            if not self.path.is_dir() or not index.exists_in(str(self.path)):
                self.path.mkdir(parents=True, exist_ok=True)
                return index.create_in(str(self.path), schema())
            ix = index.open_dir(str(self.path))
        except Exception as exc:
            raise cache_error(exc, f"text index at {self.path} cannot be opened") from exc
        if set(ix.schema.names()) != set(schema().names()):
            # An index written by an older version lacks fields ranking reads: rebuilt from the vault.
            ix.close()
            raise CacheError(f"text index at {self.path} has an older schema")
        return ix

    def _new_searcher(self) -> Any:
        from whoosh import scoring

        try:
            return self._ix.searcher(weighting=scoring.BM25F(B=self.weights.b, K1=self.weights.k1))
        except Exception as exc:
            raise cache_error(exc, f"text index at {self.path} cannot be read") from exc

    def _read_stamps(self) -> tuple[dict[str, str], dict[str, DocFacts]]:
        stamps: dict[str, str] = {}
        facts: dict[str, DocFacts] = {}
        try:
            for fields in self._searcher.all_stored_fields():
                stamps[fields["id"]] = sys.intern(fields.get("sha", ""))
                facts[fields["id"]] = DocFacts(
                    fields.get("kind", ""),
                    fields.get("project", ""),
                    fields.get("created", ""),
                    fields.get("role", ""),
                    fields.get("size", 0),
                )
        except Exception as exc:
            raise cache_error(exc, f"text index at {self.path} is corrupt") from exc
        return stamps, facts

    def close(self) -> None:
        """Release the open searcher (and its file handles); closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._searcher.close()
            except Exception as exc:
                if not broken(exc):  # the handles of a damaged index may fail to close; ours may not
                    raise

    def stamps(self) -> dict[str, str]:
        """id -> sha256 of every indexed document (kept in memory, reread when another process writes)."""
        with self._lock:
            self._refresh_if_stale()
            return self._stamps

    def kind(self, doc_id: str) -> str:
        """The kind ("chunk" or "insight") of an indexed id, "" if unknown."""
        facts = self._facts.get(doc_id)
        return facts.kind if facts else ""

    def facts(self) -> dict[str, DocFacts]:
        """id -> kind, project, created and speaker role of every indexed note (do not modify)."""
        with self._lock:
            self._refresh_if_stale()
            return self._facts

    def __len__(self) -> int:
        return len(self.stamps())

    def _refresh_if_stale(self) -> None:
        try:
            if self._searcher.up_to_date():
                return
            self._searcher = self._refreshed()
        except Exception as exc:
            raise cache_error(exc, f"text index at {self.path} cannot be refreshed") from exc
        self._stamps, self._facts = self._read_stamps()
        self.version += 1

    def _refreshed(self) -> Any:
        # Not `searcher.refresh()`: it reuses the old segment readers with their old deletion sets,
        # so an updated or deleted note kept matching (whoosh-reloaded 2.7.5). A new searcher is exact.
        old, self._searcher = self._searcher, self._new_searcher()
        old.close()
        return self._searcher

    def update(self, upserts: Sequence[SearchDoc] = (), deletes: Iterable[str] = ()) -> None:
        """Replace or add `upserts` and remove `deletes`, in one commit."""
        deletes = [i for i in deletes if i]
        if not upserts and not deletes:
            return
        with self._lock:
            self._refresh_if_stale()
            self._commit(upserts, deletes)
            for doc in upserts:
                self._stamps[doc.id] = doc.sha256
                self._facts[doc.id] = _facts(doc)
            for doc_id in deletes:
                self._stamps.pop(doc_id, None)
                self._facts.pop(doc_id, None)
            self.version += 1

    def _writer(self, **options: Any) -> Any:
        from whoosh.index import LockError

        try:
            # Plain (not compound) segments: Whoosh copies a compound segment into each reader's memory,
            # while plain files are read through the page cache that every process shares.
            return self._ix.writer(timeout=10.0, delay=0.05, compound=False, **options)
        except LockError as exc:
            # Busy, not CacheError: a held lock is no reason to wipe and rebuild the index.
            raise Busy(f"another process has held the text index at {self.path} for 10 s") from exc

    def _commit(self, upserts: Sequence[SearchDoc], deletes: list[str]) -> None:
        writer = self._writer()
        try:
            try:
                for doc_id in deletes:
                    writer.delete_by_term("id", doc_id)
                for doc in upserts:
                    writer.update_document(**_fields(doc))
            except BaseException:
                writer.cancel()
                raise
            writer.commit()
            self._searcher = self._refreshed()
        except Exception as exc:
            raise cache_error(exc, f"text index at {self.path} could not be updated") from exc

    def rebuild(self, docs: Sequence[SearchDoc], progress: Progress | None = None) -> None:
        """Recreate the index from scratch with `docs` (one writer, one commit)."""
        with self._lock:
            self._searcher.close()
            shutil.rmtree(self.path, ignore_errors=True)
            self._ix = self._open()
            self._write_all(docs, progress)
            self._searcher = self._new_searcher()
            self._stamps = {doc.id: doc.sha256 for doc in docs}
            self._facts = {doc.id: _facts(doc) for doc in docs}
            self.version += 1

    def _write_all(self, docs: Sequence[SearchDoc], progress: Progress | None) -> None:
        writer = self._writer(limitmb=256, procs=1)
        try:
            for done, doc in enumerate(docs, 1):
                writer.add_document(**_fields(doc))
                if progress and (done % 200 == 0 or done == len(docs)):
                    progress(done, len(docs))
            writer.commit()
        except Exception as exc:
            raise cache_error(exc, f"text index at {self.path} could not be rebuilt") from exc

    def search(self, text: str, filters: Filters = NO_FILTERS, limit: int = 10) -> list[tuple[str, float]]:
        """Best `limit` (id, BM25 score) for `text` among the documents `filters` allows.

        A query with no searchable term returns the allowed documents newest first (score 0).
        """
        with self._lock:
            self._refresh_if_stale()
            try:
                return self._search(text_query(text, self.weights), filter_query(filters), limit)
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} failed a search") from exc

    def _search(self, query: Any, filter_q: Any, limit: int) -> list[tuple[str, float]]:
        from whoosh.query import Every

        if query is None:
            hits = self._searcher.search(filter_q or Every(), limit=limit, sortedby="created", reverse=True)
            return [(hit["id"], 0.0) for hit in hits]
        hits = self._searcher.search(query, filter=filter_q, limit=limit)
        # Ties are ordered by id, not by Whoosh's docnum, so a rebuilt index answers the same.
        return sorted(((hit["id"], float(hit.score)) for hit in hits), key=lambda h: (-round(h[1], 9), h[0]))

    def allowed_ids(self, filters: Filters) -> set[str] | None:
        """The ids `filters` allows, or None when it allows everything."""
        filter_q = filter_query(filters)
        if filter_q is None:
            return None
        with self._lock:
            self._refresh_if_stale()
            try:
                column = self._searcher.reader().column_reader("id")
                return {column[docnum] for docnum in self._searcher.docs_for_query(filter_q)}
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} failed a filter") from exc

    # -- fuzzy grep's vocabulary (fuzzy.Vocabulary) ------------------------------------------------
    def matches(self, word: str) -> list[str]:
        """Indexed words within `fuzzy.max_edits(word)` of `word`, over every segment."""
        with self._lock:
            self._refresh_if_stale()
            try:
                found = [m for lexicon in self._segment_lexicons() for m in lexicon.matches(word)]
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} failed a fuzzy lookup") from exc
        return list(dict.fromkeys(found))

    def _segment_lexicons(self) -> list[Lexicon]:
        # A segment's words never change once written (deletions only hide documents), so each is read
        # once; a write adds a small segment, and merged-away segments are dropped here.
        from rlm_vault.fuzzy import Lexicon

        live: dict[str, Lexicon] = {}
        for reader, _ in self._searcher.reader().leaf_readers():
            segment = reader.segment()
            key = segment.segment_id() if segment is not None else str(id(reader))
            live[key] = self._lexicons.get(key) or Lexicon(reader.field_terms("words"))
        self._lexicons = live
        return list(live.values())

    def holders(self, words: Sequence[str]) -> set[str]:
        """Ids of the live documents holding at least one of `words`."""
        from whoosh import query

        if not words:
            return set()
        with self._lock:
            self._refresh_if_stale()
            try:
                column = self._searcher.reader().column_reader("id")
                found = self._searcher.docs_for_query(query.Or([query.Term("words", w) for w in words]))
                return {column[docnum] for docnum in found}
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} failed a fuzzy lookup") from exc
