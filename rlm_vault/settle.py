"""Committing a person's edits once they settle, in a long-running server.

Owns `Settler`: a background thread that keeps looking at the vault (the catalog's refresh) and,
once the edits a person made have been quiet for `delay` seconds, commits them under the vault lock
as one `external: ...` commit. An editor that autosaves every second thus makes one commit, not
fifty, and the edit is in git without waiting for the next tool write.
"""

from __future__ import annotations

import logging
import threading

from .core import Store
from .errors import VaultError

__all__ = ["Settler"]

log = logging.getLogger("rlm_vault")


class Settler:
    """Commits pending external edits after `delay` seconds without a further change."""

    def __init__(self, store: Store, delay: float) -> None:
        self.store = store
        self.delay = delay
        # Look a few times per delay; a full listing costs a stat per note, so not more than needed.
        self.interval = min(max(delay / 2, 0.05), 2.5)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tried_at = -1.0  # the edit time of the last attempt that had nothing readable to commit

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rlm-vault-settle", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except VaultError as exc:  # busy lock, git refusing: try again at the next look
                log.warning("committing edits made outside rlm-vault failed: %s", exc)

    def step(self) -> str | None:
        """Look once; commit the pending edits when they have been quiet long enough."""
        store = self.store
        store.catalog.sweep()  # big folders, listed here rather than in a tool call
        store.fresh()
        pending = store.pending
        changed_at = pending.changed_at
        if not pending.snapshot() or pending.quiet_for() < self.delay or changed_at == self._tried_at:
            return None
        with store.vault.lock():
            commit = store.commit_external()
        if commit is None:
            self._tried_at = changed_at  # half-written or unreadable: wait for the next change
            return None
        store.committed()
        return commit
