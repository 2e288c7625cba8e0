"""Settings, read once from the environment into a frozen `Config`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "MARKER", "Config", "cache_home", "default_vault_dir", "vault_cache_dir"]

DEFAULT_MODEL = "minishlab/potion-multilingual-128M"
MIB = 1024 * 1024
MARKER = "rlm-vault.yaml"  # the file that makes a folder a vault (written from vault_template/)


def default_vault_dir() -> Path:
    """Where the vault lives when RLM_VAULT_DIR is not set."""
    return Path.home() / ".claude" / "rlm" / "vault"


def _seconds_env(env: dict[str, str] | os._Environ[str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if 0.1 <= value <= 86400 else default


def cache_home(env: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """Machine-local caches: RLM_CACHE_DIR, else `$XDG_CACHE_HOME/rlm-vault` (~/.cache/rlm-vault)."""
    env = os.environ if env is None else env
    if explicit := env.get("RLM_CACHE_DIR", "").strip():
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rlm-vault"


def vault_cache_dir(vault: Path) -> Path:
    """The search caches of one vault, outside its work tree.

    Nothing git writes can land there (a pull, a merge, a checkout of a hostile remote), so no cache
    file, and no pickle inside Whoosh's files, can come from someone else.
    """
    real = os.path.realpath(vault)
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in os.path.basename(real))[:40] or "vault"
    return cache_home() / "vaults" / f"{name}-{digest}"


def _int_env(env: dict[str, str] | os._Environ[str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


def _float_env(env: dict[str, str] | os._Environ[str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        return max(0.0, float(raw)) if raw else default
    except ValueError:
        return default


@dataclass(frozen=True, slots=True)
class Config:
    """Everything that can be set from outside; tests build one directly."""

    vault: Path
    # Create the vault on first use when missing: only the default place is; a path a person gave
    # (RLM_VAULT_DIR) must already be a vault, so a typo never starts an empty memory.
    create_vault: bool = True
    project: str = ""  # explicit project (RLM_PROJECT); empty = detect from the working directory
    embedding_model: str = DEFAULT_MODEL
    lang: str = "en"
    max_content_bytes: int = 2 * MIB
    lock_timeout: float = 30.0
    grep_timeout: float = 2.0
    archive_after_days: int = 30
    purge_after_days: int = 180
    session_budget_tokens: int = 1500
    secret_allowlist: tuple[str, ...] = field(default=())
    scan_interval: float = 1.0  # seconds between full listings of an unchanged folder (in-place edits)
    auto_sync: bool = False  # RLM_SYNC=auto: pull at start and every sync_interval, push shortly after writes
    sync_delay: float = 5.0  # seconds of quiet after a write before the push (a burst makes one sync)
    sync_interval: float = 30.0  # RLM_SYNC_INTERVAL: seconds between background pulls
    settle_delay: float = 5.0  # a serving process commits a person's edits once quiet this long; 0 = off

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] | None = None) -> Config:
        """Read RLM_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        vault = env.get("RLM_VAULT_DIR", "").strip()
        allow = tuple(s for s in env.get("RLM_SECRET_ALLOWLIST", "").split(",") if s.strip())
        return cls(
            vault=Path(vault).expanduser() if vault else default_vault_dir(),
            create_vault=not vault,
            project=env.get("RLM_PROJECT", "").strip(),
            embedding_model=env.get("RLM_EMBEDDING_MODEL", "").strip() or DEFAULT_MODEL,
            lang=(env.get("RLM_LANG", "").strip().lower() or "en")[:2],
            archive_after_days=_int_env(env, "RLM_ARCHIVE_DAYS", 30),
            purge_after_days=_int_env(env, "RLM_PURGE_DAYS", 180),
            session_budget_tokens=_int_env(env, "RLM_SESSION_BUDGET", 1500),
            secret_allowlist=allow,
            auto_sync=env.get("RLM_SYNC", "").strip().lower() in ("auto", "on", "1", "true"),
            sync_interval=_seconds_env(env, "RLM_SYNC_INTERVAL", 30.0),
            settle_delay=_float_env(env, "RLM_SETTLE_SECONDS", 5.0),
        )

    @property
    def is_vault(self) -> bool:
        """True when the vault folder holds the marker (cheap: no git, for hooks)."""
        return (self.vault / MARKER).is_file()

    @property
    def state_dir(self) -> Path:
        """Machine-local, git-ignored state and caches."""
        return self.vault / ".rlm"
