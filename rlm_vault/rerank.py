"""Second-stage ranking: re-orders the fused candidates with signals the words alone miss.

- Neighbours: a short note takes a share of the score of the notes written just before and after
  it (same project, by creation time), so a short reply ("yes, merge it") is found with the thread
  it belongs to. A note no query word matched is brought in this way only when it is a message.
- Time: a question about what is true now or what came last favours newer notes, one about what
  came first favours older ones, but only among candidates that score close to the best.
- Speaker: a question about what I said, asked or prefer favours the user's own messages.

Pure functions over (id, score) lists and the index's per-note facts; no I/O.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rlm_vault import textproc
from rlm_vault.index import DocFacts

__all__ = ["Intent", "Neighbours", "Rerank", "intent", "rerank"]


@dataclass(frozen=True, slots=True)
class Rerank:
    """Weights of the second stage (tuned on the tune split of scripts/eval_locomo.py and eval_coding.py)."""

    neighbour: float = 0.3  # share of the better neighbour's score a short note receives
    short: int = 400  # a note longer than this many characters receives proportionally less
    recency: float = 0.3  # bonus (share of the best score) for the newest / oldest close candidate
    window: float = 0.5  # candidates re-ordered by time score at least this share of the best
    speaker: float = 0.15  # bonus for the user's own messages when the question is about the user


@dataclass(frozen=True, slots=True)
class Intent:
    """What a question says about time and speaker, beyond its topic words."""

    time: str = ""  # "new" | "old" | ""
    user: bool = False


# "last" in "last week" dates an event; it does not ask for the latest state.
_PERIODS = frozenset(
    [
        "week",
        "weekend",
        "month",
        "year",
        "night",
        "time",
        "summer",
        "winter",
        "spring",
        "autumn",
        "fall",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "semaine",
        "mois",
        "annee",
        "an",
        "soir",
    ]
)
# Folded words (EN, FR) and substrings (JA) that mark a question about the latest or the earliest state.
_NEW = frozenset(
    [
        "now",
        "current",
        "currently",
        "latest",
        "recent",
        "recently",
        "nowadays",
        "today",
        "still",
        "last",
        "lastly",
        "final",
        "finally",
        "newest",
        "maintenant",
        "actuel",
        "actuelle",
        "actuellement",
        "dernier",
        "derniere",
        "dernierement",
        "recemment",
        "aujourd",
    ]
)
_OLD = frozenset(
    [
        "first",
        "firstly",
        "earliest",
        "initially",
        "initial",
        "originally",
        "original",
        "start",
        "started",
        "begin",
        "began",
        "beginning",
        "premier",
        "premiere",
        "abord",
        "initialement",
        "debut",
        "commence",
    ]
)
_USER = frozenset(["i", "me", "my", "mine", "myself", "je", "j", "moi", "mon", "ma", "mes"])
_NEW_JA = ("現在", "今", "最新", "最近", "最後")
_OLD_JA = ("最初", "初め", "はじめ", "当初")
_USER_JA = ("私", "僕", "俺")


def intent(query: str) -> Intent:
    """The time and speaker cues of `query`."""
    latin = [textproc.fold(word) for _, word, cjk in textproc.words(query) if not cjk]
    found = {
        w
        for w, after in zip(latin, [*latin[1:], ""])
        if not (w in ("last", "dernier", "derniere") and after in _PERIODS)
    }
    new = bool(found & _NEW) or any(cue in query for cue in _NEW_JA)
    old = bool(found & _OLD) or any(cue in query for cue in _OLD_JA)
    time = "new" if new and not old else "old" if old and not new else ""
    return Intent(time, bool(found & _USER) or any(cue in query for cue in _USER_JA))


_DIGITS = re.compile(r"\d+")


@functools.lru_cache(maxsize=4096)  # a bisect probes the same middle ids at every search
def _natural(text: str) -> str:
    """Sort key where "..._999" comes before "..._1000": each run of digits becomes \\x01, its length
    and its digits (a number sorts before any text at the same place, as the shorter name does)."""
    return _DIGITS.sub(lambda m: f"\x01{len(n := m.group(0).lstrip('0') or '0'):03d}{n}", text)


def _key(created: str, doc_id: str) -> str:
    """A chunk's place in its project: by creation time, then natural id, then id, as one string."""
    return f"{created}\x00{_natural(doc_id)}\x00{doc_id}"


TIE_SCAN = 4096  # chunks of one creation time up to which a lookup scans their ids instead of sorting keys


def _tie(doc_id: str) -> tuple[str, str]:
    """The order of chunks created at the same time: natural id, then id."""
    return _natural(doc_id), doc_id


