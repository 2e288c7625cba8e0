"""Sharing a vault through a git remote: commit local edits, fetch, integrate, push; never lose a memory.

When the same note changed on both sides, the local version stays at its path and the incoming one is
kept next to it as `<name>.conflict-<host>-<time>.<ext>`, committed, and reported by status.
"""

from __future__ import annotations

import socket
import tempfile
from datetime import UTC
from pathlib import Path

from .core import Store, external_message
from .errors import GitError, InvalidInput, SyncError
from .git import Git
from .results import RemoteSet, Synced

__all__ = ["Sync", "clone_or_create", "remote_configured"]

REMOTE = "origin"
MERGING = "merging"  # .rlm/merging exists while a sync's merge is in progress
DEFAULT_BRANCH = "main"


class Sync:
    """Remote settings and `sync` of one vault."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def remote(self) -> str | None:
        """The URL of the vault's remote, if one is set."""
        url = self.store.vault.git.run("config", "--get", f"remote.{REMOTE}.url", check=False).strip()
        return url or None

    def set_remote(self, url: str) -> RemoteSet:
        """Track `url` (any git remote: path, ssh, https) as the vault's remote."""
        url = url.strip()
        if not url or url.startswith("-"):
            raise InvalidInput(f"remote {url!r} is not accepted: give a git URL or a path to a repository")
        verb = "set-url" if self.remote() else "add"
        self.store.vault.git.run("remote", verb, REMOTE, url)
        return {"remote": url}

    def sync(self) -> Synced:
        """Commit local edits, fetch, merge (keeping both sides of a conflict), push."""
        url = self.remote()
        if url is None:
            raise InvalidInput("this vault has no remote: run `rlm-vault remote set URL` first")
        git = self.store.vault.git
        with self.store.vault.lock():
            self.store.vault.abort_interrupted_merge()
            if git.merging():
                raise SyncError(
                    "a git merge is in progress in the vault (not one of rlm-vault's): finish it or "
                    "run `git merge --abort` there, then sync again"
                )
            external = self._commit_everything_external()
            before = git.head()
            branch = _remote_branch(git, url)
            _fetch(git, url, branch)
            conflicts = self._integrate(git, url)
            pulled = _count(git, f"{before}..HEAD") if before else 0
            pushed = _push(git, url, branch)
        self.store.fresh()
        return {
            "remote": url,
            "head": git.head(),
            "pulled": pulled,
            "pushed": pushed,
            "conflicts": conflicts,
            "external": external,
        }

    def _commit_everything_external(self) -> str | None:
        """Commit every change in the work tree except notes that cannot be read (left for the person)."""
        catalog = self.store.fresh()
        paths = sorted({p for _, p in self.store.vault.git.status() if not p.startswith(".rlm/")})
        ready = [p for p in paths if catalog.problem(p) is None and not Path(p).name.endswith(".rlm-tmp")]
        commit = self.store.vault.git.commit_paths(ready, external_message(ready)) if ready else None
        self.store.pending.done(ready)
        return commit

    def _integrate(self, git: Git, url: str) -> list[str]:
        theirs = TRACKING
        if not git.run("rev-parse", "-q", "--verify", theirs, check=False).strip():
            return []  # the remote is empty: the push publishes everything
        if git.run_status("merge-base", "--is-ancestor", theirs, "HEAD") == 0:
            return []  # nothing new over there
        if git.run_status("merge-base", "--is-ancestor", "HEAD", theirs) == 0:
            git.run("merge", "-q", "--ff-only", theirs)
            return []
        marker = self.store.vault.state / MERGING
        marker.write_text(theirs)  # a merge a kill interrupts is aborted at the next start (Vault.recover)
        proc_ok = _merge(git, theirs)
        conflicts = [] if proc_ok else keep_both_sides(git, self.store.vault.root)
        if git.merging():
            note = f" ({len(conflicts)} conflicting note(s) kept as *.conflict-* files)" if conflicts else ""
            git.commit_merge(f"sync: merge {url}{note}")
        marker.unlink(missing_ok=True)
        return conflicts


TRACKING = f"refs/remotes/{REMOTE}/vault"


def _remote_branch(git: Git, url: str) -> str:
    """The remote branch the vault follows: the one chosen before, else the remote's default branch.

    Following the remote's HEAD keeps a fresh bare repository (HEAD -> master or main) consistent.
    """
    chosen = git.run("config", "--get", "rlm-vault.branch", check=False).strip()
    if chosen:
        return chosen
    try:
        out = git.run("ls-remote", "--symref", REMOTE, "HEAD", timeout=60)
    except GitError as exc:
        raise SyncError(f"cannot reach {url}: {exc.stderr or exc}; the local vault is unchanged") from exc
    line = next((ln for ln in out.splitlines() if ln.startswith("ref: refs/heads/")), "")
    branch = (
        line.removeprefix("ref: refs/heads/").split("\t")[0] or _unborn_branch(git, url) or DEFAULT_BRANCH
    )
    git.run("config", "rlm-vault.branch", branch)
    return branch


