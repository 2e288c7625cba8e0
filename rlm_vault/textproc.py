"""Text analysis shared by the text index, the query side and recall: folding, words, stems, CJK bigrams.

One function (`tokens`) defines what a searchable term is, so that what is indexed, what is asked
and what recall scores can never disagree. Stop words and stemmers are the language data shipped
with whoosh-reloaded (imported lazily); the text index itself is `index.py`'s own.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

__all__ = [
    "analyse",
    "fold",
    "is_cjk",
    "is_stop",
    "language",
    "stems",
    "terms",
    "tokens",
    "vocabulary",
    "words",
]

# Only the diacritic blocks are stripped: dropping every combining mark would turn Japanese
# デ (テ + U+3099) into テ and Thai vowels into nothing.
_DIACRITICS = dict.fromkeys(
    [
        *range(0x0300, 0x0370),
        *range(0x1AB0, 0x1B00),
        *range(0x1DC0, 0x1E00),
        *range(0x20D0, 0x2100),
        *range(0xFE20, 0xFE30),
    ]
)
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "đ": "d", "ł": "l"})

# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, CJK ideographs.
_NOSPACE = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
_SEGMENT = re.compile(rf"([{_NOSPACE}]+)|([^\W_{_NOSPACE}]+)")
_NOSPACE_CHAR = re.compile(rf"[{_NOSPACE}]")

# Both lists ship with whoosh (NLTK's). Words that are also common English content words are kept:
# "son" is French for "his" but LoCoMo asks about people's sons.
_KEEP = frozenset({"son", "sera", "ton", "pas", "aura", "mon"})
# NLTK's French list misses some of the commonest function words.
_MORE_FRENCH = frozenset(
    {
        "les",
        "cette",
        "cet",
        "comme",
        "plus",
        "tout",
        "tous",
        "être",
        "avoir",
        "aussi",
        "dont",
        "ou",
        "où",
        "donc",
        "car",
        "sans",
        "sous",
        "si",
        "ça",
        "cela",
        "ceci",
        "très",
    }
)
_QUESTION_WORDS = frozenset({"would", "could", "shall", "might", "must", "also", "ll", "ve", "re", "d", "m"})


def fold(text: str) -> str:
    """Case- and accent-insensitive form: NFKD, diacritics dropped, casefolded, ligatures expanded."""
    if text.isascii():
        return text.lower()  # the same result for ASCII, without the three passes over the text
    decomposed = unicodedata.normalize("NFKD", text).translate(_DIACRITICS)
    return unicodedata.normalize("NFC", decomposed).casefold().translate(_LIGATURES)


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from whoosh.lang import stopwords_for_language

    words = stopwords_for_language("en") | stopwords_for_language("fr")
    return frozenset(fold(w) for w in words | _MORE_FRENCH if w not in _KEEP) | _QUESTION_WORDS


@lru_cache(maxsize=1)
def _stemmers() -> tuple[Any, Any]:
    from whoosh.lang.porter2 import stem as porter
    from whoosh.lang.snowball.french import FrenchStemmer

    return porter, FrenchStemmer().stem


def is_cjk(char: str) -> bool:
    """True for a character of a script written without spaces (indexed as character pairs)."""
    return bool(_NOSPACE_CHAR.match(char))


def is_stop(word: str) -> bool:
    """True for a folded English or French stop word."""
    return word in _stopwords()


@lru_cache(maxsize=200_000)
def stems(word: str, language: str = "") -> tuple[str, ...]:
    """The folded stems of one lowercase word, deduplicated.

    English text gets Porter2 only (the French stemmer cost 2 points of turn R@5 on LoCoMo), except
    for accented words; French or undecided text (a three-word query) gets Porter2 and Snowball
    French, so either side matches. The French stemmer sees the accents its suffixes carry.
    """
    porter, french = _stemmers()
    folded = fold(word)
    if len(folded) < 3 or folded.isdigit():
        return (folded,)
    english = porter(folded)
    if language == "en" and folded == word:
        return (english,)
    francais = fold(french(word))
    return (english,) if english == francais else (english, francais)


@lru_cache(maxsize=1)
def _markers() -> tuple[frozenset[str], frozenset[str]]:
    from whoosh.lang import stopwords_for_language

    english, french = stopwords_for_language("en"), stopwords_for_language("fr") | _MORE_FRENCH
    return frozenset(english - french), frozenset(french - english)


def language(latin_words: list[str]) -> str:
    """ "en", "fr" or "" (undecided) for lowercase words, by counting stop words only one language has."""
    english, french = _markers()
    en = sum(word in english for word in latin_words)
    fr = sum(word in french or fold(word) != word for word in latin_words)
    return "en" if en > fr else "fr" if fr > en else ""


def _bigrams(run: str) -> Iterator[str]:
    if len(run) == 1:
        yield run
    for i in range(len(run) - 1):
        yield run[i : i + 2]


# Where a camelCase or PascalCase identifier changes words: "fetchOrderItems", "HTTPServer".
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def _lower(text: str) -> str:
    if text.isascii():
        return text.lower()
    return text.casefold().translate(_LIGATURES)


def words(text: str) -> Iterator[tuple[int, str, bool]]:
    """(position, word, is_cjk) for each word of `text`, lowercased (accents kept), CJK as bigrams.

    A camelCase identifier also yields its parts at the same position ("fetchOrderItems" gives
    fetchorderitems, fetch, order, items), so either spelling finds the other; snake_case and
    dotted names are split by the word pattern already.
    """
    normal = unicodedata.normalize("NFKC", text)
    pos = 0
    for match in _SEGMENT.finditer(normal):
        run, word = match.group(1), match.group(2)
        if run:
            for gram in _bigrams(run):
                yield pos, _lower(gram), True
                pos += 1
            continue
        yield pos, _lower(word), False
        if not word.islower() and not word.isupper() and word.isascii():
            parts = _CAMEL.findall(word)
            if len(parts) > 1:
                for part in parts:
                    yield pos, _lower(part), False
        pos += 1


def vocabulary(text: str) -> set[str]:
    """Folded words of `text` (CJK as bigrams), stop words included: what fuzzy grep matches typos against."""
    return {fold(word) for _, word, _ in words(text)}


def terms(text: str) -> Iterator[tuple[int, str]]:
    """(position, term) pairs: stop words removed, Latin words stemmed, CJK bigrams as they are."""
    return _terms(list(words(text)))


def _terms(found: list[tuple[int, str, bool]]) -> Iterator[tuple[int, str]]:
    stop = _stopwords()
    lang = language([word for _, word, cjk in found if not cjk])
    for pos, word, cjk in found:
        if cjk:
            yield pos, word
        elif fold(word) not in stop:
            for stem in stems(word, lang):
                yield pos, stem


def analyse(text: str) -> tuple[list[str], set[str]]:
    """`tokens(text)` and `vocabulary(text)` at once, splitting the text into words once."""
    found = list(words(text))
    return [term for _, term in _terms(found)], {fold(word) for _, word, _ in found}


def tokens(text: str) -> list[str]:
    """The searchable terms of `text`, in order (a word may give two stems)."""
    return [term for _, term in terms(text)]
