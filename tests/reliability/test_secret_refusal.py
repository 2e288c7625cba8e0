"""Secrets never reach git history: tool writes holding one are refused (kind and line named), automatic
saves are redacted, and the allow-list lets a known-safe value through."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from relkit import commit_count, dirty
from secret_corpus import SECRETS as CORPUS

from rlm_vault.config import Config
from rlm_vault.errors import SecretFound
from rlm_vault.secrets import KINDS
from rlm_vault.service import MemoryService, open_service

pytestmark = pytest.mark.reliability

# One sample per kind (the first of the shared corpus), with the exact value that must never reach git.
SAMPLES: dict[str, str] = {}
VALUES: dict[str, str] = {}
for _kind, _text, _value in CORPUS:
    SAMPLES.setdefault(_kind, _value if "\n" in _text.strip() else _text.strip())
    VALUES.setdefault(_kind, _value)


def test_every_kind_has_a_sample() -> None:
    assert set(SAMPLES) == set(KINDS)


@pytest.fixture
def service(tmp_path: Path) -> MemoryService:
    config = Config(vault=tmp_path / "vault", project="Sec", embedding_model="none")
    return open_service(config)


def history(vault: Path) -> str:
    """Every byte git keeps: all commits' patches and every object, reachable or not."""
    log = subprocess.run(
        ["git", "-C", str(vault), "log", "--all", "-p", "--format=%B"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    objects = subprocess.run(
        ["git", "-C", str(vault), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "replace")
    return log + objects


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_a_tool_write_holding_a_secret_is_refused_naming_kind_and_line(
    service: MemoryService, kind: str
) -> None:
    vault = service.vault.root
    before = commit_count(vault)
    secret = SAMPLES[kind]
    text = f"line one\nline two\nhere it is: {secret}\nafter"
    line = 3
    attempts = [
        lambda: service.remember(text, category="fact"),
        lambda: service.chunk(text, project="Sec"),
        lambda: service.chunk("plain body " + kind, summary=f"summary {secret}", project="Sec"),
        lambda: service.remember("plain insight " + kind, tags=f"x, {secret}"),
        lambda: service.update(service.remember(f"to update {kind}")["id"], text),
    ]
    for n, attempt in enumerate(attempts):
        with pytest.raises(SecretFound) as caught:
            attempt()
        message = str(caught.value)
        assert KINDS[kind] in message, message
        assert "line" in message and (n in (2, 3) or f"line {line}" in message), message
    assert commit_count(vault) == before + 1  # only the plain insight that update was tried on
    assert dirty(vault) == []
    assert VALUES[kind] not in history(vault)


def test_automatic_saves_are_redacted_and_the_value_never_reaches_git(service: MemoryService) -> None:
    body = "transcript\n" + "\n".join(f"item {n} {sample}" for n, sample in enumerate(SAMPLES.values()))
    result = service.chunk(
        body, summary="snapshot with " + SAMPLES["github_token"], project="Sec", redact=True
    )
    assert set(result["redacted"]) >= set(SAMPLES) - {"high_entropy"}
    raw = (service.vault.root / result["path"]).read_text()
    leaked = [kind for kind, value in VALUES.items() if value in raw or value in history(service.vault.root)]
    assert leaked == []
    assert "[REDACTED:github_token]" in raw and "redacted:" in raw
    assert service.peek(result["id"])["content"].startswith("transcript")


def test_the_allow_list_lets_a_known_value_through(tmp_path: Path) -> None:
    safe = VALUES["aws_access_key"]  # AWS's own documented example key
    config = Config(
        vault=tmp_path / "vault",
        project="Sec",
        embedding_model="none",
        secret_allowlist=(safe, "re:^ghp_A1b2"),
    )
    service = open_service(config)
    service.remember(f"the docs use {safe} as the example key")
    service.chunk(f"fixture token {SAMPLES['github_token']}", project="Sec")
    with pytest.raises(SecretFound, match="Stripe"):
        service.remember(f"but not {SAMPLES['stripe_key']} next to {safe}")
    assert dirty(service.vault.root) == []
    env = Config.from_env(
        {"RLM_VAULT_DIR": str(tmp_path / "v2"), "RLM_SECRET_ALLOWLIST": f"{safe},re:^sk_live_"}
    )
    assert env.secret_allowlist == (safe, "re:^sk_live_")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("ticket", "sk-ant-api03-abcdefghijklmnopqrstuvwx"),
        ("domain", "a8f3kZ9qLmN2pX7rT4vB1cD6"),
        ("tags", "deploy, xoxb-123456789012-1234567890123-abcdefghijABCDEFGHIJklmn"),
    ],
)
def test_short_fields_that_become_names_are_scanned_too(tmp_path: Path, field: str, value: str) -> None:
    """project, ticket, domain and tags end up in folder names and commit subjects: a token there is
    refused like one in the text, and nothing is written."""
    from rlm_vault.config import Config
    from rlm_vault.errors import SecretFound
    from rlm_vault.service import open_service

    service = open_service(Config(vault=tmp_path / "v", project="P", embedding_model="none"))
    head = service.vault.git.head()
    with pytest.raises(SecretFound, match=field):
        service.chunk("An ordinary note about deploys.", **{field: value})
    if field in ("project", "tags"):
        with pytest.raises(SecretFound, match=field):
            service.remember("An ordinary fact.", **{field: value})
    assert service.vault.git.head() == head
    assert not any((tmp_path / "v" / "chunks").rglob("*.md"))
