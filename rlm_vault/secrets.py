"""Find and redact secrets (API keys, tokens, private keys, passwords) in text about to be remembered.

Pure and stdlib-only so hooks and tools can call it cheaply. Built to stay quiet on what memory notes are
full of: commit ids, sha256 digests, uuids, paths and prose. Pure hex is never flagged on its own.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

__all__ = ["KINDS", "Finding", "describe", "redact", "scan"]

Allowed = Iterable["str | re.Pattern[str]"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One secret: its kind, its span in the scanned text, and its 1-based line number."""

    kind: str
    start: int
    end: int
    line: int


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    group: int | str = 0  # the part of the match that is the secret (and gets redacted)
    check: Callable[[str], bool] | None = None
    # Characters that must not come just before the match. A leading lookbehind would do the same, but
    # it stops re from searching for the literal prefix and made each rule 30x slower (20 ms/MB).
    left: str = ""
    lowered: bool = False  # match against the ASCII-lowercased text (same offsets)
    key_check: Callable[[str, int], bool] | None = None  # (lowered text, match start) -> keep?

    def spans(self, text: str, lowered: str) -> Iterator[tuple[str, int, int]]:
        for m in self.pattern.finditer(lowered if self.lowered else text):
            start, end = m.span(self.group)
            if start == end or (self.left and m.start() and text[m.start() - 1] in self.left):
                continue
            if self.key_check is not None and not self.key_check(lowered, m.start()):
                continue
            if self.check is None or self.check(text[start:end]):
                yield self.kind, start, end


# Human names for describe(); the key is the kind used in findings and in [REDACTED:<kind>].
KINDS: dict[str, str] = {
    "private_key": "a private key block",
    "aws_access_key": "an AWS access key",
    "aws_secret_key": "an AWS secret key",
    "github_token": "a GitHub token",
    "anthropic_key": "an Anthropic API key",
    "openai_key": "an OpenAI API key",
    "slack_token": "a Slack token",
    "stripe_key": "a Stripe key",
    "google_api_key": "a Google API key",
    "gitlab_token": "a GitLab token",
    "npm_token": "an npm token",
    "jwt": "a JSON Web Token",
    "url_password": "a password in a URL",
    "password": "a password or secret assignment",
    "high_entropy": "a high-entropy token",
}

_SECRET_WORD = (
    r"(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?)"
)
# Characters a secret value may hold. Brackets are excluded so a value can never straddle a
# [REDACTED:...] marker, which keeps redact() from ever re-creating a secret it removed.
_VALUE = r"[^\s'\"`\[\]]"
_BARE = r"[^\s'\"`\[\](){},;<>]"
_PLACEHOLDER_RE = re.compile(
    r"^(?:[*x.•#_-]+|\$.*|%.*|<.*|\{.*|.*(?:your|example|placeholder|redacted|dummy|changeme|fixme|todo|xxxx"
    r"|\*\*\*|\.\.\.|<|>|\{\{|\$\{).*)$",
    re.IGNORECASE,
)
_DOTTED_NAME_RE = re.compile(r"^[A-Za-z_][\w-]*(?:(?:\.|::|->)[A-Za-z_][\w-]*)+(?:\(\))?$")
_IDENTIFIER_RE = re.compile(r"^(?:[a-z]+(?:_[a-z]+)*|[A-Z]+(?:_[A-Z]+)*|[a-z]+(?:[A-Z][a-z]+)*)$")
_HEX_RE = re.compile(r"^(?:0x)?[0-9a-fA-F]+$")
_UUIDISH_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGEST_PREFIX = r"(?:sha(?:1|224|256|384|512)|md5|blake2[bs]?|base64)[-:=,]"
_DIGEST_PREFIX_RE = re.compile(_DIGEST_PREFIX, re.IGNORECASE)  # as a token's start: sha512-<base64>
_DIGEST_BEFORE_RE = re.compile(_DIGEST_PREFIX + "$", re.IGNORECASE)  # just before a token: sha256:<b64>
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_CLASSES = (str.islower, str.isupper, str.isdigit)
_SEPARATOR_RE = re.compile(r"[_-]+")
_RUN_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+|\d+|[^A-Za-z\d]+")
_PATH_PART_RE = re.compile(r"^[A-Za-z]?[a-z0-9_.-]*[a-z]{2}[a-z0-9_.-]*$")
_VERSION_RE = re.compile(r"^v?\d+(?:\.\d+)+[\w.+-]*$")

