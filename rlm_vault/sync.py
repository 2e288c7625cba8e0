"""Sharing a vault through a git remote: commit local edits, fetch, integrate, push; never lose a memory.

Many machines may sync through one remote at once. Network I/O (fetch, push, finding the remote branch)
runs without the vault's write lock, so writes never wait on the network; only committing local edits and
merging what was fetched hold it, briefly. A push that loses the race to another machine is retried with
fetch + merge + push (a few times, with random jitter) before anything is reported.

Only notes travel: insights/, chunks/, archive/ and the files the vault template owns. Other files
(editor settings, `.env`, stray files) are left untracked and reported; a note holding a secret is left
uncommitted and reported. What arrives is data: `.rlm/` (machine-local caches) is dropped from a fetched
tree before it is merged, so no cache file or symlink ever comes from a remote.

When the same note changed on both sides, the local version stays at its path and the incoming one is
kept next to it as `<name>.conflict-<host>-<time>.<ext>`, committed, and reported by status.
"""

from __future__ import annotations

import random
import socket
import tempfile
import time
from datetime import UTC
from pathlib import Path

from .config import MARKER
from .core import Store, external_message
from .errors import GitError, InvalidInput, SyncError
from .filelock import file_lock
from .git import Git
from .results import Problem, RemoteSet, Synced

__all__ = ["Sync", "clone_or_create", "remote_configured", "synced_path"]

REMOTE = "origin"
MERGING = "merging"  # .rlm/merging exists while a sync's merge is in progress
DEFAULT_BRANCH = "main"
CACHE = ".rlm"  # machine-local state: never committed, never taken from a remote
NOTE_TOPS = ("insights", "chunks", "archive", "sessions")
TEMPLATE_FILES = frozenset({"README.md", ".gitignore", ".gitattributes", "domains.yaml", MARKER})
ATTEMPTS = 10  # fetch + merge + push rounds before a push race is reported (about 15 s of backing off)
SYNC_WAIT = 600.0  # seconds a sync waits for another sync of the same vault to finish
NETWORK_TIMEOUT = 120.0

# What git says when a push lost a race (another machine pushed first, or holds the remote ref's lock):
# fetching, merging and pushing again resolves it.
RACE_SIGNS = (
    "non-fast-forward",
    "fetch first",
    "failed to update ref",
    "cannot lock ref",
    "unable to update local ref",
    "incorrect old value",
    "stale info",
    "failed to lock",
)


def synced_path(path: str) -> bool:
    """True for what sync commits: notes (insights/, chunks/, archive/, sessions/, outside any dot-folder
    an editor keeps there) and the vault template's files."""
    if path in TEMPLATE_FILES:
        return True
    parts = path.split("/")
    return parts[0] in NOTE_TOPS and not any(part.startswith(".") for part in parts)


