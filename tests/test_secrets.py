"""Tests for rlm_vault.secrets: each kind, the things that must stay quiet, and hypothesis properties."""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import pydoc
import random
import re
import string
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlm_vault.secrets import KINDS, Finding, describe, redact, scan

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB = "ghp_" + "A1b2C3d4E5f6" * 3
POSITIVE = [
    ("aws_access_key", f"export AWS_ACCESS_KEY_ID={AWS_KEY}\n", AWS_KEY),
    ("aws_access_key", "key ASIAY34FZKBOKMUTVV7A in the log", "ASIAY34FZKBOKMUTVV7A"),
    (
        "aws_secret_key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "aws_secret_key",
        '"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("github_token", f"git clone https://{GITHUB}@github.com/o/r", GITHUB),
    (
        "github_token",
        "gho_16C7e42F292c6912E7710c838347Ae178B4a ok",
        "gho_16C7e42F292c6912E7710c838347Ae178B4a",
    ),
    (
        "github_token",
        "pat github_pat_11ABCDEFG0aBcDeFgHiJkLm_NoPqRsTuVwXyZ0123456789abcdefGHIJKLMNOPQRSTU.",
        "github_pat_11ABCDEFG0aBcDeFgHiJkLm_NoPqRsTuVwXyZ0123456789abcdefGHIJKLMNOPQRSTU",
    ),
    (
        "anthropic_key",
        "ANTHROPIC_API_KEY=sk-ant-api03-AbC_dEf-123456789012345678901234567890xyzAA",
        "sk-ant-api03-AbC_dEf-123456789012345678901234567890xyzAA",
    ),
    (
        "openai_key",
        "use sk-proj-Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj then",
        "sk-proj-Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj",
    ),
    (
        "openai_key",
        "key: sk-aB3dE4fG5hI6jK7lM8nO9pQ0rS1tU2vW3xY4zA5bC6dE7f",
        "sk-aB3dE4fG5hI6jK7lM8nO9pQ0rS1tU2vW3xY4zA5bC6dE7f",
    ),
    (
        "slack_token",
        "SLACK xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    ),
    ("stripe_key", "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc.", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("stripe_key", "rk_live_51H8bAbCdEfGhIjKlMnOpQr", "rk_live_51H8bAbCdEfGhIjKlMnOpQr"),
    (
        "google_api_key",
        "maps AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY!",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    ),
    ("gitlab_token", "GITLAB glpat-xxYY12zz34AAbb56ccdd", "glpat-xxYY12zz34AAbb56ccdd"),
    (
        "npm_token",
        "//registry.npmjs.org/:_authToken=npm_aB3dE4fG5hI6jK7lM8nO9pQ0rS1tU2vW3xY4",
        "npm_aB3dE4fG5hI6jK7lM8nO9pQ0rS1tU2vW3xY4",
    ),
    (
        "jwt",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("url_password", "DATABASE_URL=postgres://app:s3cr3t-Pa55@db.internal:5432/app", "s3cr3t-Pa55"),
    ("url_password", "git remote add o https://bob:hunter2@example.com/x.git", "hunter2"),
    ("password", 'password = "hunter2xyz"', "hunter2xyz"),
    ("password", "DB_PASSWORD='correct-horse-7'", "correct-horse-7"),
    ("password", '{"user": "bob", "password": "hunter2xyz"}', "hunter2xyz"),
    ("password", "API_KEY=abcd1234efgh5678", "abcd1234efgh5678"),
    ("password", "  client_secret: 9f8e7d6c5b4aQQ\n", "9f8e7d6c5b4aQQ"),
    ("password", "apiKey: 'Zx9-Yw8-Vu7'", "Zx9-Yw8-Vu7"),
    ("high_entropy", "blob Zk9xQ2Vm3LpT7wYbN4rJ8sKd1HgA6uEc here", "Zk9xQ2Vm3LpT7wYbN4rJ8sKd1HgA6uEc"),
]
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBzb21lLWZha2Uta2V5LWJ5dGVzLWZvci10ZXN0aW5nLW9ubHkAAAA=\n-----END OPENSSH PRIVATE KEY-----"
)

QUIET = [
    "commit 3f786850e387550fdab836ed7e6dc881de23001b\nAuthor: Dev <dev@example.com>",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b4b0b822cd15d6c15b0f00a08  rlm_vault-0.1.0.tar.gz",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b4b0b822cd15d6c15b0f00a08",
    "integrity sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUR1C7LVUnG1pj3xZ4w==",
    "session 123e4567-e89b-12d3-a456-426614174000 and req_011CV1abcd",
    "/home/dev/.claude/projects/-home-dev-proj/c561b41d-67d1-4922-97f3-675725391c96.jsonl",
    "src/rlm_vault/mcp_server/ThisIsAVeryLongCamelCaseIdentifierName1/x.py",
    "def test_parse_transcript_handles_huge_lines_gracefully_and_quickly(): pass",
    "N23_ossl_old_des_ks_struct4DOLLAR_10E Content-Security-Policy-Report-Only-2024",
    "The token: see below. password: required. Set the API key in your config file.",
    "token = self.token\npassword = getpass()\nsecret = os.environ['SECRET']\nmax_tokens=128000",
    "API_KEY=${API_KEY}\ntoken: ${{ secrets.GITHUB_TOKEN }}\npassword: <your-password>\napi_key = 'YOUR_API_KEY'",
    'password = "********"\nsecret: xxxxxxxxxx\ntoken: "changeme"\n"password": "string"',
    "tokens: 812\ntoken_count = 4096\npassword_min_length = 12\ntoken: v1.2.3",
    "PWD=/work/main OLDPWD=/home/dev",
    "bypass = 'route66x'\ncompass: N30E12",
    "https://github.com/anthropics/claude-code/issues/12345 and https://user@example.com/x",
    "Use ANTHROPIC_API_KEY=dummy in tests; ghp_ is the GitHub prefix; sk- starts OpenAI keys.",
    "| id | summary |\n|----|---------|\n| 2026-11-24_MyApp_001 | API v2 architecture decisions |",
    "-" * 80 + "\n" + "=" * 80,
    "日本語のテキストとパスワードについての説明。Le mot de passe : voir ci-dessous.",
]


# -- each kind ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "value"), POSITIVE, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(POSITIVE)]
)
def test_each_kind_is_found_with_its_exact_span(kind: str, text: str, value: str) -> None:
    findings = scan(text)
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [(kind, value)]
    redacted, _ = redact(text)
    assert value not in redacted and f"[REDACTED:{kind}]" in redacted


def test_private_key_block_is_redacted_whole() -> None:
    text = f"my key:\n{PEM}\nthat's it"
    redacted, findings = redact(text)
    assert [f.kind for f in findings] == ["private_key"]
    assert redacted == "my key:\n[REDACTED:private_key]\nthat's it"


def test_private_key_without_end_line_still_hides_the_body() -> None:
    text = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM\nKiJ9PCC4AqeAVd7ESCJz"
    redacted, _ = redact(text)
    assert redacted == "[REDACTED:private_key]"


@pytest.mark.parametrize("text", QUIET, ids=range(len(QUIET)))
def test_ordinary_memory_text_is_quiet(text: str) -> None:
    assert scan(text) == [], [text[f.start : f.end] for f in scan(text)]


def test_hex_alone_is_never_flagged_but_hex_in_a_secret_assignment_is() -> None:
    digest = "a3" * 32
    assert scan(f"{digest}\n{'deadbeef' * 5}\n{'0123456789abcdef' * 8}") == []
    assert [f.kind for f in scan(f'secret = "{digest}"')] == ["password"]


def test_line_numbers_and_positions() -> None:
    text = f"intro\n\nkey {AWS_KEY}\nand {GITHUB}"
    findings = scan(text)
    assert findings == [
        Finding("aws_access_key", 11, 31, 3),
        Finding("github_token", 36, 36 + len(GITHUB), 4),
    ]


def test_a_found_value_is_redacted_wherever_it_repeats() -> None:
    text = 'password = "hunter2xyz"\nlater I typed hunter2xyz again'
    redacted, findings = redact(text)
    assert "hunter2xyz" not in redacted
    assert [(f.kind, f.line) for f in findings] == [("password", 1), ("password", 2)]


# -- allow-list and describe -------------------------------------------------------------------------------


def test_allowed_literal_regex_and_re_prefix() -> None:
    text = f"{AWS_KEY} {GITHUB} sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    assert [f.kind for f in scan(text, allowed=[AWS_KEY])] == ["github_token", "stripe_key"]
    assert [f.kind for f in scan(text, allowed=[re.compile(r"^ghp_")])] == ["aws_access_key", "stripe_key"]
    assert [f.kind for f in scan(text, allowed=["re:EXAMPLE$", "re:_live_"])] == ["github_token"]
    assert scan(text, allowed=[AWS_KEY[:-1]]) != scan(text, allowed=[AWS_KEY])  # literals are exact values


def test_describe_names_kinds_and_lines() -> None:
    assert describe(scan(f"x\ny\n{AWS_KEY}")) == "an AWS access key on line 3"
    text = f"{GITHUB}\n{AWS_KEY}\n{GITHUB}\npassword = 'hunter2xyz'\n{GITHUB}"
    assert describe(scan(text)) == (
        "a GitHub token on lines 1, 3 and 5, an AWS access key on line 2 and a password or secret assignment on line 4"
    )
    assert describe([]) == ""


def test_every_kind_has_a_human_name() -> None:
    kinds = {kind for kind, _, _ in POSITIVE} | {"private_key"}
    assert kinds == set(KINDS)


# -- properties --------------------------------------------------------------------------------------------

_B64 = string.ascii_letters + string.digits
_SECRET_STRATEGIES = [
    st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16).map(lambda s: "AKIA" + s),
    st.text(_B64, min_size=36, max_size=40).map(lambda s: "ghp_" + s),
    st.text(_B64 + "_-", min_size=40, max_size=60).map(lambda s: "sk-ant-api03-" + s),
    st.text(_B64 + "_-", min_size=24, max_size=48).map(lambda s: "sk-proj-" + s),
    st.text(_B64, min_size=24, max_size=32).map(lambda s: "sk_live_" + s),
    st.text(_B64 + "_-", min_size=35, max_size=35).map(lambda s: "AIza" + s),
    st.text(_B64 + "_-", min_size=20, max_size=30).map(lambda s: "glpat-" + s),
    st.text(_B64, min_size=36, max_size=36).map(lambda s: "npm_" + s),
    st.text(_B64 + "-", min_size=12, max_size=40).map(lambda s: "xoxb-" + s),
]
SECRETS = st.one_of(*_SECRET_STRATEGIES)
WORDS = st.sampled_from(
    [
        "the",
        "vault",
        "note",
        "=",
        ":",
        '"',
        "'",
        "[",
        "]",
        "password",
        "API_KEY",
        "token",
        "://",
        "@",
        "\n",
        "REDACTED",
        "[REDACTED:password]",
        "sk-",
        "ghp_",
        "AKIA",
        "-----BEGIN RSA PRIVATE KEY-----",
        "eyJ",
        ".",
        " ",
    ]
)
FRAGMENTS = st.one_of(WORDS, SECRETS, st.text(max_size=20), st.text(_B64 + "+/_-", min_size=30, max_size=50))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_scan_never_raises_on_arbitrary_unicode(text: str) -> None:
    for f in scan(text):
        assert 0 <= f.start < f.end <= len(text) and f.kind in KINDS


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FRAGMENTS, max_size=30).map("".join))
def test_redact_never_leaves_a_found_value(text: str) -> None:
    redacted, findings = redact(text)
    for f in findings:
        assert text[f.start : f.end] not in redacted
    spans = [(f.start, f.end) for f in findings]
    assert spans == sorted(spans) and all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(SECRETS, st.sampled_from(["see", "the", "key", "1.2", "ok"])), min_size=1, max_size=8),
    st.sampled_from([" ", "\n", "  ", "\t"]),
)
def test_separated_secrets_are_always_found_and_removed(parts: list[str], sep: str) -> None:
    text = sep.join(parts)
    redacted, _ = redact(text)
    for part in parts:
        if len(part) > 12:
            assert part not in redacted


