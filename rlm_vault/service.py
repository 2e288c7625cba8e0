"""MemoryService: the memory of one vault, and `open_service`, the one place that builds it.

Who owns what (each part has its own constructor and holds only its own state):
- `core.Store`: the vault (Markdown + git), the catalog of parsed notes, the access log, the clock,
  the person's pending edits, and `writing()`, the one way to make a commit.
- `insights.Insights`, `chunks.Chunks`: the notes and their tools; `core.ContentRules` checks text.
- `archive.Archive`: reading archived chunks; `lifecycle.Lifecycle`: retention, history, revert.
- `retrieval.Search`: the search caches, the embedder it is given, the background indexer.
- `sync.Sync`: the git remote; `autosync.AutoSync`: background sync for a server that asks for it.
- `settle.Settler`: in a server, commits a person's edits once they have been quiet a few seconds.
`MemoryService` holds the parts and answers each front-end call with the part that owns it; `status`
and `doctor` are its own, since they report on every part. Front ends (MCP, CLI, hooks, importers)
get a service from `open_service` and call it; nothing here imports mcp.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .archive import Archive
from .autosync import AutoSync
from .catalog import note_from_file
from .chunks import Chunks
from .config import Config
from .core import Clock, ContentRules, Store, detect_project, utc_now
from .errors import VaultError
from .insights import Insights
from .lifecycle import Lifecycle
from .models import Insight
from .results import Doctor, Problem, Status
from .retrieval import LazyEmbedder, Search
from .settle import Settler
from .sync import Sync
from .vault import Vault

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .vault import Transaction

__all__ = [
    "MemoryService",
    "default_embedder",
    "detect_project",
    "init_vault",
    "open_service",
    "read_insights",
    "read_state",
]


log = logging.getLogger("rlm_vault")
START_QUIET = 0.5  # seconds a new server leaves to the client's handshake before opening its caches

P = ParamSpec("P")
R = TypeVar("R")


class MemoryService:
    """Insights, chunks, search, retention, history and sync over one vault."""

    def __init__(
        self,
        store: Store,
        insights: Insights,
        chunks: Chunks,
        search: Search,
        lifecycle: Lifecycle,
        sync: Sync,
        autosync: AutoSync | None = None,
        settler: Settler | None = None,
    ) -> None:
        self.store = store
        self.vault = store.vault
        self.config = store.config
        self.searcher = search
        self.lifecycle = lifecycle
        self.syncer = sync
        self.archive = lifecycle.archive
        self.autosync = autosync
        self.settler = settler
        self._closing = threading.Event()
        # The calls front ends make, each answered by the part that owns it.
        self.remember = insights.remember
        self.recall = insights.recall
        self.update = insights.update
        self.forget = insights.forget
        self.insight = insights.get
        self.chunk = chunks.chunk
        self.peek = chunks.peek
        self.note = chunks.note
        self.list_chunks = chunks.list_chunks
        self.notes_page = chunks.notes_page
        self.read_note = chunks.read_note
        self.sessions = chunks.sessions
        self.domains = chunks.domains
        self.search = search.search
        self.grep = search.grep
        if autosync is not None:  # a search after a quiet period asks for a pull, without waiting for it
            self.search = _after(autosync.kick, search.search)
            self.grep = _after(autosync.kick, search.grep)
            self.recall = _after(autosync.kick, insights.recall)
        self.reindex = search.reindex
        self.semantic_status = search.semantic_status
        self.wait_for_model = search.wait_for_model
        self.retention_preview = lifecycle.retention_preview
        self.retention_run = lifecycle.retention_run
        self.restore = lifecycle.restore
        self.history = lifecycle.history
        self.revert = lifecycle.revert
        self.remote = sync.remote
        self.set_remote = sync.set_remote
        self.sync = sync.sync
        self.now = store.now
        self.fresh = store.fresh  # the notes as they are on disk now (importers, scripts)
        self.redacted = chunks.rules.redacted

    def writing(self) -> AbstractContextManager[Transaction]:
        """The store's transaction, for importers that write many notes in one commit."""
        return self.store.writing()

    def start(self) -> None:
        """What a long-running server starts, all in the background so the first request is answered at
        once: pending edits listed, the search caches opened, automatic sync if asked."""
        threading.Thread(target=self._prime, name="rlm-vault-start", daemon=True).start()
        if self.autosync is not None:
            self.autosync.start()
        if self.settler is not None:
            self.settler.start()

    def _prime(self) -> None:
        # `git status` stats every note (0.3-0.6 s at 100,000): never on the way to the first answer.
        try:
            self.store.prime()
        except VaultError as exc:  # the first write meets it again and reports it
            log.warning("listing edits made outside rlm-vault failed: %s", exc)
        if self.searcher.background and not self._closing.wait(START_QUIET):  # the client's handshake first
            self.searcher.warm()

    def close(self) -> None:
        """Stop background work and save what the caches hold in memory."""
        self._closing.set()
        if self.settler is not None:
            self.settler.stop()
        if self.autosync is not None:
            self.autosync.stop()
        self.searcher.close()

    def status(self) -> Status:
        """Counts, the vault's place and HEAD, search state, and unreadable files."""
        cat = self.store.fresh()
        insights, counts = cat.insights(), cat.counts()
        return {
            "insights": counts["insight"],
            "chunks": counts["chunk"],
            "archived": len(self.archive.paths()),
            "vault": str(self.vault.root),
            "head": self.vault.git.head(),
            "semantic": self.semantic_status(),
            "problems": [Problem(path=p.path, reason=p.reason) for p in cat.problems()]
            + self._domains_problem(),
            "by_category": dict(Counter(i.category for i in insights)),
            "by_importance": dict(Counter(i.importance for i in insights)),
            "projects": cat.projects(),
            "remote": self.remote(),
            "conflicts": self.vault.conflict_files(),
            "untracked": self.syncer.untracked(),
            "refused": self.syncer.refused(),
        }

    def _domains_problem(self) -> list[Problem]:
        reason = self.vault.domains_problem()
        return [{"path": "domains.yaml", "reason": reason}] if reason else []

    def doctor(self) -> Doctor:
        """What is wrong, if anything: unreadable notes, caches out of step, conflicts, git health.

        A model that cannot load is a warning: search still works, by keywords.
        """
        self.wait_for_model()
        problems = [f"{p.path}: {p.reason}" for p in self.store.fresh().problems()]
        problems += [f"{p['path']}: {p['reason']}" for p in self._domains_problem()]
        git = self.vault.git
        fsck = git.run("fsck", "--no-progress", "--no-dangling", check=False)
        git_ok = git.run_status("fsck", "--no-progress") == 0
        semantic = self.semantic_status()
        failed = "could not be" in semantic["reason"]
        # Caches that lag behind catch up at the next search; only what needs a person fails doctor.
        return {
            "notes": problems,
            "caches": self.searcher.cache_problems(),
            "semantic": semantic,
            "git": "ok" if git_ok else fsck.strip()[:500],
            "conflicts": self.vault.conflict_files(),
            "untracked": self.syncer.untracked(),
            "refused": self.syncer.refused(),
            "ok": not problems and git_ok,
            "warnings": [f"semantic search is off: {semantic['reason']}"] if failed else [],
        }


