"""rlm-vault: persistent memory for Claude Code, kept as a git repository of Markdown notes.

The public API for scripts::

    import rlm_vault

    memory = rlm_vault.open_service()            # the vault RLM_VAULT_DIR names (or the default)
    memory.remember("Use ruff, never black", category="preference")
    for hit in memory.search("formatter")["results"]:
        print(hit["id"], hit["summary"])

Names are loaded on first use, so `import rlm_vault` stays as light as the hooks need.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "open_service": "service",
    "MemoryService": "service",
    "Config": "config",
    "Insight": "models",
    "Chunk": "models",
    "VaultError": "errors",
    "InvalidInput": "errors",
    "SecretFound": "errors",
    "StorageError": "errors",
    "NotFound": "errors",
    "NoVault": "errors",
    "InvalidNote": "errors",
    "Busy": "errors",
    "GitError": "errors",
    "SyncError": "errors",
    "InstallError": "errors",
    "CacheError": "errors",
}

__all__ = [
    "Busy",
    "CacheError",
    "Chunk",
    "Config",
    "GitError",
    "Insight",
    "InstallError",
    "InvalidInput",
    "InvalidNote",
    "MemoryService",
    "NoVault",
    "NotFound",
    "SecretFound",
    "StorageError",
    "SyncError",
    "VaultError",
    "__version__",
    "open_service",
]

if TYPE_CHECKING:
    from .config import Config
    from .errors import (
        Busy,
        CacheError,
        GitError,
        InstallError,
        InvalidInput,
        InvalidNote,
        NotFound,
        NoVault,
        SecretFound,
        StorageError,
        SyncError,
        VaultError,
    )
    from .models import Chunk, Insight
    from .service import MemoryService, open_service


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'rlm_vault' has no attribute {name!r}")