ENTROPY_THRESHOLD = 4.1  # bits per char at 32 chars, rising with length (see _entropy_threshold)
GENERIC_MIN_LEN = 32


def _entropy(value: str) -> float:
    counts = Counter(value).values()
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts)


def _class_count(value: str) -> int:
    return sum(any(test(ch) for ch in value) for test in _CLASSES)


def _plausible_value(value: str) -> bool:
    """A quoted password-ish value: not a placeholder, a variable reference, a number or a plain word."""
    if len(value) < 6 or _PLACEHOLDER_RE.match(value) or value.isdigit():
        return False
    if _DOTTED_NAME_RE.match(value) or (_IDENTIFIER_RE.match(value) and len(value) < 16):
        return False
    if value.startswith(("/", "~/", "./", "../")) or _looks_like_path(value):
        return False
    symbols = any(not ch.isalnum() for ch in value)
    return _class_count(value) + symbols >= 2 or len(value) >= 16


def _plausible_bare_value(value: str) -> bool:
    """An unquoted value (env or YAML style) needs 8+ chars, letters and digits: prose after "token:" has none.

    Short ones such as "sha256" in "token: sha256:<digest>" would otherwise be redacted everywhere they repeat.
    """
    if len(value) < 8 or not _plausible_value(value) or _VERSION_RE.match(value):
        return False
    return _has_digit(value) and any(ch.isalpha() for ch in value)


def _plausible_url_password(value: str) -> bool:
    # 6+ chars: every repeat of a found value is redacted too, and a 3-char one would shred ordinary words.
    return len(value) >= 6 and not _PLACEHOLDER_RE.match(value) and value.lower() not in {"pass", "password"}


def _whole_pass(lowered: str, start: int) -> bool:
    """A bare "pass" key counts as a word part (db_pass, PASS=) but not inside "bypass" or "compass".

    Checked here rather than by a lookbehind in the regex, which tripled the rule's time.
    """
    if not lowered.startswith("pass", start) or lowered.startswith(
        ("password", "passwd", "passphrase"), start
    ):
        return True
    return start == 0 or not lowered[start - 1].isalpha()


def _openai_shape(value: str) -> bool:
    # The project/service prefixes are specific enough; a bare "sk-" + 32 letters could be a word chain.
    return value.startswith(("sk-proj-", "sk-svcacct-", "sk-admin-")) or _has_digit(value)


def _has_digit(value: str) -> bool:
    return any(ch.isdigit() for ch in value)


def _high_entropy(value: str) -> bool:
    """Random-looking base64/alnum: long, mixed classes, high entropy, and not a digest, uuid or path."""
    if _HEX_RE.match(value) or _UUIDISH_RE.search(value) or _DIGEST_PREFIX_RE.match(value):
        return False  # commit ids, sha256 digests, SRI integrity hashes and uuids fill memory notes
    if _class_count(value) < 3 or _looks_like_path(value) or _looks_like_identifier(value):
        return False
    # Words (CamelCase identifiers, kebab headers) come in runs of 4-8 letters; random text in runs of ~2.
    if len(value) / len(_RUN_RE.findall(value)) >= 3.3:
        return False
    return _entropy(value) >= _entropy_threshold(len(value))


def _entropy_threshold(length: int) -> float:
    """Below the 1st percentile of random base64 of that length (measured: 4.20 at 32, 4.65 at 48, 4.93 at 64)."""
    return min(ENTROPY_THRESHOLD + 0.018 * (length - GENERIC_MIN_LEN), 4.9)