class _Race(Exception):
    """The remote moved between our fetch and our push (or a ref was locked): fetch and try again."""


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

    def untracked(self) -> list[str]:
        """Files in the vault folder that sync leaves out (not notes, not template files), for status."""
        excluded = [f":(exclude){top}" for top in (*NOTE_TOPS, CACHE)]
        paths = {p for _, p in self.store.vault.git.status(".", *excluded)}
        return sorted(p for p in paths if not synced_path(p) and p.split("/", 1)[0] != CACHE)

    def refused(self) -> list[Problem]:
        """Edits kept out of git because of what they hold (a secret), with the reason."""
        root = self.store.vault.root
        return [
            {"path": p, "reason": r}
            for p, r in sorted(self.store.refused.items())
            if (root / p).exists() or (root / p).is_symlink()
        ]

    def sync(self) -> Synced:
        """Commit local edits, fetch, merge (keeping both sides of a conflict), push; retry a lost race."""
        url = self.remote()
        if url is None:
            raise InvalidInput("this vault has no remote: run `rlm-vault remote set URL` first")
        git = self.store.vault.git
        # One sync of a vault at a time (a server's background sync and a command line one): their fetches
        # would fight over the same ref. Writes do not take this lock.
        with file_lock(self.store.vault.state / "sync.lock", SYNC_WAIT):
            branch = _remote_branch(git, url)
            report = _Report()
            for attempt in range(ATTEMPTS):
                if attempt:
                    time.sleep(_backoff(attempt))
                try:
                    theirs = _fetch(git, url, branch)
                    with self.store.vault.lock():
                        head = self._merge_locked(git, url, theirs, report)
                    report.pushed += _push(git, url, branch, theirs, head)
                except _Race as race:
                    said = [ln.strip() for ln in str(race).splitlines() if ln.strip()]
                    report.last_race = next((ln for ln in said if "rejected" in ln), said[0] if said else "")
                    continue
                break
            else:
                raise SyncError(
                    f"{url} kept changing while this vault pushed ({ATTEMPTS} attempts; last: "
                    f"{report.last_race}); your commits are kept locally: run sync again"
                )
        self.store.fresh()
        return report.result(url, git.head())

    def _merge_locked(self, git: Git, url: str, theirs: str | None, report: _Report) -> str | None:
        """Under the write lock: commit local edits (first round), merge what was fetched; the commit to push."""
        self.store.vault.abort_interrupted_merge()
        if git.merging():
            raise SyncError(
                "a git merge is in progress in the vault (not one of rlm-vault's): finish it or "
                "run `git merge --abort` there, then sync again"
            )
        if not report.edits_done:  # a retry only merges and pushes again: its window in the race stays short
            report.external, report.untracked = self._commit_local_edits()
            report.refused = self.refused()
            report.edits_done = True
        if theirs is not None:
            theirs = _without_cache(git, theirs, report.warnings)
            before = git.head()
            report.conflicts += self._integrate(git, url, theirs)
            if git.head() != before:
                report.pulled += _count(git, f"{before}..{theirs}" if before else theirs)
        return git.head()

    def _commit_local_edits(self) -> tuple[str | None, list[str]]:
        """Commit changed notes and template files that are readable and hold no secret; list the rest."""
        catalog = self.store.fresh()
        changed = sorted({p for _, p in self.store.vault.git.status() if p.split("/", 1)[0] != CACHE})
        untracked = [p for p in changed if not synced_path(p)]
        for gone in set(self.store.refused) - set(changed):  # deleted, or reverted by the person
            self.store.refused.pop(gone, None)
        readable = [
            p
            for p in changed
            if synced_path(p) and catalog.problem(p) is None and not Path(p).name.endswith(".rlm-tmp")
        ]
        ready = self.store.screened(readable)
        commit = self.store.vault.git.commit_paths(ready, external_message(ready)) if ready else None
        self.store.pending.done(ready)
        return commit, untracked

    def _integrate(self, git: Git, url: str, theirs: str) -> list[str]:
        if git.run_status("merge-base", "--is-ancestor", theirs, "HEAD") == 0:
            return []  # nothing new over there
        if git.head() is None or git.run_status("merge-base", "--is-ancestor", "HEAD", theirs) == 0:
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


class _Report:
    """What one sync did, gathered across its attempts."""

    def __init__(self) -> None:
        self.pulled = 0
        self.pushed = 0
        self.conflicts: list[str] = []
        self.external: str | None = None
        self.untracked: list[str] = []
        self.refused: list[Problem] = []
        self.warnings: list[str] = []
        self.last_race = ""
        self.edits_done = False

    def result(self, url: str, head: str | None) -> Synced:
        out: Synced = {
            "remote": url,
            "head": head,
            "pulled": self.pulled,
            "pushed": self.pushed,
            "conflicts": self.conflicts,
            "external": self.external,
            "untracked": self.untracked,
            "refused": self.refused,
        }
        if self.warnings:
            out["warnings"] = self.warnings
        return out


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
        raise SyncError(f"cannot reach {url}: {_advice(exc)}; the local vault is unchanged") from exc
    line = next((ln for ln in out.splitlines() if ln.startswith("ref: refs/heads/")), "")
    branch = (
        line.removeprefix("ref: refs/heads/").split("\t")[0] or _unborn_branch(git, url) or DEFAULT_BRANCH
    )
    git.run("config", "rlm-vault.branch", branch)
    return branch


def _unborn_branch(git: Git, url: str) -> str:
    """The branch an empty remote's HEAD names: ls-remote does not say, but a clone of it learns it."""
    with tempfile.TemporaryDirectory(dir=git.root / CACHE) as scratch:
        try:
            git.run("clone", "-q", "--no-checkout", url, scratch, timeout=60)
            return Git(Path(scratch)).run("symbolic-ref", "--short", "HEAD").strip()
        except GitError:
            return ""


