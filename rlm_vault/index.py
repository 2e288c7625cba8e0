"""The BM25F text index: a deletable cache of the vault, keyed by note id and content hash.

The index is a list of immutable segments (`postings.Segment`: numpy arrays memory-mapped by every
process on the vault) plus, per segment, the doc numbers deleted since it was written. `manifest.json`
names them; a write adds a small segment and new deletion files, then replaces the manifest
atomically, so a reader sees the old set or the new one, never half of either. Another process
notices a change with one stat of the manifest and opens only the segments it has not mapped yet.
Small segments are merged as they accumulate, and folded into the main one when they pass 5% of it.

Scoring is Whoosh's BM25F (the ranking this project was tuned with, kept score for score): per
(term, field), idf * tf*(K1+1) / (tf + K1*((1-B) + B*length/average length)) times the field's
boost, with idf = log(N / (df + 1)) + 1 and lengths quantised to Whoosh's one-byte scale. Filters
restrict the documents before the top k is taken. The `words` of each note (fuzzy grep's vocabulary)
live in the same segments, so every process shares them instead of building its own.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from rlm_vault import postings, related, textproc
from rlm_vault.errors import CacheError
from rlm_vault.postings import Segment

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

# A missing, truncated or garbled file surfaces as one of these (from the file system, numpy's `.npy`
# reader, JSON, or an array index out of range): "rebuild me". Any other exception is our bug.
BROKEN = (OSError, EOFError, ValueError, KeyError, IndexError, CacheError)


def broken(exc: BaseException) -> bool:
    """True when `exc` says the index files are damaged (raised by the file system or their readers)."""
    return isinstance(exc, BROKEN)


def cache_error(exc: Exception, what: str) -> CacheError:
    """`exc` translated to a CacheError when the index is damaged; a bug of ours is raised as it is."""
    if not broken(exc):
        raise exc
    return exc if isinstance(exc, CacheError) else CacheError(f"{what}: {exc!r}")


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


class DocFacts(NamedTuple):
    """What re-ranking needs of an indexed note besides its text: where and when it was said, by whom.

    A named tuple: the index makes one per note when it opens, and a tuple is made several times faster.
    """

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


MANIFEST = "manifest.json"
_UNREAD = (-1, -1, -1)  # the manifest's stat before the first look
FORMAT = 1
GRACE = 60.0  # seconds a file no manifest names is kept: a reader may have read the manifest just before
TIER = 4  # this many tail segments of one size class are merged into one
MAX_TAIL = 8  # small segments past which they are merged into one (at most FOLD of the main one's notes)
FEW_LOOKUPS = 64  # ids an update finds by a search of each segment's ids; more are matched in one pass
FOLD = 0.05  # tail documents beyond this share of the main segment are folded into it
_FIELD = {name: n for n, name in enumerate(postings.FIELDS)}
# Whoosh stores a field's length in one byte: the length rounded up to this scale (its
# `_length_byte_cache`, (1.033**n - 1) * 27 rounded). Quantised the same way, scores stay Whoosh's.
_LENGTH_SCALE = np.array([round((1.033**n - 1) * 27) for n in range(256)], dtype=np.float64)


def _quantised(lengths: np.ndarray) -> np.ndarray:
    """Field lengths (docs x fields) as Whoosh scores them."""
    slots = np.minimum(np.searchsorted(_LENGTH_SCALE, lengths, side="left"), 255)
    return _LENGTH_SCALE[slots].T.copy()


def _document(doc: SearchDoc) -> postings.Document:
    return postings.Document(
        id=doc.id,
        sha256=doc.sha256,
        created=doc.created,
        size=len(doc.body),
        columns=(doc.kind, doc.project, doc.domain, doc.category, doc.importance, role_of(doc)),
        entities=doc.entities,
        texts=(doc.summary, doc.body, " ".join(doc.tags + doc.entities)),
    )


@dataclass(frozen=True, slots=True)
class _Part:
    """A segment as the current manifest has it: where its docs start globally, which are deleted."""

    segment: Segment
    deleted: str  # file name of its deleted doc numbers, "" for none
    dead: np.ndarray  # bool per doc
    start: int
    qlen: np.ndarray  # quantised field lengths, fields x docs
    totals: np.ndarray  # token count of each field over the live docs


@dataclass(frozen=True, slots=True)
class _Postings:
    docs: np.ndarray  # global doc numbers, ascending
    scores: np.ndarray  # unboosted BM25 of each


BUILD_BATCH = 10_000  # notes analysed into one segment at a time by a rebuild


class TextIndex:
    """Segments in `path` named by its manifest; a missing folder is an empty index, a broken one raises CacheError."""

    def __init__(self, path: Path, weights: Weights | None = None) -> None:
        self.path = Path(path)
        self.weights = weights or Weights()
        self._lock = threading.RLock()
        self.version = 0  # moves with every change of the indexed set, for caches derived from facts()
        self._stat: tuple[int, int, int] | None = _UNREAD
        self._generation = 0
        self._parts: list[_Part] = []
        self._ids: list[str] = []
        self._live = np.zeros(0, dtype=bool)
        self._qlen = np.zeros((len(postings.FIELDS), 0))
        self._count = 0
        self._totals = np.zeros(len(postings.FIELDS))
        self._stamps: dict[str, str] | None = None
        self._facts: dict[str, DocFacts] | None = None
        self._lexicons: dict[str, Lexicon] = {}  # segment name -> its fuzzy words
        with contextlib.suppress(OSError):
            self.path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._refresh()

    # -- reading the manifest ----------------------------------------------------------------
    def _manifest_stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path / MANIFEST)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        """Install the current manifest when it changed since the last look (one stat otherwise)."""
        for attempt in range(3):
            stat = self._manifest_stat()
            if stat == self._stat:
                return
            try:
                self._install(stat, self._read_manifest(stat))
                return
            except CacheError:
                # A writer may have replaced the manifest and retired what we were opening: look again.
                if attempt == 2 or self._manifest_stat() == stat:
                    raise

    def _read_manifest(self, stat: tuple[int, int, int] | None) -> dict[str, Any]:
        if stat is None:
            if any(self.path.glob("_MAIN_*.toc")) or any(self.path.glob("*.seg")):
                raise CacheError(f"text index at {self.path} was written by an older version")
            return {"format": FORMAT, "generation": 0, "segments": []}
        try:
            manifest = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
            if manifest["format"] != FORMAT:
                raise ValueError(f"manifest format {manifest['format']}, expected {FORMAT}")
            for entry in manifest["segments"]:
                if not isinstance(entry["name"], str) or not isinstance(entry["deleted"], str):
                    raise TypeError(f"bad segment entry {entry!r}")
            return dict(manifest)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"text index at {self.path} has a damaged manifest: {exc!r}") from exc

    def _install(self, stat: tuple[int, int, int] | None, manifest: dict[str, Any]) -> None:
        known = {part.segment.name: part for part in self._parts}
        parts: list[_Part] = []
        start = 0
        for entry in manifest["segments"]:
            old = known.get(entry["name"])
            segment = old.segment if old else Segment(self.path, entry["name"])
            qlen = old.qlen if old else _quantised(np.asarray(segment.lengths))
            if old and old.deleted == entry["deleted"]:
                dead, totals = old.dead, old.totals
            else:
                dead = self._read_deleted(entry["deleted"], segment.count)
                totals = np.asarray(segment.lengths)[~dead].sum(axis=0, dtype=np.float64)
            parts.append(_Part(segment, entry["deleted"], dead, start, qlen, totals))
            start += segment.count
        previous = self._parts
        self._parts = parts
        self._generation = int(manifest["generation"])
        self._stat = stat
        self._derive()
        self._update_maps(previous)
        self.version += 1

    def _read_deleted(self, name: str, count: int) -> np.ndarray:
        dead = np.zeros(count, dtype=bool)
        if not name:
            return dead
        try:
            numbers = np.load(self.path / name, allow_pickle=False)
            if numbers.dtype.kind not in "iu" or numbers.ndim != 1:
                raise ValueError(f"deleted doc numbers have dtype {numbers.dtype}")
            dead[numbers] = True
        except (OSError, ValueError, IndexError, EOFError) as exc:
            raise CacheError(f"text index at {self.path}: {name} is damaged: {exc!r}") from exc
        return dead

    def _derive(self) -> None:
        """The per-process arrays over every segment: ids, live mask, quantised lengths, totals."""
        parts = self._parts
        self._ids = []
        for part in parts:
            self._ids.extend(part.segment.ids)
        self._live = np.concatenate([~part.dead for part in parts]) if parts else np.zeros(0, dtype=bool)
        self._count = int(self._live.sum())
        fields = len(postings.FIELDS)
        self._qlen = np.concatenate([p.qlen for p in parts], axis=1) if parts else np.zeros((fields, 0))
        self._totals = np.sum([p.totals for p in parts], axis=0) if parts else np.zeros(fields)

    def _update_maps(self, previous: list[_Part]) -> None:
        """Bring stamps, facts and positions to the new parts: in place when segments were only added to."""
        names = [part.segment.name for part in previous]
        if names != [part.segment.name for part in self._parts[: len(names)]]:
            self._stamps = self._facts = None  # merged: rebuilt when next asked for
            return
        for old, new in zip(previous, self._parts, strict=False):
            for n in np.flatnonzero(new.dead & ~old.dead).tolist():
                doc_id = old.segment.ids[n]
                for known in (self._stamps, self._facts):
                    if known is not None:
                        known.pop(doc_id, None)
        for part in self._parts[len(previous) :]:
            if self._stamps is not None and self._facts is not None:
                self._add_maps(part)

    def _add_maps(self, part: _Part) -> None:
        assert self._stamps is not None and self._facts is not None
        seg = part.segment
        created = [c.decode("utf-8", "surrogatepass") for c in np.asarray(seg.created).tolist()]
        facts = map(
            DocFacts,
            seg.column("kind"),
            seg.column("project"),
            created,
            seg.column("role"),
            np.asarray(seg.array("size")).tolist(),
        )
        ids, shas = seg.ids, list(map(sys.intern, seg.shas()))  # shared with the catalog's strings
        if part.dead.any():
            live = np.flatnonzero(~part.dead).tolist()
            facts_list = list(facts)
            self._stamps.update((ids[n], shas[n]) for n in live)
            self._facts.update((ids[n], facts_list[n]) for n in live)
        else:
            self._stamps.update(zip(ids, shas, strict=True))
            self._facts.update(zip(ids, facts, strict=True))

    def _maps(self) -> tuple[dict[str, str], dict[str, DocFacts]]:
        if self._stamps is None or self._facts is None:
            self._stamps, self._facts = {}, {}
            try:
                for part in self._parts:
                    self._add_maps(part)
            except (ValueError, IndexError) as exc:
                self._stamps = self._facts = None
                raise CacheError(f"text index at {self.path} is corrupt: {exc!r}") from exc
        return self._stamps, self._facts

    # -- the public reading side ---------------------------------------------------------------
    def close(self) -> None:
        """Drop the mapped segments; closing twice is harmless (numpy unmaps them once unused)."""
        with self._lock:
            self._parts = []
            self._stat = _UNREAD

    def stamps(self) -> dict[str, str]:
        """id -> sha256 of every indexed document (kept in memory, updated when another process writes)."""
        with self._lock:
            self._refresh()
            return self._maps()[0]

    def kind(self, doc_id: str) -> str:
        """The kind ("chunk" or "insight") of an indexed id, "" if unknown."""
        with self._lock:
            facts = self._maps()[1].get(doc_id)
        return facts.kind if facts else ""

    def facts(self) -> dict[str, DocFacts]:
        """id -> kind, project, created and speaker role of every indexed note (do not modify)."""
        with self._lock:
            self._refresh()
            return self._maps()[1]

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return self._count

    # -- writing -------------------------------------------------------------------------------
    def update(self, upserts: Sequence[SearchDoc] = (), deletes: Iterable[str] = ()) -> None:
        """Replace or add `upserts` and remove `deletes`, published at once.

        Writers must be serialised by the caller (SearchEngine holds `build.lock`); readers need no lock.
        """
        latest = {doc.id: doc for doc in upserts}
        gone = {i for i in deletes if i} | set(latest)
        with self._lock:
            self._refresh()
            doomed = self._positions(gone)
            if not latest and not doomed:
                return
            try:
                self._write_update(list(latest.values()), doomed)
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} could not be updated") from exc

    def _positions(self, ids: set[str]) -> list[int]:
        """The doc numbers of the live documents among `ids`, ascending. A few (a write's) are looked up in
        each segment's ids, many matched in one pass over them: a kept id -> number map had cost a server
        7 MB at 100,000 notes."""
        if self._stamps is not None:
            ids = {i for i in ids if i in self._stamps}  # a new note is in no segment
        found: list[int] = []
        for part in self._parts:
            names = part.segment.ids
            if len(ids) > FEW_LOOKUPS:
                wanted = (n for n, doc_id in enumerate(names) if doc_id in ids)
            else:
                wanted = (n for doc_id in ids if (n := _index_of(names, doc_id)) is not None)
            found.extend(part.start + n for n in wanted if not part.dead[n])
        return sorted(found)

    def _write_update(self, upserts: list[SearchDoc], doomed: list[int]) -> None:
        generation = self._generation + 1
        entries: list[dict[str, Any]] = []
        doomed_at = np.asarray(doomed, dtype=np.int64)
        for part in self._parts:
            local = doomed_at[(doomed_at >= part.start) & (doomed_at < part.start + part.segment.count)]
            deleted = part.deleted
            if len(local):
                dead = part.dead.copy()
                dead[local - part.start] = True
                deleted = f"deleted-{generation:06d}-{secrets.token_hex(3)}.npy"
                np.save(self.path / deleted, np.flatnonzero(dead).astype(np.int32), allow_pickle=False)
            entries.append({"name": part.segment.name, "deleted": deleted, "count": part.segment.count})
        if upserts:
            name = self._new_segment_name(generation)
            postings.write(postings.build([_document(doc) for doc in upserts]), self.path, name)
            entries.append({"name": name, "deleted": "", "count": len(upserts)})
        entries = self._merged(entries, generation)
        self._publish(generation, entries)

    def _new_segment_name(self, generation: int) -> str:
        return f"seg-{generation:06d}-{secrets.token_hex(3)}"

    def _merged(self, entries: list[dict[str, Any]], generation: int) -> list[dict[str, Any]]:
        """`entries` after the merges they call for: full tiers of small segments, or a fold into the main one."""
        if len(entries) < 2:
            return entries
        main, tail = entries[0], entries[1:]
        if sum(e["count"] for e in tail) > FOLD * main["count"] + 200:
            return [self._merge_entries(entries, generation)]
        while len(tail) >= TIER and len({_size_class(e["count"]) for e in tail[-TIER:]}) == 1:
            tail = [*tail[:-TIER], self._merge_entries(tail[-TIER:], generation)]
        if len(tail) > MAX_TAIL:  # writes of mixed sizes: each query term is looked up in every segment
            tail = [self._merge_entries(tail, generation)]
        return [main, *tail]

    def _merge_entries(self, entries: list[dict[str, Any]], generation: int) -> dict[str, Any]:
        parts = []
        for entry in entries:
            segment = self._segment(entry["name"])
            parts.append((segment, ~self._read_deleted(entry["deleted"], segment.count)))
        data = postings.merge(parts)
        name = self._new_segment_name(generation)
        postings.write(data, self.path, name)
        return {"name": name, "deleted": "", "count": data.count}

    def _segment(self, name: str) -> Segment:
        for part in self._parts:
            if part.segment.name == name:
                return part.segment
        return Segment(self.path, name)

    def _publish(self, generation: int, entries: list[dict[str, Any]]) -> None:
        """Replace the manifest in one rename, then remove files no manifest has named for a while."""
        manifest = {"format": FORMAT, "generation": generation, "segments": entries}
        tmp = self.path / f".{MANIFEST}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps(manifest), encoding="utf-8")
        os.replace(tmp, self.path / MANIFEST)
        self._collect({e["name"] for e in entries}, {e["deleted"] for e in entries})
        self._refresh()

    def _collect(self, segments: set[str], deleted: set[str]) -> None:
        # Another process may still be opening what the previous manifest named: only files retired
        # for GRACE seconds go. Processes that mapped them keep their pages.
        cutoff = time.time() - GRACE
        for path in self.path.iterdir():
            if path.name == MANIFEST or path.name in deleted or path.name.split(".")[0] in segments:
                continue
            with contextlib.suppress(OSError):
                if path.lstat().st_mtime < cutoff:
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink()

    def rebuild(self, docs: Sequence[SearchDoc], progress: Progress | None = None) -> None:
        """Recreate the index from scratch with `docs` (one segment)."""
        latest = list({doc.id: doc for doc in docs}.values())
        with self._lock:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self._refresh_or_reset()
                generation = self._generation + 1
                entries = []
                # Built BUILD_BATCH notes at a time and merged from the arrays: analysing every note
                # into one sort held all the postings as Python objects at once (2.6 GB at 100,000).
                for start in range(0, len(latest), BUILD_BATCH):
                    batch = [_document(doc) for doc in latest[start : start + BUILD_BATCH]]
                    name = self._new_segment_name(generation)
                    postings.write(
                        postings.build(batch, _shifted(progress, start, len(latest))), self.path, name
                    )
                    entries.append({"name": name, "deleted": "", "count": len(batch)})
                if len(entries) > 1:
                    entries = [self._merge_entries(entries, generation)]
                self._publish(generation, entries)
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} could not be rebuilt") from exc

    def _refresh_or_reset(self) -> None:
        try:
            self._refresh()
        except CacheError:
            # Rebuilding replaces whatever is there: a damaged index is simply forgotten.
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True, exist_ok=True)
            self._parts, self._stat, self._stamps, self._facts = [], _UNREAD, None, None
            self._derive()

    # -- search --------------------------------------------------------------------------------
    def search(self, text: str, filters: Filters = NO_FILTERS, limit: int = 10) -> list[tuple[str, float]]:
        """Best `limit` (id, BM25 score) for `text` among the documents `filters` allows.

        A query with no searchable term returns the allowed documents newest first (score 0; at equal
        times, the greater id first).
        """
        with self._lock:
            self._refresh()
            try:
                return self._search(text, filters, limit)
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} failed a search") from exc

    def _search(self, text: str, filters: Filters, limit: int) -> list[tuple[str, float]]:
        allowed = self._allowed(filters)
        scores = self._scores(text)
        if scores is None:
            return self._newest(allowed, limit)
        return self._best(scores, allowed, limit)

    def _scores(self, text: str) -> np.ndarray | None:
        """BM25F of every document for `text` (0 where nothing matched); None when `text` has no term."""
        unique = list(dict.fromkeys(textproc.tokens(text)))
        if not unique:
            return None
        w = self.weights
        boosts = ((_FIELD["summary"], w.summary), (_FIELD["body"], w.body), (_FIELD["meta"], w.meta))
        scores = np.zeros(len(self._ids))
        seen: dict[tuple[int, str], _Postings] = {}
        for term in unique:
            for field, boost in boosts:
                hit = self._term(field, term, seen)
                scores[hit.docs] += hit.scores * boost
        if w.related:
            for target in related.expand(text).targets():
                for field, boost in boosts:
                    self._add_related(scores, target, field, boost * w.related, seen)
        return scores

    def _term(self, field: int, term: str, seen: dict[tuple[int, str], _Postings]) -> _Postings:
        """The live documents holding `term` in `field`, with their unboosted BM25F."""
        if (field, term) in seen:
            return seen[(field, term)]
        docs, tfs = [], []
        for part in self._parts:
            local, freq = part.segment.postings(field, term)
            if len(local):
                local = np.asarray(local)
                keep = ~part.dead[local]
                docs.append(local[keep].astype(np.int64) + part.start)
                tfs.append(np.asarray(freq)[keep])
        if not docs:
            found = _Postings(np.zeros(0, dtype=np.int64), np.zeros(0))
        else:
            at = np.concatenate(docs)
            tf = np.concatenate(tfs).astype(np.float64)
            w = self.weights
            idf = math.log(self._count / (len(at) + 1)) + 1
            avgfl = self._totals[field] / (self._count or 1) or 1
            fl = self._qlen[field][at]
            found = _Postings(at, idf * ((tf * (w.k1 + 1)) / (tf + w.k1 * ((1 - w.b) + w.b * fl / avgfl))))
        seen[(field, term)] = found
        return found

    def _add_related(
        self,
        scores: np.ndarray,
        target: related.Target,
        field: int,
        boost: float,
        seen: dict[tuple[int, str], _Postings],
    ) -> None:
        """A related entry: the sum of its words' scores, for documents holding every word of it."""
        words = [self._word(field, sorted(stems), seen) for stems in target]
        if len(words) == 1 and len(target[0]) == 1:
            boost = 1.0  # as Whoosh scored it: a one-term group kept its term's own boost
        docs, values = words[0].docs, words[0].scores
        for word in words[1:]:
            docs, mine, theirs = np.intersect1d(docs, word.docs, assume_unique=True, return_indices=True)
            values = values[mine] + word.scores[theirs]
        if len(docs):
            scores[docs] += values * boost

    def _word(self, field: int, stems: list[str], seen: dict[tuple[int, str], _Postings]) -> _Postings:
        """One word of a related entry: the sum of its stems' scores, for documents holding any."""
        hits = [self._term(field, stem, seen) for stem in stems]
        if len(hits) == 1:
            return hits[0]
        docs, inverse = np.unique(np.concatenate([h.docs for h in hits]), return_inverse=True)
        return _Postings(docs, np.bincount(inverse, weights=np.concatenate([h.scores for h in hits])))

    def _best(self, scores: np.ndarray, allowed: np.ndarray | None, limit: int) -> list[tuple[str, float]]:
        if allowed is not None:
            scores[~allowed] = 0.0
        found = np.flatnonzero(scores > 0)
        if len(found) > limit > 0:
            rounded = np.round(scores[found], 9)
            kth = -np.partition(-rounded, limit - 1)[limit - 1]
            found = found[rounded >= kth]  # ties at the cut are settled by id below
        # Ties are ordered by id, not by doc number, so a rebuilt index answers the same.
        hits = sorted(
            ((self._ids[n], float(scores[n])) for n in found.tolist()), key=lambda h: (-round(h[1], 9), h[0])
        )
        return hits[:limit]

    def _newest(self, allowed: np.ndarray | None, limit: int) -> list[tuple[str, float]]:
        found = np.flatnonzero(self._live if allowed is None else allowed)
        if not len(found) or limit <= 0:
            return []
        created = np.concatenate([np.asarray(part.segment.created) for part in self._parts])[found]
        if len(found) > limit:
            kth = np.sort(created)[::-1][limit - 1]
            keep = created >= kth
            found, created = found[keep], created[keep]
        hits = sorted(
            zip(created.tolist(), found.tolist(), strict=True),
            key=lambda c: (c[0], self._ids[c[1]]),
            reverse=True,
        )
        return [(self._ids[n], 0.0) for _, n in hits[:limit]]

    # -- filters -------------------------------------------------------------------------------
    def allowed_ids(self, filters: Filters) -> set[str] | None:
        """The ids `filters` allows, or None when it allows everything."""
        if not filters:
            return None
        with self._lock:
            self._refresh()
            try:
                allowed = self._allowed(filters)
                assert allowed is not None
                return {self._ids[n] for n in np.flatnonzero(allowed).tolist()}
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} failed a filter") from exc

    def _allowed(self, filters: Filters) -> np.ndarray | None:
        """Live documents `filters` allows, as a mask over every doc number (None: no filter)."""
        if not filters or not self._parts:
            return None if not filters else np.zeros(0, dtype=bool)
        masks = [_segment_mask(part.segment, filters) & ~part.dead for part in self._parts]
        return np.concatenate(masks)

    # -- fuzzy grep's vocabulary (fuzzy.Vocabulary) ------------------------------------------------
    def matches(self, word: str) -> list[str]:
        """Indexed words within `fuzzy.max_edits(word)` of `word`, over every segment."""
        with self._lock:
            self._refresh()
            try:
                found = [m for part in self._parts for m in self._lexicon(part.segment).matches(word)]
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} failed a fuzzy lookup") from exc
        return list(dict.fromkeys(found))

    def _lexicon(self, segment: Segment) -> Lexicon:
        # A segment's words never change: each is read once; merged-away segments are dropped here.
        from rlm_vault.fuzzy import Lexicon

        live = {part.segment.name for part in self._parts}
        self._lexicons = {name: lex for name, lex in self._lexicons.items() if name in live}
        if segment.name not in self._lexicons:
            self._lexicons[segment.name] = Lexicon(segment.words())
        return self._lexicons[segment.name]

    def holders(self, words: Sequence[str]) -> set[str]:
        """Ids of the live documents holding at least one of `words`."""
        if not words:
            return set()
        with self._lock:
            self._refresh()
            try:
                found: set[str] = set()
                for part in self._parts:
                    ids = part.segment.ids
                    for word in words:
                        local = np.asarray(part.segment.postings(postings.WORDS, word)[0])
                        found.update(ids[n] for n in local[~part.dead[local]].tolist())
                return found
            except Exception as exc:
                raise cache_error(exc, f"text index at {self.path} failed a fuzzy lookup") from exc