def _unborn_branch(git: Git, url: str) -> str:
    """The branch an empty remote's HEAD names: ls-remote does not say, but a clone of it learns it."""
    with tempfile.TemporaryDirectory(dir=git.root / ".rlm") as scratch:
        try:
            git.run("clone", "-q", url, scratch, timeout=60)
            return Git(Path(scratch)).run("symbolic-ref", "--short", "HEAD").strip()
        except GitError:
            return ""


def _fetch(git: Git, url: str, branch: str) -> None:
    try:
        git.run("fetch", "-q", REMOTE, f"+refs/heads/{branch}:{TRACKING}", timeout=120)
    except GitError as exc:
        if "couldn't find remote ref" in exc.stderr:
            return  # an empty remote has no branch yet
        raise SyncError(
            f"cannot fetch from {url}: {exc.stderr or exc}; the local vault is unchanged"
        ) from exc


def _merge(git: Git, theirs: str) -> bool:
    code = git.run_status(
        "merge", "--no-ff", "--no-commit", "--allow-unrelated-histories", "-q", theirs, env=git.identity_env()
    )
    if code != 0 and not git.merging():
        raise SyncError(
            "git could not merge the remote changes (a file you are editing may be in the way: "
            "commit or move it and sync again); the local vault is unchanged"
        )
    return code == 0


def keep_both_sides(git: Git, root: Path) -> list[str]:
    """Resolve every conflicted path so nothing is lost; returns the conflict files written."""
    stages: dict[str, set[int]] = {}
    for line in git.run("ls-files", "-u", "-z").split("\0"):
        if "\t" in line:
            meta, path = line.split("\t", 1)
            stages.setdefault(path, set()).add(int(meta.split()[2]))
    written = []
    stamp = _stamp()
    for path, present in sorted(stages.items()):
        if 2 in present:
            git.run("checkout", "--ours", "--", path)
            if 3 in present:
                sibling = conflict_name(path, stamp)
                (root / sibling).parent.mkdir(parents=True, exist_ok=True)
                (root / sibling).write_bytes(git.show_stage(3, path))
                git.run("add", "--", sibling)
                written.append(sibling)
        else:
            git.run("checkout", "--theirs", "--", path)
        git.run("add", "--", path)
    return written


def conflict_name(path: str, stamp: str) -> str:
    """`insights/x.md` -> `insights/x.conflict-<host>-<time>.md` (same for .md.gz)."""
    folder, _, name = path.rpartition("/")
    stem, dot, ext = name.partition(".")
    host = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in socket.gethostname())[:30] or "host"
    new = f"{stem}.conflict-{host}-{stamp}{dot}{ext}"
    return f"{folder}/{new}" if folder else new


def _stamp() -> str:
    from datetime import datetime

    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _count(git: Git, spec: str) -> int:
    return int(git.run("rev-list", "--count", spec, check=False).strip() or 0)


def _push(git: Git, url: str, branch: str) -> int:
    known = git.run("rev-parse", "-q", "--verify", TRACKING, check=False).strip()
    ahead = _count(git, f"{TRACKING}..HEAD" if known else "HEAD")
    if not ahead:
        return 0
    try:
        git.run("push", "-q", REMOTE, f"HEAD:refs/heads/{branch}", timeout=120)
    except GitError as exc:
        raise SyncError(
            f"cannot push to {url}: {exc.stderr or exc}; your commits are kept locally, run sync again"
        ) from exc
    git.run("update-ref", TRACKING, "HEAD")
    return ahead


def remote_configured(vault_dir: Path) -> bool:
    """Whether the vault at `vault_dir` has a remote, read from .git/config (no git process at start-up)."""
    try:
        text = (vault_dir / ".git" / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return f'[remote "{REMOTE}"]' in text


def clone_or_create(root: Path, url: str) -> str:
    """For `init --remote`: clone a remote that has a vault, else leave the caller to create one.

    Returns "cloned", "empty" (remote reachable, no branch yet) or "exists" (the folder is a vault).
    """
    if (root / ".git").exists():
        return "exists"
    probe = Git(root.parent if root.parent.exists() else Path.cwd())
    try:
        heads = probe.run("ls-remote", "--heads", url, timeout=60)
    except GitError as exc:
        raise SyncError(f"cannot reach {url}: {exc.stderr or exc}; nothing was created") from exc
    if "refs/heads/" not in heads:
        return "empty"
    if root.exists() and any(root.iterdir()):
        return "empty"  # a folder with files: create the vault there and merge at the first sync
    root.parent.mkdir(parents=True, exist_ok=True)
    probe.run("clone", "-q", url, str(root), timeout=300)
    return "cloned"
