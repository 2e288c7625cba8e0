"""Pure helpers for reads: argument checks, filters, ranking, grep. No I/O."""

from __future__ import annotations

import functools
import math
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import regex

from .errors import InvalidInput
from .models import Chunk, Insight
from .results import GrepMatch, SearchHit

__all__ = [
    "auto_summary",
    "check_regex",
    "choice",
    "date",
    "filter_chunks",
    "filter_insights",
    "fold",
    "fuzzy_lines",
    "keyword_search",
    "limit",
    "newest",
    "rank_insights",
    "regex_lines",
    "search_hit",
    "short",
    "words",
]  # fmt: skip

MAX_LIMIT = 100
RELATED = 0.5  # a topic named in related words counts half a query word (as in the text index)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WORD = re.compile(r"\w+")
T = TypeVar("T", Insight, Chunk)
Text = Callable[[Chunk | Insight], str]  # a note's text (chunk bodies may live only in their files)


def _content(note: Chunk | Insight) -> str:
    return note.content


def choice(value: str, allowed: Sequence[str], what: str) -> str:
    """`value` when it is one of `allowed` (case-insensitive), else an error listing them."""
    norm = value.strip().lower()
    if norm not in allowed:
        raise InvalidInput(f"{what} {value!r} is not accepted: use one of {', '.join(allowed)}")
    return norm


def limit(value: int, high: int = MAX_LIMIT) -> int:
    if not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidInput(f"limit {value!r} is not accepted: use a number from 1 to {high}")
    return value


def date(value: str, what: str) -> str:
    if value and not _DATE.match(value.strip()):
        raise InvalidInput(f"{what} {value!r} is not accepted: use a date as YYYY-MM-DD")
    return value.strip()


def short(text: str, width: int = 60) -> str:
    """The first line of a text, cut to `width` characters for commit messages."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def auto_summary(content: str) -> str:
    """The first non-empty line without Markdown heading marks, at most 100 characters."""
    return short(content.lstrip().lstrip("#").strip() if content.lstrip().startswith("#") else content, 100)


def newest(notes: Iterable[T]) -> list[T]:
    return sorted(notes, key=lambda n: (n.created, n.id), reverse=True)


def fold(text: str) -> str:
    """Case and accents off: 'Préfère' -> 'prefere'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    return _WORD.findall(fold(text))


def filter_chunks(
    chunks: Iterable[Chunk], project: str, domain: str, date_from: str, date_to: str, entity: str
) -> list[Chunk]:
    """Chunks passing every filter given; newest first."""
    return newest(filter(chunk_filter(project, domain, date_from, date_to, entity), chunks))


def chunk_filter(
    project: str, domain: str, date_from: str, date_to: str, entity: str
) -> Callable[[Chunk], bool]:
    """A test of one chunk against every filter given (InvalidInput for a date that is not one)."""
    date_from, date_to = date(date_from, "date_from"), date(date_to, "date_to")
    needle = fold(entity.strip())

    def keep(c: Chunk) -> bool:
        return (
            (not project or c.project.casefold() == project.casefold())
            and (not domain or c.domain == domain)
            and (not date_from or c.created[:10] >= date_from)
            and (not date_to or c.created[:10] <= date_to)
            and (not needle or any(needle in fold(v) for vs in c.entities.values() for v in vs))
        )

    return keep


def filter_insights(insights: Iterable[Insight], project: str, date_from: str, date_to: str) -> list[Insight]:
    date_from, date_to = date(date_from, "date_from"), date(date_to, "date_to")
    return [
        i
        for i in insights
        if (not project or i.project.casefold() == project.casefold())
        and (not date_from or i.created[:10] >= date_from)
        and (not date_to or i.created[:10] <= date_to)
    ]


