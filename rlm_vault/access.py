"""Access counts and last access per note, in `.rlm/access.json`: reads never make commits."""

from __future__ import annotations

import fcntl
import os
from typing import Any

from .vault import Vault

__all__ = ["AccessLog"]


class AccessLog:
    """Machine-local record of how often and when each memory was read."""

    FILE = "access.json"

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def touch(self, note_id: str, when: str) -> None:
        """Count one access, under its own small lock (never the write lock: reads must not wait)."""
        fd = os.open(self.vault.state / "access.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self.all()
            count = int(data.get(note_id, {}).get("count", 0)) + 1
            data[note_id] = {"count": count, "last": when}
            self.vault.write_state(self.FILE, data)
        finally:
            os.close(fd)

    def all(self) -> dict[str, dict[str, Any]]:
        data = self.vault.read_state(self.FILE, {})
        return data if isinstance(data, dict) else {}

    def get(self, note_id: str) -> dict[str, Any]:
        return self.all().get(note_id, {"count": 0, "last": None})
