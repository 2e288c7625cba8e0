"""Automatic sync for a server whose vault has a remote (RLM_SYNC=auto).

Owns `AutoSync`: one background thread that syncs (pull and push) when the server starts, every
`interval` seconds, a few seconds after writes (several writes in a row make one sync), and when a
search arrives after a quiet period (`kick`: the search answers at once from what is there; the pulled
notes serve the next one). A failure is logged and retried at the next turn, and never reaches a tool
call. Sync holds the write lock only to merge, so writes never wait on the network.
"""

from __future__ import annotations

import logging
import threading
import time

from .core import Store
from .errors import VaultError
from .sync import Sync

__all__ = ["AutoSync"]

log = logging.getLogger("rlm_vault")

QUIET = 10.0  # seconds without a sync after which a search asks for one


class AutoSync:
    """Periodic and write-triggered background `sync()` of one vault."""

    def __init__(self, sync: Sync, store: Store, delay: float, interval: float = 30.0) -> None:
        self.syncer = sync
        self.store = store
        self.delay = delay
        self.interval = interval
        self.quiet = min(QUIET, interval)
        self._wake = threading.Event()
        self._written = threading.Event()
        self._asked = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rlm-vault-sync", daemon=True)
        self._last = 0.0  # monotonic time the last sync started
        self.runs = 0
        self.last_error = ""

    def start(self) -> AutoSync:
        """Sync now (pull), then periodically and after every burst of writes; no remote, no thread."""
        if self.syncer.remote() is None:
            return self
        self.store.on_commit(self._wrote)
        self._asked.set()
        self._wake.set()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def kick(self) -> None:
        """Ask for a pull in the background when none ran for a while; returns at once."""
        if self._thread.is_alive() and time.monotonic() - self._last > self.quiet:
            self._asked.set()
            self._wake.set()

    def _wrote(self) -> None:
        self._written.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)  # a timeout is the periodic pull
            if self._stop.is_set():
                return
            if self._written.is_set() and not self._asked.is_set():
                self._settle()
            # Cleared before the sync: a write during it sets them again and makes the next one.
            self._wake.clear()
            self._written.clear()
            self._asked.clear()
            if not self._stop.is_set():
                self._sync_once()

    def _settle(self) -> None:
        """Wait until writes pause for `delay` seconds (at most 4 delays), so a burst is pushed once."""
        end = time.monotonic() + 4 * self.delay
        while not self._stop.is_set() and time.monotonic() < end:
            self._written.clear()
            if not self._written.wait(min(self.delay, max(0.0, end - time.monotonic()))):
                return

    def _sync_once(self) -> None:
        self._last = time.monotonic()
        try:
            if self.syncer.sync().get("unpushed"):
                self._wrote()  # the remote was busy: push again after a pause in writes
            self.last_error = ""
        except VaultError as exc:
            self.last_error = str(exc)
            log.warning("automatic sync failed: %s", exc)
        finally:
            self.runs += 1
