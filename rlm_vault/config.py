"""Settings, read once from the environment into a frozen `Config`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "MARKER", "Config", "default_vault_dir"]

DEFAULT_MODEL = "minishlab/potion-multilingual-128M"
MIB = 1024 * 1024
MARKER = ".rlm-vault"  # the file that makes a folder a vault (written from vault_template/)


def default_vault_dir() -> Path:
    """Where the vault lives when RLM_VAULT_DIR is not set."""
    return Path.home() / ".claude" / "rlm" / "vault"


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
    auto_sync: bool = False  # RLM_SYNC=auto: pull when the server starts, push shortly after writes
    sync_delay: float = 10.0
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