def rank_insights(insights: Sequence[Insight], query: str) -> list[tuple[Insight, float]]:
    """Insights with the share of query terms they contain, best first, newest first on ties.

    Terms are analysed as the search index does: accents and case folded, stop words dropped,
    English and French words stemmed, Japanese and Chinese cut into character pairs, camelCase
    split; a topic the query names also counts, at half weight, when the insight names it in
    related words (rlm_vault/related.py: "formatter" finds "ruff").
    """
    from .related import covers, expand
    from .textproc import tokens

    terms = set(tokens(query)) or set(words(query))
    ordered = newest(insights)
    if not terms:
        return [(i, 1.0) for i in ordered]
    topics = expand(query).groups
    scored = []
    for insight in ordered:
        have, folded = _analysed(f"{insight.content} {' '.join(insight.tags)}")
        own = sum(1 for t in terms if t in have or t in folded)
        hits = own + RELATED * sum(any(covers(target, have) for target in topic) for topic in topics)
        if hits:
            scored.append((insight, min(1.0, hits / len(terms))))
    return sorted(scored, key=lambda pair: -pair[1])


@functools.lru_cache(maxsize=50_000)
def _analysed(text: str) -> tuple[frozenset[str], str]:
    # Analysing every insight on every recall cost ~100 ms at 1,000 insights; texts rarely change.
    from .textproc import tokens

    return frozenset(tokens(text)), fold(text)


def regex_lines(
    chunks: Iterable[Chunk | Insight], pattern: str, limit: int, budget: float, text: Text = _content
) -> list[GrepMatch]:
    """Lines matching a case-insensitive regex, with a time budget against runaway patterns.

    Notes are read one at a time through `text`, in the order given, until `limit` lines matched.
    """
    check_regex(pattern)
    try:
        compiled = regex.compile(pattern, regex.IGNORECASE | regex.VERSION0)
    except (regex.error, ValueError, OverflowError, RecursionError) as exc:  # deep nesting: "((((...))))"
        raise InvalidInput(
            f"pattern {pattern[:200]!r} is not a valid regular expression ({exc}); escape special "
            "characters with '\\' or use fuzzy=true"
        ) from exc
    deadline = time.monotonic() + budget
    matches: list[GrepMatch] = []
    for chunk in chunks:
        content = text(chunk)
        try:  # one pass over the whole text first: most notes do not match at all
            if not compiled.search(content, timeout=max(deadline - time.monotonic(), 0.001)):
                continue
        except TimeoutError:
            raise InvalidInput(
                f"pattern {pattern[:200]!r} took longer than {budget:g} s over the notes; use a "
                "simpler pattern (avoid nested repeats like (a+)+)"
            ) from None
        for n, line in enumerate(content.split("\n")):
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0 or compiled.search(line, timeout=remaining):
                    if remaining <= 0:
                        raise TimeoutError
                    matches.append(_match(chunk, n, line, 1.0))
            except TimeoutError:
                raise InvalidInput(
                    f"pattern {pattern[:200]!r} took longer than {budget:g} s over the notes; use a "
                    "simpler pattern (avoid nested repeats like (a+)+)"
                ) from None
            if len(matches) >= limit:
                return matches
    return matches


MAX_PATTERN_CHARS = 1_000
MAX_REPEAT = 1_000  # one counted repeat, {n} or {n,m}
MAX_UNROLLED = 20_000  # atoms once counted repeats are written out (nested counts multiply)
_COUNT = regex.compile(r"\{(\d*)(?:,(\d*))?\}")


def check_regex(pattern: str) -> str:
    """`pattern` when its compiled form stays small; refused before compiling otherwise.

    The regex engine unrolls counted repeats when it compiles: ((a{1000}){1000}){1000} is 23 characters
    and asked for gigabytes. Time and memory grow with the unrolled size (125 x a{1000}: 1 s, 45 MB).
    """
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidInput(
            f"pattern is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}: "
            "grep for a shorter pattern, or use rlm_search for long text"
        )
    size = unrolled_size(pattern)
    if size > MAX_UNROLLED:
        raise InvalidInput(
            f"pattern {pattern[:100]!r} is too large once its counted repeats are written out (about {size:,} "
            "items); "
            f"use counts up to {MAX_REPEAT}, nested or repeated counts that stay under {MAX_UNROLLED:,} in "
            "all, or + and * instead of large counts"
        )
    return pattern


