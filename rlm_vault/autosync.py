"""Automatic sync for a server whose vault has a remote (RLM_SYNC=auto).

Owns `AutoSync`: one background thread that pulls once when the server starts and pushes a few
seconds after writes (several writes in a row make one sync). A failure is logged and retried with
the next write, and never reaches a tool call.
"""

from __future__ import annotations

import logging
import threading

from .core import Store
from .errors import VaultError
from .sync import Sync

__all__ = ["AutoSync"]

log = logging.getLogger("rlm_vault")


class AutoSync:
    """Debounced background `sync()` of one vault."""

    def __init__(self, sync: Sync, store: Store, delay: float) -> None:
        self.syncer = sync
        self.store = store
        self.delay = delay
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rlm-vault-sync", daemon=True)
        self.runs = 0
        self.last_error = ""

    def start(self) -> AutoSync:
        """Sync now (pull), then after every burst of writes; a vault without remote is left alone."""
        if self.syncer.remote() is None:
            return self
        self.store.on_commit(self._wake.set)
        self._wake.set()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            # Writes that keep coming within the delay are pushed together.
            while not self._stop.is_set() and self._wake.wait(self.delay) and self.runs:
                self._wake.clear()
            self._wake.clear()
            if not self._stop.is_set():
                self._sync_once()

    def _sync_once(self) -> None:
        try:
            self.syncer.sync()
            self.last_error = ""
        except VaultError as exc:
            self.last_error = str(exc)
            log.warning("automatic sync failed: %s", exc)
        finally:
            self.runs += 1