# -- false positives and speed -----------------------------------------------------------------------------

_DOC_MODULES = [
    "abc",
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "getpass",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "http.cookies",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "lzma",
    "mailbox",
    "math",
    "mimetypes",
    "netrc",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "platform",
    "poplib",
    "pprint",
    "queue",
    "random",
    "re",
    "secrets",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "tokenize",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
]


def _prose_corpus() -> list[tuple[str, str]]:
    """Plain-text pydoc of stdlib modules: ordinary technical prose, with no secrets in it."""
    docs = []
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for name in _DOC_MODULES:
            module = importlib.import_module(name)
            text = pydoc.render_doc(module, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
            docs.append((name, text))
    return docs


def test_no_false_positive_in_stdlib_documentation() -> None:
    docs = _prose_corpus()
    size = sum(len(d) for _, d in docs)
    hits = [(name, d[f.start : f.end]) for name, d in docs for f in scan(d)]
    assert size > 1_500_000
    # Measured: this one hit in 2.3 MB, and 0 in the 4.2 MB pydoc of all 203 top-level stdlib modules. It is
    # a literal password in an example (HTTPBasicAuthHandler add_password), which a memory must not keep.
    assert hits == [("urllib.request", "geheim$parole")]


def test_one_megabyte_scans_fast() -> None:
    rng = random.Random(3)
    words = [w for _, d in _prose_corpus()[:20] for w in d.split()]
    text = " ".join(rng.choice(words) for _ in range(200_000))[:1_000_000]
    text += f"\n{AWS_KEY}\n"
    started = time.perf_counter()
    findings = scan(text)
    elapsed = time.perf_counter() - started
    assert [f.kind for f in findings] == ["aws_access_key"]
    assert elapsed < 0.5, elapsed
