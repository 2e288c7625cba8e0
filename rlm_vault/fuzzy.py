"""Typo-tolerant line search for `rlm_grep fuzzy=true`, in memory.

Query words are matched against the vocabulary (Levenshtein, 0-2 edits by length), which picks the
few documents holding all (or most) of them; only their lines are scored with `partial_ratio`.
Scoring every body with `partial_ratio` costs ~40 ms over 5,000 notes and ranks poorly (deps.md §6).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

from rlm_vault import textproc
from rlm_vault.errors import InvalidInput

__all__ = ["MAX_PATTERN_CHARS", "MAX_PATTERN_WORDS", "FuzzyHit", "FuzzyIndex", "check_pattern", "max_edits"]

# partial_ratio costs the pattern's length times each line's: a 12 KB pattern took 15 s over a small vault.
MAX_PATTERN_CHARS = 200
MAX_PATTERN_WORDS = 20

MAX_CANDIDATES = 400  # documents whose lines get scored; beyond that the query words are too common
MATCHES_PER_WORD = 50


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


def max_edits(word: str) -> int:
    """Edits allowed for a query word: none up to 3 letters, one up to 6, then two."""
    return 0 if len(word) <= 3 else 1 if len(word) <= 6 else 2


def vocabulary(text: str) -> set[str]:
    """Folded words of `text` (CJK as bigrams), stop words included: people grep for them too."""
    return {textproc.fold(word) for _, word, _ in textproc.words(text)}


class FuzzyIndex:
    """Inverted index word -> ids, updated by id; lines are scored from the bodies at query time.

    With `bodies` (ids -> {id: body}, e.g. read from the catalog that already holds them) the index keeps
    no text of its own: at 10,000 notes a second copy of every body cost ~300 MB. Without it, bodies are
    kept here.
    """

    def __init__(self, bodies: Callable[[list[str]], Mapping[str, str]] | None = None) -> None:
        self._postings: dict[str, set[str]] = {}
        self._words: dict[str, frozenset[str]] = {}
        self._bodies = bodies
        self._kept: dict[str, str] = {}
        self._by_length: dict[int, list[str]] | None = None

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
        self._by_length = None

    def delete(self, ids: Iterable[str]) -> None:
        """Remove documents by id (unknown ids are ignored)."""
        for doc_id in ids:
            self._remove(doc_id)
        self._by_length = None

    def _remove(self, doc_id: str) -> None:
        for word in self._words.pop(doc_id, ()):
            holders = self._postings[word]
            holders.discard(doc_id)
            if not holders:
                del self._postings[word]
        self._kept.pop(doc_id, None)

    def _vocab_near(self, length: int, edits: int) -> list[str]:
        if self._by_length is None:
            self._by_length = {}
            for word in self._postings:
                self._by_length.setdefault(len(word), []).append(word)
        return [w for n in range(length - edits, length + edits + 1) for w in self._by_length.get(n, ())]

    def matches(self, word: str) -> list[str]:
        """Vocabulary words within `max_edits(word)` of `word`."""
        edits = max_edits(word)
        if edits == 0:
            return [word] if word in self._postings else []
        choices = self._vocab_near(len(word), edits)
        found = process.extract(
            word, choices, scorer=Levenshtein.distance, score_cutoff=edits, limit=MATCHES_PER_WORD
        )
        return [choice for choice, _, _ in found]

    def candidates(self, pattern: str, allowed: set[str] | None = None) -> list[str]:
        """Documents holding a near match of every query word (all but one past two words)."""
        query_words = sorted(vocabulary(pattern))
        if not query_words:
            return []
        counts: Counter[str] = Counter()
        for word in query_words:
            counts.update(set().union(*(self._postings[m] for m in self.matches(word))))
        need = len(query_words) if len(query_words) <= 2 else len(query_words) - 1
        ranked = [doc_id for doc_id, n in counts.most_common() if n >= need]
        if allowed is not None:
            ranked = [doc_id for doc_id in ranked if doc_id in allowed]
        return ranked[:MAX_CANDIDATES]

    def search(
        self, pattern: str, threshold: float = 80, limit: int = 20, allowed: set[str] | None = None
    ) -> list[FuzzyHit]:
        """Lines scoring at least `threshold` (0-100) against `pattern`, best first."""
        needle = textproc.fold(check_pattern(pattern)).strip()
        if not needle:
            return []
        ids = self.candidates(pattern, allowed)
        bodies = self._bodies(ids) if self._bodies is not None else self._kept
        hits = [
            hit
            for doc_id in ids
            if doc_id in bodies
            for hit in self._score(doc_id, bodies[doc_id], needle, threshold)
        ]
        hits.sort(key=lambda hit: (-hit.score, hit.id, hit.line_no))
        return hits[:limit]

    @staticmethod
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
