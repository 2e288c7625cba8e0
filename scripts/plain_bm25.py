"""A plain Okapi BM25 baseline for the evaluation scripts: the yardstick, never used by the project.

Lowercased `\\w+` words, English stop words removed, no stemming, k1=1.5, b=0.75, over one text per
document. It is what "plain BM25" means in docs/RETRIEVAL.md.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping

__all__ = ["PlainBM25"]

_WORD = re.compile(r"\w+")


def _stop() -> frozenset[str]:
    from whoosh.lang import stopwords_for_language

    return frozenset(stopwords_for_language("en"))


class PlainBM25:
    """Okapi BM25 over `docs` (key -> text)."""

    def __init__(self, docs: Mapping[str, str], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.stop = _stop()
        self.keys = list(docs)
        self.tfs = [Counter(self.words(text)) for text in docs.values()]
        self.lengths = [sum(tf.values()) for tf in self.tfs]
        self.avg = sum(self.lengths) / max(len(self.lengths), 1)
        df: Counter[str] = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(self.keys)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.postings: dict[str, list[int]] = {}
        for i, tf in enumerate(self.tfs):
            for term in tf:
                self.postings.setdefault(term, []).append(i)

    def words(self, text: str) -> list[str]:
        return [w for w in _WORD.findall(text.lower()) if w not in self.stop]

    def search(self, query: str, limit: int = 10) -> list[str]:
        """The keys of the best `limit` documents, best first (ties by key)."""
        scores: dict[int, float] = {}
        for term in set(self.words(query)):
            idf = self.idf.get(term, 0.0)
            for i in self.postings.get(term, ()):
                tf = self.tfs[i][term]
                norm = tf + self.k1 * (1 - self.b + self.b * self.lengths[i] / self.avg)
                scores[i] = scores.get(i, 0.0) + idf * tf * (self.k1 + 1) / norm
        ranked = sorted(scores.items(), key=lambda item: (-item[1], self.keys[item[0]]))
        return [self.keys[i] for i, _ in ranked[:limit]]
