"""The secret patterns `secrets.scan` runs: provider tokens, key = value assignments, credentials in URLs,
command lines and headers, passwords stated in prose (EN/FR/JA), and the checks that keep them quiet on
ordinary notes (placeholders, variable references, paths, identifiers, digests).

Rules run over the UTF-8 bytes of the text: byte regexes are 2-3x faster than str ones on text holding
any non-ASCII character. Every pattern starts with a literal (or is anchored on one) so `re` can jump
between candidates, and every repeat is bounded or possessive by construction: scanning is linear.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

__all__ = ["KINDS", "RULES", "Rule", "find", "high_entropy", "plausible_value", "random_token"]

# Human names for describe(); the key is the kind used in findings and in [REDACTED:<kind>].
KINDS: dict[str, str] = {
    "private_key": "a private key block",
    "aws_access_key": "an AWS access key",
    "aws_secret_key": "an AWS secret key",
    "github_token": "a GitHub token",
    "gitlab_token": "a GitLab token",
    "anthropic_key": "an Anthropic API key",
    "openai_key": "an OpenAI API key",
    "slack_token": "a Slack token",
    "slack_webhook": "a Slack webhook URL",
    "discord_webhook": "a Discord webhook URL",
    "teams_webhook": "a Microsoft Teams webhook URL",
    "stripe_key": "a Stripe key",
    "twilio_key": "a Twilio API key",
    "sendgrid_key": "a SendGrid API key",
    "google_api_key": "a Google API key",
    "google_oauth": "a Google OAuth secret or token",
    "npm_token": "an npm token",
    "pypi_token": "a PyPI token",
    "huggingface_token": "a Hugging Face token",
    "azure_key": "an Azure key or signature",
    "digitalocean_token": "a DigitalOcean token",
    "heroku_key": "a Heroku API key",
    "api_token": "a service API token",
    "jwt": "a JSON Web Token",
    "url_password": "a password in a URL",
    "cli_password": "a password on a command line",
    "auth_header": "an Authorization header credential",
    "password": "a password or secret assignment",
    "stated_password": "a password written out in a sentence",
    "high_entropy": "a high-entropy token",
}

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
_DIGEST_BEFORE_RE = re.compile(_DIGEST_PREFIX.encode() + b"$", re.IGNORECASE)  # just before: sha256:<b64>
_CLASS_RES = (
    re.compile("[a-z]"),
    re.compile("[A-Z]"),
    re.compile("[0-9]"),
)  # ASCII: values are matched as such
_SEPARATOR_RE = re.compile(r"[_-]+")
_RUN_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+|\d+|[^A-Za-z\d]+")
_PATH_PART_RE = re.compile(r"^[A-Za-z]?[a-z0-9_.-]*[a-z]{2}[a-z0-9_.-]*$")
_VERSION_RE = re.compile(r"^v?\d+(?:\.\d+)+[\w.+-]*$")
_WORDS_ONLY_RE = re.compile(r"^[A-Za-z]+(?:[-_.][A-Za-z]+)*$")

ENTROPY_THRESHOLD = 4.1  # bits per char at 32 chars, rising with length (see _entropy_threshold)
GENERIC_MIN_LEN = 32


# ---------------------------------------------------------------------- value checks


def _entropy(value: str) -> float:
    counts = Counter(value).values()
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts)


def _class_count(value: str) -> int:
    return sum(1 for pattern in _CLASS_RES if pattern.search(value))


def plausible_value(value: str) -> bool:
    """A quoted password-ish value: not a placeholder, a variable reference, a number or a plain word."""
    if len(value) < 6 or _PLACEHOLDER_RE.match(value) or value.isdigit():
        return False
    if _DOTTED_NAME_RE.match(value) or (_IDENTIFIER_RE.match(value) and len(value) < 16):
        return False
    if value.startswith(("/", "~/", "./", "../")) or "://" in value or _looks_like_path(value):
        return False
    symbols = any(not ch.isalnum() for ch in value)
    return _class_count(value) + symbols >= 2 or len(value) >= 16


def _plausible_bare_value(value: str) -> bool:
    """An unquoted value (env or YAML style) needs 8+ chars, letters and digits: prose after "token:" has none.

    Short ones such as "sha256" in "token: sha256:<digest>" would otherwise be redacted everywhere they repeat.
    """
    if len(value) < 8 or not plausible_value(value) or _VERSION_RE.match(value):
        return False
    return _has_digit(value) and any(ch.isalpha() for ch in value)


def _plausible_short_password(value: str) -> bool:
    """A password given on a command line or in a URL: 6+ chars (each repeat is redacted too, and a
    3-char one would shred ordinary words), not a placeholder, not a number."""
    return (
        len(value) >= 6
        and not _PLACEHOLDER_RE.match(value)
        and value.lower() not in {"pass", "password"}
        and not value.isdigit()
    )


def _plausible_stated(value: str) -> bool:
    """A password written in a sentence: letters with digits or symbols ("hunter2x!"), never a plain word."""
    if not plausible_value(value) or _VERSION_RE.match(value) or _WORDS_ONLY_RE.match(value):
        return False
    return any(ch.isalpha() for ch in value) or len(value) >= 8


def _plausible_token(value: str) -> bool:
    """A header credential: 8+ chars that are not a placeholder or a plain word."""
    return (
        len(value) >= 8
        and not _PLACEHOLDER_RE.match(value)
        and not _WORDS_ONLY_RE.match(value)
        and (_has_digit(value) or _class_count(value) >= 2)
    )


def _openai_shape(value: str) -> bool:
    # The project/service prefixes are specific enough; a bare "sk-" + 32 letters could be a word chain.
    return value.startswith(("sk-proj-", "sk-svcacct-", "sk-admin-")) or _has_digit(value)


def _has_digit(value: str) -> bool:
    return any(ch.isdigit() for ch in value)


def high_entropy(value: str) -> bool:
    """Random-looking base64/alnum: long, mixed classes, high entropy, and not a digest, uuid or path."""
    if _HEX_RE.match(value) or _UUIDISH_RE.search(value) or _DIGEST_PREFIX_RE.match(value):
        return False  # commit ids, sha256 digests, SRI integrity hashes and uuids fill memory notes
    if _class_count(value) < 3 or _looks_like_path(value) or _looks_like_identifier(value):
        return False
    # Words (CamelCase identifiers, kebab headers) come in runs of 4-8 letters; random text in runs of ~2.
    if len(value) / len(_RUN_RE.findall(value)) >= 3.3:
        return False
    return _entropy(value) >= _entropy_threshold(len(value))


def random_token(value: str) -> bool:
    """A short value (a field, a tag) that is one random-looking piece: high entropy and runs of ~2 letters
    (names such as "ThisIsALongProjectName2" come in runs of 3-4 even when short)."""
    return high_entropy(value) and len(value) / len(_RUN_RE.findall(value)) < 2.5


def _entropy_threshold(length: int) -> float:
    """Below the 1st percentile of random base64 of that length (measured: 4.20 at 32, 4.65 at 48, 4.93 at 64);
    under 32 chars (short fields), log2(length) - 0.4, which random base64 of 20 chars passes 99% of the time."""
    if length < GENERIC_MIN_LEN:
        return math.log2(length) - 0.4
    return min(ENTROPY_THRESHOLD + 0.018 * (length - GENERIC_MIN_LEN), 4.9)


def _looks_like_identifier(value: str) -> bool:
    """snake_case / kebab-case names split into many parts; random base64url has ~1 "_" or "-" per 32 chars."""
    parts = _SEPARATOR_RE.split(value)
    return len(parts) >= 5 or (len(parts) == 4 and max(len(p) for p in parts) <= 12)


def _looks_like_path(value: str) -> bool:
    parts = value.split("/")
    words = sum(bool(_PATH_PART_RE.match(p)) for p in parts)
    return len(parts) > 1 and words >= max(2, len(parts) // 2)


# ---------------------------------------------------------------------- context checks (on lowered bytes)


def _whole_pass(lowered: bytes, start: int) -> bool:
    """A bare "pass" key counts as a word part (db_pass, PASS=) but not inside "bypass" or "compass"."""
    if not lowered.startswith(b"pass", start) or lowered.startswith(
        (b"password", b"passwd", b"passphrase"), start
    ):
        return True
    return start == 0 or not lowered[start - 1 : start].isalpha()


# ---------------------------------------------------------------------- the rule type


Check = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern over the text's UTF-8 bytes (or their ASCII-lowercased copy: same offsets)."""

    kind: str
    pattern: re.Pattern[bytes]
    # The part of the match that is the secret (and gets redacted), with the check its value must pass;
    # the first group that took part in the match is used.
    groups: tuple[tuple[int | str, Check | None], ...] = ((0, None),)
    # Bytes that must not come just before the match (or before `lead`). A leading lookbehind would do the
    # same, but it stops re from searching for the literal prefix and made each rule 30x slower.
    left: bytes = b""
    lowered: bool = False
    # What must come just before the literal the pattern starts with, searched in the 40 bytes before it
    # (anchored at their end); it is part of the secret when the secret is the whole match (group 0).
    lead: re.Pattern[bytes] | None = None
    key_check: Callable[[bytes, int], bool] | None = None  # (lowered bytes, match start) -> keep?
    # Two-step rules: `pattern` is a trigger word and `then` is searched once in the rest of its line
    # (at most 400 bytes), and the next trigger is looked for after that: "mysql ... -pSECRET" stays
    # linear however often "mysql" repeats.
    then: re.Pattern[bytes] | None = None
    after: bytes = b""  # bytes that must not come just after the secret ("(": a call, not a value)

    def spans(self, data: bytes, lowered: bytes) -> Iterator[tuple[str, int, int]]:
        """(kind, start, end) byte spans of the secrets this rule finds."""
        haystack = lowered if self.lowered else data
        if self.then is not None:
            yield from self._line_spans(data, lowered, haystack, self.then)
            return
        for m in self.pattern.finditer(haystack):
            span = self._accept(data, lowered, m)
            if span is not None:
                yield span

    def _line_spans(
        self, data: bytes, lowered: bytes, haystack: bytes, then: re.Pattern[bytes]
    ) -> Iterator[tuple[str, int, int]]:
        pos = 0
        while (trigger := self.pattern.search(haystack, pos)) is not None:
            eol = haystack.find(b"\n", trigger.end(), trigger.end() + 400)
            stop = eol if eol >= 0 else min(trigger.end() + 400, len(haystack))
            m = then.search(haystack, trigger.end(), stop)
            if m is not None:
                span = self._accept(data, lowered, m)
                if span is not None:
                    yield span
            pos = max(stop, trigger.end())

    def _accept(self, data: bytes, lowered: bytes, m: re.Match[bytes]) -> tuple[str, int, int] | None:
        group, check = next(((g, c) for g, c in self.groups if m.start(g) >= 0), (0, None))
        start, end = m.span(group)
        begin = m.start()
        if start == end:
            return None
        if self.lead is not None:
            before = self.lead.search(lowered if self.lowered else data, max(begin - 40, 0), begin)
            if before is None:
                return None
            begin = before.start()
            if group == 0:
                start = begin
        if self.left and begin and data[begin - 1] in self.left:
            return None
        if self.after and end < len(data) and data[end] in self.after:
            return None
        if self.key_check is not None and not self.key_check(lowered, m.start()):
            return None
        if check is not None and not check(data[start:end].decode("utf-8", "replace")):
            return None
        return self.kind, start, end