def unrolled_size(pattern: str) -> int:
    """About how many items the pattern holds once counted repeats are written out (nesting multiplies)."""
    stack: list[int] = [0]  # per open group: the size of what it holds so far
    last = 0  # the size of the atom just read, which a count would repeat
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "{" and (m := _COUNT.match(pattern, i)) and (m.group(1) or m.group(2)):
            count = max(int(m.group(1) or 0), int(m.group(2) or 0), 1)
            if count > MAX_REPEAT:  # one count over the limit is refused on its own
                return max(count * max(last, 1) + stack[0], MAX_UNROLLED + 1)
            stack[-1] += last * (count - 1)
            last *= count
            i = m.end()
            continue
        if ch == "(":
            stack.append(0)
            i += 1
            continue
        if ch == ")" and len(stack) > 1:
            last = stack.pop()
            i += 1
        elif ch == "[":
            i, last = _class_end(pattern, i), 1
        else:
            i, last = i + (2 if ch == "\\" else 1), 1
        stack[-1] += last
    return sum(stack)


def _class_end(pattern: str, start: int) -> int:
    """The index after the `]` closing the character class that opens at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def fuzzy_lines(
    chunks: Sequence[Chunk | Insight], pattern: str, threshold: int, limit: int, text: Text = _content
) -> list[GrepMatch]:
    """Lines close to the pattern despite typos, best first."""
    from rapidfuzz import fuzz

    from .fuzzy import check_pattern

    target = fold(check_pattern(pattern))
    found: list[GrepMatch] = []
    for chunk in chunks:
        for n, line in enumerate(text(chunk).split("\n")):
            if line.strip():
                score = fuzz.partial_ratio(target, fold(line), score_cutoff=threshold)
                if score:
                    found.append(_match(chunk, n, line, round(score, 1)))
    found.sort(key=lambda m: -m["score"])
    return found[:limit]


def _match(note: Chunk | Insight, line_no: int, line: str, score: float) -> GrepMatch:
    return {
        "id": note.id,
        "line": line_no,
        "text": line.strip()[:200],
        "score": score,
        "kind": "chunk" if isinstance(note, Chunk) else "insight",
        "project": note.project or None,
    }


def _searchable(note: Chunk | Insight, text: Text) -> str:
    if isinstance(note, Chunk):
        return f"{note.summary} {' '.join(note.tags)} {text(note)}"
    return f"{' '.join(note.tags)} {text(note)}"


def keyword_search(
    chunks: Sequence[Chunk], insights: Sequence[Insight], query: str, limit: int, text: Text = _content
) -> list[SearchHit]:
    """A plain tf-idf ranking over the given notes (used when the search caches are unavailable)."""
    terms = set(words(query))
    notes: list[Chunk | Insight] = [*chunks, *insights]
    docs = [(n, words(_searchable(n, text))) for n in notes]
    df = {t: sum(1 for _, ws in docs if t in ws) for t in terms}
    hits = []
    for note, ws in docs:
        score = sum(
            ws.count(t) / (1 + len(ws)) ** 0.5 * math.log(1 + len(docs) / (1 + df[t])) for t in terms if df[t]
        )
        if score > 0:
            hits.append((score, note))
    hits.sort(key=lambda pair: -pair[0])
    return [search_hit(note, score) for score, note in hits[:limit]]


def search_hit(note: Chunk | Insight, score: float) -> SearchHit:
    """The row of a search result for a note (what rlm_search returns)."""
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
        "summary": short(note.content, 100),
        "project": note.project or None,
        "created": note.created,
    }
