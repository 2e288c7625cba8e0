"""Access counts and last access per note, in `.rlm/access.json`: reads never make commits."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import StorageError
from .filelock import file_lock
from .vault import Vault

__all__ = ["AccessLog"]

log = logging.getLogger("rlm_vault")


class AccessLog:
    """Machine-local record of how often and when each memory was read."""

    FILE = "access.json"

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def touch(self, note_id: str, when: str) -> None:
        """Count one access; a vault that cannot be written (read-only, full) still answers reads."""
        try:
            with self._locked() as data:
                entry = data.setdefault(note_id, {})
                entry["count"] = int(entry.get("count", 0)) + 1
                entry["last"] = when
        except StorageError as exc:
            log.warning("access count not saved: %s", exc)

    def update(self, changes: dict[str, dict[str, Any]]) -> None:
        """Merge fields into several entries; a None value removes that field."""
        with self._locked() as data:
            for note_id, fields in changes.items():
                entry = data.setdefault(note_id, {})
                for key, value in fields.items():
                    if value is None:
                        entry.pop(key, None)
                    else:
                        entry[key] = value

    @contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        # Its own small lock, never the write lock: reads must not wait for writers.
        with file_lock(self.vault.state / "access.lock"):
            data = self.all()
            yield data
            self.vault.write_state(self.FILE, data)

    def all(self) -> dict[str, dict[str, Any]]:
        data = self.vault.read_state(self.FILE, {})
        return data if isinstance(data, dict) else {}

    def get(self, note_id: str) -> dict[str, Any]:
        return self.all().get(note_id, {"count": 0, "last": None})
