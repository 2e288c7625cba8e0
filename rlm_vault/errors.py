"""The errors rlm-vault raises, one small tree.

    VaultError                  anything rlm-vault refuses or cannot do
    ├── InvalidInput            a parameter is not acceptable; the message says what is
    │   └── SecretFound         content holds a secret that must not reach git history
    ├── NotFound                no memory has that id
    ├── NoVault                 the vault path is missing, a file, or a folder that is not a vault
    ├── InvalidNote             a file in the vault cannot be read as a note
    ├── Busy                    another writer held the vault lock for too long
    ├── StorageError            the disk refused a write: full, read-only or no permission
    ├── GitError                a git command failed (or the vault's git is damaged)
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
    "StorageError",
    "SyncError",
    "VaultError",
    "storage_message",
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


class StorageError(VaultError):
    """A file of the vault could not be written: the disk is full, read-only, or refuses permission."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class GitError(VaultError):
    """A git command exited non-zero or could not start; `problem` says what it means when it is known."""

    def __init__(self, cmd: list[str], returncode: int, stderr: str, problem: str = "") -> None:
        self.cmd = cmd
        self.returncode = returncode
        self.stderr = stderr.strip()
        self.problem = problem
        if problem:
            said = next((line.strip() for line in self.stderr.splitlines() if line.strip()), "no message")
            super().__init__(f"{problem} (git {cmd[0] if cmd else ''} said: {said})")
        else:
            super().__init__(f"git {' '.join(cmd)} failed ({returncode}): {self.stderr or 'no message'}")


class CacheError(VaultError):
    """A derived cache is missing or corrupt; it can be rebuilt from the vault."""


class SyncError(VaultError):
    """The remote could not be reached or refused the push; the local vault is unchanged."""


class InstallError(VaultError):
    """A Claude Code file cannot be read or changed safely; nothing was changed."""


def storage_message(exc: OSError, where: object) -> str:
    """One line for an OSError met while writing: what happened and what to do."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk holding {where} is full; free some space and try again (nothing was changed)"
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only file system; remount it read-write to save memories"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {where}; give your user ownership of the vault folder"
    return f"cannot write in {where}: {exc.strerror or exc}"