class Neighbours:
    """The note written just before and just after each chunk of the same project.

    Each project's chunk ids are kept in order, beside their creation times (the same strings as the
    index's facts): a lookup bisects the times, then the natural ids of the chunks created at that time.
    A sort key kept per chunk cost 14 MB at 100,000 notes. A write that only adds chunks is inserted in
    place, so the first search after it does not sort 10,000 notes again (51 ms at 10k).
    """

    def __init__(self, facts: Mapping[str, DocFacts]) -> None:
        self._seen: dict[str, DocFacts] = {}
        self._order: dict[str, list[str]] = {}
        self._times: dict[str, list[str]] = {}
        for doc_id, f in facts.items():
            if f.kind == "chunk":
                self._seen[doc_id] = f
                self._order.setdefault(f.project, []).append(doc_id)
        for project, ids in self._order.items():
            ids.sort(key=lambda doc_id: _key(self._seen[doc_id].created, doc_id))
            self._times[project] = [self._seen[doc_id].created for doc_id in ids]

    def _at(self, project: str, created: str, doc_id: str, present: bool = False) -> int:
        """Where `doc_id`, created at `created`, stands (or would stand) among its project's chunks."""
        ids, times = self._order[project], self._times[project]
        lo = bisect.bisect_left(times, created)
        hi = bisect.bisect_right(times, created, lo)
        if present and hi - lo <= TIE_SCAN:  # an import writes hundreds at one time: compare ids only
            with contextlib.suppress(ValueError):
                return ids.index(doc_id, lo, hi)
        return bisect.bisect_left(ids, _tie(doc_id), lo, hi, key=_tie) if hi > lo else lo

    def updated(self, facts: Mapping[str, DocFacts]) -> Neighbours:
        """These neighbours brought to `facts`: in place when chunks were only added, else rebuilt."""
        chunks = {doc_id: f for doc_id, f in facts.items() if f.kind == "chunk"}
        if len(chunks) < len(self._seen) or any(
            chunks.get(doc_id) not in (None, f) or doc_id not in chunks for doc_id, f in self._seen.items()
        ):
            return Neighbours(facts)
        for doc_id, f in chunks.items():
            if doc_id not in self._seen:
                self._seen[doc_id] = f
                self._order.setdefault(f.project, [])
                self._times.setdefault(f.project, [])
                at = self._at(f.project, f.created, doc_id)
                self._order[f.project].insert(at, doc_id)
                self._times[f.project].insert(at, f.created)
        return self

    def around(self, doc_id: str) -> tuple[str, ...]:
        """The ids written just before and just after `doc_id` in its project (none for an insight)."""
        f = self._seen.get(doc_id)
        if f is None:
            return ()
        ids = self._order[f.project]
        at = self._at(f.project, f.created, doc_id, present=True)
        return tuple(ids[i] for i in (at - 1, at + 1) if 0 <= i < len(ids))


def rerank(
    ranked: Sequence[tuple[str, float]],
    query: str,
    facts: Mapping[str, DocFacts],
    neighbours: Neighbours | None,
    weights: Rerank,
    allowed: set[str] | None = None,
) -> list[tuple[str, float]]:
    """`ranked` (best first) re-scored with neighbours, time and speaker cues; best first."""
    if not ranked:
        return []
    best = max(score for _, score in ranked) or 1.0
    scores = {doc_id: score / best for doc_id, score in ranked}
    if neighbours is not None and weights.neighbour:
        scores = _spread(scores, neighbours, facts, weights, allowed)
    cue = intent(query)
    if cue.time and weights.recency:
        _by_time(scores, facts, cue.time, weights)
    if cue.user and weights.speaker:
        for doc_id in scores:
            if (f := facts.get(doc_id)) is not None and f.role == "user":
                scores[doc_id] += weights.speaker
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _spread(
    scores: dict[str, float],
    neighbours: Neighbours,
    facts: Mapping[str, DocFacts],
    weights: Rerank,
    allowed: set[str] | None,
) -> dict[str, float]:
    out = dict(scores)
    for doc_id, score in scores.items():
        for other in neighbours.around(doc_id):
            if allowed is not None and other not in allowed:
                continue
            # Only a conversation message is brought in by its neighbours alone: unrelated notes
            # written one after the other ("Lunch menu") must not ride on a hit.
            if other not in scores and (other not in facts or not facts[other].role):
                continue
            # A long note says enough by itself; a short one is understood through its thread.
            size = facts[other].size if other in facts else 0
            share = weights.neighbour * min(1.0, weights.short / max(size, 1)) ** 2
            # The better neighbour counts, not the sum: a note between two hits is not worth two.
            gain = share * score
            base = scores.get(other, 0.0)
            out[other] = max(out.get(other, base), base + gain)
    return out


def _by_time(scores: dict[str, float], facts: Mapping[str, DocFacts], time: str, weights: Rerank) -> None:
    top = max(scores.values())
    close = [doc_id for doc_id, score in scores.items() if score >= weights.window * top and doc_id in facts]
    if len(close) < 2:
        return
    close.sort(key=lambda doc_id: (facts[doc_id].created, _natural(doc_id)), reverse=time == "old")
    for rank, doc_id in enumerate(close):
        scores[doc_id] += weights.recency * rank / (len(close) - 1)