def _looks_like_identifier(value: str) -> bool:
    """snake_case / kebab-case names split into many parts; random base64url has ~1 "_" or "-" per 32 chars."""
    parts = _SEPARATOR_RE.split(value)
    return len(parts) >= 5 or (len(parts) == 4 and max(len(p) for p in parts) <= 12)


def _looks_like_path(value: str) -> bool:
    parts = value.split("/")
    words = sum(bool(_PATH_PART_RE.match(p)) for p in parts)
    return len(parts) > 1 and words >= max(2, len(parts) // 2)


def _c(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Key names end with a secret word: DB_PASSWORD, github_token, apiKey; "token_count" or "tokenizer" do not.
# Matched on an ASCII-lowercased copy of the text: (?i) made these two rules 10x slower (165 ms/MB).
_ASSIGN_KEY = _SECRET_WORD + r"s?(?![\w-])"
_RULES: tuple[_Rule, ...] = (
    _Rule(
        "private_key",
        _c(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[^\[\]]{0,20000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,-]*)"
        ),
    ),
    _Rule(
        "aws_access_key",
        _c(r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"),
        left=_ALNUM,
    ),
    _Rule(
        "aws_secret_key",
        _c(
            r"(?:aws_?secret(?:_?access)?_?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?"
            r"(?P<v>[a-z0-9/+=]{40})(?![a-z0-9/+=])"
        ),
        "v",
        lowered=True,
    ),
    _Rule(
        "github_token",
        _c(r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])"),
        left=_ALNUM + "_",
    ),
    _Rule("anthropic_key", _c(r"sk-ant-[A-Za-z0-9_-]{20,}"), left=_ALNUM + "_-"),
    _Rule(
        "openai_key",
        _c(r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{32,}(?![A-Za-z0-9_-]))"),
        check=_openai_shape,
        left=_ALNUM + "_-",
    ),
    _Rule("slack_token", _c(r"xox[abposre]-[A-Za-z0-9-]{10,}"), left=_ALNUM),
    _Rule("stripe_key", _c(r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"), left=_ALNUM),
    _Rule("google_api_key", _c(r"AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"), left=_ALNUM + "_-"),
    _Rule("gitlab_token", _c(r"glpat-[A-Za-z0-9_-]{20,}"), left=_ALNUM + "_-"),
    _Rule("npm_token", _c(r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"), left=_ALNUM + "_"),
    _Rule("jwt", _c(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{10,}"), left=_ALNUM + "_-"),
    _Rule(  # scheme://user:password@host; anchored on the "://" literal, which keeps the search fast
        "url_password",
        _c(r"://[^\s:/@\"'<>\[\]]{1,100}:(?P<v>[^\s:/@\"'<>\[\]]{1,200})@[\w.-]"),
        "v",
        _plausible_url_password,
    ),
    _Rule(  # "password": "..."  /  password = '...'  /  token: "..."
        "password",
        _c(_ASSIGN_KEY + r"[\"']?\s*(?::=|=>|[:=])\s*(?P<q>[\"'`])(?P<v>" + _VALUE + r"{1,500}?)(?P=q)"),
        "v",
        _plausible_value,
        lowered=True,
        key_check=_whole_pass,
    ),
    _Rule(  # API_KEY=abc123...  /  password: hunter2xyz  (unquoted, env and YAML style)
        "password",
        _c(_ASSIGN_KEY + r"\s*(?::=|[:=])[ \t]*(?P<v>" + _BARE + r"{0,499}[^\s'\"`\[\](){},;<>.:!?])"),
        "v",
        _plausible_bare_value,
        lowered=True,
        key_check=_whole_pass,
    ),
)
_GENERIC_RE = _c(rf"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{{{GENERIC_MIN_LEN},}}={{0,2}}(?![A-Za-z0-9+/=_-])")


def scan(text: str, allowed: Allowed = ()) -> list[Finding]:
    """Every secret in `text`, sorted by position, including repeats of a found value elsewhere.

    Args:
        allowed: values never to flag: a plain string is an exact value, a compiled regex (or a string
            starting with "re:") is searched in the value.
    """
    allow = _allow_predicate(allowed)
    spans = [(k, s, e) for k, s, e in _raw_spans(text) if not allow(text[s:e])]
    spans = _merge_overlaps(spans)
    spans = _merge_overlaps(spans + list(_repeats(text, spans)))
    lines = _LineIndex(text)
    return [Finding(kind, start, end, lines.line_of(start)) for kind, start, end in spans]


def redact(text: str, allowed: Allowed = ()) -> tuple[str, list[Finding]]:
    """`text` with each secret replaced by [REDACTED:<kind>], and the findings (spans in the input)."""
    findings = scan(text, allowed)
    parts: list[str] = []
    pos = 0
    for f in findings:
        parts += [text[pos : f.start], f"[REDACTED:{f.kind}]"]
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts), findings


def describe(findings: Iterable[Finding]) -> str:
    """One sentence naming what was found and where, e.g. "an AWS access key on line 3"."""
    lines_by_kind: dict[str, list[int]] = {}
    for f in findings:
        seen = lines_by_kind.setdefault(f.kind, [])
        if f.line not in seen:
            seen.append(f.line)
    parts = [f"{KINDS.get(kind, kind)} on {_lines_phrase(lines)}" for kind, lines in lines_by_kind.items()]
    return _join_words(parts)


def _lines_phrase(lines: list[int]) -> str:
    if len(lines) == 1:
        return f"line {lines[0]}"
    return "lines " + _join_words([str(n) for n in lines])


def _join_words(words: list[str]) -> str:
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _raw_spans(text: str) -> Iterator[tuple[str, int, int]]:
    lowered = text.translate(_ASCII_LOWER)
    for rule in _RULES:
        yield from rule.spans(text, lowered)
    for m in _GENERIC_RE.finditer(text):
        if _high_entropy(m.group()) and not _DIGEST_BEFORE_RE.search(text, max(m.start() - 8, 0), m.start()):
            yield "high_entropy", m.start(), m.end()


def _merge_overlaps(spans: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Union overlapping spans so no detected character escapes redaction; name each by its best member.

    A specific kind beats high_entropy, then the longer span wins.
    """
    merged: list[tuple[str, int, int]] = []
    best: list[tuple[str, int, int]] = []
    for span in sorted(spans, key=lambda s: (s[1], -s[2])):
        if merged and span[1] < merged[-1][2]:
            best[-1] = min(best[-1], span, key=_rank)
            merged[-1] = (best[-1][0], merged[-1][1], max(merged[-1][2], span[2]))
        else:
            merged.append(span)
            best.append(span)
    return merged


def _rank(span: tuple[str, int, int]) -> tuple[bool, int]:
    kind, start, end = span
    return (kind == "high_entropy", start - end)


def _repeats(text: str, spans: list[tuple[str, int, int]]) -> Iterator[tuple[str, int, int]]:
    """Other occurrences of a found value: a password pasted twice must not survive the second time."""
    for value, kind in {text[s:e]: k for k, s, e in spans}.items():
        start = text.find(value)
        while start >= 0:
            yield kind, start, start + len(value)
            start = text.find(value, start + 1)


def _allow_predicate(allowed: Allowed) -> Callable[[str], bool]:
    literals: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for item in allowed:
        if isinstance(item, re.Pattern):
            patterns.append(item)
        elif item.startswith("re:"):
            patterns.append(re.compile(item[3:]))
        else:
            literals.add(item)
    return lambda value: value in literals or any(p.search(value) for p in patterns)


class _LineIndex:
    """Offset -> 1-based line number by bisecting the newline positions."""

    def __init__(self, text: str) -> None:
        self._newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(self, offset: int) -> int:
        return bisect_left(self._newlines, offset) + 1