def _size_class(count: int) -> int:
    return int(math.log(max(count, 1), TIER))


def _segment_mask(segment: Segment, filters: Filters) -> np.ndarray:
    """The documents of `segment` that `filters` allows (deleted ones included)."""
    mask = np.ones(segment.count, dtype=bool)
    for name in _EXACT:
        if value := getattr(filters, name):
            table = segment.values(name)
            code = table.index(value) if value in table else -1
            mask &= np.asarray(segment.codes(name)) == code
    if filters.date_from or filters.date_to:
        # Timestamps are ISO strings, so comparing their first ten bytes compares dates.
        days = np.asarray(segment.created).astype("S10")
        if filters.date_from:
            mask &= days >= filters.date_from.encode()
        if filters.date_to:
            mask &= days <= filters.date_to.encode()
    if filters.entity:
        needle = filters.entity.lower().replace("*", "").replace("?", "")
        holders = np.zeros(segment.count, dtype=bool)
        holders[segment.entity_docs(needle)] = True
        mask &= holders
    return mask


def _shifted(progress: Progress | None, start: int, total: int) -> Progress | None:
    """`progress` for a batch that starts at note `start` of `total`."""
    if progress is None:
        return None
    return lambda done, _: progress(start + done, total)


def _index_of(names: list[str], doc_id: str) -> int | None:
    try:
        return names.index(doc_id)
    except ValueError:
        return None