def _after(first: Callable[[], None], call: Callable[P, R]) -> Callable[P, R]:
    """`call`, running `first` (which returns at once) before it."""

    @functools.wraps(call)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        first()
        return call(*args, **kwargs)

    return wrapped


def read_insights(config: Config) -> list[Insight]:
    """Every readable insight, read straight from `insights/` without opening the service (session start:
    no catalog of thousands of chunks, and a vault that is never created or repaired here)."""
    vault = Vault(config.vault)
    found: list[Insight] = []
    for path in vault.scan_folder("insights"):
        try:
            note = note_from_file(path, vault.read_bytes(path))
        except (OSError, VaultError):
            continue
        if isinstance(note, Insight):
            found.append(note)
    return found


def init_vault(config: Config, force: bool = False) -> str:
    """Make the configured folder a vault (`init`, `install`): see `Vault.init`; returns how."""
    return Vault.init(config.vault, config.lock_timeout, force=force)[1]


def read_state(config: Config, name: str) -> Any:
    """A machine-local state file of the vault (`.rlm/<name>`), {} when missing or broken."""
    return Vault(config.vault).read_state(name, {})


def default_embedder(config: Config) -> LazyEmbedder | None:
    """The model2vec embedder the configuration names (not loaded yet), or None when it is off."""
    from .embeddings import DISABLED, Model2VecEmbedder

    if config.embedding_model.strip().lower() in DISABLED:
        return None
    return Model2VecEmbedder(config.embedding_model)


def open_service(
    config: Config | None = None,
    *,
    clock: Clock = utc_now,
    embedder: LazyEmbedder | None | str = "configured",
    serving: bool = False,
) -> MemoryService:
    """The composition root: the vault at the configured place, and every part wired to it.

    `embedder` is the configured model2vec model by default, or one given (tests), or None for BM25
    only. `serving` is for a long-running server: caches build in the background and, with
    RLM_SYNC=auto, sync runs in the background (both start with `MemoryService.start`).
    """
    config = config or Config.from_env()
    vault = Vault.open(config.vault, config.lock_timeout, create=config.create_vault)
    settles = serving and config.settle_delay > 0
    store = Store(vault, config, clock, defer_scans=settles)
    rules = ContentRules(config)
    archive = Archive(vault, config.max_content_bytes)
    lifecycle = Lifecycle(store, archive)
    model = default_embedder(config) if isinstance(embedder, str) else embedder
    sync = Sync(store)
    autosync = (
        AutoSync(sync, store, config.sync_delay, config.sync_interval)
        if serving and config.auto_sync
        else None
    )
    settler = Settler(store, config.settle_delay) if settles else None
    return MemoryService(
        store,
        Insights(store, rules),
        Chunks(store, rules, lifecycle),
        Search(store, archive, model, background=serving),
        lifecycle,
        sync,
        autosync,
        settler,
    )
