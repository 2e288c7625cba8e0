"""Retention (archive, restore, purge) and per-memory history and revert, all as git commits."""

from __future__ import annotations

import gzip
import re
import zlib
from datetime import datetime
from typing import Any

from .catalog import note_from_file
from .core import ServiceCore
from .errors import GitError, InvalidInput, InvalidNote, NotFound
from .models import Chunk, Insight
from .retention import Policy, parse_time

__all__ = ["LifecycleMixin"]

_COMMIT = re.compile(r"^[0-9a-fA-F]{4,64}$")  # SHA-1 or SHA-256 ids


class LifecycleMixin(ServiceCore):
    """Archive old chunks, bring them back, purge them; list and restore versions of a memory."""

    @property
    def policy(self) -> Policy:
        return Policy(self.config.archive_after_days, self.config.purge_after_days)

    # ------------------------------------------------------------------ archive

    def archived(self) -> dict[str, str]:
        """id -> `archive/<project>/<id>.md.gz` for every archived chunk."""
        base = self.vault.root / "archive"
        return (
            {
                p.name.removesuffix(".md.gz"): p.relative_to(self.vault.root).as_posix()
                for p in base.glob("*/*.md.gz")
                if not p.name.startswith(".")
            }
            if base.is_dir()
            else {}
        )

    def read_archive(self, relpath: str) -> tuple[bytes, Chunk]:
        """The exact original bytes of an archived chunk, and the chunk they hold."""
        raw = _gunzip(self.vault.read_bytes(relpath), self.config.max_content_bytes * 2, relpath)
        note = note_from_file("chunks/" + relpath.split("/")[1] + "/" + relpath.rsplit("/", 1)[1][:-3], raw)
        if not isinstance(note, Chunk):
            raise InvalidNote(relpath, "does not hold a chunk")
        return raw, note

    def retention_preview(self) -> dict[str, Any]:
        """What a retention run would archive now, and which archives it could purge."""
        now = self.clock()
        access = self.access.all()
        archive = self.policy.to_archive(self.fresh().chunks(), access, now)
        purge = self.policy.to_purge(self._archived_with_dates(), access, now)
        return {
            "archive": [c.id for c in archive],
            "purge": [c.id for c in purge],
            "archive_after_days": self.policy.archive_days,
            "purge_after_days": self.policy.purge_days,
        }

    def retention_run(self, archive: bool = True, purge: bool = False) -> dict[str, Any]:
        """Archive due chunks (one commit) and, when asked, purge due archives (one commit)."""
        now = self.clock()
        access = self.access.all()
        archived = (
            self._archive(self.policy.to_archive(self.fresh().chunks(), access, now)) if archive else []
        )
        commit = self.vault.git.head() if archived else None
        purged = self._purge(self.policy.to_purge(self._archived_with_dates(), access, now)) if purge else []
        if purged:
            commit = self.vault.git.head()
        return {"archived": archived, "purged": purged, "commit": commit}

    def _archive(self, due: list[Chunk]) -> list[str]:
        if not due:
            return []
        with self.writing() as tx:
            tx.message = f"archive: {len(due)} chunk{'s' if len(due) > 1 else ''}\n\n" + "\n".join(
                f"- {c.id} {c.summary[:70]}" for c in due
            )
            tx.expect([p for c in due for p in (c.path, _archive_path(c))])
            for chunk in due:
                raw = self.vault.read_bytes(chunk.path)
                tx.write(_archive_path(chunk), gzip.compress(raw, compresslevel=6, mtime=0), sync=False)
                tx.delete(chunk.path)
            tx.sync()
        when = self.now()
        self.access.update({c.id: {"archived": when} for c in due})
        return [c.id for c in due]

    def _purge(self, due: list[Chunk]) -> list[str]:
        if not due:
            return []
        with self.writing() as tx:
            tx.message = (
                f"purge: {len(due)} archived chunk{'s' if len(due) > 1 else ''} (git history keeps them)"
            )
            for chunk in due:
                tx.delete(_archive_path(chunk))
        return [c.id for c in due]

    def _archived_with_dates(self) -> list[tuple[Chunk, datetime | None]]:
        access = self.access.all()
        added = self.vault.git.added_dates("archive") if self.archived() else {}
        found = []
        for note_id, relpath in self.archived().items():
            try:
                _, chunk = self.read_archive(relpath)
            except (InvalidNote, OSError):
                continue
            since = parse_time(access.get(note_id, {}).get("archived")) or parse_time(added.get(relpath))
            found.append((chunk, since))
        return found

    def restore(self, chunk_id: str) -> dict[str, Any]:
        """Put an archived chunk back, byte for byte; it is not archived again before the delay."""
        relpath = self.archived().get(chunk_id)
        if relpath is None:
            if self.fresh().note(chunk_id) is not None:
                raise InvalidInput(f"{chunk_id} is not archived: it is already active")
            raise NotFound(
                f"no archived chunk with id {chunk_id!r}: rlm_retention_preview and rlm_status "
                "show what is archived"
            )
        raw, chunk = self.read_archive(relpath)
        with self.writing() as tx:
            tx.message = f"restore: {chunk.id} {chunk.summary[:60]}".rstrip()
            tx.write(chunk.path, raw)
            tx.delete(relpath)
        self.access.update({chunk.id: {"last": self.now(), "archived": None}})
        return {"id": chunk.id, "path": chunk.path, "commit": tx.commit_id}

    # ------------------------------------------------------------------ history

    def history(self, note_id: str, limit: int = 20) -> dict[str, Any]:
        """Commits that touched a memory, newest first."""
        if not 1 <= limit <= 1000:
            raise InvalidInput(f"limit {limit!r} is not accepted: use a number from 1 to 1000")
        _check_id(note_id)
        specs = [f"insights/{note_id}.md", f"chunks/*/{note_id}.md", f"archive/*/{note_id}.md.gz"]
        commits = self.vault.git.log_paths(specs, limit)
        if not commits:
            raise NotFound(f"no memory with id {note_id!r} in the vault's history")
        return {
            "id": note_id,
            "commits": [{"commit": c.commit, "date": c.date, "message": c.message} for c in commits],
        }

    def revert(self, note_id: str, commit: str) -> dict[str, Any]:
        """Bring back a memory as it was at `commit` (from rlm_history), as a new commit."""
        _check_id(note_id)
        if not _COMMIT.match(commit or ""):
            raise InvalidInput(f"commit {commit!r} is not accepted: use a commit id from rlm_history")
        full, relpath = self._version_path(note_id, commit)
        raw = self.vault.git.show(full, relpath)
        note = note_from_file(relpath, raw)
        current = self.fresh().path_of(note_id)
        archived = self.archived().get(note_id)
        with self.writing() as tx:
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
            full = self.vault.git.run("rev-parse", "--verify", "-q", f"{commit}^{{commit}}").strip()
        except GitError:
            full = ""
        if not full:
            raise InvalidInput(f"commit {commit!r} is not in the vault's history: use one from rlm_history")
        names = self.vault.git.run("ls-tree", "-r", "--name-only", full, "--", "insights", "chunks").split(
            "\n"
        )
        match = next((n for n in names if n.endswith(f"/{note_id}.md")), None)
        if match is None:
            raise NotFound(
                f"{note_id} did not exist at {full[:10]} (that commit may have deleted or archived "
                f"it): pick an older commit from rlm_history, e.g. {full[:10]}^"
            )
        return full, match

    # ------------------------------------------------------------------ archived reads

    def archived_chunks(self) -> list[Chunk]:
        """Every readable archived chunk (for searches that include the archive)."""
        return [chunk for chunk, _ in self._archived_with_dates()]


def _archive_path(chunk: Chunk) -> str:
    return f"archive/{chunk.project}/{chunk.id}.md.gz"


def _check_id(note_id: str) -> None:
    if not note_id or "/" in note_id or "\\" in note_id or ".." in note_id or "\x00" in note_id:
        raise InvalidInput(
            f"id {note_id!r} is not accepted: use an id as rlm_recall or rlm_list_chunks show it"
        )


def _gunzip(data: bytes, limit: int, path: str) -> bytes:
    """Decompress at most `limit` bytes: a gzip bomb is refused, not expanded."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidNote(path, f"is not a valid gzip file ({exc})") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise InvalidNote(path, f"expands to more than {limit} bytes; refused")
    return out
