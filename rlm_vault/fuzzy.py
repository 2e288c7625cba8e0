"""Typo-tolerant line search for `rlm_grep fuzzy=true`.

Query words are matched against a vocabulary (Levenshtein, 0-2 edits by length), which picks the
few documents holding all (or most) of them; only their lines are scored with `partial_ratio`.
Scoring every body with `partial_ratio` costs ~40 ms over 5,000 notes and ranks poorly (deps.md §6).
The vocabulary is any `Vocabulary`: the text index's `words` field (on disk, shared by every process
on the vault), or the in-memory `FuzzyIndex`. Bodies are asked for only for the candidates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

from rlm_vault import textproc
from rlm_vault.errors import InvalidInput

__all__ = [
    "MAX_PATTERN_CHARS",
    "MAX_PATTERN_WORDS",
    "FuzzyHit",
    "FuzzyIndex",
    "Lexicon",
    "Vocabulary",
    "candidates",
    "check_pattern",
    "max_edits",
    "search",
    "vocabulary",
]

# partial_ratio costs the pattern's length times each line's: a 12 KB pattern took 15 s over a small vault.
MAX_PATTERN_CHARS = 200
MAX_PATTERN_WORDS = 20

MAX_CANDIDATES = 400  # documents whose lines get scored; beyond that the query words are too common
MATCHES_PER_WORD = 50

Bodies = Callable[[list[str]], Mapping[str, str]]


class FuzzyHit(NamedTuple):
    """One matching line: note id, 0-based line number, the line as written, score 0-100."""

    id: str
    line_no: int
    text: str
    score: float


def check_pattern(pattern: str) -> str:
    """`pattern` when it is short enough to compare with every line; refused otherwise."""
    words = len(pattern.split())
    if len(pattern) > MAX_PATTERN_CHARS or words > MAX_PATTERN_WORDS:
        raise InvalidInput(
            f"fuzzy pattern is {len(pattern)} characters and {words} words; the limit is "
            f"{MAX_PATTERN_CHARS} characters and {MAX_PATTERN_WORDS} words: send the few words you are "
            "looking for (rlm_search ranks longer text)"
        )
    return pattern


class Vocabulary(Protocol):
    """Where fuzzy grep finds its words and the documents that hold them."""

    def matches(self, word: str) -> list[str]:
        """Vocabulary words within `max_edits(word)` of `word`."""
        ...

    def holders(self, words: Sequence[str]) -> set[str]:
        """Ids of the documents holding at least one of `words`."""
        ...


def max_edits(word: str) -> int:
    """Edits allowed for a query word: none up to 3 letters, one up to 6, then two."""
    return 0 if len(word) <= 3 else 1 if len(word) <= 6 else 2


vocabulary = textproc.vocabulary


class Lexicon:
    """A fixed set of words, grouped by length, for near-match lookups."""

    def __init__(self, words: Iterable[str]) -> None:
        self._words = frozenset(words)
        self._by_length: dict[int, list[str]] = {}
        for word in self._words:
            self._by_length.setdefault(len(word), []).append(word)

    def __len__(self) -> int:
        return len(self._words)

    def matches(self, word: str) -> list[str]:
        """Words within `max_edits(word)` of `word` (at most MATCHES_PER_WORD, closest first)."""
        edits = max_edits(word)
        if edits == 0:
            return [word] if word in self._words else []
        choices = [
            w for n in range(len(word) - edits, len(word) + edits + 1) for w in self._by_length.get(n, ())
        ]
        found = process.extract(
            word, choices, scorer=Levenshtein.distance, score_cutoff=edits, limit=MATCHES_PER_WORD
        )
        return [choice for choice, _, _ in found]


def candidates(vocab: Vocabulary, pattern: str, allowed: set[str] | None = None) -> list[str]:
    """Documents holding a near match of every query word (all but one past two words)."""
    query_words = sorted(vocabulary(pattern))
    if not query_words:
        return []
    counts: Counter[str] = Counter()
    for word in query_words:
        near = vocab.matches(word)
        counts.update(vocab.holders(near) if near else set())
    need = len(query_words) if len(query_words) <= 2 else len(query_words) - 1
    ranked = [doc_id for doc_id, n in counts.most_common() if n >= need]
    if allowed is not None:
        ranked = [doc_id for doc_id in ranked if doc_id in allowed]
    return ranked[:MAX_CANDIDATES]


def search(
    vocab: Vocabulary,
    bodies: Bodies,
    pattern: str,
    threshold: float = 80,
    limit: int = 20,
    allowed: set[str] | None = None,
) -> list[FuzzyHit]:
    """Lines scoring at least `threshold` (0-100) against `pattern`, best first."""
    needle = textproc.fold(check_pattern(pattern)).strip()
    if not needle:
        return []
    ids = candidates(vocab, pattern, allowed)
    texts = bodies(ids) if ids else {}
    hits = [
        hit for doc_id in ids if doc_id in texts for hit in _score(doc_id, texts[doc_id], needle, threshold)
    ]
    hits.sort(key=lambda hit: (-hit.score, hit.id, hit.line_no))
    return hits[:limit]


def _score(doc_id: str, body: str, needle: str, threshold: float) -> list[FuzzyHit]:
    hits = []
    lines = body.split("\n")  # numbered as rlm_peek numbers them
    folded = textproc.fold(body).split("\n")  # one call for the whole body, not one per line
    if len(folded) != len(lines):
        folded = [textproc.fold(line) for line in lines]
    for line_no, text in enumerate(folded):
        score = fuzz.partial_ratio(needle, text, score_cutoff=threshold) if text else 0.0
        if score:
            hits.append(FuzzyHit(doc_id, line_no, lines[line_no], round(score, 1)))
    return hits


class FuzzyIndex:
    """An in-memory `Vocabulary`: inverted index word -> ids, updated by id.

    With `bodies` (ids -> {id: body}) the index keeps no text of its own; without it, bodies are kept here.
    """

    def __init__(self, bodies: Bodies | None = None) -> None:
        self._postings: dict[str, set[str]] = {}
        self._words: dict[str, frozenset[str]] = {}
        self._bodies = bodies
        self._kept: dict[str, str] = {}
        self._lexicon: Lexicon | None = None

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._words

    def update(self, items: Iterable[tuple[str, str]]) -> None:
        """Add or replace documents given as (id, body)."""
        for doc_id, body in items:
            self._remove(doc_id)
            if self._bodies is None:
                self._kept[doc_id] = body
            self._words[doc_id] = frozenset(vocabulary(body))
            for word in self._words[doc_id]:
                self._postings.setdefault(word, set()).add(doc_id)
        self._lexicon = None

    def delete(self, ids: Iterable[str]) -> None:
        """Remove documents by id (unknown ids are ignored)."""
        for doc_id in ids:
            self._remove(doc_id)
        self._lexicon = None

    def _remove(self, doc_id: str) -> None:
        for word in self._words.pop(doc_id, ()):
            holders = self._postings[word]
            holders.discard(doc_id)
            if not holders:
                del self._postings[word]
        self._kept.pop(doc_id, None)

    def matches(self, word: str) -> list[str]:
        """Vocabulary words within `max_edits(word)` of `word`."""
        if self._lexicon is None:
            self._lexicon = Lexicon(self._postings)
        return self._lexicon.matches(word)

    def holders(self, words: Sequence[str]) -> set[str]:
        """Ids of the documents holding at least one of `words`."""
        return set().union(*(self._postings.get(w, ()) for w in words))

    def candidates(self, pattern: str, allowed: set[str] | None = None) -> list[str]:
        """Documents holding a near match of every query word (all but one past two words)."""
        return candidates(self, pattern, allowed)

    def search(
        self, pattern: str, threshold: float = 80, limit: int = 20, allowed: set[str] | None = None
    ) -> list[FuzzyHit]:
        """Lines scoring at least `threshold` (0-100) against `pattern`, best first."""
        bodies = self._bodies if self._bodies is not None else self._kept_bodies
        return search(self, bodies, pattern, threshold, limit, allowed)

    def _kept_bodies(self, ids: list[str]) -> dict[str, str]:
        return {i: self._kept[i] for i in ids if i in self._kept}
