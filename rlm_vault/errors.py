"""The errors rlm-vault raises, one small tree.

    VaultError                  anything rlm-vault refuses or cannot do
    ├── InvalidInput            a parameter is not acceptable; the message says what is
    │   └── SecretFound         content holds a secret that must not reach git history
    ├── NotFound                no memory has that id
    ├── NoVault                 the vault path is missing, a file, or a folder that is not a vault
    ├── InvalidNote             a file in the vault cannot be read as a note
    ├── Busy                    another writer held the vault lock for too long
    ├── GitError                a git command failed
    ├── SyncError               a remote cannot be reached or refused a push; nothing changed locally
    ├── InstallError            a Claude Code file cannot be read or changed safely
    └── CacheError              a cache (index, vectors) is missing or broken

Front ends show `str(error)` to the person or the model as it is.
"""

from __future__ import annotations

__all__ = [
    "Busy",
    "CacheError",
    "GitError",
    "InstallError",
    "InvalidInput",
    "InvalidNote",
    "NoVault",
    "NotFound",
    "SecretFound",
    "SyncError",
    "VaultError",
]


class VaultError(Exception):
    """Base of every error rlm-vault raises on purpose."""


class InvalidInput(VaultError):
    """A tool or command argument was refused; nothing was written."""


class SecretFound(InvalidInput):
    """The content holds something that looks like a secret; nothing was written."""


class NotFound(VaultError):
    """No insight or chunk has the id that was asked for."""


class NoVault(VaultError):
    """The vault path given is missing or not a vault; `rlm-vault init PATH` creates one."""


class InvalidNote(VaultError):
    """A note file could not be parsed; it is reported and left untouched."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class Busy(VaultError):
    """The vault write lock could not be taken in time."""


class GitError(VaultError):
    """A git command exited non-zero or could not start."""

    def __init__(self, cmd: list[str], returncode: int, stderr: str) -> None:
        self.cmd = cmd
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(cmd)} failed ({returncode}): {self.stderr or 'no message'}")


class CacheError(VaultError):
    """A derived cache is missing or corrupt; it can be rebuilt from the vault."""


class SyncError(VaultError):
    """The remote could not be reached or refused the push; the local vault is unchanged."""


class InstallError(VaultError):
    """A Claude Code file cannot be read or changed safely; nothing was changed."""