def _fetch(git: Git, url: str, branch: str) -> str | None:
    """Fetch the remote branch (no lock held); its commit, or None while the remote has no branch."""
    try:
        git.run(
            "fetch", "-q", "--no-tags", REMOTE, f"+refs/heads/{branch}:{TRACKING}", timeout=NETWORK_TIMEOUT
        )
    except GitError as exc:
        if "couldn't find remote ref" in exc.stderr:
            return None  # an empty remote has no branch yet
        if any(sign in exc.stderr for sign in RACE_SIGNS):
            raise _Race(exc.stderr.strip()) from exc
        raise SyncError(f"cannot fetch from {url}: {_advice(exc)}; the local vault is unchanged") from exc
    # The commit, not the ref: a later fetch may move the ref while this one is merged.
    return git.run("rev-parse", "-q", "--verify", f"{TRACKING}^{{commit}}", check=False).strip() or None


def _without_cache(git: Git, commit: str, warnings: list[str]) -> str:
    """`commit`, or a child of it without the top-level `.rlm` entry when the remote tracks one.

    Git overwrites ignored files when it checks out tracked ones, so a tracked `.rlm/...` (or a `.rlm`
    symlink) would replace this machine's caches and state. The child drops it; merging the child keeps
    the remote's history and never writes `.rlm`.
    """
    entries = [e for e in git.run("ls-tree", "-z", commit).split("\0") if e]
    kept = [e for e in entries if e.split("\t", 1)[-1] != CACHE]
    if len(kept) == len(entries):
        return commit
    tree = git.run("mktree", "-z", input="\0".join(kept) + "\0").strip()
    message = "sync: drop .rlm from the remote's tree (machine-local caches are never synced)"
    # Dated like `commit`, so this machine makes the same child from it again (no merge of twins).
    date = git.run("log", "-1", "--format=%cI", commit).strip()
    env = {**git.identity_env(), "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    child = git.run("commit-tree", tree, "-p", commit, "-m", message, env=env).strip()
    warnings.append(
        f"the remote's commit {commit[:10]} tracks {CACHE} (machine-local caches); it was not merged and "
        "is removed from the remote with this sync's push"
    )
    return child


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


def _push(git: Git, url: str, branch: str, theirs: str | None, head: str | None) -> int:
    """Push `head` (no lock held); the number of commits published. `_Race` when another push won."""
    if head is None:
        return 0
    ahead = _count(git, f"{theirs}..{head}" if theirs else head)
    if not ahead:
        return 0
    try:
        git.run("push", "-q", REMOTE, f"{head}:refs/heads/{branch}", timeout=NETWORK_TIMEOUT)
    except GitError as exc:
        if any(sign in exc.stderr for sign in RACE_SIGNS):
            raise _Race(exc.stderr.strip()) from exc
        raise SyncError(
            f"cannot push to {url}: {_advice(exc)}; your commits are kept locally, run sync again"
        ) from exc
    git.run("update-ref", TRACKING, head, check=False)
    return ahead


def _backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt`: exponential, capped, with full jitter.

    Machines that keep losing the race back off further each time, leaving the remote to the others for
    a moment, so under load every sync gets through (as Ethernet shares a wire).
    """
    return random.uniform(0.0, min(4.0, 0.1 * 2**attempt))


def _advice(exc: GitError) -> str:
    """git's own words, and what to do about them."""
    said = " ".join(exc.stderr.split())[:300] or str(exc)
    low = said.lower()
    if any(w in low for w in ("permission denied", "authentication", "could not read username", "403")):
        return f"{said} (check this machine's access: its ssh key or token must be allowed to read and write)"
    if any(
        w in low for w in ("could not resolve", "connection refused", "timed out", "network is unreachable")
    ):
        return f"{said} (the remote is unreachable: check the network, then sync again)"
    if "does not appear to be a git repository" in low or "not found" in low:
        return f"{said} (check the URL: `rlm-vault remote set URL`)"
    return said


def remote_configured(vault_dir: Path) -> bool:
    """Whether the vault at `vault_dir` has a remote, read from its git config (no git process at start-up
    for a plain `.git` folder; a linked worktree or separate git dir asks git where the config is)."""
    config = vault_dir / ".git" / "config"
    if not config.is_file():
        try:
            config = Git(vault_dir).layout().common_dir / "config"
        except GitError:
            return False
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
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
    probe.run("clone", "-q", "--no-checkout", url, str(root), timeout=300)
    clone = Git(root)
    head = clone.head()
    if head:  # the files come out only once a tracked .rlm is dropped (the first sync pushes that)
        clean = _without_cache(clone, head, [])
        if clean != head:
            clone.run("update-ref", "HEAD", clean)
        clone.run("reset", "-q", "--hard", "HEAD")
    return "cloned"
