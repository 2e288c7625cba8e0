"""Retention (archive, restore, purge) and per-memory history and revert, all as git commits.

Owns `Lifecycle`: it decides what is due by the retention `Policy`, moves chunks between
`chunks/` and `archive/` through the store's transactions, and reads a memory's past from git.
"""

from __future__ import annotations

import gzip
import re
from datetime import datetime

from .archive import Archive
from .catalog import aliases_of, note_from_file
from .core import Store
from .errors import GitError, InvalidInput, InvalidNote, NotFound
from .models import Chunk, Insight
from .results import CommitRow, History, RetentionPreview, RetentionRun, Reverted
from .retention import Policy, parse_time

__all__ = ["Lifecycle", "check_id"]

# A hash (full or short) or a ref git resolves (HEAD~1, main, v1^); never anything git could read as an
# option or a range.
_COMMIT = re.compile(r"^[\w/@{}~^][\w./@{}~^+-]*$", re.ASCII)


class Lifecycle:
    """Archive old chunks, bring them back, purge them; list and restore versions of a memory."""

    def __init__(self, store: Store, archive: Archive) -> None:
        self.store = store
        self.archive = archive
        self.policy = Policy(store.config.archive_after_days, store.config.purge_after_days)

    # ------------------------------------------------------------------ archive

    def retention_preview(self) -> RetentionPreview:
        """What a retention run would archive now, and which archives it could purge."""
        now = self.store.clock()
        access = self.store.access.all()
        archive = self.policy.to_archive(self._candidates(now), access, now, self._body)
        purge = self.policy.to_purge(self._archived_with_dates(), access, now)
        return {
            "archive": [c.id for c in archive],
            "purge": [c.id for c in purge],
            "archive_after_days": self.policy.archive_days,
            "purge_after_days": self.policy.purge_days,
        }

    def retention_run(self, archive: bool = True, purge: bool = False) -> RetentionRun:
        """Archive due chunks (one commit) and, when asked, purge due archives (one commit)."""
        now = self.store.clock()
        access = self.store.access.all()
        archived = (
            self._archive(self.policy.to_archive(self._candidates(now), access, now, self._body))
            if archive
            else []
        )
        commit = self.store.vault.git.head() if archived else None
        purged = self._purge(self.policy.to_purge(self._archived_with_dates(), access, now)) if purge else []
        if purged:
            commit = self.store.vault.git.head()
        return {"archived": archived, "purged": purged, "commit": commit}

    def _candidates(self, now: datetime) -> list[Chunk]:
        """The chunks that can be due now: not the newer ones (7 s to build them all at 100,000 notes)."""
        return self.store.fresh().chunks_created_by(self.policy.last_created_day(now))

    def _body(self, chunk: Chunk) -> str:
        """A chunk's text from its file (the catalog holds none); an unreadable file reads as empty."""
        return self.store.catalog.body(chunk.id) or ""

    def _archive(self, due: list[Chunk]) -> list[str]:
        if not due:
            return []
        with self.store.writing() as tx:
            tx.message = f"archive: {len(due)} chunk{'s' if len(due) > 1 else ''}\n\n" + "\n".join(
                f"- {c.id} {c.summary[:70]}" for c in due
            )
            tx.expect([p for c in due for p in (c.path, c.archive_path)])
            for chunk in due:
                raw = self.store.vault.read_bytes(chunk.path)
                tx.write(chunk.archive_path, gzip.compress(raw, compresslevel=6, mtime=0), sync=False)
                tx.delete(chunk.path)
            tx.sync()
        when = self.store.now()
        self.store.access.update({c.id: {"archived": when} for c in due})
        return [c.id for c in due]

    def _purge(self, due: list[Chunk]) -> list[str]:
        if not due:
            return []
        with self.store.writing() as tx:
            tx.message = (
                f"purge: {len(due)} archived chunk{'s' if len(due) > 1 else ''} (git history keeps them)"
            )
            for chunk in due:
                tx.delete(chunk.archive_path)
        return [c.id for c in due]

    def _archived_with_dates(self) -> list[tuple[Chunk, datetime | None]]:
        access = self.store.access.all()
        added = self.store.vault.git.added_dates("archive") if self.archive.paths() else {}
        found = []
        for note_id, relpath in self.archive.paths().items():
            try:
                _, chunk = self.archive.read(relpath)
            except (InvalidNote, OSError):
                continue
            since = parse_time(access.get(note_id, {}).get("archived")) or parse_time(added.get(relpath))
            found.append((chunk, since))
        return found

    def restore(self, chunk_id: str) -> Reverted:
        """Put an archived chunk back, byte for byte; it is not archived again before the delay."""
        relpath = self.archive.paths().get(chunk_id)
        if relpath is None:
            if self.store.fresh().note(chunk_id) is not None:
                raise InvalidInput(f"{chunk_id} is not archived: it is already active")
            raise NotFound(
                f"no archived chunk with id {chunk_id!r}: rlm_retention_preview and rlm_status "
                "show what is archived"
            )
        raw, chunk = self.archive.read(relpath)
        with self.store.writing() as tx:
            tx.message = f"restore: {chunk.id} {chunk.summary[:60]}".rstrip()
            tx.write(chunk.path, raw)
            tx.delete(relpath)
        self.store.access.update({chunk.id: {"last": self.store.now(), "archived": None}})
        return {"id": chunk.id, "path": chunk.path, "commit": tx.commit_id}

    # ------------------------------------------------------------------ history

    def history(self, note_id: str, limit: int = 20) -> History:
        """Commits that touched a memory, newest first."""
        if not 1 <= limit <= 1000:
            raise InvalidInput(f"limit {limit!r} is not accepted: use a number from 1 to 1000")
        check_id(note_id)
        asked, note_id = note_id, self.resolve_id(note_id)
        specs = [f"insights/{note_id}.md", f"chunks/*/{note_id}.md", f"archive/*/{note_id}.md.gz"]
        commits = self.store.vault.git.log_paths(specs, limit)
        if not commits:
            raise NotFound(f"no memory with id {note_id!r} in the vault's history")
        result: History = {
            "id": note_id,
            "commits": [
                CommitRow(commit=c.commit, date=c.date, message=c.message, author=c.author) for c in commits
            ],
        }
        if asked != note_id:
            result["old_id"] = asked
        return result

    def revert(self, note_id: str, commit: str) -> Reverted:
        """Bring back a memory as it was at `commit` (from rlm_history), as a new commit."""
        check_id(note_id)
        note_id = self.resolve_id(note_id)
        if not _COMMIT.match(commit or "") or ".." in commit:
            raise InvalidInput(
                f"commit {commit!r} is not accepted: use a commit from rlm_history (full or short hash) "
                "or a ref such as HEAD~1"
            )
        full, relpath = self._version_path(note_id, commit)
        raw = self.store.vault.git.show(full, relpath)
        note = note_from_file(relpath, raw)
        current = self.store.fresh().path_of(note_id)
        archived = self.archive.paths().get(note_id)
        with self.store.writing() as tx:
            tx.message = f"revert: {note_id} to {full[:10]}"
            if current and current != relpath:
                tx.delete(current)
            if archived:
                tx.delete(archived)
            tx.write(relpath, raw)
        kind = "insight" if isinstance(note, Insight) else "chunk"
        return {"id": note_id, "path": relpath, "commit": tx.commit_id, "kind": kind, "from": full}

    def _version_path(self, note_id: str, commit: str) -> tuple[str, str]:
        try:
            full = self.store.vault.git.run("rev-parse", "--verify", "-q", f"{commit}^{{commit}}").strip()
        except GitError:
            full = ""
        if not full:
            raise InvalidInput(f"commit {commit!r} is not in the vault's history: use one from rlm_history")
        names = self.store.vault.git.run(
            "ls-tree", "-r", "--name-only", full, "--", "insights", "chunks"
        ).split("\n")
        match = next((n for n in names if n.endswith(f"/{note_id}.md")), None)
        if match is None:
            raise NotFound(
                f"{note_id} did not exist at {full[:10]} (that commit may have deleted or archived "
                f"it): pick an older commit from rlm_history, e.g. {full[:10]}^"
            )
        return full, match

    # ------------------------------------------------------------------ old ids

    def resolve_id(self, note_id: str) -> str:
        """The id of the note asked for by its id or by an old id in its `aliases` (active or archived);
        `note_id` itself when nothing answers to it."""
        found = self.store.fresh().resolve(note_id)
        if found is not None or note_id in self.archive.paths():
            return found or note_id
        # Only an id that is nowhere else pays for reading the archive.
        return next((c.id for c in self.archive.chunks() if note_id in aliases_of(c)), note_id)


def check_id(note_id: str) -> None:
    if not note_id or "/" in note_id or "\\" in note_id or ".." in note_id or "\x00" in note_id:
        raise InvalidInput(
            f"id {note_id!r} is not accepted: use an id as rlm_recall or rlm_list_chunks show it"
        )