def _c(pattern: bytes, flags: int = 0) -> re.Pattern[bytes]:
    return re.compile(pattern, flags)


# ---------------------------------------------------------------------- the rules

_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_WORD = _ALNUM + b"_-"
_END = rb"(?![A-Za-z0-9_-])"  # a token ends here


def _token(
    kind: str,
    pattern: bytes,
    left: bytes = _WORD,
    check: Check | None = None,
    lead: re.Pattern[bytes] | None = None,
) -> Rule:
    """A provider token: a literal prefix and a fixed shape, not glued to a longer word on either side."""
    return Rule(kind, _c(pattern), ((0, check),), left=left, lead=lead)


_PROVIDERS: tuple[Rule, ...] = (
    _token("aws_access_key", rb"A(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])", _ALNUM),
    _token("github_token", rb"gh[pousr]_[A-Za-z0-9]{36,255}" + _END),
    _token("github_token", rb"github_pat_[A-Za-z0-9_]{22,255}" + _END),
    _token("gitlab_token", rb"gl(?:pat|dt|rt|ptt|ft|imt|cbt|soat|agent|oas)-[A-Za-z0-9_-]{20,}"),
    _token("gitlab_token", rb"GR1348941[A-Za-z0-9_-]{20,}"),
    _token("anthropic_key", rb"sk-ant-[A-Za-z0-9_-]{20,}"),
    _token(
        "openai_key",
        rb"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{32,}" + _END + b")",
        check=_openai_shape,
    ),
    _token("api_token", rb"sk-or-v1-[a-f0-9]{64}" + _END),  # OpenRouter
    _token("slack_token", rb"xox[abposre]-[A-Za-z0-9-]{10,}", _ALNUM),
    _token("slack_token", rb"xapp-\d-[A-Za-z0-9-]{20,}", _ALNUM),
    _token("slack_webhook", rb"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,}", b""),
    _token("discord_webhook", rb"discord(?:app)?\.com/api/webhooks/\d{5,30}/[A-Za-z0-9_-]{20,}", b""),
    _token("teams_webhook", rb"\.webhook\.office\.com/webhook(?:b2)?/[A-Za-z0-9@/_-]{20,}", b""),
    _token("stripe_key", rb"k_(?:live|test)_[A-Za-z0-9]{16,}", _ALNUM, lead=_c(rb"[sr]\Z")),
    _token("stripe_key", rb"whsec_[A-Za-z0-9+/=]{32,}"),
    _token("twilio_key", rb"SK[0-9a-fA-F]{32}(?![A-Za-z0-9])", _ALNUM),
    _token("sendgrid_key", rb"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}" + _END),
    _token("google_api_key", rb"AIza[A-Za-z0-9_-]{35}" + _END),
    _token("google_oauth", rb"GOCSPX-[A-Za-z0-9_-]{28}" + _END),
    _token("google_oauth", rb"ya29\.[A-Za-z0-9_-]{30,}"),
    _token("google_oauth", rb"1//0[A-Za-z0-9_-]{40,}", _ALNUM + b"/"),
    _token("npm_token", rb"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
    _token("pypi_token", rb"pypi-AgE[A-Za-z0-9_-]{50,}"),
    _token("huggingface_token", rb"hf_[A-Za-z]{34}(?![A-Za-z0-9])"),
    _token("huggingface_token", rb"api_org_[A-Za-z]{34}(?![A-Za-z0-9])"),
    _token("azure_key", rb"AccountKey=[A-Za-z0-9+/]{86}==", _ALNUM),
    _token("azure_key", rb"Q~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])", lead=_c(rb"[A-Za-z0-9_~.]{3}\d\Z")),
    Rule("azure_key", _c(rb"sig=(?P<v>[A-Za-z0-9%+/=]{40,})"), (("v", None),), lead=_c(rb"[?&]\Z")),  # SAS
    _token("digitalocean_token", rb"do[por]_v1_[a-f0-9]{64}" + _END),
    _token("heroku_key", rb"HRKU-[A-Za-z0-9_-]{58,}"),
    _token("api_token", rb"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}" + _END),  # Shopify
    _token("api_token", rb"lin_api_[A-Za-z0-9]{40}" + _END),  # Linear
    _token("api_token", rb"ntn_[0-9]{11}[A-Za-z0-9]{35}" + _END),  # Notion
    _token("api_token", rb"secret_[A-Za-z0-9]{43}(?![A-Za-z0-9])"),  # Notion (older)
    _token("api_token", rb"glc_[A-Za-z0-9+/]{32,}={0,2}"),  # Grafana cloud
    _token("api_token", rb"glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}" + _END),  # Grafana service account
    _token("api_token", rb"sntry[su]_[A-Za-z0-9+/=_]{40,}"),  # Sentry
    _token("api_token", rb"PMAK-[a-f0-9]{24}-[a-f0-9]{34}" + _END),  # Postman
    _token("api_token", rb"ATATT3[A-Za-z0-9_=-]{100,}"),  # Atlassian
    _token("api_token", rb"NRAK-[A-Z0-9]{27}" + _END),  # New Relic
    _token("api_token", rb"sbp_[a-f0-9]{40}" + _END),  # Supabase
    _token("api_token", rb"EAAA[A-Za-z0-9_-]{60,}"),  # Square
    _token("api_token", rb"sq0(?:atp|csp)-[A-Za-z0-9_-]{22,}"),  # Square
    _token("api_token", rb"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,}"),  # Doppler
    _token("api_token", rb"gsk_[A-Za-z0-9]{48,}" + _END),  # Groq
    _token("api_token", rb"xai-[A-Za-z0-9]{70,}" + _END),  # xAI
    _token("api_token", rb"pplx-[A-Za-z0-9]{40,}" + _END),  # Perplexity
    _token("api_token", rb"r8_[A-Za-z0-9]{37}" + _END),  # Replicate
    _token("api_token", rb"dapi[a-f0-9]{32}(?:-\d)?" + _END),  # Databricks
    _token("api_token", rb"hv[sb]\.[A-Za-z0-9_-]{90,}"),  # HashiCorp Vault
    _token("api_token", rb"\.atlasv1\.[A-Za-z0-9_=-]{60,}", lead=_c(rb"[a-z0-9]{14}\Z")),  # Terraform Cloud
    _token("api_token", rb"key-[0-9a-f]{32}" + _END),  # Mailgun
    _token(
        "api_token", rb":AA[A-Za-z0-9_-]{33}" + _END, b"", lead=_c(rb"(?<![0-9])[0-9]{8,10}\Z")
    ),  # Telegram
    _token("jwt", rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{10,}"),
)

# Key names that end in a secret word: DB_PASSWORD, github_token, apiKey, JWT_SECRET_KEY; "token_count",
# "tokenizer" or "secretary" do not. One pattern per key word, each starting with its literal, all matched on
# the lowercased bytes: an alternation of words, or (?i), made these rules 10x slower.
_ASSIGN = rb"[\"']?\s{0,20}(?::=|=>|[:=])\s{0,20}"
_QUOTED = rb"(?P<q>[\"'`])(?P<v>[^\s'\"`\[\]]{1,500}?)(?P=q)"
_BARE = rb"(?P<b>[^\s'\"`\[\](){},;<>]{0,499}[^\s'\"`\[\](){},;<>.:!?])"
_KEY_WORDS = (
    rb"secret(?:s|key|token|[_-][a-z0-9_-]{0,40})?",
    rb"tokens?",
    rb"pass(?:word|wd|phrase)?s?",
    rb"pwd",
    rb"credentials?",
    rb"auth",
    rb"keys?",
)
# What must come before "key" for it to name a secret (api_key, x-api-key, SIGNING_KEY, accountKey).
_KEY_LEAD = _c(
    rb"(?:api|access|private|auth|account|encryption|master|signing|client|app|license|session|consumer"
    rb"|subscription|service|admin|deploy|webhook|shared|storage)[_-]?\Z"
)


def _assignments() -> Iterator[Rule]:
    for word in _KEY_WORDS:
        yield Rule(
            "password",
            _c(word + _ASSIGN + b"(?:" + _QUOTED + b"|" + _BARE + b")"),
            (("v", plausible_value), ("b", _plausible_bare_value)),
            lowered=True,
            lead=_KEY_LEAD if word.startswith(b"key") else None,
            key_check=_whole_pass if word.startswith(b"pass") else None,
            after=b"(",
        )


def _value(group: str, check: Check) -> tuple[tuple[int | str, Check | None], ...]:
    return ((group, check),)


def _stated(words: list[str], middle: bytes) -> Iterator[Rule]:
    """A password stated in a sentence ("the password is hunter2x!"): one rule per key word, each starting
    with its literal (an alternation of words made the search 10x slower)."""
    for word in words:
        yield Rule(
            "stated_password",
            _c(re.escape(word).encode() + middle + _STATED),
            _value("v", _plausible_stated),
            lowered=True,
            after=b"(",
        )


_VALUE_CHARS = rb"[^\s\"'`\[\]<>(){}]"
# A password in a sentence: printable ASCII without quotes or brackets, not ending in . , ; : or ?
_FLAG_VALUE = rb"[\"']?(?P<v>[^\s\"'`\[\]<>(){}]{1,200}?)[\"']?(?=[\s;|&)]|\Z)"
_STATED = rb"(?P<v>[!#-&*-;=?-Z\\^_a-z|~]{5,99}[!#-&*+/-9=@-Z\\^_a-z|~-])"
_KEYED: tuple[Rule, ...] = (
    Rule(
        "aws_secret_key",
        _c(rb"secret_?(?:access_?)?key" + _ASSIGN + rb"[\"']?(?P<v>[a-z0-9/+=]{40})(?![a-z0-9/+=])"),
        (("v", None),),
        lowered=True,
    ),
    *_assignments(),
    Rule(  # Authorization: Bearer <token> / Basic <base64> / token <...>
        "auth_header",
        _c(
            rb"authorization[\"']?\s{0,20}[:=]\s{0,20}[\"']?(?:(?:bearer|basic|token|bot|digest|apikey|sso-key)"
            rb"[ \t]{1,20})?(?P<v>[A-Za-z0-9._~+/=:-]{8,2000})"
        ),
        _value("v", _plausible_token),
        lowered=True,
    ),
    Rule(
        "auth_header",
        _c(rb"bearer[ \t]{1,20}(?P<v>[A-Za-z0-9._~+/=-]{16,2000})"),
        _value("v", _plausible_token),
        lowered=True,
    ),
    Rule(  # mysql -pSECRET, mysqldump -p'SECRET'
        "cli_password",
        _c(rb"mysql|mariadb"),
        (("q", _plausible_short_password), ("v", _plausible_short_password)),
        lowered=True,
        then=_c(rb"\s-p(?:[\"'](?P<q>[^\s\"']{1,200})[\"']|(?P<v>[^\s\"']{1,200}))"),
    ),
    Rule(  # sshpass -p 'SECRET'
        "cli_password",
        _c(rb"sshpass[ \t]{1,20}-p[ \t]{0,20}" + _FLAG_VALUE),
        _value("v", _plausible_short_password),
        lowered=True,
    ),
    Rule(  # --password SECRET, --token SECRET
        "cli_password",
        _c(rb"--(?:password|passwd|pass|token|api-key|secret)[ \t]{1,20}" + _FLAG_VALUE),
        _value("v", _plausible_short_password),
        lowered=True,
    ),
    *_stated(
        ["password", "passphrase", "passwd", "api key", "api token", "access token", "secret key"],
        rb"(?: (?:for|of|to) [^\n.:]{1,40}?)?(?:\s{1,5}(?:is|was)\s{1,5}|\s{0,5}[:=]\s{0,5})[\"'`]?",
    ),
    *_stated(
        ["mot de passe", "mdp", "clé d'api", "clé api", "clé secrète"],
        rb"(?: (?:du|de la|de l'|des|de|pour) ?[^\n.:]{1,40}?)?"
        + "(?:\\s{1,5}(?:est|vaut|=)\\s{1,5}|(?:\\s|\u00a0|\u202f){0,3}:\\s{0,5})[\"'`]?".encode(),
    ),
    *_stated(
        ["パスワード", "暗証番号", "apiキー", "api キー", "アクセストークン", "シークレットキー"],
        "(?:は|：|:|＝|=|が)\\s{0,5}(?:「|『|[\"'`])?".encode(),
    ),
)

# Rules whose secret may hold spaces or sit in a rare context: run over the whole text.
_FULL: tuple[Rule, ...] = (
    Rule(
        "private_key",
        _c(
            rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            rb"(?:[^\[\]]{0,20000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,-]*)"
        ),
    ),
    Rule("private_key", _c(rb"AGE-SECRET-KEY-1[0-9A-Z]{58}(?![0-9A-Za-z])")),
    Rule(
        "private_key",
        _c(rb"Private-Lines: \d{1,4}\r?\n(?:[A-Za-z0-9+/=]{1,100}\r?\n){0,200}[A-Za-z0-9+/=]{0,100}"),
    ),
    Rule(  # scheme://user:password@host, also redis://:password@host
        "url_password",
        _c(rb"://[^\s:/@\"'<>\[\]]{0,100}:(?P<v>[^\s:/@\"'<>\[\]]{1,200})@[\w.-]"),
        _value("v", _plausible_short_password),
    ),
    Rule(  # curl -u user:password, --user user:password
        "cli_password",
        _c(rb"-(?:u|-user)[ \t=]{0,20}[\"']?[^\s:\"'$]{1,100}:(?P<v>" + _VALUE_CHARS + rb"{1,200})"),
        _value("v", _plausible_short_password),
        lead=_c(rb"(?:^|[\s\"'])\Z"),
    ),
)

RULES: tuple[Rule, ...] = _PROVIDERS + _KEYED + _FULL

# Provider tokens and high-entropy runs sit inside runs of these characters: the rules for them run over
# those runs only (a tenth of ordinary text), one pass over the text finds them all.
_CANDIDATE = _c(rb"[A-Za-z0-9_.:/+=~%@?&-]{14,}")
# Every key word of the _KEYED rules holds one of these: the rules run near them only.
_TRIGGER = _c(
    b"|".join(
        re.escape(word.encode())
        for word in ("pass", "secret", "token", "key", "auth", "pwd", "credential", "bearer", "mdp", "clé")
        + ("パスワード", "暗証番号", "キー", "トークン", "mysql", "mariadb")
    )
)
_BEFORE, _AFTER = 64, 700  # the window kept around a key word: its lead, and the longest value after it

# Long base64/alnum runs, for the generic high-entropy check.
_RUN_BYTES = _c(rb"[A-Za-z0-9+/_-]{%d,}" % GENERIC_MIN_LEN)
_RUN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-=")


def find(data: bytes) -> list[tuple[str, int, int]]:
    """Every rule's findings in UTF-8 `data`, as (kind, start, end) byte spans (overlaps included)."""
    lowered = data.lower()  # ASCII only on bytes: the offsets stay the same
    found = [span for rule in _FULL for span in rule.spans(data, lowered)]
    tokens = _Excerpt(data, (m.span() for m in _CANDIDATE.finditer(data)))
    found += tokens.back(span for rule in _PROVIDERS for span in rule.spans(tokens.data, tokens.lowered))
    found += tokens.back(token_spans(tokens.data))
    keyed = _Excerpt(data, _windows(lowered, len(data)))
    found += keyed.back(span for rule in _KEYED for span in rule.spans(keyed.data, keyed.lowered))
    return found


def _windows(lowered: bytes, size: int) -> Iterator[tuple[int, int]]:
    """Merged windows around every key word."""
    start = end = -1
    for m in _TRIGGER.finditer(lowered):
        lo, hi = max(m.start() - _BEFORE, 0), min(m.end() + _AFTER, size)
        if lo > end:
            if end > start:
                yield start, end
            start = lo
        end = hi
    if end > start:
        yield start, end


class _Excerpt:
    """Pieces of the text joined by newlines, with the way back to the text's offsets."""

    def __init__(self, data: bytes, spans: Iterable[tuple[int, int]]) -> None:
        self._starts: list[int] = []
        self._origins: list[int] = []
        parts = []
        pos = 0
        for start, end in spans:
            self._starts.append(pos)
            self._origins.append(start)
            parts.append(data[start:end])
            pos += end - start + 1
        self.data = b"\n".join(parts)
        self.lowered = self.data.lower()

    def back(self, spans: Iterable[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """Spans in the excerpt -> spans in the text."""
        return [(kind, self._origin(start), self._origin(start) + end - start) for kind, start, end in spans]

    def _origin(self, offset: int) -> int:
        i = bisect_right(self._starts, offset) - 1
        return self._origins[i] + offset - self._starts[i]


def token_spans(data: bytes) -> Iterator[tuple[str, int, int]]:
    """Random-looking runs of 32+ base64 characters (not digests, uuids, paths or identifiers).

    No lookbehind in the pattern (it made the search 40% slower): the first match in a run starts the run,
    and the edges are checked here.
    """
    for m in _RUN_BYTES.finditer(data):
        start, end = m.span()
        if start and data[start - 1] in _RUN_CHARS:
            continue
        pad = 0
        while pad < 3 and data[end + pad : end + pad + 1] == b"=":
            pad += 1
        if pad == 3 or (end + pad < len(data) and data[end + pad] in _RUN_CHARS):
            continue
        value = data[start:end].decode("ascii")
        if high_entropy(value) and not _DIGEST_BEFORE_RE.search(data, max(start - 8, 0), start):
            yield "high_entropy", start, end + pad
