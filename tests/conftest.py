"""Shared fixtures: every test runs against tmp folders, a real git, and never the user's home."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FakeClock

from rlm_vault import config as config_module
from rlm_vault.config import Config
from rlm_vault.service import MemoryService, open_service

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME and RLM_VAULT_DIR point into tmp; no RLM_* setting leaks in from the outside."""
    home = tmp_path_factory.mktemp("home")
    for key in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("RLM_VAULT_DIR", str(home / "vault"))
    monkeypatch.setenv("RLM_EMBEDDING_MODEL", "none")
    monkeypatch.setenv("RLM_VAULT_RAISE_ERRORS", "1")
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    return home


def _inside_test_home(path: Path, what: str) -> Path:
    if not str(path).startswith(os.environ.get("HOME", "/nonexistent")) or "pytest" not in str(path):
        raise AssertionError(f"a test reached the real {what} {path}")
    return path


@pytest.fixture(autouse=True, scope="session")
def forbid_real_vault() -> Iterator[None]:
    """A test that forgets to isolate itself fails instead of touching the person's vault (~/.claude) or
    caches (~/.cache/rlm-vault): both resolvers raise unless they land in the test's temporary home."""
    real_vault, real_cache = config_module.default_vault_dir, config_module.cache_home

    def guarded_vault() -> Path:
        return _inside_test_home(real_vault(), "default vault")

    def guarded_cache(env: object = None) -> Path:
        return _inside_test_home(real_cache(env), "cache folder")  # type: ignore[arg-type]

    config_module.default_vault_dir = guarded_vault  # type: ignore[assignment]
    config_module.cache_home = guarded_cache  # type: ignore[assignment]
    yield
    config_module.default_vault_dir = real_vault  # type: ignore[assignment]
    config_module.cache_home = real_cache  # type: ignore[assignment]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    return tmp_path / "vault"


@pytest.fixture
def config(vault_dir: Path) -> Config:
    # scan_interval 0: every read lists every folder, so in-place edits are seen at once in tests;
    # the interval itself is tested in test_catalog.py.
    return Config(vault=vault_dir, project="TestProj", embedding_model="none", scan_interval=0.0)


@pytest.fixture
def service(config: Config, clock: FakeClock) -> MemoryService:
    return open_service(config, clock=clock)
